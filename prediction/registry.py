"""Which separators exist, whether their weights are present, and the ones loaded in memory.

A model is loaded once per process and kept; `MODEL_MEMORY_BUDGET` bounds how many stay loaded
(least recently used first out). Families other than `dsp` live in their own modules and are
imported only when asked for, so a process that only runs `dsp` never imports torch.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from common.config import Settings
from common.constants import MODEL_NAMES
from common.errors import InvalidOption, ModelUnavailable
from common.interfaces import SeparatorInfo
from common.metrics import MODELS_LOADED
from prediction.catalogue import card_of
from prediction.separator import DspSeparator, Separator, dsp_info
from prediction.weights import is_checkpoint_path

log = logging.getLogger("audiosplit.registry")

DEMUCS_MODELS = ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx_extra")
UMX_MODELS = ("umxhq", "umxl", "umx")
ROFORMER_MODELS = (
    "bs_roformer_viperx",
    "mel_band_roformer_kj",
    "bs_roformer_musdb18",
    "mel_band_roformer_musdb18",
    "mel_band_roformer_karaoke",
    "mel_band_roformer_dereverb",
    "mel_band_roformer_denoise",
    "bs_roformer_sw",
)
MSST_MODELS = ("mdx23c_drumsep", "scnet_xl_ihf")  # MSST's own classes (the msst wheel)
# A new family is one module (probe(name, settings) -> SeparatorInfo, load(name, settings) ->
# Separator; where weights can be fetched also download(name, settings) and, for its progress,
# download_plan(name, settings) -> [[prediction.download.Expected]]) and its names here.
# Families are imported on first use: they import torch.
FAMILIES = {
    **{name: "prediction.demucs_separator" for name in DEMUCS_MODELS},
    **{name: "prediction.umx_separator" for name in UMX_MODELS},
    **{name: "prediction.roformer_separator" for name in ROFORMER_MODELS},
    **{name: "prediction.msst_separator" for name in MSST_MODELS},
}
CHECKPOINT_FAMILY = "prediction.demucs_separator"  # a model named by a checkpoint's path
# ... unless an MSST YAML config sits beside it (same name): a RoFormer checkpoint
CONFIG_CHECKPOINT_FAMILY = "prediction.roformer_separator"


def check_model_name(name: str) -> None:
    """Raise InvalidOption listing the valid names when `name` is none of them."""
    if name in MODEL_NAMES or is_checkpoint_path(name):
        return
    raise InvalidOption(
        f"unknown model {name!r}; valid models: auto, {', '.join(MODEL_NAMES)}, "
        "or the path of a checkpoint file (.th/.pt/.pth/.ckpt)",
        code="unknown_model",
    )


class ModelRegistry:
    def __init__(self, settings: Settings, memory_budget: int | None = None):
        self.settings = settings
        self.memory_budget = memory_budget or int(os.environ.get("MODEL_MEMORY_BUDGET", "2"))
        self._loaded: OrderedDict[str, Separator] = OrderedDict()
        self._lock = threading.Lock()

    def info(self, name: str) -> SeparatorInfo:
        check_model_name(name)
        if name == "dsp":
            info = dsp_info()
        elif name in self._loaded:
            info = self._loaded[name].info
        else:
            info = self._family(name).probe(name, self.settings)
        return info.model_copy(update={"card": card_of(name)})

    def infos(self) -> list[SeparatorInfo]:
        return [self.info(name) for name in MODEL_NAMES]

    def loaded_names(self) -> list[str]:
        return list(self._loaded)

    def get(self, name: str) -> Separator:
        """The loaded separator for `name`, loading it on first use (thread-safe)."""
        check_model_name(name)
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            separator = self._load(name)
            self._loaded[name] = separator
            MODELS_LOADED.labels(name, separator.device).set(1)
            while len(self._loaded) > self.memory_budget:
                old, dropped = self._loaded.popitem(last=False)
                MODELS_LOADED.labels(old, dropped.device).set(0)
                log.info("unloaded %s to stay within %d models", old, self.memory_budget)
            return separator

    def _load(self, name: str) -> Separator:
        if name == "dsp":
            return DspSeparator(
                cores=os.cpu_count() or 1, batch_size=self.settings.predictor_batch_size or 1
            )
        info = self.info(name)
        if not info.available:
            raise ModelUnavailable(info.reason)
        log.info("loading %s", name)
        return self._family(name).load(name, self.settings)

    @staticmethod
    def _family(name: str):
        """The module that knows this model's family (imported on demand: it imports torch)."""
        module = FAMILIES.get(name)
        if module is None and is_checkpoint_path(name):
            beside = [Path(name).expanduser().with_suffix(s) for s in (".yaml", ".yml")]
            module = CONFIG_CHECKPOINT_FAMILY if any(p.is_file() for p in beside) else None
            module = module or CHECKPOINT_FAMILY
        if module is None:
            raise InvalidOption(f"no separator family for {name!r}")
        return importlib.import_module(module)
