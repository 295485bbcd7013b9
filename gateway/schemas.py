"""The public API's documented shapes (`/openapi.json`, `/docs`, `/redoc`): the upload form of
`POST /api/jobs`, the job, error, analysis and model list answers, and what each error status
means.

The routes build plain dicts and answer them as they are (a `JSONResponse` skips FastAPI's
response validation, which would drop a field these models lack); `test/unit/gateway/
test_openapi*.py` checks the dicts against these models so that the two cannot drift apart.
Answers allow fields added later: clients should ignore what they do not know.
"""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from common.apidocs import ERROR_CONTENT
from common.constants import DSP_STEMS, MODEL_NAMES
from common.interfaces import ENSEMBLE_METHODS, ErrorDetail, SeparatorInfo
from gateway.chains import RECIPES
from gateway.options import MAX_OVERLAP, MAX_SHIFTS, QUALITIES
from gateway.store import STATUSES

# --- POST /api/jobs: the multipart form ------------------------------------------------------


class JobSubmission(BaseModel):
    """The song in `file`, every other field optional. The upload is written to disk as it
    arrives, and refused (413) as soon as it passes the size cap."""

    # Not read by FastAPI: gateway/upload.py streams the body, gateway/options.py checks the
    # fields; the enums and bounds below are that parser's own constants.

    model_config = ConfigDict(title="JobSubmission")

    file: bytes = Field(
        None,
        description="The song: any common audio format (WAV, FLAC, MP3, Ogg, M4A, ...); "
        "decoded and checked before the answer. Either `file` or `url` is needed.",
    )
    url: str = Field(
        "",
        description="Instead of `file`: a link to the song, a direct media link or a page "
        "yt-dlp reads (YouTube, SoundCloud, Bandcamp, ...), fetched by the gateway in the job's "
        "stage `fetching`. Only public http(s) addresses (422 naming the rule otherwise). You "
        "are responsible for your rights to what you import.",
    )
    callback_url: str = Field(
        "",
        description="Where to POST the job's JSON when it ends (done, failed, cancelled), "
        "signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`); "
        "default: the tenant's webhook. Public http(s) addresses only.",
    )
    model: str = Field(
        "auto",
        description="`auto`: the best separator whose weights are present or can be fetched, "
        "else the weightless `dsp` one (the job's `model_reason` says which and why); a model "
        f"name ({', '.join(MODEL_NAMES)}); or 2 to 4 names, comma-separated: an ensemble "
        "(see `ensemble_weights`, `ensemble_method`).",
        examples=["auto", "htdemucs", "dsp", "htdemucs,mdx_extra"],
    )
    quality: Literal[QUALITIES] = Field(  # type: ignore[valid-type]
        "preview",
        description="`preview`: shifts 0 (with model=auto: htdemucs); `render`: shifts 1 "
        "(with model=auto: htdemucs_ft). An explicit `model` or `shifts` wins over it.",
    )
    stems: str = Field(
        "all",
        description="`all`: every stem of the model; or one stem name of the model (e.g. "
        f"{', '.join(DSP_STEMS)}), which gives that stem and its complement `no_<stem>`.",
        examples=["all", "vocals"],
    )
    # `examples`: what /docs' "Try it out" fills in (else it fills in the maximum)
    shifts: int = Field(
        None,
        ge=0,
        le=MAX_SHIFTS,
        description="Random time shifts averaged (Demucs' `shifts`); default from `quality`.",
        examples=[0],
    )
    overlap: float = Field(
        None,
        ge=0.0,
        le=MAX_OVERLAP,
        description="Overlap of neighbouring chunks, a fraction of a segment; default: the "
        "model's own (0.25 for Demucs).",
        examples=[0.25],
    )
    analysis: bool = Field(
        True,
        description="Whether to analyse the song (key, tempo, beats, downbeats, chords, "
        "sections, labels per window): `GET /api/jobs/{id}/analysis`.",
    )
    midi: bool = Field(
        True,
        description="With analysis: the pitched stems (and drums) as MIDI, with the track's tempo "
        "map: `GET /api/jobs/{id}/midi` and `/midi/{stem}`, and in the ZIP.",
    )
    # empty = not given: only an ensemble may give these two (a 422 with one model)
    ensemble_weights: str = Field(
        "",
        description="With an ensemble `model` only: one positive weight per member, "
        "comma-separated (e.g. `1,2`); empty: equal weights.",
    )
    ensemble_method: Literal[("", *ENSEMBLE_METHODS)] = Field(  # type: ignore[valid-type]
        "",
        description="With an ensemble `model` only: per stem, the members' weighted mean "
        "(`avg_wave`) or weighted median (`median_wave`) waveform; empty: avg_wave.",
    )
    chain: str = Field(
        "",
        description="Stems separated again by a second model, `STEM>MODEL`, comma-separated or "
        "the field repeated (e.g. `vocals>mel_band_roformer_karaoke,drums>mdx23c_drumsep`): "
        "each such stem is replaced in `stems` by its parts, `<stem>-<part>` (`vocals-lead`).",
    )
    recipe: Literal[("", *RECIPES)] = Field(  # type: ignore[valid-type]
        "",
        description="A named first stage and chain: "
        + "; ".join(
            f"`{name}`: {r.label} ({r.model}, then "
            + ", ".join(f"{stem}>{model}" for stem, model in r.chain)
            + ")"
            for name, r in RECIPES.items()
        )
        + ". A `model` given beside it replaces the first stage; not with `chain`.",
    )


