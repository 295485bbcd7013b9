"""The form fields of `POST /api/jobs`, checked, and the choice of model they lead to."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace

from common.constants import AUTO_CHAIN, MODEL_NAMES
from common.errors import InvalidOption, ModelUnavailable
from common.interfaces import SeparatorInfo
from gateway.chains import parse_chain, parse_recipe, resolve_chain
from gateway.ensemble import check_members, parse_members, parse_method
from gateway.messages import auto_reason, unavailable_message, weights_state

log = logging.getLogger("audiosplit.options")

QUALITIES = ("preview", "render")
MAX_SHIFTS = 10
MAX_OVERLAP = 0.9
KNOWN_FIELDS = {
    "model",
    "quality",
    "stems",
    "shifts",
    "overlap",
    "analysis",
    "midi",
    "ensemble_weights",
    "ensemble_method",
    "chain",
    "recipe",
    "url",  # taken by the API before the options are parsed: a link instead of `file`
    "callback_url",
}


@dataclass(frozen=True)
class JobOptions:
    """What the client asked for (None: not given)."""

    model: str = "auto"
    quality: str = "preview"
    stems: str = "all"
    shifts: int | None = None
    overlap: float | None = None
    analysis: bool = True
    midi: bool = True  # the pitched stems as MIDI; part of the analysis (needs analysis=true)
    ensemble_weights: tuple[float, ...] | None = None  # with a comma-separated `model`
    ensemble_method: str = "avg_wave"  # or median_wave (prediction/ensemble_math.py)
    chain: tuple[tuple[str, str], ...] = ()  # (stem, second model): gateway/chains.py
    recipe: str | None = None  # named first stage and chain (gateway/chains.py RECIPES)


@dataclass(frozen=True)
class ResolvedOptions:
    """What will run."""

    model: str
    model_reason: str
    stem: str | None  # None: all stems of the model
    stems: list[str]  # output stem names in channel order
    shifts: int
    overlap: float
    analysis: bool
    # an ensemble's members: [{"model", "weight"}] (weights as given, and normalised); None: one
    members: list[dict] | None = None
    ensemble_method: str | None = None  # avg_wave / median_wave; None: one model
    midi: bool = False  # MIDI of the stems: asked for (default) and analysis on
    # stems separated again: [{"stem", "model", "parts"}] (gateway/chains.py); None: no chain
    chain: list[dict] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def parse_options(fields: dict[str, str], default_model: str = "auto") -> JobOptions:
    unknown = sorted(set(fields) - KNOWN_FIELDS)
    if unknown:
        raise InvalidOption(
            f"unknown form field(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(KNOWN_FIELDS))}"
        )
    recipe = parse_recipe(fields.get("recipe", ""))
    chain = parse_chain(fields.get("chain", ""))
    if recipe is not None and chain:
        raise InvalidOption("give a recipe or a chain, not both (a recipe names its chain)")
    model = fields.get("model", "").strip() or (recipe.model if recipe else default_model)
    weights = None
    method = parse_method(fields.get("ensemble_method", ""))
    if "," in model:
        names, weights = parse_members(model, fields.get("ensemble_weights", ""))
        model = ",".join(names)
    elif fields.get("ensemble_weights", "").strip() or fields.get("ensemble_method", "").strip():
        raise InvalidOption(
            "ensemble_weights and ensemble_method need an ensemble: model=name1,name2[,…]"
        )
    elif model != "auto" and model not in MODEL_NAMES:
        raise InvalidOption(
            f"unknown model {model!r}; valid models: auto, {', '.join(MODEL_NAMES)}",
            code="unknown_model",
        )
    quality = fields.get("quality", "").strip() or "preview"
    if quality not in QUALITIES:
        raise InvalidOption(f"quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
    return JobOptions(
        model=model,
        quality=quality,
        stems=fields.get("stems", "").strip() or "all",
        shifts=_parse_number(fields, "shifts", int, 0, MAX_SHIFTS),
        overlap=_parse_number(fields, "overlap", float, 0.0, MAX_OVERLAP),
        analysis=_parse_bool(fields.get("analysis", "true"), "analysis"),
        midi=_parse_bool(fields.get("midi", "true"), "midi"),
        ensemble_weights=weights,
        ensemble_method=method,
        chain=recipe.chain if recipe else chain,
        recipe=fields.get("recipe", "").strip() or None,
    )


def resolve_options(options: JobOptions, infos: dict[str, SeparatorInfo]) -> ResolvedOptions:
    """The first stage (one model, auto or an ensemble), then the chain's second stages."""
    resolved = resolve_first_stage(options, infos)
    if not options.chain:
        return resolved
    chain, stems = resolve_chain(options.chain, resolved.stems, infos)
    links = ", ".join(f"{link['stem']} by {link['model']}" for link in chain)
    return replace(
        resolved,
        chain=chain,
        stems=stems,
        model_reason=f"{resolved.model_reason}; then {links} (chained)",
    )


