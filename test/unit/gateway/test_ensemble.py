"""Ensemble form fields and the stems its members can give."""

import pytest

from common.errors import InvalidOption, ModelUnavailable
from common.interfaces import SeparatorInfo
from gateway.ensemble import check_members, parse_members
from gateway.options import parse_options, resolve_options


def info(name: str, stems: list[str], available: bool = True) -> SeparatorInfo:
    return SeparatorInfo(
        name=name,
        family="demucs",
        stems=stems,
        available=available,
        reason="here" if available else f"{name}: weights not found",
        segment=44100,
        overlap=0.25,
        normalise=True,
    )


FOUR = ["drums", "bass", "other", "vocals"]
INFOS = {
    "htdemucs": info("htdemucs", FOUR),
    "umxhq": info("umxhq", ["vocals", "drums", "bass", "other"]),
    "htdemucs_6s": info("htdemucs_6s", [*FOUR, "guitar", "piano"]),
    "umxl": info("umxl", FOUR, available=False),
}


def test_members_and_weights_are_parsed():
    assert parse_members("htdemucs, umxhq", "") == (("htdemucs", "umxhq"), (1.0, 1.0))
    assert parse_members("htdemucs,umxhq", "1,2.5") == (("htdemucs", "umxhq"), (1.0, 2.5))


@pytest.mark.parametrize(
    "model, weights, words",
    [
        ("htdemucs,auto", "", "auto cannot be a member"),
        ("htdemucs,htdemucs", "", "each model once"),
        ("htdemucs,umxhq", "1,x", "must be numbers"),
        ("htdemucs,umxhq", "1,0", "> 0"),
        ("htdemucs,umxhq", "1,nan", "> 0"),
        ("a,b,c,d,e", "", "2 to 4"),
    ],
)
def test_bad_ensembles_are_refused_naming_why(model, weights, words):
    with pytest.raises(InvalidOption, match=words):
        parse_members(model, weights)


def test_members_must_share_the_stems():
    assert check_members(("htdemucs", "umxhq"), "all", INFOS) == (None, FOUR)
    with pytest.raises(InvalidOption, match="different stems"):
        check_members(("htdemucs", "htdemucs_6s"), "all", INFOS)
    assert check_members(("htdemucs", "htdemucs_6s"), "vocals", INFOS) == (
        "vocals",
        ["vocals", "no_vocals"],
    )
    with pytest.raises(InvalidOption, match="umxhq has no 'guitar'"):
        check_members(("htdemucs_6s", "umxhq"), "guitar", INFOS)
    with pytest.raises(ModelUnavailable, match="umxl"):
        check_members(("htdemucs", "umxl"), "all", INFOS)


def test_the_resolved_job_says_each_members_weight():
    options = parse_options({"model": "htdemucs,umxhq", "ensemble_weights": "3,1"})
    resolved = resolve_options(options, INFOS)
    assert resolved.members == [
        {"model": "htdemucs", "weight": 3.0, "share": 0.75},
        {"model": "umxhq", "weight": 1.0, "share": 0.25},
    ]
    assert resolved.overlap is None  # each member's own
    assert "htdemucs (75%)" in resolved.model_reason
    with pytest.raises(InvalidOption, match="need an ensemble"):
        parse_options({"model": "htdemucs", "ensemble_weights": "1"})


def test_the_method_is_checked_and_resolved():
    default = resolve_options(parse_options({"model": "htdemucs,umxhq"}), INFOS)
    assert default.ensemble_method == "avg_wave" and "weighted average" in default.model_reason
    options = parse_options({"model": "htdemucs,umxhq", "ensemble_method": "median_wave"})
    resolved = resolve_options(options, INFOS)
    assert resolved.ensemble_method == "median_wave"
    assert "weighted median" in resolved.model_reason
    assert resolved.to_dict()["ensemble_method"] == "median_wave"  # the job JSON's options
    with pytest.raises(InvalidOption, match="avg_wave, median_wave"):
        parse_options({"model": "htdemucs,umxhq", "ensemble_method": "max"})
    with pytest.raises(InvalidOption, match="need an ensemble"):
        parse_options({"model": "htdemucs", "ensemble_method": "median_wave"})
    assert resolve_options(parse_options({"model": "htdemucs"}), INFOS).ensemble_method is None
