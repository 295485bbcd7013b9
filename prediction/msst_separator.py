"""MDX23C and SCNet checkpoints of ZFTurbo's Music-Source-Separation-Training (MSST) as a
`Separator`, their networks built by MSST's own classes (the `msst` wheel).

A model is a name of `CHECKPOINTS`: a state dict and the YAML config published beside it,
kept in `<models>/<architecture>/` (`mdx23c/`, `scnet/`) and fetched on first use from the
published URLs, or from the mirror ROFORMER_ROOT_URL names (one mirror for all MSST files):
the config first, read as a config, then the checkpoint, loaded strictly into the config's
network before it is renamed into place.

MSST's reference inference (`msst.utils.model_utils.demix`) runs these architectures in its
"generic" mode, the very chunking its RoFormers use (reflect padding, chunks every
`chunk // num_overlap`, linear fades, divided by the summed fades): `RoformerSeparator` runs it
here unchanged, on the network `build_network` gives it.

`import msst...` first runs `msst/__init__.py`; measured, it costs 70 ms and imports only the
standard library and PyYAML (its runtimes are lazy), and the two model modules then add 60 ms
(ml_collections, tqdm): a plain import, no loading by path.
"""

from __future__ import annotations

from pathlib import Path

import torch

from common.config import Settings
from common.errors import ModelUnavailable
from common.interfaces import SeparatorInfo
from prediction.devices import configure_threads, pick_device
from prediction.download import Expected, fetch_refusal
from prediction.roformer_networks import read_config
from prediction.roformer_separator import (
    DEFAULT_CHUNK,
    MSST_RELEASES,
    OVERLAP,
    SEGMENT_CHUNKS,
    Checkpoint,
    Inference,
    RoformerSeparator,
    fetch_files,
)

JARREDOU_RELEASES = "https://github.com/jarredou/models/releases/download"
CHECKPOINTS = {
    # MSST's docs/pretrained_models.md, "Multi-stem models": DrumSep mdx23c by aufr33 and
    # jarredou, released in jarredou/models. Its config names six stems (training.instruments);
    # a drums stem in, drum parts out.
    "mdx23c_drumsep": Checkpoint(
        architecture="mdx23c",
        checkpoint_url=f"{JARREDOU_RELEASES}/aufr33-jarredou_MDX23C_DrumSep_model_v0.1/"
        "aufr33-jarredou_DrumSep_model_mdx23c_ep_141_sdr_10.8059.ckpt",
        config_url=f"{JARREDOU_RELEASES}/aufr33-jarredou_MDX23C_DrumSep_model_v0.1/"
        "aufr33-jarredou_DrumSep_model_mdx23c_ep_141_sdr_10.8059.yaml",
        stems=("kick", "snare", "toms", "hh", "ride", "crash"),
        published_sdr="DrumSep test: kick 14.54, snare 9.79, toms 10.63, hh 3.19, cymbals "
        "(ride + crash) 6.08 (MSST's table)",
    ),
    # MSST's docs/pretrained_models.md, "Multi-stem models (MUSDB18HQ)": trained on MUSDB18-HQ
    # only (release v1.0.15, "SCNet XL IHF").
    "scnet_xl_ihf": Checkpoint(
        architecture="scnet",
        checkpoint_url=f"{MSST_RELEASES}/v1.0.15/model_scnet_ep_36_sdr_10.0891.ckpt",
        config_url=f"{MSST_RELEASES}/v1.0.15/config_musdb18_scnet_xl_more_wide_v5.yaml",
        stems=("drums", "bass", "other", "vocals"),
        published_sdr="MUSDB18 test avg 10.08 (bass 9.23, drums 11.81, vocals 11.42, other "
        "7.88); Multisong avg 9.92 (MSST's table)",
    ),
}


def build_network(config: dict, architecture: str) -> torch.nn.Module:
    """MSST's network for a config (random weights), as MSST's `get_model_from_config` builds
    these two architectures: MDX23C from the whole config (attribute access, an
    `ml_collections.ConfigDict`), SCNet from its `model` section."""
    try:
        if architecture == "mdx23c":
            from ml_collections import ConfigDict
            from msst.models.mdx23c_tfc_tdf_v3 import TFC_TDF_net

            return TFC_TDF_net(ConfigDict(config))
        if architecture == "scnet":
            from msst.models.scnet import SCNet

            return SCNet(**config["model"])
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        # a key the class lacks, or one it needs missing: another network than published
        raise ModelUnavailable(
            f"MSST's {architecture} cannot be built from this config: {e}"
        ) from e
    raise ModelUnavailable(f"no MSST network for the architecture {architecture!r}")


