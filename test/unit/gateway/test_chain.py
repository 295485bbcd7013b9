"""A chain's form fields: parsed, checked against the first stage and the second models, its
parts named `<stem>-<part>` in the first stage's order; recipes; `/api/models`' grouping."""

from __future__ import annotations

import argparse

import pytest

from common.errors import InvalidOption, ModelUnavailable
from common.interfaces import ModelCard, SeparatorInfo
from gateway.chains import RECIPES, parent_stem, parse_chain, tasks_json
from gateway.cli.separate import job_fields
from gateway.options import parse_options, resolve_options
from gateway.upload import add_field
from prediction.catalogue import TASKS

FOUR = ("vocals", "drums", "bass", "other")


def info(name, stems=FOUR, available=True, fetchable=False, task=None):
    return SeparatorInfo(
        name=name,
        family="dsp" if name == "dsp" else "roformer",
        stems=list(stems),
        available=available,
        fetchable=fetchable,
        reason=f"{name}: weights {'found' if available else 'missing: put it in models/'}",
        segment=100,
        overlap=0.25,
        normalise=False,
        card=ModelCard(task=task),
    )


def infos(**overrides):
    base = {
        "dsp": info("dsp", task="four_stems"),
        "htdemucs": info("htdemucs", task="four_stems"),
        "mel_band_roformer_karaoke": info(
            "mel_band_roformer_karaoke", ("lead", "backing"), task="lead_backing"
        ),
        "mdx23c_drumsep": info(
            "mdx23c_drumsep", ("kick", "snare", "toms", "hh"), available=False, task="drum_parts"
        ),
        "mel_band_roformer_dereverb": info(
            "mel_band_roformer_dereverb", ("dry", "reverb"), available=False, fetchable=True
        ),
    }
    return {**base, **overrides}


def test_parts_replace_their_stem_in_place():
    opts = parse_options({"model": "htdemucs", "chain": "vocals>mel_band_roformer_karaoke"})
    r = resolve_options(opts, infos())
    assert r.stems == ["vocals-lead", "vocals-backing", "drums", "bass", "other"]
    assert r.chain == [
        {
            "stem": "vocals",
            "model": "mel_band_roformer_karaoke",
            "parts": ["vocals-lead", "vocals-backing"],
        }
    ]
    assert r.model == "htdemucs" and "then vocals by mel_band_roformer_karaoke" in r.model_reason


def test_two_links_and_one_stem_with_its_rest():
    opts = parse_options({"model": "dsp", "stems": "bass", "chain": " bass > dsp , no_bass>dsp "})
    r = resolve_options(opts, infos())
    assert r.stems == [f"bass-{s}" for s in FOUR] + [f"no_bass-{s}" for s in FOUR]
    assert [link["stem"] for link in r.chain] == ["bass", "no_bass"]


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("vocals", "expected STEM>MODEL"),
        (">dsp", "expected STEM>MODEL"),
        ("vocals>", "expected STEM>MODEL"),
        ("vocals>auto", "unknown model 'auto'"),
        ("vocals>dsp,vocals>htdemucs", "each stem is chained once"),
        (",".join(f"s{k}>dsp" for k in range(5)), "at most 4"),
    ],
)
def test_malformed_chains_say_what_is_wrong(raw, says):
    with pytest.raises(InvalidOption, match=says):
        parse_chain(raw)


def test_a_chain_checked_against_the_first_stage_and_the_second_model():
    with pytest.raises(InvalidOption, match="gives no 'guitar' stem"):
        resolve_options(parse_options({"model": "dsp", "chain": "guitar>dsp"}), infos())
    with pytest.raises(InvalidOption, match="gives no 'vocals' stem"):  # stems=drums: 2 stems
        resolve_options(
            parse_options({"model": "dsp", "stems": "drums", "chain": "vocals>dsp"}), infos()
        )
    with pytest.raises(ModelUnavailable, match="in the chain, .*mdx23c_drumsep"):
        resolve_options(parse_options({"model": "dsp", "chain": "drums>mdx23c_drumsep"}), infos())
    # weights that can be fetched: accepted, fetched when the job runs
    r = resolve_options(
        parse_options({"model": "dsp", "chain": "vocals>mel_band_roformer_dereverb"}), infos()
    )
    assert r.stems[:2] == ["vocals-dry", "vocals-reverb"]


def test_a_recipe_names_its_first_stage_unless_a_model_is_given():
    r = resolve_options(parse_options({"recipe": "karaoke"}), infos())
    assert (r.model, r.stems[:2]) == ("htdemucs", ["vocals-lead", "vocals-backing"])
    r = resolve_options(parse_options({"recipe": "karaoke", "model": "dsp"}), infos())
    assert r.model == "dsp" and r.chain[0]["model"] == "mel_band_roformer_karaoke"
    with pytest.raises(InvalidOption, match="a recipe or a chain"):
        parse_options({"recipe": "karaoke", "chain": "vocals>dsp"})
    with pytest.raises(InvalidOption, match="unknown recipe 'x'; recipes: karaoke"):
        parse_options({"recipe": "x"})


def test_every_recipe_chains_registry_models_for_a_known_task():
    from common.constants import MODEL_NAMES

    for name, recipe in RECIPES.items():
        assert recipe.task in TASKS, name
        assert recipe.model in MODEL_NAMES, name
        assert all(model in MODEL_NAMES for _, model in recipe.chain), name


def test_models_are_grouped_by_task_with_the_recipes_that_give_it():
    groups = {g["task"]: g for g in tasks_json(list(infos().values()), TASKS)}
    assert list(groups) == list(TASKS)
    assert groups["four_stems"]["models"] == ["dsp", "htdemucs"]
    assert groups["lead_backing"] == {
        "task": "lead_backing",
        "label": TASKS["lead_backing"],
        "models": ["mel_band_roformer_karaoke"],
        "recipes": ["karaoke"],
    }
    assert groups["drum_parts"]["recipes"] == ["drum_parts"]


def test_a_repeated_chain_field_is_joined_and_other_fields_are_replaced():
    fields: dict[str, str] = {}
    for name, value in [("chain", "vocals>dsp"), ("model", "a"), ("chain", "drums>dsp")]:
        add_field(fields, name, value)
    add_field(fields, "model", "dsp")
    assert fields == {"chain": "vocals>dsp,drums>dsp", "model": "dsp"}
    assert parent_stem("vocals-lead") == "vocals" and parent_stem("no_vocals") == "no_vocals"


def test_the_cli_sends_chain_and_recipe():
    args = argparse.Namespace(
        model="auto",
        stems="all",
        quality="preview",
        no_analysis=False,
        ensemble_weights=None,
        ensemble_method=None,
        callback_url=None,
        chain=["vocals>dsp", "drums>dsp"],
        recipe=None,
    )
    assert job_fields(args)["chain"] == "vocals>dsp,drums>dsp"
    args.chain, args.recipe = None, "karaoke"
    fields = job_fields(args)
    assert fields["recipe"] == "karaoke" and "model" not in fields  # the recipe's own
    args.model = "dsp"
    assert job_fields(args)["model"] == "dsp"
