"""Demucs (HTDemucs, HDemucs and bags of them) as a `Separator`.

Weights are found and loaded the way Demucs itself does: `demucs.pretrained.get_model(name)`
looks in the Hugging Face cache, then in `TORCH_HOME/hub/checkpoints/<sig>-<hash>.th`. We run
that lookup offline (the probe never waits on the hub, and a model counts as present only when
its files are here). Missing weights are fetched by `download`, which runs that same
`get_model` with the hubs online (HF_ENDPOINT, then the legacy `ROOT_URL`, which
`DEMUCS_ROOT_URL` may replace), as `./run.sh fetch-models` does ahead of time.

`separate` is one step of `demucs.apply.apply_model(split=True, shifts=0)`: the job cuts
windows of `model.valid_length(length)` frames around each chunk (see `common.chunks`), we run
every sub-model on them and combine a bag with its per-source weights exactly as `apply_model`
does. Overlap-add of the chunks is linear, so combining per chunk and then fusing equals
Demucs' fusing per sub-model and then combining, to float rounding. With shifts a bag's members
each have their own shifted passes (see `common.chunks.plan_passes`): a chunk that names its
member runs on that member alone, and the fuser combines the passes.
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from demucs.apply import BagOfModels
from demucs.demucs import Demucs
from demucs.hdemucs import HDemucs
from demucs.htdemucs import HTDemucs

from common.config import Settings
from common.constants import SAMPLE_RATE
from common.errors import BadRequest, ModelUnavailable
from common.interfaces import ChunkSpec, SeparatorInfo
from prediction.compiled import compile_for_device
from prediction.devices import TorchSeparator, configure_threads, pick_device
from prediction.download import Expected, download_failed, fetch_refusal
from prediction.weights import (
    hf_hub_cache,
    is_checkpoint_path,
    models_dir_env,
    torch_checkpoints_dir,
)

DEFAULT_OVERLAP = 0.25
FOUR_STEMS = ("drums", "bass", "other", "vocals")

# What the published models are, so a probe can answer without loading them. Segments that a
# bag's yaml sets (hdemucs_mmi, mdx_extra: 44 s) come from that yaml; the rest are the models'
# own. Once loaded, the model's own values replace these.
PUBLISHED_STEMS = {
    "htdemucs": FOUR_STEMS,
    "htdemucs_ft": FOUR_STEMS,
    "htdemucs_6s": (*FOUR_STEMS, "guitar", "piano"),
    "hdemucs_mmi": FOUR_STEMS,
    "mdx_extra": FOUR_STEMS,
}
HTDEMUCS_SEGMENT_S = Fraction(39, 5)  # 7.8 s: the training length of every released HTDemucs

CHECKSUM_STEM = re.compile(r"^(?P<sig>.+)-(?P<checksum>[0-9a-f]{8})$")  # save_with_checksum's


# --- where the weights are --------------------------------------------------------------------


@dataclass(frozen=True)
class WeightLookup:
    """Result of the offline lookup of one named model."""

    found_in: str | None  # a sentence saying where the files are, or None when incomplete
    missing: list[Path]  # files of the legacy layout that are not there
    hf_repo: str  # the Hugging Face repository the model also lives in


def legacy_files(name: str) -> list[str]:
    """The `<sig>-<hash>.th` file names Demucs' legacy repo downloads for `name`."""
    from demucs.pretrained import REMOTE_ROOT, _parse_remote_files

    urls = _parse_remote_files(REMOTE_ROOT / "files.txt")
    bag = yaml.safe_load((REMOTE_ROOT / f"{name}.yaml").read_text())
    return [urls[sig].rsplit("/", 1)[-1] for sig in bag["models"]]