def job_submission_body() -> dict:
    """`POST /api/jobs`'s requestBody for the spec (`openapi_extra`): the form above, with no
    `default: null` for the fields whose default depends on other fields."""
    schema = JobSubmission.model_json_schema()
    for prop in schema["properties"].values():
        if prop.get("default", ...) is None:
            del prop["default"]
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }


# --- answers ----------------------------------------------------------------------------------


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class Channel(Answer):
    channel: int = Field(ge=0, description="Channel of the multi-channel result WAV.")
    stem: str
    side: Literal["left", "right"]


class JobLinks(Answer):
    """Where the job's results are; a link is present once it answers."""

    self_: str = Field(alias="self")
    analysis: str | None = Field(None, description="Unless the job was sent analysis=false.")
    result: str | None = Field(
        None, description="The multi-channel WAV: once done, or while running its final prefix."
    )
    stems: dict[str, str] | None = Field(None, description="Per stem, its URL.")
    zip: str | None = Field(None, description="Once done: all stems and the analysis.")
    mix: str | None = Field(
        None,
        description="Once done: the stems mixed, stretched and transposed (query: speed, "
        "semitones, gains, pan, format).",
    )
    midi: str | None = Field(
        None, description="Once done, unless midi=false: the stems as one multi-track MIDI file."
    )
    cancel: str | None = Field(None, description="While queued or running: POST to cancel.")


class EnsembleShare(Answer):
    model: str
    weight: float
    share: float = Field(description="The weight over the sum of the weights.")


class ChainLink(Answer):
    stem: str = Field(description="The first stage's stem separated again.")
    model: str = Field(description="The model that separates it.")
    parts: list[str] = Field(description="The stems it is replaced by, `<stem>-<part>`.")


class JobOptionsUsed(Answer):
    """The options the job runs with, defaults filled in."""

    stem: str | None = Field(None, description="The one stem asked for; null: all.")
    shifts: int | None = None
    overlap: float | None = Field(None, description="null: each ensemble member's own.")
    analysis: bool | None = None
    midi: bool | None = None
    members: list[EnsembleShare] | None = Field(None, description="An ensemble's members.")
    ensemble_method: Literal[ENSEMBLE_METHODS] | None = None  # type: ignore[valid-type]
    chain: list[ChainLink] | None = Field(None, description="Stems separated again.")


class WebhookState(Answer):
    url: str
    status: Literal["waiting", "pending", "delivered", "failed"] = Field(
        description="waiting: the job has not ended; pending: being delivered or retried."
    )
    attempts: int
    last_error: str | None


