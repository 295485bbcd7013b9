"""`audiosplit cancel`, cancelled jobs in `separate`, Ctrl-C's offer and the Idempotency-Key of
a retried POST, against a gateway faked with httpx's MockTransport."""

import argparse
import io
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from gateway import cli
from gateway.cli import api as cli_api
from gateway.cli import jobs as cli_jobs
from gateway.cli import separate
from gateway.cli.songs import Song
from test.unit.gateway.test_cli import FakeClock

URL = "http://gw.test"


def fake_api(handler) -> cli.Api:
    api = cli.Api(URL, wait_s=60)
    api.http = httpx.Client(base_url=URL, transport=httpx.MockTransport(handler))
    return api


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


def job(job_id: str, status: str, **extra) -> dict:
    return {"id": job_id, "status": status, "stage": status, "progress": 0.0, **extra}


def cancel_gateway(request: httpx.Request) -> httpx.Response:
    """`a` runs, `b` has ended, nothing else exists."""
    job_id = request.url.path.split("/")[3]
    if job_id == "a":
        return httpx.Response(200, json=job("a", "cancelled"))
    if job_id == "b":
        return error(409, "not_cancellable", "job b is done: only a queued or running job …")
    return error(404, "not_found", f"no job {job_id!r}")


def test_cancel_says_each_job_and_exits_1_if_any_was_not_cancelled(monkeypatch, capsys):
    monkeypatch.setattr(cli_jobs, "Api", lambda url: fake_api(cancel_gateway))
    assert cli.main(["cancel", "a", "--url", URL]) == cli.EXIT_OK
    assert capsys.readouterr().out == "cancelled a\n"
    assert cli.main(["cancel", "a", "b", "nope", "--url", URL]) == cli.EXIT_FAILED
    out, err = capsys.readouterr()
    assert out == "cancelled a\n"
    assert err.splitlines() == [
        "audiosplit: job b is done: only a queued or running job …",
        "audiosplit: no job nope",
    ]


def test_cancel_takes_an_id_that_opens_with_a_dash():
    args = cli.build_parser().parse_args(cli.ids_as_operands(["cancel", "-m9dT", "--url", URL]))
    assert args.ids == ["-m9dT"] and args.url == URL


def test_a_cancelled_job_ends_the_follow_loop(capsys, tmp_path):
    polls = []

    def gateway(request: httpx.Request) -> httpx.Response:
        polls.append(request.url.path)
        return httpx.Response(200, json=job("a", "cancelled" if len(polls) > 1 else "running"))

    song = Song(Path("x.wav"), tmp_path / "x", job={"id": "a"})
    view = separate.ProgressView(Console(file=io.StringIO()))
    separate.follow(fake_api(gateway), [song], argparse.Namespace(out=tmp_path), view)
    assert song.ok is False and len(polls) == 2
    assert capsys.readouterr().out.splitlines()[-1] == "x.wav: job a was cancelled"


def separate_args(*options: str) -> argparse.Namespace:
    """`separate`'s options as its parser gives them."""
    return cli.build_parser().parse_args(["separate", "x.wav", "--no-analysis", *options])


def test_a_post_retried_after_a_timeout_sends_the_same_idempotency_key(monkeypatch, tmp_path):
    """The first try times out here (the gateway made the job), the second finds it still
    being worked on (409), the third gets it: one key for all three."""
    monkeypatch.setattr(cli_api, "time", FakeClock())
    monkeypatch.setattr(separate, "time", FakeClock())
    tries = []

    def gateway(request: httpx.Request) -> httpx.Response:
        tries.append(request)
        if len(tries) == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        if len(tries) == 2:
            return error(409, "idempotency_in_progress", "being worked on")
        body = job("j1", "queued", model="dsp", model_reason="r", title="A Song")
        return httpx.Response(202, json=body, headers={"Idempotent-Replayed": "true"})

    song = Song("https://host/a.wav", None)
    view = separate.ProgressView(Console(file=io.StringIO()))
    separate.submit(fake_api(gateway), song, separate_args(), view)
    assert song.job["id"] == "j1" and song.name == "A Song"
    keys = {r.headers["Idempotency-Key"] for r in tries}
    assert keys == {song.idempotency_key}
    body = tries[-1].read().decode()
    assert 'name="url"\r\n\r\nhttps://host/a.wav' in body and "filename=" not in body


def test_a_callback_url_is_sent_with_the_song(tmp_path):
    sent = []

    def gateway(request: httpx.Request) -> httpx.Response:
        sent.append(request.read().decode())
        return httpx.Response(202, json=job("j", "queued", model="dsp", model_reason="r"))

    (tmp_path / "a.wav").write_bytes(b"RIFF")
    song = Song(tmp_path / "a.wav", tmp_path / "a")
    view = separate.ProgressView(Console(file=io.StringIO()))
    separate.submit(fake_api(gateway), song, separate_args("--callback-url", "https://cb/x"), view)
    assert 'name="callback_url"\r\n\r\nhttps://cb/x' in sent[0]
    assert 'name="file"; filename="a.wav"' in sent[0]


class Stdin(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_ctrl_c_without_a_terminal_says_the_command_that_cancels(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", Stdin(tty=False))
    monkeypatch.delenv(cli.URL_ENV, raising=False)
    separate.offer_cancel(fake_api(cancel_gateway), ["a", "c"])
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "unfinished jobs stay in the gateway: audiosplit status a",
        f"to cancel them: audiosplit cancel a c --url {URL}",
    ]


@pytest.mark.parametrize("answer, cancelled", [("y", True), ("", False), ("no", False)])
def test_ctrl_c_at_a_terminal_asks_and_cancels_on_yes(monkeypatch, capsys, answer, cancelled):
    monkeypatch.setattr("sys.stdin", Stdin(tty=True))
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer)
    posted = []

    def gateway(request: httpx.Request) -> httpx.Response:
        posted.append(request.url.path)
        return cancel_gateway(request)

    separate.offer_cancel(fake_api(gateway), ["a"])
    out, err = capsys.readouterr()
    assert asked == ["cancel the 1 unfinished job(s) on the gateway? [y/N] "]
    assert posted == (["/api/jobs/a/cancel"] if cancelled else [])
    assert out == ("cancelled a\n" if cancelled else "")
    assert ("stay in the gateway" in err) is not cancelled and "audiosplit cancel" not in err
