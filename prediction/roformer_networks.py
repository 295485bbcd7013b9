"""An MSST config's `model` section as the network of lucidrains' `BS-RoFormer` package (0.4
line), and MSST checkpoints loaded into it.

The package's classes build MSST's modules for most of MSST's config keys. Where they differ:

- `mlp_expansion_factor` (the mask estimators' hidden width, `dim * factor`): the package's
  `MaskEstimator` takes it, but its `BSRoformer` / `MelBandRoformer` never pass it on (always 4).
  A config with another factor gets its mask estimators rebuilt from the package's own
  `MaskEstimator` with that factor, as MSST's classes build them.
- Parameter names of the Mel-Band RoFormer: the package keeps a `None` slot for the linear
  transformer in each layer (`layers.<i>.0`) when there is none, so its time and freq
  transformers are `layers.<i>.1` / `.2`; MSST's (and audio-separator's) list only the
  transformers they build: `layers.<i>.0` / `.1`. Checkpoints are read (and, for the tests,
  written) in MSST's names.
- MSST-only options whose neutral value builds the package's network (`NEUTRAL_KEYS`) are
  dropped; any other value of them is refused: a different network.
- Defaults: a key a config leaves out takes MSST's default (`MSST_DEFAULTS`), not the
  package's. The package's Mel-Band RoFormer builds a linear transformer in each layer unless
  told not to (`linear_transformer_depth=1`); MSST's builds none (0), and the published
  Mel-Band configs that leave the key out (KimberleyJensen's, aufr33's, anvuew's) are
  MSST's networks.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import torch
import yaml

from common.errors import ModelUnavailable

# Keys of MSST's configs that the package's classes lack, with the values under which MSST's
# classes build the very modules the package builds (other values: a different network).
NEUTRAL_KEYS = {
    "linear_transformer_depth": 0,  # BS-RoFormer only: MSST's optional linear attention
    "skip_connection": False,
    "use_torch_checkpoint": False,  # training-time memory saving
    "sage_attention": False,
}
# MSST's defaults for the keys whose package default differs (MelBandRoformer: 1).
MSST_DEFAULTS = {"linear_transformer_depth": 0}
PACKAGE_EXPANSION = 4  # the mask estimators' width factor the package's classes build
LAYER_KEY = re.compile(r"^layers\.(\d+)\.(\d+)\.")


class ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, plus the `!!python/tuple` tag MSST's configs use for band lists."""


ConfigLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node))
)


def read_config(path: Path) -> dict:
    try:
        config = yaml.load(path.read_text(), Loader=ConfigLoader)
    except (OSError, yaml.YAMLError) as e:
        raise ModelUnavailable(f"cannot read the RoFormer config {path}: {e}") from e
    if not isinstance(config, dict):
        raise ModelUnavailable(f"{path}: expected an MSST config (a YAML mapping)")
    for section in ("audio", "model", "training", "inference"):
        if not isinstance(config.get(section), dict):
            raise ModelUnavailable(f"{path}: expected an MSST config with a {section!r} section")
    return config


def architecture_of(config: dict) -> str:
    return "mel_band_roformer" if "num_bands" in config["model"] else "bs_roformer"


def build_model(config: dict, architecture: str | None = None) -> torch.nn.Module:
    """The package's network for a config's `model` section (random weights)."""
    from bs_roformer import BSRoformer, MelBandRoformer

    architecture = architecture or architecture_of(config)
    cls = MelBandRoformer if architecture == "mel_band_roformer" else BSRoformer
    kwargs = {**MSST_DEFAULTS, **config["model"]}
    expansion = int(kwargs.pop("mlp_expansion_factor", PACKAGE_EXPANSION))
    known = inspect.signature(cls.__init__).parameters
    for key in [k for k in kwargs if k not in known]:
        if key in NEUTRAL_KEYS and kwargs[key] == NEUTRAL_KEYS[key]:
            del kwargs[key]
        else:
            raise ModelUnavailable(
                f"{cls.__name__} of the installed bs_roformer has no {key}={kwargs[key]!r} "
                "(an MSST variant this package cannot build)"
            )
    model = cls(**kwargs)
    if expansion != PACKAGE_EXPANSION:
        depth = kwargs.get("mask_estimator_depth", known["mask_estimator_depth"].default)
        widen_mask_estimators(model, expansion, depth)
    return model


def widen_mask_estimators(model: torch.nn.Module, expansion: int, depth: int) -> None:
    """Replace `model`'s mask estimators with the package's `MaskEstimator` of hidden width
    `dim * expansion`, one per stem, over the same bands (what MSST's classes build)."""
    mask_estimator = importlib.import_module(type(model).__module__).MaskEstimator
    old = model.mask_estimators
    dim = old[0].to_freqs[0][0][0].in_features  # the first Linear of the first band's MLP
    model.mask_estimators = torch.nn.ModuleList(
        mask_estimator(
            dim=dim, dim_inputs=old[0].dim_inputs, depth=depth, mlp_expansion_factor=expansion
        )
        for _ in old
    )


def has_empty_linear_slot(model: torch.nn.Module) -> bool:
    """True for the package's Mel-Band RoFormer without linear transformers (see above)."""
    return len(model.layers) > 0 and len(model.layers[0]) == 3 and model.layers[0][0] is None


def shift_layer_keys(state: dict, by: int) -> dict:
    """`layers.<i>.<j>.…` -> `layers.<i>.<j + by>.…`; other keys unchanged."""

    def renamed(key: str) -> str:
        m = LAYER_KEY.match(key)
        if m is None:
            return key
        return f"layers.{m[1]}.{int(m[2]) + by}.{key[m.end() :]}"

    return {renamed(k): v for k, v in state.items()}


def counts_from_one(state: dict) -> bool:
    """Whether a Mel-Band state dict already has the package's names (a `layers.<i>.2`)."""
    return any((m := LAYER_KEY.match(k)) is not None and m[2] == "2" for k in state)


def msst_state_dict(model: torch.nn.Module) -> dict:
    """`model`'s parameters under the names MSST's checkpoints give them."""
    state = model.state_dict()
    return shift_layer_keys(state, -1) if has_empty_linear_slot(model) else state


def load_weights(model: torch.nn.Module, checkpoint: Path, name: str, config: Path) -> None:
    """Load an MSST checkpoint into `model`; ModelUnavailable when it does not fit."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        for key in ("state", "state_dict", "model_state_dict"):  # as MSST unwraps them
            if isinstance(state, dict) and key in state:
                state = state[key]
        if has_empty_linear_slot(model) and not counts_from_one(state):
            state = shift_layer_keys(state, 1)  # MSST's names, not the package's own
        model.load_state_dict(state)
    except Exception as e:
        # torch.load raises anything from UnpicklingError to EOFError; load_state_dict lists
        # the missing and unexpected keys.
        raise ModelUnavailable(
            f"{name}: {checkpoint} does not load into {config}'s network: {e}"
        ) from e