class Job(Answer):
    """A job, as `POST /api/jobs` and `GET /api/jobs/{id}` answer it."""

    id: str
    status: Literal[STATUSES]  # type: ignore[valid-type]
    progress: float = Field(ge=0.0, le=1.0, description="Chunks done / chunks planned.")
    stage: str = Field(description="What it does now: queued, planning, separating, ...")
    model: str = Field(description="The model that runs (a comma list: an ensemble).")
    model_reason: str = Field(description="Why that model, for a person.")
    notice: str | None = Field(
        description="One sentence about the whole result a person must not miss (e.g. that "
        "the weightless dsp separator made it), or null."
    )
    stems: list[str] = Field(description="The stems produced, in channel order.")
    channels: list[Channel] = Field(description="Stem and side of each result channel.")
    eta_s: float | None = Field(description="Seconds left from the pace so far; null: unknown.")
    peak: float | None = Field(
        description="Once done: the stems' absolute peak (float WAVs may exceed 1.0)."
    )
    error: ErrorDetail | None = Field(description="Why it failed; null unless failed.")
    warnings: list[str]
    notes: list[str]
    created_at: str = Field(description="UTC, ISO 8601.", examples=["2026-01-31T12:00:00Z"])
    updated_at: str = Field(description="UTC, ISO 8601.")
    duration_s: float = Field(description="Length of the song, seconds.")
    ready_s: float = Field(description="Seconds from the start of the result that are final.")
    filename: str = Field(description="The upload's file name, made safe.")
    source_url: str | None = Field(None, description="An imported song's link (`url=`).")
    title: str | None = Field(None, description="An imported song's title, as its page says.")
    webhook: WebhookState | None = Field(None, description="Its callback, when it has one.")
    queue_position: int | None = Field(
        None, description="A queued job's place in the queue (1: next); only on GET of one job."
    )
    options: JobOptionsUsed
    links: JobLinks


class JobList(Answer):
    jobs: list[Job] = Field(description="Newest first.")
    total: int = Field(description="How many jobs match, on every page together.")
    next: str | None = Field(description="The next page's URL; null on the last page.")


class Usage(Answer):
    tenant: str = Field(description="The tenant's name (`open` without keys).")
    admin: bool
    minutes_today: float = Field(description="Audio minutes accepted in the last 24 h.")
    minutes_per_day: float | None = Field(description="The daily quota; null: none.")
    minutes_left: float | None = Field(description="What is left of it now; null: no quota.")
    next_minutes_free_in_s: float | None = Field(
        description="When the oldest accepted minutes leave the 24 h window."
    )
    running: int
    queued: int
    concurrent: int | None = Field(description="Jobs run at once; null: no limit of its own.")


# GET /api/models: what the predictor knows of each model, as it says it (less the wire
# version): made from the predictor's own message so that the two stay one.
ModelInfo = create_model(
    "ModelInfo",
    __base__=Answer,
    __doc__=SeparatorInfo.__doc__,
    **{
        name: (f.annotation, f)
        for name, f in SeparatorInfo.model_fields.items()
        if name != "version"
    },
)


class AnalysisModel(Answer):
    task: Literal["beats", "midi"]
    name: str
    licence: str


class ModelTask(Answer):
    task: str = Field(examples=["lead_backing"])
    label: str = Field(description="What a person asks for.", examples=["lead and backing vocals"])
    models: list[str] = Field(description="The models made for it.")
    recipes: list[str] = Field(description="The recipes that chain models to give it.")


class RecipeInfo(Answer):
    name: str = Field(examples=["karaoke"])
    task: str
    label: str
    model: str = Field(description="The first stage.")
    chain: str = Field(description="As the `chain` field takes it.", examples=["vocals>dsp"])


class ModelList(Answer):
    models: list[ModelInfo]  # type: ignore[valid-type]
    tasks: list[ModelTask] = Field([], description="The models grouped by what they are for.")
    recipes: list[RecipeInfo] = Field(
        [], description="Named first stages and chains (`recipe` of POST /api/jobs)."
    )
    analysis: list[AnalysisModel] = Field(
        [], description="The trained models the analysis runs (BEAT_MODEL picks the beats')."
    )


class Key(Answer):
    tonic: str = Field(examples=["Bb"], description="Spelled as musicians write the key.")
    mode: Literal["major", "minor"]
    confidence: float


class TimedChord(Answer):
    start_s: float
    end_s: float
    chord: str = Field(
        description='Spelled from the key: "Bb", "Ebm", "F#m" ...; "N": no chord. One beat at '
        "least, changing on beats."
    )


class TimedSection(Answer):
    start_s: float
    end_s: float
    label: str = Field(description='"A", "B", ...: repeated parts share a label.')


class ModelUsed(Answer):
    name: str
    licence: str


class MidiInfo(Answer):
    stems: list[str] = Field(description="The stems with a track in the MIDI file.")
    notes: dict[str, int] = Field(description="Notes per stem.")
    model: ModelUsed