def hf_cached_files(name: str, cache: Path) -> tuple[str, list[Path] | None]:
    """(repo id, the cached yaml + safetensors paths of `name`, or None when any is missing)."""
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name
    from huggingface_hub import try_to_load_from_cache

    repo_id = f"{DEFAULT_NAMESPACE}/{hf_repo_name(name)}"
    bag_file = try_to_load_from_cache(repo_id, f"{name}.yaml", cache_dir=cache)
    if not isinstance(bag_file, str):
        return repo_id, None
    paths = [Path(bag_file)]
    for sig in yaml.safe_load(Path(bag_file).read_text())["models"]:
        weights = try_to_load_from_cache(repo_id, f"{sig}.safetensors", cache_dir=cache)
        if not isinstance(weights, str):
            return repo_id, None
        paths.append(Path(weights))
    return repo_id, paths


def use_legacy_repo(settings: Settings) -> None:
    """Point Demucs' legacy repo where the settings say (DEMUCS_ROOT_URL, DEMUCS_REMOTE_ROOT):
    module globals `get_model` reads on each call, so they hold for this whole process."""
    import demucs.pretrained

    if settings.demucs_root_url:
        demucs.pretrained.ROOT_URL = settings.demucs_root_url.rstrip("/") + "/"
    if settings.demucs_remote_root:
        demucs.pretrained.REMOTE_ROOT = Path(settings.demucs_remote_root)


def lookup_weights(name: str, settings: Settings) -> WeightLookup:
    """Look for `name`'s files where `get_model(name)` will: the HF cache, then TORCH_HOME."""
    use_legacy_repo(settings)
    repo_id, hf_paths = hf_cached_files(name, hf_hub_cache(settings))
    if hf_paths is not None:
        where = f"in the Hugging Face cache ({hf_paths[0].parent})"
        return WeightLookup(found_in=where, missing=[], hf_repo=repo_id)
    checkpoints = torch_checkpoints_dir(settings)
    files = [checkpoints / f for f in legacy_files(name)]
    missing = [f for f in files if not f.is_file()]
    where = None if missing else "in " + ", ".join(str(f) for f in files)
    return WeightLookup(found_in=where, missing=missing, hf_repo=repo_id)


def missing_reason(name: str, lookup: WeightLookup, settings: Settings) -> str:
    files = ", ".join(f.name for f in lookup.missing)
    return (
        f"{name}: weights not found. Expected {files} in {torch_checkpoints_dir(settings)}/ "
        f"(or the Hugging Face cache of {lookup.hf_repo} under {hf_hub_cache(settings)}). "
        f"Run `./run.sh fetch-models {name}` where the network allows, or copy the file(s) there."
    )


# --- probe and load ---------------------------------------------------------------------------


def probe(name: str, settings: Settings) -> SeparatorInfo:
    """What `name` is and whether its weights are here, without loading it."""
    if is_checkpoint_path(name):
        return probe_checkpoint(name, settings)
    if name not in PUBLISHED_STEMS:
        raise ModelUnavailable(
            f"{name!r} is not a Demucs model; Demucs models: {', '.join(PUBLISHED_STEMS)}"
        )
    lookup = lookup_weights(name, settings)
    available = lookup.found_in is not None
    fetchable = False
    if available:
        reason = f"{name}: weights found {lookup.found_in}"
    elif (refusal := fetch_refusal(settings, hub_urls(settings))) is None:
        fetchable = True
        files = ", ".join(f.name for f in lookup.missing)
        reason = (
            f"{name}: weights not here yet ({files} in {torch_checkpoints_dir(settings)}/, or "
            f"{lookup.hf_repo} in the Hugging Face cache): downloaded on first use, or ahead of "
            f"time by `./run.sh fetch-models {name}`."
        )
    else:
        reason = f"{missing_reason(name, lookup, settings)} Not fetched: {refusal}."
    return SeparatorInfo(
        name=name,
        family="demucs",
        stems=list(PUBLISHED_STEMS[name]),
        available=available,
        fetchable=fetchable,
        reason=reason,
        segment=int(SAMPLE_RATE * published_segment_s(name)),
        overlap=DEFAULT_OVERLAP,
        normalise=True,
    )


