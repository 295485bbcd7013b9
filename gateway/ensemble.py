"""Ensembles: `model=htdemucs,umxhq` with optional `ensemble_weights=1,2`.

Each member separates the whole track through the same fan-out and fuser as a single model
(its own fuser job, `<job id>-m<k>`, its own chunk plan and normalisation); the fuser then
combines the members' waveforms per stem with the weights: their weighted mean (`avg_wave`,
the default: in MSST's own comparisons never worse than its members) or their weighted median
(`ensemble_method=median_wave`). Members must give the stems asked for: all of them
the same stem names with `stems=all`, or each the one stem asked for. A job that resumes
after a restart runs only the members whose result is not complete (`finished_member`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from common.constants import MODEL_NAMES
from common.errors import InvalidOption, ModelUnavailable
from common.interfaces import ENSEMBLE_METHODS as METHODS
from common.interfaces import SeparatorInfo
from common.resultstore import read_stored_record, result_key
from common.storage import Storage
from gateway.messages import unavailable_message

MAX_MEMBERS = 4


def parse_members(model: str, weights: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """('htdemucs', 'umxhq'), (1.0, 2.0) from the form fields; a 422 naming what is wrong."""
    names = tuple(n.strip() for n in model.split(","))
    if not 2 <= len(names) <= MAX_MEMBERS:
        raise InvalidOption(f"an ensemble has 2 to {MAX_MEMBERS} models, got {len(names)}")
    bad = [n for n in names if n not in MODEL_NAMES]
    if bad:
        raise InvalidOption(
            f"unknown model(s) in the ensemble: {', '.join(map(repr, bad))}; valid members: "
            f"{', '.join(MODEL_NAMES)} (auto cannot be a member)",
            code="unknown_model",
        )
    if len(set(names)) != len(names):
        raise InvalidOption(f"an ensemble names each model once, got {model!r}")
    if not weights.strip():
        return names, (1.0,) * len(names)
    try:
        values = tuple(float(w) for w in weights.split(","))
    except ValueError:
        raise InvalidOption(f"ensemble_weights must be numbers, got {weights!r}") from None
    if len(values) != len(names):
        raise InvalidOption(
            f"ensemble_weights has {len(values)} weights for {len(names)} models ({model})"
        )
    if not all(math.isfinite(w) and w > 0 for w in values):
        raise InvalidOption(f"ensemble_weights must be finite and > 0, got {weights!r}")
    return names, values


def parse_method(raw: str) -> str:
    """`ensemble_method`: avg_wave (default) or median_wave; a 422 naming the choices."""
    method = raw.strip() or METHODS[0]
    if method not in METHODS:
        raise InvalidOption(f"ensemble_method must be one of {', '.join(METHODS)}, got {raw!r}")
    return method


def check_members(
    names: tuple[str, ...], stems: str, infos: dict[str, SeparatorInfo]
) -> tuple[str | None, list[str]]:
    """(stem, output stems) the members can all give; raises when one cannot or lacks weights."""
    for name in names:
        if not (infos[name].available or getattr(infos[name], "fetchable", False)):
            raise ModelUnavailable(f"in the ensemble, {unavailable_message(infos[name])}")
    if stems != "all":
        lacking = [n for n in names if stems not in infos[n].stems]
        if lacking:
            raise InvalidOption(
                f"stems={stems}: {', '.join(lacking)} has no {stems!r} stem "
                f"({'; '.join(f'{n}: ' + ', '.join(infos[n].stems) for n in lacking)})"
            )
        return stems, [stems, f"no_{stems}"]
    first = infos[names[0]].stems
    for name in names[1:]:
        if set(infos[name].stems) != set(first):
            raise InvalidOption(
                f"the ensemble's models give different stems: {names[0]}: {', '.join(first)}; "
                f"{name}: {', '.join(infos[name].stems)}; ask for one stem they share "
                "(e.g. stems=vocals) or choose models with the same stems"
            )
    return None, list(first)


class MemberResult(NamedTuple):
    """A member's fused stems: `result.wav` under `result_key` (stems x [L, R], float32)."""

    result_key: str
    stems: list[str]


def finished_member(store: Storage, out_key: str, n_frames: int) -> MemberResult | None:
    """The result an earlier run of the job left in `out_key` when it is complete: its record
    says all `n_frames` frames are final and published (no stretches pending), and
    `result.wav` holds every one of them. None otherwise: the member runs (again)."""
    record = read_stored_record(store, out_key)
    if record is None or record.pieces or not record.ready_frames == record.n_frames == n_frames:
        return None
    key = result_key(out_key)
    if store.size(key) != record.data_offset + n_frames * record.channels * 4:  # float32
        return None
    return MemberResult(key, list(record.stems))
