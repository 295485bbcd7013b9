"""Tone identifier service (port 8004): AudioSet labels of one analysis window with AST.

`POST /identify`: body float32 `(n_frames, n_mels)`, the input `ASTFeatureExtractor` makes (see
`transforms.features.ast_input`), `ToneInput` in the meta header -> JSON `ToneResult` with the
top 5 AudioSet labels and, from all 527, a score per stem family (`common.instruments`).
AudioSet is multi-label, so scores are independent sigmoids, not a softmax.

The model (`AST_MODEL_ID`) is loaded once, from the local Hugging Face cache only. Without its
weights the service still turns healthy and answers every request `unavailable` with a short
reason saying how to get them (where they should be goes to its log, once, at start): analysis
never fails a job. `GET /info` says which case holds, and where the cache is.

Run: `uvicorn --factory prediction.tone_identifier:create_app`.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio
import numpy as np
from anyio import to_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel

from common.config import Settings, get_settings
from common.constants import AST_MODEL_ID
from common.errors import BadRequest
from common.instruments import stems_from_labels
from common.interfaces import Label, ToneInput, ToneResult
from common.metrics import MODELS_LOADED, SEPARATION_SECONDS
from common.service import create_service_app
from common.wire import decode

log = logging.getLogger("audiosplit.tone")

TOP_K = 5
MISSING_WEIGHTS = "AST weights not installed (./run.sh fetch-models ast)"


@dataclass
class ToneModel:
    """The loaded model, or why there is none (`model is None`)."""

    cache_dir: Path
    device: str = "cpu"
    reason: str = ""
    model: Any = None  # ASTForAudioClassification; typed loosely so importing this is cheap
    labels: list[str] = field(default_factory=list)  # index -> AudioSet label
    n_frames: int = 1024  # what the model's position embeddings expect
    n_mels: int = 128


class ToneInfo(BaseModel):
    """`GET /info`: what a person needs to know about the model."""

    model_id: str
    loaded: bool
    reason: str
    device: str
    cache_dir: str
    n_labels: int


def hf_home(settings: Settings) -> Path:
    """HF_HOME from the environment, else `<models dir>/huggingface`."""
    return Path(os.environ.get("HF_HOME") or Path(settings.models_dir) / "huggingface")


def hub_cache_dir(settings: Settings) -> Path:
    """Where Hugging Face keeps downloaded repos: HF_HUB_CACHE, else `<HF_HOME>/hub`."""
    return Path(os.environ.get("HF_HUB_CACHE") or hf_home(settings) / "hub")


def pick_device(requested: str) -> str:
    """CPU unless the settings ask for CUDA and there is one (AST is small next to the
    separators, which get the GPU first)."""
    import torch

    if requested.startswith("cuda"):
        if torch.cuda.is_available():
            return requested
        log.warning("device %s requested but CUDA is not available; AST runs on CPU", requested)
    return "cpu"


MISSING_LOG = (
    "instrument labels off: %s weights not found under %s; run ./run.sh fetch-models ast where "
    "the network allows, or copy them there"
)


def weights_cached(cache: Path) -> bool:
    """Whether the hub cache holds AST's config (a download or a copy put it there): without
    it `from_pretrained` can only fail."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(AST_MODEL_ID, "config.json", cache_dir=cache), str)