def published_segment_s(name: str) -> Fraction | float:
    from demucs.pretrained import REMOTE_ROOT

    bag = yaml.safe_load((REMOTE_ROOT / f"{name}.yaml").read_text())
    return bag.get("segment") or HTDEMUCS_SEGMENT_S


def load(name: str, settings: Settings) -> DemucsSeparator:
    """Load `name` (a published name or a checkpoint path) on the configured device."""
    device, warnings = pick_device(settings.device)
    configure_threads(settings.torch_threads)
    if is_checkpoint_path(name):
        path = checkpoint_path(name, settings)
        model = load_checkpoint(path)
        reason = f"checkpoint {path}"
    else:
        info = probe(name, settings)
        if not info.available:
            raise ModelUnavailable(info.reason)
        with offline_hub(settings):
            try:
                model = load_published(name)
            except Exception as e:
                # Demucs raises anything from KeyError to ModelLoadingError for a broken cache.
                raise ModelUnavailable(f"{name}: weights present but not loadable: {e}") from e
        reason = info.reason
    return DemucsSeparator(
        name,
        model,
        device,
        batch_size=settings.predictor_batch_size or None,
        reason=reason,
        warnings=warnings,
        compile_models=settings.compile_models,
        inductor_cache=Path(settings.models_dir) / "torchinductor",
    )


def hub_urls(settings: Settings) -> list[str]:
    """Where `get_model` downloads from: the Hugging Face hub, then the legacy repo."""
    import demucs.pretrained

    use_legacy_repo(settings)
    return [settings.hf_endpoint, demucs.pretrained.ROOT_URL]


def download(name: str, settings: Settings) -> None:
    """Fetch `name`'s weights with Demucs' own `get_model`, the hubs online: huggingface_hub
    checks its files' hashes, torch.hub the SHA-256 prefix of each `<sig>-<hash>.th` (and
    keeps nothing of a download that fails). Raises ModelUnavailable saying what to do."""
    from huggingface_hub import constants as hf

    from prediction.download import hub_answers

    use_legacy_repo(settings)
    # torch.hub's urlopen has no timeout of its own: a stalled download would hang forever.
    socket.setdefaulttimeout(settings.fetch_timeout_s)
    hf_online = hub_answers(settings.hf_endpoint, settings.network_check_ttl_s)
    timeout = int(max(1, settings.fetch_timeout_s))
    saved_env = os.environ.get("TORCH_HOME")
    saved_hf = (hf.HF_HUB_OFFLINE, hf.HF_HUB_CACHE, hf.HF_HUB_DOWNLOAD_TIMEOUT)
    saved_etag = hf.HF_HUB_ETAG_TIMEOUT
    saved_endpoint = (hf.ENDPOINT, hf.HUGGINGFACE_CO_URL_TEMPLATE)
    # HF_ENDPOINT as the settings read it (the hub read its own copy at import)
    endpoint = settings.hf_endpoint.rstrip("/")
    hf.ENDPOINT = endpoint
    hf.HUGGINGFACE_CO_URL_TEMPLATE = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    os.environ["TORCH_HOME"] = models_dir_env(settings)["TORCH_HOME"]
    hf.HF_HUB_OFFLINE, hf.HF_HUB_CACHE = not hf_online, str(hf_hub_cache(settings))
    hf.HF_HUB_DOWNLOAD_TIMEOUT = hf.HF_HUB_ETAG_TIMEOUT = timeout
    try:
        load_published(name)
    except Exception as e:
        raise download_failed(name, e, settings.fetch_timeout_s) from e
    finally:
        hf.HF_HUB_OFFLINE, hf.HF_HUB_CACHE, hf.HF_HUB_DOWNLOAD_TIMEOUT = saved_hf
        hf.HF_HUB_ETAG_TIMEOUT = saved_etag
        hf.ENDPOINT, hf.HUGGINGFACE_CO_URL_TEMPLATE = saved_endpoint
        if saved_env is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = saved_env
    if lookup_weights(name, settings).found_in is None:
        raise ModelUnavailable(f"{name}: downloaded, but its files are not where they belong")


