"""Chained separation: `chain=STEM>MODEL` separates a stem of the first stage again.

`chain=vocals>mel_band_roformer_karaoke,drums>mdx23c_drumsep` (repeatable or comma-separated):
the first stage (one model, `auto` or an ensemble) gives its stems; each named stem is then
separated by its second model, through the same plan, fan-out and fuser as any model, and is
replaced in the job's stems by its parts, `<stem>-<part>` (`vocals-lead`, `drums-kick`), in
the first stage's order. A recipe names a first stage and its chain for what people ask for
(`recipe=karaoke`); `model` given beside it replaces the recipe's first stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.constants import MODEL_NAMES
from common.errors import InvalidOption, ModelUnavailable
from common.interfaces import SeparatorInfo
from gateway.messages import unavailable_message

MAX_LINKS = 4  # second stages in one job (a 4-stem first stage, each stem again)
PART_SEPARATOR = "-"  # `<stem>-<part>`: stem names themselves never hold one


@dataclass(frozen=True)
class Recipe:
    task: str  # what it gives: one of prediction.catalogue.TASKS
    label: str  # what the page offers
    model: str  # the first stage
    chain: tuple[tuple[str, str], ...]  # (stem, second model)


RECIPES = {
    "karaoke": Recipe(
        "lead_backing",
        "lead and backing vocals",
        "htdemucs",
        (("vocals", "mel_band_roformer_karaoke"),),
    ),
    "drum_parts": Recipe("drum_parts", "drum parts", "htdemucs", (("drums", "mdx23c_drumsep"),)),
    "dry_vocals": Recipe(
        "dereverb", "vocals without reverb", "htdemucs", (("vocals", "mel_band_roformer_dereverb"),)
    ),
    "clean_vocals": Recipe(
        "denoise", "vocals without noise", "htdemucs", (("vocals", "mel_band_roformer_denoise"),)
    ),
}


def parse_chain(raw: str) -> tuple[tuple[str, str], ...]:
    """`vocals>model_a,drums>model_b` -> (("vocals", "model_a"), ("drums", "model_b")); a 422
    naming what is wrong. Empty: no chain."""
    links = []
    for item in (i.strip() for i in raw.split(",")):
        if not item:
            continue
        stem, sep, model = (part.strip() for part in item.partition(">"))
        if not sep or not stem or not model:
            raise InvalidOption(f"chain: expected STEM>MODEL (e.g. vocals>dsp), got {item!r}")
        if model not in MODEL_NAMES:
            raise InvalidOption(
                f"chain {item!r}: unknown model {model!r}; valid models: {', '.join(MODEL_NAMES)}",
                code="unknown_model",
            )
        links.append((stem, model))
    stems = [s for s, _ in links]
    if len(set(stems)) != len(stems):
        raise InvalidOption(f"chain: each stem is chained once, got {raw!r}")
    if len(links) > MAX_LINKS:
        raise InvalidOption(f"chain: at most {MAX_LINKS} stems are separated again")
    return tuple(links)


def parse_recipe(raw: str) -> Recipe | None:
    name = raw.strip()
    if not name:
        return None
    if name not in RECIPES:
        raise InvalidOption(
            f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}", code="unknown_recipe"
        )
    return RECIPES[name]


def resolve_chain(
    links: tuple[tuple[str, str], ...], first_stems: list[str], infos: dict[str, SeparatorInfo]
) -> tuple[list[dict], list[str]]:
    """([{"stem", "model", "parts"}], the job's stems): each chained stem replaced by its parts
    in place. Raises when a stem is not the first stage's or a second model lacks weights."""
    resolved = []
    stems = list(first_stems)
    for stem, model in links:
        if stem not in first_stems:
            raise InvalidOption(
                f"chain {stem}>{model}: the first stage gives no {stem!r} stem "
                f"(it gives {', '.join(first_stems)})"
            )
        info = infos[model]
        if not (info.available or info.fetchable):
            raise ModelUnavailable(f"in the chain, {unavailable_message(info)}")
        parts = [f"{stem}{PART_SEPARATOR}{part}" for part in info.stems]
        at = stems.index(stem)
        stems[at : at + 1] = parts
        resolved.append({"stem": stem, "model": model, "parts": parts})
    return resolved, stems


def parent_stem(name: str) -> str:
    """The first stage's stem a part comes from (`vocals-lead` -> `vocals`); a stem's own."""
    return name.split(PART_SEPARATOR, 1)[0]


def recipe_json(name: str, recipe: Recipe) -> dict:
    return {
        "name": name,
        "task": recipe.task,
        "label": recipe.label,
        "model": recipe.model,
        "chain": ",".join(f"{stem}>{model}" for stem, model in recipe.chain),
    }


def tasks_json(infos: list[SeparatorInfo], tasks: dict[str, str]) -> list[dict]:
    """`GET /api/models`' grouping: per task (in `tasks`' order), the models made for it and
    the recipes that chain models to give it."""
    out = []
    for task, label in tasks.items():
        models = [i.name for i in infos if i.card is not None and i.card.task == task]
        recipes = [name for name, r in RECIPES.items() if r.task == task]
        out.append({"task": task, "label": label, "models": models, "recipes": recipes})
    return out
