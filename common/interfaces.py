"""Message schemas between services (version `WIRE_VERSION`).

Audio never travels as JSON: a message is a binary float32 body (see `common.wire`) plus one of
these models, JSON-encoded in the `X-Audiosplit-Meta` header, or a small JSON body for requests
that carry no audio.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

# a storage key: '/'-separated names, none starting with a dot (no '..', no hidden files)
STORAGE_KEY = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$"

# 3: the fuser is told storage keys (out_key, result_key), not paths; EnsembleMember added
WIRE_VERSION = 3


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = WIRE_VERSION


# --- chunk plan -------------------------------------------------------------------------------


class ChunkSpec(Message):
    """One chunk: centre `[offset, offset + length)`; the model sees
    `[window_start, window_start + window_length)` (zeros outside the track).

    `member`: the one member of a bag of models that separates this chunk, its estimate left
    unweighted (a bag's shifted passes, see `common.chunks.plan_passes`); None: the model,
    a bag's members combined with the bag's weights."""

    index: int
    offset: int
    length: int
    window_start: int
    window_length: int
    member: int | None = Field(default=None, ge=0)
    # frames of the pass (ChunkPlan.n_frames): where the track ends, for separators that pad
    # the track's edges themselves (RoFormer's reflection, see `common.chunks.fade_grid`)
    pass_frames: int | None = None


class ChunkPlan(Message):
    """The chunks of one pass over the track. With shifts (as `apply_model(shifts=K)`), each of
    K passes runs on the track delayed by `lead` frames of zeros (a random shift): the pass's
    frame `i` is track frame `i - lead`, and its fused output is trimmed by `lead` frames."""

    n_frames: int  # frames of this pass (track frames + lead when shifted)
    lead: int = 0
    # per model stem, this pass's weight when the passes are averaged (a bag member's weights);
    # None: 1 for every stem
    weights: list[float] | None = None
    segment: int  # S, frames
    stride: int  # frames between chunk offsets
    transition_power: float = 1.0
    chunks: list[ChunkSpec]


class Normalisation(Message):
    """The input was standardised as `(x - mean) / std` before the model; undo it after fusing."""

    mean: float = 0.0
    std: float = 1.0


# --- channel predictor ------------------------------------------------------------------------


class ModelCard(Message):
    """What is published and measured about a model (prediction/catalogue.py)."""

    parameters_m: float | None = None  # millions, counted on the architecture
    weights_mb: float | None = None  # float32 size of those parameters
    published_sdr: str | None = None
    sdr_source: str | None = None  # who published the SDR, or why there is none
    licence: str = "not stated"  # of the weights, as published
    rtf_cpu: float | None = None  # separation time / song length on the 2-core dev CPU
    rtf_note: str | None = None
    task: str | None = None  # what it is for: one of prediction.catalogue.TASKS


class DownloadProgress(Message):
    """A model's download under way: bytes on disk so far, of `total` (None: not known yet)."""

    bytes: int = Field(ge=0)
    total: int | None = None


class SeparatorInfo(Message):
    """What the predictor knows of one model."""

    name: str
    family: Literal["demucs", "openunmix", "roformer", "mdx23c", "scnet", "dsp"]
    stems: list[str]
    available: bool
    # weights missing here but downloadable now (a hub answers and AUTO_FETCH is on)
    fetchable: bool = False
    reason: str  # why available or not, for a person
    segment: int  # S, frames
    overlap: float  # default overlap
    normalise: bool  # whether jobs must standardise the input by whole-track mean/std
    batch_size: int = 1  # windows per /separate request the model runs fastest with
    card: ModelCard | None = None  # published and measured facts (None: a checkpoint path)
    download: DownloadProgress | None = None  # while its weights are being fetched


class PlanRequest(Message):
    model: str
    n_frames: int = Field(gt=0)
    overlap: float | None = Field(default=None, ge=0.0, le=0.9)
    shifts: int = Field(default=0, ge=0, le=10)
    seed: int = 0


class PlanResponse(Message):
    model: SeparatorInfo
    plans: list[ChunkPlan]  # one pass, or one per shift; chunk indices run on across passes


class SeparateMeta(Message):
    """Header of `POST /separate`: body = float32 (batch, 2, window_length) windows, already
    standardised by the job when the model wants it (padding zeros are zeros after that, as in
    Demucs)."""

    model: str
    chunks: list[ChunkSpec]
    shifts: int = 0
    seed: int = 0
    job_id: str = ""


class SeparateResult(Message):
    """Header of the answer: body = float32 (batch, n_stems, 2, length) centre-trimmed outputs
    (all chunks of one request have the same length, or the batch is 1)."""

    model: str
    stems: list[str]
    device: str
    seconds: float  # inference time
    warnings: list[str] = []


# --- fuser ------------------------------------------------------------------------------------


class FuseJob(Message):
    """`PUT /jobs/{id}` on the fuser: what the fused result will be."""

    job_id: str
    plans: list[ChunkPlan]
    model_stems: list[str]  # the stems the predictor returns, in its order
    stem: str | None = None  # one stem: output is [stem, no_stem]; None: all model stems
    norm: Normalisation = Normalisation()
    # storage key of the folder the result goes to (`jobs/<id>/result`: under the data dir on
    # local disk, in the bucket with STORAGE_URL=s3://...; common/storage.py)
    out_key: str = Field(pattern=STORAGE_KEY)
    # per-window RMS of every output stem, for the analysis: windows of `activity_window`
    # frames every `activity_hop` frames (0: none measured)
    activity_window: int = Field(default=0, ge=0)
    activity_hop: int = Field(default=0, ge=0)


class EnsembleMember(Message):
    """One member's fused result (a multi-channel WAV in the job storage, channels =
    `stems` x [L, R]) and its weight."""

    model: str
    result_key: str = Field(pattern=STORAGE_KEY)
    stems: list[str]
    weight: float = Field(gt=0.0, allow_inf_nan=False)


# per stem, the members' weighted mean or weighted median (prediction/ensemble_math.py)
EnsembleMethod = Literal["avg_wave", "median_wave"]
ENSEMBLE_METHODS: tuple[str, ...] = get_args(EnsembleMethod)


class EnsembleJob(Message):
    """`POST /ensembles/{id}` on the fuser: per stem, the members' waveforms combined into the
    job's final files: weighted mean (`avg_wave`) or weighted median (`median_wave`)."""

    job_id: str
    members: list[EnsembleMember] = Field(min_length=2)
    method: EnsembleMethod = "avg_wave"
    stems: list[str]  # output stems in channel order; every member has each of them
    out_key: str = Field(pattern=STORAGE_KEY)
    activity_window: int = Field(default=0, ge=0)
    activity_hop: int = Field(default=0, ge=0)


class AssembledStem(Message):
    """One stem of an assembled result: the stem numbered `index` of the fused result in the
    folder `out_key` of the job storage (a multi-channel WAV, channels = stems x [L, R]:
    `result.wav` once finished, its final prefix while it grows)."""

    name: str
    out_key: str = Field(pattern=STORAGE_KEY)
    index: int = Field(ge=0)


class AssemblyJob(Message):
    """`POST /assemblies/{id}` on the fuser: the job's final files, each stem taken as it is
    from one of several fused results (a chained job: the first stage's stems, a chained
    stem's parts in its place). `POST /assemblies/{id}/extend` copies what is final in every
    one of them so far: the job's result grows while its links run."""

    job_id: str
    stems: list[AssembledStem] = Field(min_length=1)
    n_frames: int = Field(gt=0)  # the track's, and so every fused result's
    out_key: str = Field(pattern=STORAGE_KEY)
    activity_window: int = Field(default=0, ge=0)
    activity_hop: int = Field(default=0, ge=0)


class AssemblyStatus(Message):
    """Answer of `POST /assemblies/{id}/extend`: frames [0, ready_frames) of the job's result
    are final."""

    job_id: str
    ready_frames: int
    n_frames: int


class FuseChunkMeta(Message):
    """Header of `PUT /jobs/{id}/chunks/{index}`: body = float32 (n_stems, 2, length)."""

    chunk: ChunkSpec


class FuseStatus(Message):
    job_id: str
    chunks_planned: int
    received: list[int]  # chunk indices on disk
    # track frames [0, ready_frames) of the result are final (fused from every chunk that
    # covers them, in every pass) and in the job's result dir; n_frames: the whole track
    ready_frames: int = 0
    n_frames: int = 0


class FusedResult(Message):
    """Answer of `POST /jobs/{id}/finalize`."""

    job_id: str
    stems: list[str]
    n_frames: int
    result_key: str  # multi-channel float32 WAV in the job storage, channels = stems x [L, R]
    peak: float  # absolute peak over all stems (may exceed 1.0: float WAV is never clipped)
    activity_db: list[list[float]] = []  # per activity window, per stem: RMS in dBFS


# --- analysis ---------------------------------------------------------------------------------


class AnalysisWindow(Message):
    """Header of `POST /analyse` on fft and cqt: body = float32 (2, m) at 44.1 kHz, the window
    with up to `ANALYSIS_CONTEXT` samples of real audio on each side.

    The window proper is body samples `[context_before, context_before + window_length)`, track
    samples from `start`. The window also computes the track's frame-level series (onset
    strength, chroma) for its own span `[start, start + own_length)`: `own_frames` frames of the
    track's analysis frame grid from frame `start // ANALYSIS_FRAME_HOP`."""

    job_id: str = ""
    index: int = Field(ge=0)
    start_s: float
    duration_s: float
    start: int = Field(default=0, ge=0)  # track sample of the window's first sample
    context_before: int = Field(default=0, ge=0)  # samples of body before the window
    window_length: int | None = Field(default=None, ge=1)  # None: the body after the context
    own_length: int | None = Field(default=None, ge=1)  # None: the window
    own_frames: int | None = Field(default=None, ge=0)  # None: ceil(own_length / frame hop)


class ToneInput(Message):
    """Header of `POST /identify` on the tone identifier: body = float32 (n_frames, n_mels),
    the input `ASTFeatureExtractor` makes (Kaldi log-mel, padded to the model's length and
    normalised with the AudioSet mean / std)."""

    job_id: str = ""
    index: int
    n_frames: int
    n_mels: int


class Label(Message):
    label: str
    score: float


class ToneResult(Message):
    status: Literal["ok", "unavailable"]
    reason: str = ""
    labels: list[Label] = []
    # per stem family (vocals, drums, bass, guitar, piano, other) a score in [0, 1] from the
    # AudioSet labels of `common.instruments.STEM_LABELS`; None when unavailable
    stems_present: dict[str, float] | None = None


class Key(Message):
    # spelled as musicians write the key (transforms/spelling.py): Bb major, C# minor
    tonic: Literal[
        "C",
        "C#",
        "Db",
        "D",
        "D#",
        "Eb",
        "E",
        "F",
        "F#",
        "Gb",
        "G",
        "G#",
        "Ab",
        "A",
        "A#",
        "Bb",
        "B",
    ]
    mode: Literal["major", "minor"]
    confidence: float = Field(ge=0.0, le=1.0)  # Pearson r with the key's profile, clipped


class WindowFeatures(Message):
    """fft's answer (meta header): body = float32 (2 * n_onset + n_blocks,): the window's onset
    strength, then its accent, `n_onset` frames each on the track's frame grid from
    `first_frame`; then the K-weighted sums of squares of the 100 ms loudness steps from
    `first_block` (partial at the span's ends)."""

    index: int
    rms_db: float
    peak_db: float
    loudness_lufs: float | None  # ITU-R BS.1770 integrated loudness; None when gated silent
    spectral_centroid_hz: float
    spectral_rolloff_hz: float
    tone: ToneResult
    first_frame: int
    n_onset: int
    first_block: int
    n_blocks: int


class WindowTonal(Message):
    """cqt's answer (meta header): body = float32 (12, n_frames) chroma (C..B, not normalised)
    on the track's frame grid from `first_frame`."""

    index: int
    key: Key | None  # of the window proper; None when it has no tonal content
    key_reason: str = ""
    chroma: list[float]  # 12 values, C..B: the window's summed chroma, summing to 1 (or all 0)
    first_frame: int


class TrackTonalRequest(Message):
    """Header of cqt's `POST /track`: body = float32 (12, n_frames), the whole track's chroma."""

    job_id: str = ""
    n_samples: int = Field(gt=0)  # track length, samples at 44.1 kHz


class Chord(Message):
    start_s: float
    end_s: float
    chord: str  # "C", "C#m", ... "N" (no chord)


class TrackTonal(Message):
    key: Key | None
    key_reason: str = ""
    chords: list[Chord] | None
    chords_reason: str = ""


class TrackRhythmRequest(Message):
    """Header of fft's `POST /track`: body = float32 (2 * n_frames + n_blocks,), the whole
    track's onset strength, its accent, then its 100 ms K-weighted sums of squares."""

    job_id: str = ""
    n_samples: int = Field(gt=0)
    n_frames: int = Field(ge=0)
    n_blocks: int = Field(ge=0)


class MusicRequest(Message):
    """Header of the whole-track music calls (fft `POST /beats`; cqt `POST /harmony`,
    `POST /transcribe`): body = float32 `(len(rows), n)`, mono audio at 22.05 kHz, one row
    each: what `rows` names ("mix", "drums+bass", "harmonic", "bass", or a stem)."""

    job_id: str = ""
    rows: list[str] = Field(min_length=1)
    beats_s: list[float] | None = None  # /harmony: chords change on beats, sections on bars
    downbeats_s: list[float] | None = None
    stem: str = ""  # /transcribe: the stem the row is ("bass", "vocals", "drums", ...)


class TrackBeats(Message):
    """fft's `POST /beats`: tempo, beats, downbeats and metre, from a trained model."""

    tempo_bpm: float | None
    tempo_confidence: float | None  # mean beat activation at the beats, in [0, 1]
    beats_s: list[float] | None
    downbeats_s: list[float] | None
    time_signature: int | None  # beats a bar
    model: str  # "beatnet" or "madmom"
    licence: str
    reason: str = ""  # why there is no tempo


class Section(Message):
    start_s: float
    end_s: float
    label: str  # "A", "B", ...: repeated parts share a label


class TrackHarmony(Message):
    """cqt's `POST /harmony`: key, chords (one or more beats each) and sections."""

    key: Key | None
    key_reason: str = ""
    chords: list[Chord] | None
    chords_reason: str = ""
    sections: list[Section] | None
    sections_reason: str = ""


class Notes(Message):
    """cqt's `POST /transcribe`: the notes of one stem, `[start_s, end_s, pitch, velocity]`
    each (MIDI pitch and velocity)."""

    stem: str
    notes: list[tuple[float, float, int, int]]


class TrackRhythm(Message):
    tempo_bpm: float | None
    tempo_confidence: float | None
    beats_s: list[float] | None
    downbeats_s: list[float] | None
    rhythm_reason: str = ""
    downbeats_reason: str = ""
    loudness_lufs: float | None  # integrated over the whole track, BS.1770


# --- what every service answers ---------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable: e.g. not_found, invalid_option.")
    message: str = Field(description="For a person: what was expected and what was found.")


class ErrorBody(BaseModel):
    """Every error answer of every service (`common.service.error_body`)."""

    error: ErrorDetail


class HealthAnswer(BaseModel):
    """`GET /health`: 200 once the service can take work, 503 (`starting`) before."""

    status: Literal["ok", "starting"]
    service: str
    pid: int = Field(description="The process answering, so a launcher knows it is its own.")


class ReadyAnswer(BaseModel):
    """`GET /ready`: 200 when every check is "ok", else 503."""

    status: Literal["ready", "not_ready"]
    service: str
    checks: dict[str, str] = Field(description='Per check, "ok" or what is wrong.')
