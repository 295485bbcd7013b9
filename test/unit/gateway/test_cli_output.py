"""What the CLI prints: one line per fact, `models` within 100 columns (against a stand-in
gateway: httpx's MockTransport)."""

from __future__ import annotations

import functools

import httpx
import pytest

from gateway import cli
from gateway.chains import RECIPES, recipe_json
from gateway.cli import api as cli_api
from gateway.cli.jobs import field_lines
from gateway.cli.separate import notice_lines
from gateway.messages import result_notice
from prediction.catalogue import CARDS

SIX = ["drums", "bass", "other", "vocals", "guitar", "piano"]
STEMS = {"htdemucs_6s": SIX, "bs_roformer_viperx": ["vocals", "other"]}
STEMS["mel_band_roformer_kj"] = STEMS["bs_roformer_viperx"]


def models_json() -> dict:
    """Every model as GET /api/models gives it, with its catalogue card."""
    models = []
    for name, card in CARDS.items():
        models.append(
            {
                "name": name,
                "family": "dsp" if name == "dsp" else "demucs",
                "stems": STEMS.get(name, ["drums", "bass", "other", "vocals"]),
                "available": name in ("dsp", "htdemucs"),
                "fetchable": name == "umxhq",
                "reason": "weights missing and there is no network to fetch them",
                "card": card.model_dump(exclude={"version"}),
            }
        )
    return {"models": models, "recipes": [recipe_json(n, r) for n, r in RECIPES.items()]}


@pytest.fixture
def gateway(monkeypatch):
    """A stand-in gateway: GET /api/models and one job."""
    job = {
        "id": "abc",
        "status": "done",
        "model": "dsp",
        "model_reason": "model=auto: dsp, because htdemucs's weights are missing and there is "
        "no network to fetch them",
        "notice": result_notice("dsp"),
        "stems": ["vocals", "drums", "bass", "other"],
        "channels": [{"channel": 0, "stem": "vocals", "side": "left"}],
        "warnings": ["The file looks truncated: its Ogg stream breaks off after 6.08 s.", "x"],
        "error": None,
        "links": {"self": "/api/jobs/abc", "stems": {"vocals": "/api/jobs/abc/stems/vocals"}},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/models":
            return httpx.Response(200, json=models_json())
        return httpx.Response(200, json=job)

    client = functools.partial(httpx.Client, transport=httpx.MockTransport(answer))
    monkeypatch.setattr(cli_api.httpx, "Client", client)
    return job


def test_models_is_a_compact_table_within_100_columns(gateway, capsys):
    assert cli.main(["models", "--url", "http://gw"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 100, "\n".join(lines)
    assert lines[0].split() == ["name", "stems", "weights", "size", "RTF"]
    assert all(line == line.rstrip() and line for line in lines)
    rows = {line.split()[0]: line.split() for line in lines if line.split()}
    assert rows["htdemucs"][1:] == ["drums,bass,other,vocals", "here", "108", "MB", "0.90"]
    assert rows["htdemucs_6s"][1] == ",".join(SIX)  # the longest stem list fits too
    assert rows["umxhq"][2:4] == ["on", "use"] and rows["umxl"][2] == "missing"
    assert rows["dsp"][2:4] == ["built", "in"]
    assert not any("Demucs v4 README" in line for line in lines)  # that is --long's
    assert rows["karaoke:"] == [
        "karaoke:",
        *"lead and backing vocals (htdemucs, then vocals>mel_band_roformer_karaoke)".split(),
    ]


def test_models_long_keeps_every_column(gateway, capsys):
    assert cli.main(["models", "--long", "--url", "http://gw"]) == 0
    out = capsys.readouterr().out
    for header in ("published SDR", "licence", "RTF here", "reason"):
        assert header in out
    assert "CC BY-NC-SA 4.0" in out


def test_status_says_one_fact_a_line(gateway, capsys):
    assert cli.main(["status", "abc", "--url", "http://gw"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 120, "\n".join(lines)
    assert "stems         vocals, drums, bass, other" in lines
    assert any(
        line.endswith("The file looks truncated: its Ogg stream breaks off after 6.08 s.")
        for line in lines
    )
    assert sum(line.startswith("notice") for line in lines) == 1  # its clauses below it
    assert " " * 14 + "stems.vocals: /api/jobs/abc/stems/vocals" in lines  # under links


def test_the_notice_is_a_clause_a_line_and_loses_nothing():
    notice = result_notice("dsp")
    lines = notice_lines(notice)
    assert len(lines) == 4 and lines[0].startswith("notice: Classical-DSP stems")
    assert all(len(line) <= 110 for line in lines)
    assert " ".join(line.removeprefix("notice: ").strip() for line in lines) == notice


@pytest.mark.parametrize(
    ("key", "value", "lines"),
    [
        ("error", None, ["-"]),
        ("warnings", ["a, b", "c"], ["a, b", "c"]),  # items with commas: one a line
        ("stems", ["vocals", "no_vocals"], ["vocals, no_vocals"]),
        ("options", {"shifts": 0, "overlap": 0.25}, ["shifts: 0", "overlap: 0.25"]),
    ],
)
def test_field_lines(key, value, lines):
    assert field_lines(key, value) == lines
