"""The `audiosplit` command as a user runs it: a subprocess against a real stack.

One stack of real processes for the module (empty models dir: the dsp separator runs). Songs are
short synthetic ones (test/songgen.py); an identical song and options reuse the earlier result,
so the format tests convert stems without separating again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from common.constants import RESULT_FORMATS
from common.ports import free_port
from test.songgen import make_song, mixture
from test.stackutil import REPO, dsp_stack

SONG_S = 4.0  # seconds: one chunk of dsp
LONG_S = 20.0  # seconds: a job that runs long enough to kill the gateway under it
RATE = 44100
STEMS = ("vocals", "drums", "bass", "other")
CLI_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def cli_stack(tmp_path_factory):
    yield from dsp_stack(tmp_path_factory, "cli")


@pytest.fixture(scope="module")
def url(cli_stack) -> str:
    return cli_stack.url("gateway")


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    """A folder with two short songs: `first song.wav` (a space in its name), `second.flac`."""
    folder = tmp_path_factory.mktemp("songs")
    sf.write(folder / "first song.wav", mixture(make_song(SONG_S, seed=1)).T, RATE)
    sf.write(folder / "second.flac", mixture(make_song(SONG_S, seed=2)).T, RATE)
    return folder


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIOSPLIT_")}
    return {**env, "PYTHONPATH": str(REPO)}


def audiosplit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def assert_clean(result: subprocess.CompletedProcess) -> None:
    """Readable without a terminal: no traceback, no escape codes."""
    for stream in (result.stdout, result.stderr):
        assert "Traceback" not in stream and "\x1b[" not in stream, stream


@pytest.fixture(scope="module")
def separated(url, songs, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Both songs in one call, from another folder, by relative paths."""
    cwd = tmp_path_factory.mktemp("work")
    os.symlink(songs, cwd / "in")
    result = audiosplit("separate", "in/first song.wav", "in/second.flac", "--url", url, cwd=cwd)
    return cwd, result


def test_separate_writes_the_stems_of_every_file_where_it_says(separated):
    cwd, result = separated
    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    for name in ("first song", "second"):
        folder = cwd / name
        assert f"stems in ./{name}/" in result.stdout
        for stem in STEMS:
            info = sf.info(folder / f"{stem}.wav")
            assert (info.frames, info.channels, info.subtype) == (SONG_S * RATE, 2, "FLOAT")
        assert (folder / "analysis.json").stat().st_size > 0
        assert not list(folder.glob("*.part"))


def test_separate_says_each_fact_once_on_a_short_line(separated):
    """Two songs, one run: the model's reason and the dsp notice once each (not per song), no
    line of 400 characters (the reason used to be one, with the server's paths)."""
    _, result = separated
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 120, result.stdout
    assert sum(line.startswith("why dsp: model=auto: dsp, because") for line in lines) == 1
    notice = [i for i, line in enumerate(lines) if line.startswith("notice: Classical-DSP")]
    assert len(notice) == 1, result.stdout
    assert "Demucs publishes" in " ".join(lines[notice[0] : notice[0] + 4])
    assert "instrument labels" not in result.stdout  # AST's absence is not every job's news