class TrackAnalysis(Answer):
    """The whole track; a part that could not be measured is null, `reasons` says why."""

    duration_s: float | None = None
    key: Key | None = None
    tempo_bpm: float | None = None
    tempo_confidence: float | None = None
    beats_s: list[float] | None = None
    downbeats_s: list[float] | None = None
    time_signature: int | None = Field(None, description="Beats a bar.")
    chords: list[TimedChord] | None = None
    sections: list[TimedSection] | None = None
    midi: MidiInfo | None = None
    sources: dict[str, str] = Field(
        {}, description='What each part was measured on: "mix", "stems", "drums+bass".'
    )
    models: dict[str, ModelUsed] = Field({}, description="The trained models that ran.")
    loudness_lufs: float | None = None
    peak_dbfs: float | None = None
    reasons: dict[str, str] = {}
    errors: list[str] | None = Field(None, description="Parts of the analysis that failed.")


class Label(Answer):
    label: str = Field(description="An AudioSet class name.")
    score: float


class WindowTone(Answer):
    """Whether AST labelled this window."""

    status: Literal["ok", "unavailable"]
    reason: str = ""


class WindowAnalysis(Answer):
    """One analysis window (10.24 s)."""

    index: int
    start_s: float
    duration_s: float
    labels: list[Label] = []
    stems_present: dict[str, float] | None = None
    stems_present_source: Literal["ast", "stem_activity"] | None = None
    stem_activity: dict[str, float] | None = Field(None, description="Per stem, RMS in dBFS.")
    key: Key | None = None
    key_reason: str | None = None
    chroma: list[float] | None = None
    rms_db: float | None = None
    peak_db: float | None = None
    loudness_lufs: float | None = None
    spectral_centroid_hz: float | None = None
    spectral_rolloff_hz: float | None = None
    tone: WindowTone | None = None
    errors: list[str] | None = None


class ToneModel(Answer):
    """Whether the AudioSet labeller (AST) labelled the windows, and if not why."""

    name: str
    status: Literal["ok", "unavailable"]
    available: bool | None = None
    reason: str = ""


class Analysis(Answer):
    """`GET /api/jobs/{id}/analysis`."""

    track: TrackAnalysis
    windows: list[WindowAnalysis]
    tone_model: ToneModel


# --- error statuses ---------------------------------------------------------------------------

ERROR_MEANINGS = {
    400: "The body is no multipart/form-data with one `file` (bad_request, bad_content_type, "
    "bad_multipart).",
    401: "API keys are on (API_KEYS) and X-API-Key is missing or unknown (unauthorized).",
    404: "No such job, or none of its files (not_found).",
    409: "The job's results are not ready: it is queued, running or failed (not_ready).",
    413: "The upload is larger than the size cap (upload_too_large).",
    415: "The upload is no audio that can be decoded (undecodable_audio).",
    422: "A parameter or form field has a value that is not accepted (invalid_request, "
    "invalid_option).",
    429: "Too many submissions from this client (rate_limited): wait `Retry-After` seconds.",
    502: "A service behind the gateway failed or could not be reached (upstream_error).",
    503: "The job database did not answer in time (store_unavailable); try again.",
    507: "The job storage failed: disk full, object storage unreachable (storage_error).",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}


def error_responses(*codes: int, why: dict[int, str] | None = None) -> dict[int | str, dict]:
    """The `responses=` entries of these error statuses, each with the error body; `why`
    replaces a status's generic meaning where a route has a more precise one."""
    why = why or {}
    responses: dict[int | str, dict] = {}
    for code in codes:
        # the content spelled out, not `model`: FastAPI would give a model the media type of the
        # route's own answer (audio/wav on the result routes)
        responses[code] = {
            "description": why.get(code, ERROR_MEANINGS[code]),
            "content": copy.deepcopy(ERROR_CONTENT),
        }
        if code == 429:
            responses[code]["headers"] = RETRY_AFTER
    return responses


def binary(*media_types: str, description: str, headers: dict | None = None) -> dict:
    """A 200 answer of bytes in one of `media_types` (an audio file, a ZIP)."""
    content = {m: {"schema": {"type": "string", "format": "binary"}} for m in media_types}
    answer = {"description": description, "content": content}
    if headers:
        answer["headers"] = headers
    return {200: answer}
