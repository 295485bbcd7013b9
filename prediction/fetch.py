"""`./run.sh fetch-models [NAME...]`: download weights into models/ where a network exists.

Demucs and Open-Unmix weights go where torch.hub caches them (`TORCH_HOME/hub/checkpoints`,
TORCH_HOME defaulting to `models/torch`), the AST tone identifier's into the Hugging Face cache
(`HF_HOME`, default `models/huggingface`). Downloads are verified: torch.hub checks the SHA-256
prefix that Demucs and Open-Unmix put in their file names, the Hugging Face hub checks its
files' hashes, and every model is then loaded once to prove it is usable. RoFormer checkpoints
and their configs come from their published URLs into `models/roformer/` (the checkpoint
checked by loading it). Separators download through the same family `download` the predictor
runs on first use (`prediction.download`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from common.config import Settings
from common.constants import AST_MODEL_ID
from prediction.registry import DEMUCS_MODELS, ROFORMER_MODELS, UMX_MODELS
from prediction.weights import models_dir_env

DEFAULT = ("htdemucs", "ast")
CHOICES = (*DEMUCS_MODELS, *UMX_MODELS, *ROFORMER_MODELS, "ast")


def fetch(name: str, settings: Settings | None = None) -> str:
    """Download and load one model; returns a line for the person running it."""
    import torch

    settings = settings or Settings()
    if name in DEMUCS_MODELS:
        from prediction import demucs_separator

        demucs_separator.download(name, settings)
        model = demucs_separator.load(name, settings.model_copy(update={"compile_models": "off"}))
        model = torch.nn.ModuleList(model.models)
    elif name in UMX_MODELS:
        from prediction import umx_separator

        umx_separator.download(name, settings)
        model = umx_separator.load(name, settings).model
    elif name in ROFORMER_MODELS:
        from prediction import roformer_separator

        if not roformer_separator.probe_files(name, settings).available:
            roformer_separator.download(name, settings)
        model = roformer_separator.load(name, settings).model
    else:
        from transformers import ASTForAudioClassification

        model = ASTForAudioClassification.from_pretrained(AST_MODEL_ID)
    params = sum(p.numel() for p in model.parameters()) if isinstance(model, torch.nn.Module) else 0
    return f"{name}: ok ({params / 1e6:.1f} M parameters)"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="./run.sh fetch-models")
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(CHOICES)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in CHOICES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(CHOICES)}")
    settings = Settings()
    for key, value in models_dir_env(settings).items():
        os.environ.setdefault(key, value)
        print(f"{key}={os.environ[key]}", file=sys.stderr)
    os.environ.pop("HF_HUB_OFFLINE", None)
    failed = 0
    for name in args.names or DEFAULT:
        start = time.perf_counter()
        try:
            line = fetch(name, settings)
        except Exception as e:  # report every model, then fail: a CLI's edge
            failed += 1
            line = f"{name}: FAILED ({type(e).__name__}: {e})"
        print(f"{line} [{time.perf_counter() - start:.1f}s]", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
