"""Ensemble form fields and the stems its members can give."""

import numpy as np
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


def test_a_member_counts_as_finished_only_when_its_whole_result_is_published(tmp_path) -> None:
    """finished_member: the record says every frame is final and published, and result.wav
    holds them all; anything less and the member runs again on resume."""
    import json
    from dataclasses import asdict

    from common.resultfile import PrefixRecord, float_wav_header
    from common.storage import LocalStorage
    from gateway.ensemble import MemberResult, finished_member

    store, key, n = LocalStorage(tmp_path), "jobs/j/result/members/0", 1000
    folder = tmp_path / key
    folder.mkdir(parents=True)
    header = float_wav_header(n, 8)
    data = np.zeros((n, 8), "<f4").tobytes()

    def write(ready: int, wav: bytes | None, pieces: list[int] | None = None) -> None:
        record = PrefixRecord(ready, n, 8, len(header), FOUR, pieces or [])
        (folder / "prefix.json").write_text(json.dumps(asdict(record)))
        (folder / "result.wav").unlink(missing_ok=True)
        if wav is not None:
            (folder / "result.wav").write_bytes(wav)

    assert finished_member(store, key, n) is None  # nothing yet
    write(n - 1, None)
    assert finished_member(store, key, n) is None  # still growing
    write(n, None)
    assert finished_member(store, key, n) is None  # final, not yet renamed to result.wav
    write(n, header + data[:-4])
    assert finished_member(store, key, n) is None  # result.wav cut short
    write(n, header + data, pieces=[n])
    assert finished_member(store, key, n) is None  # stretches not yet replaced by result.wav
    write(n, header + data)
    assert finished_member(store, key, n + 1) is None  # another track's length
    assert finished_member(store, key, n) == MemberResult(f"{key}/result.wav", FOUR)
