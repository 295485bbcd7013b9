"""Message schemas between services (version `WIRE_VERSION`).

Audio never travels as JSON: a message is a binary float32 body (see `common.wire`) plus one of
these models, JSON-encoded in the `X-Audiosplit-Meta` header, or a small JSON body for requests
that carry no audio.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WIRE_VERSION = 1


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


class SeparatorInfo(Message):
    """What the predictor knows of one model."""

    name: str
    family: Literal["demucs", "openunmix", "dsp"]
    stems: list[str]
    available: bool
    reason: str  # why available or not, for a person
    segment: int  # S, frames
    overlap: float  # default overlap
    normalise: bool  # whether jobs must standardise the input by whole-track mean/std
    batch_size: int = 1  # windows per /separate request the model runs fastest with


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
    out_dir: str  # where the final files go (the data dir is shared with the gateway)


class FuseChunkMeta(Message):
    """Header of `PUT /jobs/{id}/chunks/{index}`: body = float32 (n_stems, 2, length)."""

    chunk: ChunkSpec


class FuseStatus(Message):
    job_id: str
    chunks_planned: int
    received: list[int]  # chunk indices on disk


class FusedResult(Message):
    """Answer of `POST /jobs/{id}/finalize`."""

    job_id: str
    stems: list[str]
    n_frames: int
    result_path: str  # multi-channel float32 WAV, channels = stems x [L, R]
    stem_paths: dict[str, str]
    peak: float  # absolute peak over all stems (may exceed 1.0: float WAV is never clipped)


# --- analysis ---------------------------------------------------------------------------------


class AnalysisWindow(Message):
    """Header of an analysis request: body = float32 (2, n) at 44.1 kHz."""

    job_id: str = ""
    index: int
    start_s: float
    duration_s: float


class ToneInput(Message):
    """Header of `POST /identify` on the tone identifier: body = float32 (n_frames, n_mels)
    log-mel filterbank as the AST feature extractor makes it (unnormalised)."""

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


class SpectralFeatures(Message):
    index: int
    rms_db: float
    peak_db: float
    loudness_lufs: float | None  # ITU-R BS.1770 integrated loudness; None when gated silent
    spectral_centroid_hz: float
    spectral_rolloff_hz: float
    tone: ToneResult


class KeyEstimate(Message):
    index: int
    key: str | None  # e.g. "A minor"; None when there is no tonal content
    confidence: float
    chroma: list[float]  # 12 values, C..B, summing to 1 (or all 0 for silence)