def resolve_first_stage(options: JobOptions, infos: dict[str, SeparatorInfo]) -> ResolvedOptions:
    """Pick the model (auto or named), check the stem against it, fill in quality defaults."""
    if "," in options.model:
        return resolve_ensemble(options, infos)
    if options.model == "auto":
        chain = AUTO_CHAIN[options.quality]
        name = next(n for n in chain if infos[n].available or infos[n].fetchable)
        skipped = [infos[n] for n in chain[: chain.index(name)]]
        reason = auto_reason(options.quality, infos[name], skipped)
        for info in skipped:  # the full story, paths and all, is for the server's log
            log.info("model=auto passed over %s: %s", info.name, info.reason)
    else:
        name = options.model
        if not (infos[name].available or infos[name].fetchable):
            log.warning("model %s asked for but unavailable: %s", name, infos[name].reason)
            raise ModelUnavailable(unavailable_message(infos[name]))
        reason = f"asked for by name ({weights_state(infos[name])})"
    info = infos[name]
    if options.stems == "all":
        stem, stems = None, list(info.stems)
    elif options.stems in info.stems:
        stem, stems = options.stems, [options.stems, f"no_{options.stems}"]
    else:
        raise InvalidOption(
            f"stems must be 'all' or one stem of {name}: {', '.join(info.stems)}; "
            f"got {options.stems!r}"
        )
    default_shifts = 1 if options.quality == "render" else 0
    return ResolvedOptions(
        model=name,
        model_reason=reason,
        stem=stem,
        stems=stems,
        shifts=default_shifts if options.shifts is None else options.shifts,
        overlap=info.overlap if options.overlap is None else options.overlap,
        analysis=options.analysis,
        midi=options.analysis and options.midi,
    )


def resolve_ensemble(options: JobOptions, infos: dict[str, SeparatorInfo]) -> ResolvedOptions:
    names = tuple(options.model.split(","))
    weights = options.ensemble_weights or (1.0,) * len(names)
    stem, stems = check_members(names, options.stems, infos)
    total = sum(weights)
    members = [
        {"model": n, "weight": w, "share": round(w / total, 6)}
        for n, w in zip(names, weights, strict=True)
    ]
    default_shifts = 1 if options.quality == "render" else 0
    what = "median" if options.ensemble_method == "median_wave" else "average"
    return ResolvedOptions(
        model=options.model,
        model_reason=f"ensemble asked for by name ({options.ensemble_method}): the weighted "
        f"{what} of " + ", ".join(f"{m['model']} ({m['share']:.0%})" for m in members),
        stem=stem,
        stems=stems,
        shifts=default_shifts if options.shifts is None else options.shifts,
        overlap=options.overlap,  # None: each member's own default
        analysis=options.analysis,
        midi=options.analysis and options.midi,
        members=members,
        ensemble_method=options.ensemble_method,
    )


def _parse_number(fields: dict[str, str], name: str, kind: type, lo: float, hi: float):
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidOption(f"{name} must be a number between {lo} and {hi}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise InvalidOption(f"{name} must be between {lo} and {hi}, got {raw!r}")
    return value


def _parse_bool(raw: str, name: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on", ""):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise InvalidOption(f"{name} must be true or false, got {raw!r}")
