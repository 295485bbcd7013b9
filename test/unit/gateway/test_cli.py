"""The `audiosplit` command's pieces that need no gateway: its help, names, retries."""

import argparse
from pathlib import Path

import httpx
import pytest

from common.constants import RESULT_FORMATS
from gateway import access, cli
from gateway.cli import api as cli_api  # where `Api.patiently` looks up `time`


def subparser(name: str) -> argparse.ArgumentParser:
    commands = next(
        a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    return commands.choices[name]


@pytest.mark.parametrize("name", ["separate", "status", "list", "delete", "models"])
def test_every_option_says_what_it_does_and_its_default(name):
    for action in subparser(name)._actions:
        if action.option_strings and action.dest not in ("help", "json"):
            assert action.help and "default" in action.help, action.option_strings


def test_format_help_describes_every_result_format():
    text = " ".join(subparser("separate").format_help().split())  # unwrapped
    for fmt in RESULT_FORMATS:
        assert f"{fmt}: {cli.FORMAT_HELP[fmt]}" in text


def test_api_key_header_is_the_gateways(monkeypatch):
    assert cli.API_KEY_HEADER.lower() == access.API_KEY_HEADER.lower()
    monkeypatch.setenv(cli.API_KEY_ENV, "k1")
    assert cli.Api("http://127.0.0.1:9").http.headers[access.API_KEY_HEADER] == "k1"
    monkeypatch.delenv(cli.API_KEY_ENV)
    assert access.API_KEY_HEADER not in cli.Api("http://127.0.0.1:9").http.headers


def test_url_default_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(cli.URL_ENV, "http://gw:9000")
    assert cli.build_parser().parse_args(["models"]).url == "http://gw:9000"
    monkeypatch.delenv(cli.URL_ENV)
    assert cli.build_parser().parse_args(["list"]).url == cli.DEFAULT_URL


def test_songs_of_the_same_name_get_their_own_folders(tmp_path):
    paths = [Path("a/song.wav"), Path("b/song.flac"), Path("c/other.mp3")]
    names = [d.name for d in cli.out_dirs(paths, tmp_path)]
    assert names == ["song", "song-2", "other"]


@pytest.mark.parametrize(
    "headers, ext",
    [
        ({"content-disposition": 'attachment; filename="my_song_vocals.flac"'}, ".flac"),
        ({"content-disposition": "attachment; filename*=utf-8''s%C3%B6ng.mp3"}, ".mp3"),
        ({"content-type": "application/json"}, ".json"),
    ],
)
def test_extension_comes_from_the_download(headers, ext):
    assert cli.extension(httpx.Response(200, headers=headers)) == ext


@pytest.mark.parametrize("status", [404, 422])
def test_a_job_id_the_gateway_does_not_know_is_no_job(status):
    assert cli.no_job("x", cli.Refused(status, "whatever")).message == "no job x"
    assert cli.no_job("x", cli.Refused(500, "boom")).message == "boom"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_patiently_rides_out_a_gateway_that_comes_back(monkeypatch):
    monkeypatch.setattr(cli_api, "time", FakeClock())
    said, failures = [], [cli.Unreachable("down"), cli.Refused(502, "restarting")]

    def attempt():
        if failures:
            raise failures.pop(0)
        return "job"

    api = cli.Api("http://127.0.0.1:9", wait_s=60, say=said.append)
    assert api.patiently(attempt) == "job"
    assert len(said) == 2 and said[0].startswith("lost the gateway") and "again" in said[1]


def test_patiently_gives_up_after_wait_and_never_retries_a_refusal(monkeypatch):
    monkeypatch.setattr(cli_api, "time", FakeClock())
    api = cli.Api("http://127.0.0.1:9", wait_s=30)

    def down():
        raise cli.Unreachable("down")

    with pytest.raises(cli.Unreachable, match="has not answered for 30 s"):
        api.patiently(down)
    assert 30 < cli_api.time.now < 40

    def refused():
        raise cli.Refused(415, "not audio")

    with pytest.raises(cli.Refused):
        api.patiently(refused)
    with pytest.raises(cli.Refused):
        api.patiently(lambda: (_ for _ in ()).throw(cli.Refused(502, "x")), retry_5xx=False)


def test_bad_usage_exits_2_without_a_traceback(tmp_path, capsys):
    assert cli.main(["separate", str(tmp_path / "missing.wav")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["separate", "x.wav", "--format", "ogg"])
    assert e.value.code == 2


def test_model_takes_auto_a_name_or_an_ensemble():
    from gateway.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["separate", "a.wav", "--model", "htdemucs, umxhq"])
    assert args.model == "htdemucs,umxhq"
    args = parser.parse_args(
        ["separate", "a.wav", "--model", "htdemucs,dsp", "--ensemble-weights", "2,1"]
    )
    assert args.ensemble_weights == "2,1"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["separate", "a.wav", "--model", "htdemucs,nope"])
    assert exit_info.value.code == 2


def test_the_default_url_follows_gateway_port():
    assert cli_api.default_url({}) == cli.DEFAULT_URL
    assert cli_api.default_url({"GATEWAY_PORT": "9100"}) == "http://127.0.0.1:9100"
    both = {"GATEWAY_PORT": "9100", cli.URL_ENV: "http://gw:9000/"}
    assert cli_api.default_url(both) == "http://gw:9000"  # AUDIOSPLIT_URL wins
    assert cli_api.default_url({"GATEWAY_PORT": "not-a-port"}) == cli.DEFAULT_URL