def test_a_chained_stem_is_written_as_its_parts(url, songs, tmp_path):
    """`--chain vocals>dsp`: the vocals' parts in place of the vocals, each a file."""
    args = ("--chain", "vocals>dsp", "--no-analysis", "--format", "flac", "--out", "out")
    result = audiosplit("separate", songs / "second.flac", *args, "--url", url, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    folder = tmp_path / "out" / "second"
    written = sorted(p.stem for p in folder.glob("*.flac"))
    assert written == sorted([*(f"vocals-{s}" for s in STEMS), *(s for s in STEMS[1:])]), written
    refused = audiosplit(
        "separate", songs / "second.flac", "--chain", "guitar>dsp", "--url", url, cwd=tmp_path
    )
    assert refused.returncode == 1 and "gives no 'guitar' stem" in refused.stdout + refused.stderr


def test_models_fits_100_columns(url, tmp_path):
    result = audiosplit("models", "--url", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 100, result.stdout
    rows = {line.split()[0]: line for line in lines if line.strip()}
    assert "built in" in rows["dsp"] and "missing" in rows["htdemucs"]
    wide = audiosplit("models", "--long", "--url", url, cwd=tmp_path)
    assert wide.returncode == 0 and "published SDR" in wide.stdout and "licence" in wide.stdout


@pytest.mark.parametrize(
    "fmt, container, subtype",
    [
        pytest.param(
            "flac16",
            "FLAC",
            "PCM_16",
            marks=pytest.mark.xfail(
                "flac16" not in RESULT_FORMATS,
                reason="the gateway has no flac16 yet",
                strict=False,
            ),
        ),
        ("wav24", "WAV", "PCM_24"),
        ("mp3", "MP3", "MPEG_LAYER_III"),
    ],
)
def test_format_gives_files_of_that_type(url, songs, separated, tmp_path, fmt, container, subtype):
    args = ("--format", fmt, "--out", "o", "--url", url)
    result = audiosplit("separate", songs / "second.flac", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    ext = {"FLAC": "flac", "WAV": "wav", "MP3": "mp3"}[container]
    for stem in STEMS:
        info = sf.info(tmp_path / "o" / "second" / f"{stem}.{ext}")
        assert (info.format, info.subtype) == (container, subtype)
        assert abs(info.frames - SONG_S * RATE) < 2 * 1152  # mp3: whole frames, encoder delay


def test_clip_is_sent_when_given(url, songs, separated, tmp_path):
    result = audiosplit(
        "separate",
        songs / "second.flac",
        "--format",
        "wav16",
        "--clip",
        "clamp",
        "--url",
        url,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sf.info(tmp_path / "second" / "vocals.wav").subtype == "PCM_16"


def test_a_missing_file_is_one_line_and_exit_2(url, songs, tmp_path):
    result = audiosplit("separate", songs / "second.flac", "nope.wav", "--url", url, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "audiosplit: nope.wav: no such file"
    assert result.stdout == "" and not (tmp_path / "second").exists()  # nothing was sent


def test_bad_usage_exits_2(tmp_path):
    result = audiosplit("separate", "x.wav", "--quality", "best", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice" in result.stderr
    assert_clean(result)


def test_nothing_at_the_url_exits_3_and_says_what_to_do(songs, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["separate", songs / "second.flac"], ["list"], ["models"], ["status", "x" * 22]):
        result = audiosplit(*args, "--url", url, cwd=tmp_path)
        assert result.returncode == 3, (args, result.stderr)
        assert url in result.stderr and "./run.sh up" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert_clean(result)


def test_a_refused_file_exits_1_with_the_gateways_message(url, tmp_path):
    (tmp_path / "notes.txt").write_text("not a song\n" * 100)
    result = audiosplit("separate", "notes.txt", "--url", url, cwd=tmp_path)
    assert result.returncode == 1
    assert "notes.txt: refused (415)" in result.stdout and "not decodable" in result.stdout
    assert_clean(result)


def test_help_lists_every_option_and_what_it_does(tmp_path):
    result = audiosplit("separate", "--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option in ("--url", "--model", "--quality", "--stems", "--format", "--clip"):
        assert option in text
    for option in ("--no-analysis", "--out", "--wait", "--start-stack"):
        assert option in text
    for fmt in RESULT_FORMATS:
        assert f"{fmt}:" in text
    assert "320 kbit/s" in text and "rescale" in text and "clamp" in text


def test_models_list_status_and_delete(url, separated, tmp_path):
    result = audiosplit("models", "--url", url, cwd=tmp_path)
    assert result.returncode == 0 and "dsp" in result.stdout and "htdemucs" in result.stdout
    assert_clean(result)

    result = audiosplit("list", "--url", url, "--status", "done", "--json", cwd=tmp_path)
    assert result.returncode == 0
    jobs = {job["filename"]: job for job in json.loads(result.stdout)}
    assert {"first song.wav", "second.flac"} <= set(jobs)
    job_id = jobs["first song.wav"]["id"]
    result = audiosplit("list", "--url", url, "--limit", "50", cwd=tmp_path)
    assert result.returncode == 0 and job_id in result.stdout and "first song.wav" in result.stdout

    result = audiosplit("status", job_id, "--url", url, cwd=tmp_path)
    assert result.returncode == 0
    fields = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert fields["id"] == job_id and fields["status"] == "done" and fields["model"] == "dsp"

    result = audiosplit("delete", job_id, "--url", url, cwd=tmp_path)
    assert result.returncode == 0 and f"deleted {job_id}" in result.stdout
    for command in ("status", "delete"):
        result = audiosplit(command, job_id, "--url", url, cwd=tmp_path)
        assert result.returncode == 1 and result.stderr.strip() == f"audiosplit: no job {job_id}"
    result = audiosplit("status", "no!", "--url", url, cwd=tmp_path)  # not even an id
    assert result.returncode == 1 and result.stderr.strip() == "audiosplit: no job no!"


def test_polling_survives_a_gateway_restart(cli_stack, url, tmp_path):
    sf.write(tmp_path / "long.wav", mixture(make_song(LONG_S, seed=3)).T, RATE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "separate", "long.wav", "--url", url],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            deadline = time.monotonic() + 60
            while not any(
                j["filename"] == "long.wav"
                for j in client.get("/api/jobs", params={"status": "running"}).json()["jobs"]
            ):
                assert time.monotonic() < deadline and proc.poll() is None, "no job started"
                time.sleep(0.1)
        cli_stack.kill("gateway")  # -9 in the middle of the job
        time.sleep(2.0)  # the CLI polls every 0.5 s: it sees the gateway gone
        assert cli_stack.restart_dead() == ["gateway"]
        out, _ = proc.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "lost the gateway" in out and "answers again" in out
    assert sf.info(tmp_path / "long" / "vocals.wav").frames == LONG_S * RATE