def load_tone_model(settings: Settings) -> ToneModel:
    """Load AST from the local cache; never raises (a missing model is a documented state).

    The model's `reason` travels to clients (every window's `tone`, the analysis' `tone_model`):
    it says what is missing and what to do, without the server's paths; the full story, paths
    included, is logged here once, at start."""
    cache = hub_cache_dir(settings)
    if not weights_cached(cache):
        # said before transformers' model code is imported: that import alone costs ~3 s of CPU
        # at every start of a service that then has nothing to load
        log.warning(MISSING_LOG, AST_MODEL_ID, cache)
        return ToneModel(cache, reason=MISSING_WEIGHTS)
    try:
        from transformers import ASTForAudioClassification
    except ImportError as e:
        log.warning("instrument labels off: transformers is not installed (%s)", e)
        return ToneModel(cache, reason="transformers is not installed (pip install .[models])")
    device = "cpu"
    try:
        model = ASTForAudioClassification.from_pretrained(
            AST_MODEL_ID, cache_dir=cache, local_files_only=True
        )
        device = pick_device(settings.device)
        model = model.to(device).eval()
    except OSError:
        log.warning(MISSING_LOG, AST_MODEL_ID, cache)
        return ToneModel(cache, reason=MISSING_WEIGHTS)
    except Exception:  # a corrupt or incompatible checkpoint: degrade, and say why
        log.exception("instrument labels off: loading %s from %s failed", AST_MODEL_ID, cache)
        return ToneModel(
            cache,
            device,
            reason=f"AST weights could not be loaded on {device} (the tone identifier's log "
            "says why)",
        )
    config = model.config
    labels = [config.id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
    MODELS_LOADED.labels("ast", device).set(1)
    log.info("loaded %s from %s on %s (%d labels)", AST_MODEL_ID, cache, device, len(labels))
    return ToneModel(
        cache,
        device=device,
        reason="loaded",
        model=model,
        labels=labels,
        n_frames=config.max_length,
        n_mels=config.num_mel_bins,
    )


def top_labels(scores: np.ndarray, labels: list[str], k: int = TOP_K) -> list[Label]:
    """The k highest of `(n_labels,)` scores, best first."""
    best = np.argsort(-scores, kind="stable")[:k]
    return [Label(label=labels[i], score=round(float(scores[i]), 4)) for i in best]


def identify(tone: ToneModel, values: np.ndarray) -> ToneResult:
    """Top AudioSet labels and stem families of one AST input `(n_frames, n_mels)`."""
    import torch

    x = torch.from_numpy(np.array(values, dtype=np.float32))[None].to(tone.device)
    try:
        with torch.inference_mode():
            logits = tone.model(input_values=x).logits[0]
    except RuntimeError as e:  # out of memory, a broken device: this window goes unlabelled
        log.exception("AST inference failed")
        return ToneResult(status="unavailable", reason=f"AST inference failed: {type(e).__name__}")
    scores = torch.sigmoid(logits.float()).cpu().numpy()
    return ToneResult(
        status="ok",
        labels=top_labels(scores, tone.labels),
        stems_present=stems_from_labels(scores, tone.labels),
    )


router = APIRouter()


def get_tone(request: Request) -> ToneModel:
    return request.app.state.tone


Tone = Annotated[ToneModel, Depends(get_tone)]


@router.post("/identify", response_model=ToneResult)
async def identify_route(request: Request, tone: Tone) -> ToneResult:
    fbank, meta = decode(await request.body(), request.headers, ToneInput)
    if fbank.shape != (meta.n_frames, meta.n_mels):
        raise BadRequest(
            f"header says ({meta.n_frames}, {meta.n_mels}) log-mel, body is {fbank.shape}",
            code="bad_wire_format",
        )
    if not np.isfinite(fbank).all():
        raise BadRequest("the log-mel contains NaN or infinite values", code="bad_tone_input")
    if tone.model is None:
        return ToneResult(status="unavailable", reason=tone.reason)
    if (meta.n_frames, meta.n_mels) != (tone.n_frames, tone.n_mels):
        raise BadRequest(
            f"the model takes ({tone.n_frames}, {tone.n_mels}) frames x mel bins, the input "
            f"is ({meta.n_frames}, {meta.n_mels}): make it with ASTFeatureExtractor",
            code="bad_tone_input",
        )
    # One forward at a time: torch already spreads one over the cores.
    async with request.app.state.limiter:
        with SEPARATION_SECONDS.labels("ast", tone.device).time():
            return await to_thread.run_sync(identify, tone, fbank)


@router.get("/info", response_model=ToneInfo)
async def info(tone: Tone) -> ToneInfo:
    return ToneInfo(
        model_id=AST_MODEL_ID,
        loaded=tone.model is not None,
        reason=tone.reason,
        device=tone.device,
        cache_dir=str(tone.cache_dir),
        n_labels=len(tone.labels),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Before transformers is first imported: huggingface_hub reads HF_HOME at import.
        os.environ.setdefault("HF_HOME", str(hf_home(settings)))
        threads = settings.tone_threads or settings.torch_threads
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        app.state.tone = await to_thread.run_sync(load_tone_model, settings)
        app.state.limiter = anyio.Lock()
        app.state.ready = True
        yield

    return create_service_app(
        "tone",
        settings,
        routers=[router],
        lifespan=lifespan,
        description=f"AudioSet labels of an analysis window with {AST_MODEL_ID}.",
    )