def download_plan(name: str, settings: Settings) -> list[list[Expected]]:
    """What `download` writes, for its progress: the Hugging Face repository's blobs (the bag's
    yaml and one safetensors per member), or else the legacy `<sig>-<hash>.th` files."""
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name
    from demucs.pretrained import REMOTE_ROOT, _parse_remote_files
    from huggingface_hub.file_download import repo_folder_name

    use_legacy_repo(settings)
    repo_id = f"{DEFAULT_NAMESPACE}/{hf_repo_name(name)}"
    sigs = yaml.safe_load((REMOTE_ROOT / f"{name}.yaml").read_text())["models"]
    blobs = hf_hub_cache(settings) / repo_folder_name(repo_id=repo_id, repo_type="model") / "blobs"
    base = f"{settings.hf_endpoint.rstrip('/')}/{repo_id}/resolve/main"
    hub = [Expected(blobs, "", f"{base}/{file}") for file in [f"{name}.yaml"]]
    hub += [Expected(blobs, "", f"{base}/{sig}.safetensors") for sig in sigs]
    urls = _parse_remote_files(REMOTE_ROOT / "files.txt")
    checkpoints = torch_checkpoints_dir(settings)
    legacy = [Expected(checkpoints, urls[s].rsplit("/", 1)[-1], urls[s]) for s in sigs]
    return [hub, legacy]


def load_published(name: str) -> BagOfModels | HDemucs | HTDemucs | Demucs:
    from demucs.pretrained import get_model

    return get_model(name)


@contextmanager
def offline_hub(settings: Settings) -> Iterator[None]:
    """While loading: TORCH_HOME and the HF cache where the probe looked, and the hub offline.

    huggingface_hub reads HF_HUB_OFFLINE and its cache path once, at import, so setting the
    environment alone would not reach an already imported hub; its module constants are what
    `hf_hub_download` reads on each call. Offline, a model the HF cache lacks falls through to
    the TORCH_HOME files at once instead of after the hub's network timeouts.
    """
    from huggingface_hub import constants as hf

    saved_env = {key: os.environ.get(key) for key in ("TORCH_HOME", "HF_HUB_OFFLINE")}
    saved_hf = (hf.HF_HUB_OFFLINE, hf.HF_HUB_CACHE)
    os.environ["TORCH_HOME"] = models_dir_env(settings)["TORCH_HOME"]
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf.HF_HUB_OFFLINE, hf.HF_HUB_CACHE = True, str(hf_hub_cache(settings))
    try:
        yield
    finally:
        hf.HF_HUB_OFFLINE, hf.HF_HUB_CACHE = saved_hf
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- checkpoint files named by path -----------------------------------------------------------


def checkpoint_path(name: str, settings: Settings) -> Path:
    """The checkpoint file `name` names; it must lie under the models dir.

    A Demucs checkpoint is a pickle, and unpickling runs code: the API must not let a request
    name any file on the server (an upload, say) as a model.
    """
    path = Path(name).expanduser().resolve()
    models = Path(settings.models_dir).expanduser().resolve()
    if not path.is_relative_to(models):
        raise ModelUnavailable(
            f"checkpoint {name!r} is outside the models dir {models}; "
            "copy it there (checkpoints are unpickled, so only that dir is trusted)"
        )
    if not path.is_file():
        raise ModelUnavailable(f"no checkpoint file at {path}")
    return path