def load_weights(model: torch.nn.Module, checkpoint: Path, name: str, config: Path) -> None:
    """Load an MSST checkpoint into `model`, every key (strict); ModelUnavailable when it does
    not fit."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        for key in ("state", "state_dict", "model_state_dict"):  # as MSST unwraps them
            if isinstance(state, dict) and key in state:
                state = state[key]
        model.load_state_dict(state)
    except Exception as e:
        # torch.load raises anything from UnpicklingError to EOFError; load_state_dict lists
        # the missing and unexpected keys.
        raise ModelUnavailable(
            f"{name}: {checkpoint} does not load into {config}'s network: {e}"
        ) from e


def model_dir(name: str, settings: Settings) -> Path:
    return Path(settings.models_dir) / CHECKPOINTS[name].architecture


def files_of(name: str, settings: Settings) -> tuple[Path, Path]:
    """(checkpoint, config) where a registry name's files live."""
    checkpoint, config = CHECKPOINTS[name].files
    return model_dir(name, settings) / checkpoint, model_dir(name, settings) / config


def model_info(
    name: str, inference: Inference | None, *, available: bool, reason: str
) -> SeparatorInfo:
    """`inference`: None while the config is not there to read (stems as published)."""
    entry = CHECKPOINTS[name]
    return SeparatorInfo(
        name=name,
        family=entry.architecture,
        stems=inference.stems if inference else list(entry.stems),
        available=available,
        reason=reason,
        segment=SEGMENT_CHUNKS * (inference.chunk if inference else DEFAULT_CHUNK),
        overlap=OVERLAP,
        normalise=bool(inference and inference.normalise),
    )


def probe_files(name: str, settings: Settings) -> SeparatorInfo:
    """Whether the checkpoint and its config are on disk, without loading the weights."""
    entry, paths = CHECKPOINTS[name], files_of(name, settings)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        reason = (
            f"{name}: not found: expected {', '.join(missing)} in {model_dir(name, settings)}/. "
            f"Download {entry.checkpoint_url} and {entry.config_url} there."
        )
        return model_info(name, None, available=False, reason=reason)
    inference = Inference.of(read_config(paths[1]))
    return model_info(name, inference, available=True, reason=f"{name}: found {paths[0]}")


def probe(name: str, settings: Settings) -> SeparatorInfo:
    """Whether the files are here, and if not whether they may be fetched now."""
    info = probe_files(name, settings)
    if info.available:
        return info
    refusal = fetch_refusal(settings, list(published_urls(name, settings).values()))
    if refusal is not None:
        return info.model_copy(update={"reason": f"{info.reason} Not fetched: {refusal}."})
    where = model_dir(name, settings)
    reason = f"{name}: weights not here yet (in {where}/): downloaded on first use."
    return info.model_copy(update={"fetchable": True, "reason": reason})


def published_urls(name: str, settings: Settings) -> dict[str, str]:
    return CHECKPOINTS[name].urls(settings.roformer_root_url)


def download_plan(name: str, settings: Settings) -> list[list[Expected]]:
    """The files `download` writes, for its progress (`<file>.<hex>.partial`, then `<file>`)."""
    where = model_dir(name, settings)
    return [[Expected(where, f, u) for f, u in published_urls(name, settings).items()]]


def download(name: str, settings: Settings) -> None:
    """Fetch a registry name's config, then its checkpoint (`roformer_separator.fetch_files`)."""
    entry = CHECKPOINTS[name]
    checkpoint, config_path = files_of(name, settings)

    def loads(config: dict, path: Path) -> None:
        load_weights(build_network(config, entry.architecture), path, name, config_path)

    urls = published_urls(name, settings)
    fetch_files(name, (checkpoint, config_path), urls, entry.sha256, settings, loads)


def load(name: str, settings: Settings) -> MsstSeparator:
    info = probe_files(name, settings)
    if not info.available:
        raise ModelUnavailable(info.reason)
    checkpoint, config_path = files_of(name, settings)
    config = read_config(config_path)
    model = build_network(config, CHECKPOINTS[name].architecture)
    load_weights(model, checkpoint, name, config_path)
    device, warnings = pick_device(settings.device)
    configure_threads(settings.torch_threads)
    return MsstSeparator(
        name,
        model,
        Inference.of(config),
        device,
        batch_size=settings.predictor_batch_size or None,
        reason=info.reason,
        warnings=warnings,
    )


class MsstSeparator(RoformerSeparator):
    """MSST's generic-mode chunking (see `RoformerSeparator`) around an MDX23C or SCNet:
    (batch, 2, window) -> (batch, n_stems, 2, window), the reference's result on each window's
    centre."""

    def __init__(self, name: str, model: torch.nn.Module, inference: Inference, *args, **kw):
        super().__init__(name, model, inference, *args, **kw)
        self.info = model_info(name, inference, available=True, reason=self.info.reason)
