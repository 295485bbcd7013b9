"""Where weights live on disk, for the registry and every family module alike (a family module
never imports the registry: the registry imports families, on first use).

Demucs and Open-Unmix weights are where torch.hub caches them (`TORCH_HOME/hub/checkpoints`),
Hugging Face repositories in its hub cache (`HF_HOME/hub`); both default to folders under the
models dir unless the environment names others.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.config import Settings

CHECKPOINT_SUFFIXES = (".th", ".pt", ".pth", ".ckpt")


def is_checkpoint_path(name: str) -> bool:
    """A model named by the path of a checkpoint file rather than by a registry name."""
    return name.endswith(CHECKPOINT_SUFFIXES) and ("/" in name or os.sep in name)


def models_dir_env(settings: Settings) -> dict[str, str]:
    """TORCH_HOME / HF_HOME under the models dir, unless the environment already sets them."""
    models = Path(settings.models_dir)
    return {
        "TORCH_HOME": os.environ.get("TORCH_HOME", str(models / "torch")),
        "HF_HOME": os.environ.get("HF_HOME", str(models / "huggingface")),
    }


def torch_checkpoints_dir(settings: Settings) -> Path:
    """Where `torch.hub.load_state_dict_from_url` caches files."""
    return Path(models_dir_env(settings)["TORCH_HOME"]) / "hub" / "checkpoints"


def hf_hub_cache(settings: Settings) -> Path:
    """The Hugging Face hub cache, resolved as huggingface_hub does (HF_HUB_CACHE wins)."""
    explicit = os.environ.get("HF_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(models_dir_env(settings)["HF_HOME"]).expanduser() / "hub"