def read_package(path: Path) -> dict:
    """The Demucs model package in `path` (checksum checked when its name carries one)."""
    from demucs.repo import ModelLoadingError, check_checksum

    named = CHECKSUM_STEM.match(path.stem)
    try:
        if named:
            check_checksum(path, named["checksum"])
        package = torch.load(path, map_location="cpu", weights_only=False)
    except (ModelLoadingError, OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise ModelUnavailable(f"cannot read checkpoint {path}: {e}") from e
    keys = {"klass", "args", "kwargs", "state"}
    if not isinstance(package, dict) or not keys <= package.keys():
        found = sorted(package) if isinstance(package, dict) else type(package).__name__
        raise ModelUnavailable(
            f"{path} is not a Demucs model package: expected a dict with keys {sorted(keys)} "
            f"(as demucs.states.serialize_model writes), found {found}"
        )
    return package


def load_checkpoint(path: Path) -> HTDemucs | HDemucs | Demucs:
    from demucs.states import load_model

    model = load_model(read_package(path))
    model.eval()
    return model


def probe_checkpoint(name: str, settings: Settings) -> SeparatorInfo:
    try:
        path = checkpoint_path(name, settings)
        package = read_package(path)
    except ModelUnavailable as e:
        return SeparatorInfo(
            name=name,
            family="demucs",
            stems=[],
            available=False,
            reason=e.message,
            segment=1,
            overlap=DEFAULT_OVERLAP,
            normalise=True,
        )
    # The constructor's arguments as `load_model` will pass them (it drops unknown keywords),
    # with the class defaults filled in: the sources and segment without building the model.
    signature = inspect.signature(package["klass"])
    kwargs = {k: v for k, v in package["kwargs"].items() if k in signature.parameters}
    bound = signature.bind_partial(*package["args"], **kwargs)
    bound.apply_defaults()
    return SeparatorInfo(
        name=name,
        family="demucs",
        stems=list(bound.arguments["sources"]),
        available=True,
        reason=f"checkpoint {path}",
        segment=int(SAMPLE_RATE * bound.arguments["segment"]),
        overlap=DEFAULT_OVERLAP,
        normalise=True,
    )


# --- the separator ----------------------------------------------------------------------------


def window_rule(model: torch.nn.Module) -> tuple:
    """What decides a sub-model's `valid_length`: equal rules give equal windows for a chunk."""
    if isinstance(model, HTDemucs):
        if model.use_train_segment:
            return ("training_length", int(model.samplerate * model.segment))
        return ("identity",)
    if isinstance(model, Demucs):
        return ("demucs", model.resample, model.depth, model.kernel_size, model.stride)
    if hasattr(model, "valid_length"):
        return ("own", id(model))  # unknown rule: only equal to itself
    return ("identity",)


class DemucsSeparator(TorchSeparator):
    """(batch, 2, window) standardised windows -> (batch, n_stems, 2, window) stems."""

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        device: str = "cpu",
        *,
        batch_size: int | None = None,
        reason: str = "",
        warnings: list[str] | None = None,
        compile_models: str = "off",
        inductor_cache: Path | None = None,
    ):
        """`compile_models` ("auto", "on", "off"; see `prediction.compiled`): run each
        HTDemucs with its core compiled, paying the compile here; `inductor_cache`: where
        inductor keeps compiled code across restarts (`TORCHINDUCTOR_CACHE_DIR` wins)."""
        if isinstance(model, BagOfModels):
            models = list(model.models)
            self.weights = [list(map(float, w)) for w in model.weights]
        else:
            models = [model]
            self.weights = [[1.0] * len(model.sources)]
        check_consistent(name, models)
        first = models[0]
        rule = window_rule(first)
        self.fixed_window = rule[1] if rule[0] == "training_length" else None
        super().__init__(models, device, batch_size, warnings)
        # What forward runs per sub-model: the model, or its compiled twin (same result).
        self.runners, compile_warnings = compile_for_device(
            models, device, compile_models, inductor_cache
        )
        self.load_warnings += compile_warnings
        self.info = SeparatorInfo(
            name=name,
            family="demucs",
            stems=list(first.sources),
            available=True,
            reason=reason or f"{name}: loaded",
            segment=int(first.samplerate * first.segment),
            overlap=DEFAULT_OVERLAP,
            normalise=True,
        )

    @property
    def models(self) -> list[torch.nn.Module]:
        return self.modules

    def padded_length(self, length: int) -> int:
        first = self.models[0]
        if hasattr(first, "valid_length"):
            return int(first.valid_length(length))
        return length

    def check_windows(self, windows: np.ndarray) -> None:
        super().check_windows(windows)
        if self.fixed_window is not None and windows.shape[2] != self.fixed_window:
            raise BadRequest(
                f"{self.info.name} takes windows of exactly {self.fixed_window} frames "
                f"(its training length), got {windows.shape[2]}"
            )

    def member_weights(self) -> list[list[float]]:
        return self.weights if len(self.runners) > 1 else []

    def separate_chunks(
        self, windows: np.ndarray, chunks: list[ChunkSpec]
    ) -> tuple[np.ndarray, list[str]]:
        """The bag on chunks that name no member; each member alone on the chunks that name it
        (in one request or several, whatever the batching)."""
        members = [c.member for c in chunks]
        if all(m is None for m in members):
            return self.separate_with_warnings(windows)
        n = len(self.runners)
        if any(m is None or m >= n for m in members):
            raise BadRequest(
                f"{self.info.name} has {n} member(s) (0 to {n - 1}); the chunks name "
                f"{sorted({str(m) for m in members})}: a request names members for all its "
                "chunks or for none"
            )
        out: np.ndarray | None = None
        warnings: list[str] = []
        for member in sorted(set(members)):
            rows = [i for i, m in enumerate(members) if m == member]
            stems, more = self.separate_with_warnings(
                windows[rows], forward=partial(self.forward, member=member)
            )
            if out is None:
                out = np.empty((len(chunks), *stems.shape[1:]), dtype=stems.dtype)
            out[rows] = stems
            warnings += [w for w in more if w not in warnings]
        assert out is not None
        return out, warnings

    def forward(self, x: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """x (batch, 2, window) -> (batch, n_stems, 2, window): `member` alone, or a bag
        combined as `apply_model` does: sum of weight * estimate over sub-models, divided per
        source by the weights' sum."""
        if member is not None:
            return self.runners[member](x)
        estimates: torch.Tensor | None = None
        totals = [0.0] * len(self.info.stems)
        for runner, model_weights in zip(self.runners, self.weights, strict=True):
            out = runner(x)
            for k, weight in enumerate(model_weights):
                out[:, k, :, :] *= weight
                totals[k] += weight
            estimates = out if estimates is None else estimates.add_(out)
        assert estimates is not None
        for k, total in enumerate(totals):
            estimates[:, k, :, :] /= total
        return estimates


def check_consistent(name: str, models: list[torch.nn.Module]) -> None:
    """One plan must serve every sub-model: same rate, channels, segment and window rule."""
    first = models[0]
    if first.samplerate != SAMPLE_RATE or first.audio_channels != 2:
        raise ModelUnavailable(
            f"{name}: expected a stereo {SAMPLE_RATE} Hz model, found "
            f"{first.audio_channels} channel(s) at {first.samplerate} Hz"
        )
    segments = {int(m.samplerate * m.segment) for m in models}
    if len(segments) > 1:
        raise ModelUnavailable(
            f"{name}: its sub-models have different segments ({sorted(segments)} frames); "
            "audiosplit plans one chunk size per model"
        )
    rules = {window_rule(m) for m in models}
    if len(rules) > 1:
        raise ModelUnavailable(
            f"{name}: its sub-models need different windows for the same chunk "
            f"({sorted(map(str, rules))}); audiosplit sends one window per chunk"
        )
