import pytest

from common.errors import InvalidOption, ModelUnavailable
from common.interfaces import SeparatorInfo
from gateway.options import parse_options, resolve_options


def info(name, available, stems=("vocals", "drums", "bass", "other")):
    return SeparatorInfo(
        name=name,
        family="dsp" if name == "dsp" else "demucs",
        stems=list(stems),
        available=available,
        reason=f"{name} weights {'found' if available else 'missing: put X.th in models/'}",
        segment=100,
        overlap=0.25,
        normalise=name != "dsp",
    )


def infos(**available):
    names = ("htdemucs", "htdemucs_ft", "htdemucs_6s", "dsp")
    return {n: info(n, available.get(n, n == "dsp")) for n in names}


def test_defaults():
    opts = parse_options({})
    assert (opts.model, opts.quality, opts.stems, opts.shifts, opts.analysis) == (
        "auto",
        "preview",
        "all",
        None,
        True,
    )


def test_auto_without_weights_runs_dsp_and_says_why():
    r = resolve_options(parse_options({}), infos())
    assert r.model == "dsp" and r.shifts == 0 and r.stem is None
    assert "htdemucs" in r.model_reason and "missing" in r.model_reason


def test_auto_prefers_htdemucs_for_preview_and_ft_for_render():
    r = resolve_options(parse_options({}), infos(htdemucs=True, htdemucs_ft=True))
    assert r.model == "htdemucs" and r.shifts == 0
    r = resolve_options(
        parse_options({"quality": "render"}), infos(htdemucs=True, htdemucs_ft=True)
    )
    assert r.model == "htdemucs_ft" and r.shifts == 1
    r = resolve_options(parse_options({"quality": "render"}), infos(htdemucs=True))
    assert r.model == "htdemucs" and "htdemucs_ft" in r.model_reason


def test_explicit_values_win_over_quality():
    r = resolve_options(
        parse_options({"quality": "render", "model": "dsp", "shifts": "0", "overlap": "0.5"}),
        infos(htdemucs_ft=True),
    )
    assert (r.model, r.shifts, r.overlap) == ("dsp", 0, 0.5)


def test_named_model_without_weights_is_refused_not_replaced():
    with pytest.raises(ModelUnavailable, match="missing"):
        resolve_options(parse_options({"model": "htdemucs"}), infos())


def test_one_stem_gives_its_complement():
    r = resolve_options(parse_options({"stems": "vocals"}), infos())
    assert r.stem == "vocals" and r.stems == ["vocals", "no_vocals"]
    with pytest.raises(InvalidOption, match="vocals, drums, bass, other"):
        resolve_options(parse_options({"stems": "guitar"}), infos())


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "demucs9"},
        {"quality": "ultra"},
        {"shifts": "-1"},
        {"shifts": "1.5"},
        {"overlap": "nan"},
        {"overlap": "1"},
        {"analysis": "perhaps"},
        {"unknown": "x"},
    ],
)
def test_bad_fields(fields):
    with pytest.raises(InvalidOption):
        parse_options(fields)
