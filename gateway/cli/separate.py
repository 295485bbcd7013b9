"""`audiosplit separate`: upload songs, follow their jobs, write their stems.

Each FILE or link becomes a `Song`, submitted in turn (a link as `url=`, which the gateway
fetches; a rate limit is waited out within --wait); the running jobs are then polled until each
is done, its stems streamed to `DIR/<song name>/` (a link's: `DIR/<its title>/`), failed or
cancelled. `ProgressView` draws one bar per song on a terminal, plain lines otherwise;
`reachable` starts a temporary local stack when asked to and nothing answers. Ctrl-C offers to
cancel the jobs still running (`offer_cancel`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from gateway.cli.api import (
    EXIT_FAILED,
    EXIT_OK,
    UP_HINT,
    Api,
    Refused,
    Unreachable,
    attachment_name,
    default_url,
    error_code,
    error_message,
)
from gateway.cli.songs import Song, checked_inputs, link_dir, out_dirs, shown_path

POLL_S = 0.5  # between two looks at a running job
ENDS = ("done", "failed", "cancelled")  # a job's statuses that it never leaves
BUSY_S = 1.0  # between two tries while the gateway still works on our first POST
IDEMPOTENCY_HEADER = "Idempotency-Key"
PLAIN_STEP = 10  # percent: without a terminal, a progress line at most every 10 %
# a model's weights on first use, or a link's song (gateway/fetching.py): "(1.2 of 5.0 MB)"
BYTES_STAGE = re.compile(
    r"(?P<what>downloading model|fetching)"
    r"(?: \((?P<done>[\d.]+) (?:of (?P<total>[\d.]+) )?MB.*\))?"
)


class ProgressView:
    """One bar per song on a terminal; one line per stage or 10 % step otherwise."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self.said: set[str] = set()  # what `once` has said
        self.progress = Progress(
            TextColumn("{task.fields[name]}"),
            TextColumn("[cyan]{task.fields[stage]:<11}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
        )

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def add(self, song: Song) -> None:
        song.task = self.progress.add_task("", total=100, name=song.name, stage="waiting")

    def update(self, song: Song, stage: str, fraction: float | None = None) -> None:
        """The bar shows `fraction` (0..1); a plain line shows it in 10 % steps, when given."""
        percent = None if fraction is None else round(100 * fraction)
        if self.live:
            if percent is not None:
                self.progress.update(song.task, completed=percent)
            self.progress.update(song.task, stage=stage)
            return
        if stage in ("downloading", *ENDS) or BYTES_STAGE.match(stage):
            percent = None  # said by the line that follows, or by the stage itself
        shown = (plain_step(stage), None if percent is None else percent // PLAIN_STEP)
        if shown != song.shown:
            song.shown = shown
            self.say(f"{song.name}: {stage}" + ("" if percent is None else f" {percent}%"))

    def rename(self, song: Song, name: str) -> None:
        if self.live:
            self.progress.update(song.task, name=name)
        song.name = name

    def once(self, *lines: str) -> None:
        """Say `lines` unless this run said them before (the same for every song)."""
        if lines[0] not in self.said:
            self.said.add(lines[0])
            for line in lines:
                self.say(line)

    def say(self, line: str) -> None:
        if self.live:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def notice_lines(notice: str) -> list[str]:
    """A job's notice, a clause a line ("notice: Classical-DSP stems …: " then the rest
    indented): the gateway ends its clauses in ": " and "; "."""
    clauses = re.split(r"(?<=[:;]) ", notice)
    return [f"notice: {clauses[0]}", *(f"  {c}" for c in clauses[1:])]


def plain_step(stage: str) -> str:
    """What a plain line must change on: a model download ("downloading model (12.0 of 80.3
    MB)", updated every second) or a link's fetch ("fetching (1.2 of 5.0 MB)") only at each
    tenth of its size after the first."""
    m = BYTES_STAGE.fullmatch(stage)
    if m is None:
        return stage
    tenth = 10 * float(m["done"]) // float(m["total"]) if m["total"] and float(m["total"]) else 0
    return f"{m['what']} {tenth:.0f}" if tenth else m["what"]  # the start: the stage's name


def job_fields(args: argparse.Namespace) -> dict[str, str]:
    """The options of every song's POST."""
    fields = {"model": args.model, "stems": args.stems, "quality": args.quality}
    fields["analysis"] = "false" if args.no_analysis else "true"
    if args.ensemble_weights:
        fields["ensemble_weights"] = args.ensemble_weights
    if args.ensemble_method:
        fields["ensemble_method"] = args.ensemble_method
    if args.callback_url:
        fields["callback_url"] = args.callback_url
    if args.chain:
        fields["chain"] = ",".join(args.chain)
    if args.recipe:
        fields["recipe"] = args.recipe
        if args.model == "auto":  # not given: the recipe's own first stage
            del fields["model"]
    return fields


def post_song(api: Api, song: Song, fields: dict[str, str]) -> httpx.Response:
    """One try of the song's POST, under its Idempotency-Key; 202, 409 or 429 answered."""
    headers = {IDEMPOTENCY_HEADER: song.idempotency_key}
    with contextlib.ExitStack() as opened:
        if song.is_link:  # no file name: a plain field, in the multipart body the gateway wants
            parts = {"url": (None, song.source)}
        else:
            parts = {"file": (song.source.name, opened.enter_context(open(song.source, "rb")))}
        return api.call(
            "POST", "/api/jobs", 202, 409, 429, files=parts, data=fields, headers=headers
        )


def submit(api: Api, song: Song, args: argparse.Namespace, view: ProgressView) -> None:
    fields = job_fields(args)
    view.update(song, "sending link" if song.is_link else "uploading")

    def send() -> httpx.Response:
        deadline = time.monotonic() + api.wait_s
        while True:
            response = post_song(api, song, fields)
            if response.status_code == 202 or time.monotonic() > deadline:
                return api.check(response, 202)
            if response.status_code == 429:  # rate limited: wait as the gateway says
                view.say(f"{song.name}: {error_message(response)}")
                time.sleep(float(response.headers.get("Retry-After", "5")))
            elif error_code(response) == "idempotency_in_progress":
                time.sleep(BUSY_S)  # our try that timed out here is still worked on there
            else:
                return api.check(response, 202)

    try:
        song.job = api.patiently(send, retry_5xx=False).json()
    except Refused as e:
        finish(song, view, False, f"refused ({e.status}): {e.message}")
        return
    job = song.job
    view.say(f"{song.name}: job {job['id']}, model {job['model']}")
    retitle(song, view)
    # facts of the run rather than of a song: each said once, on lines of its own
    view.once(f"why {job['model']}: {job['model_reason']}")
    if job.get("notice"):
        view.once(*notice_lines(job["notice"]))


def retitle(song: Song, view: ProgressView) -> None:
    """A link's song is called by its title once the gateway knows it (said once)."""
    title = song.job.get("title")
    if song.is_link and title and title != song.name:
        view.say(f"{song.name}: {title}")
        view.rename(song, title)


def download(api: Api, song: Song, args: argparse.Namespace, view: ProgressView) -> None:
    """Every stem in the asked format, each streamed to a `.part` file and renamed."""
    job = song.job
    params = {"format": args.format}
    if args.clip:
        params["clip"] = args.clip
    song.out_dir.mkdir(parents=True, exist_ok=True)
    stems = job["links"]["stems"]
    for i, (stem, link) in enumerate(stems.items()):
        view.update(song, "downloading", 0.95 + 0.05 * i / len(stems))
        api.patiently(lambda link=link, stem=stem: fetch(api, link, params, song.out_dir, stem))
    if "analysis" in job["links"]:
        api.patiently(lambda: fetch(api, job["links"]["analysis"], {}, song.out_dir, "analysis"))


def fetch(api: Api, link: str, params: dict, folder: Path, name: str) -> Path:
    return api.save(link, params, lambda response: folder / f"{name}{extension(response)}")


def extension(response: httpx.Response) -> str:
    """'.flac' from `Content-Disposition: attachment; filename="song_vocals.flac"`."""
    if name := attachment_name(response):
        return Path(name).suffix
    return ".json" if "json" in response.headers.get("content-type", "") else ""


def finish(song: Song, view: ProgressView, ok: bool, outcome: str, stage: str = "") -> None:
    song.ok = ok
    if view.live:
        view.update(song, stage or ("done" if ok else "failed"), 1.0 if ok else None)
    for warning in dict.fromkeys(song.job.get("warnings", [])):
        view.say(f"{song.name}: warning: {warning}")
    for note in song.job.get("notes", []):
        view.say(f"{song.name}: note: {note}")
    view.say(f"{song.name}: {outcome}")


def follow(api: Api, songs: list[Song], args: argparse.Namespace, view: ProgressView) -> None:
    """Poll the running jobs in turn until each is done (stems written), failed or
    cancelled."""
    while running := [s for s in songs if s.ok is None]:
        for song in running:
            try:
                song.job = api.patiently(lambda song=song: api.job(song.job["id"]))
            except Refused as e:
                finish(song, view, False, f"job {song.job['id']} is gone: {e.message}")
                continue
            job = song.job
            retitle(song, view)
            if job["status"] not in ENDS:
                view.update(song, job["stage"], job["progress"])
            if job["status"] == "done":
                if song.is_link:
                    song.out_dir = link_dir(song, songs, args.out)
                download(api, song, args, view)
                names = " ".join(sorted(p.name for p in song.out_dir.iterdir()))
                finish(song, view, True, f"stems in {shown_path(song.out_dir)} ({names})")
            elif job["status"] == "failed":
                message = (job.get("error") or {}).get("message", "no reason given")
                finish(song, view, False, f"failed: {message}")
            elif job["status"] == "cancelled":
                finish(song, view, False, f"job {job['id']} was cancelled", "cancelled")
        if any(s.ok is None for s in songs):
            time.sleep(POLL_S)


def offer_cancel(api: Api, job_ids: list[str]) -> None:
    """After Ctrl-C: cancel the unfinished jobs when the person at the terminal says so;
    without a terminal to ask, say the command that would."""
    asking = sys.stdin.isatty()
    if asking:
        try:
            answer = input(f"cancel the {len(job_ids)} unfinished job(s) on the gateway? [y/N] ")
        except (EOFError, KeyboardInterrupt):  # a second Ctrl-C: no
            answer = ""
        if answer.strip().lower() in ("y", "yes"):
            for job_id in job_ids:
                try:
                    api.cancel(job_id)
                    sys.stdout.write(f"cancelled {job_id}\n")
                except Refused as e:
                    sys.stderr.write(f"audiosplit: {e.message}\n")
                except Unreachable as e:
                    sys.stderr.write(f"audiosplit: {e}\n")
            return
    sys.stderr.write(f"unfinished jobs stay in the gateway: audiosplit status {job_ids[0]}\n")
    if not asking:
        url = "" if api.url == default_url() else f" --url {api.url}"
        sys.stderr.write(f"to cancel them: audiosplit cancel {' '.join(job_ids)}{url}\n")


@contextlib.contextmanager
def reachable(api: Api, start_stack: bool, say: Callable[[str], None]) -> Iterator[None]:
    """The gateway answers at `api.url`; with `start_stack`, a temporary local stack is
    started when nothing does, and stopped afterwards."""
    if api.answers():
        yield
        return
    host, port = urlsplit(api.url).hostname, urlsplit(api.url).port
    if not start_stack:
        raise Unreachable(f"nothing answers at {api.url}; {UP_HINT}")
    if host not in ("127.0.0.1", "localhost") or port is None:
        raise Unreachable(f"nothing answers at {api.url}, and --start-stack starts local ones only")
    from common.config import REPO_ROOT, Settings
    from gateway.stack import Stack  # only now: it pulls in the settings machinery

    # the repo's .env, as the services (which run there) read it; not the caller's folder's
    settings = Settings(_env_file=REPO_ROOT / ".env", gateway_port=port)
    stack = Stack(settings, env={"GATEWAY_PORT": str(port)})
    say(f"nothing answers at {api.url}; starting a stack for this run (logs in {stack.log_dir})")
    started = time.monotonic()
    try:
        try:
            stack.start()  # RuntimeError when a port is taken
            stack.wait_healthy()
        except (RuntimeError, TimeoutError) as e:
            raise Unreachable(f"--start-stack: the stack did not start: {e}") from e
        say(f"stack ready in {time.monotonic() - started:.0f} s")
        yield
    finally:
        say("stopping the stack of this run")
        stack.stop()


def run_separate(args: argparse.Namespace) -> int:
    checked_inputs(args.files)
    dirs = iter(out_dirs([s for s in args.files if isinstance(s, Path)], args.out))
    songs = [Song(s, next(dirs) if isinstance(s, Path) else None) for s in args.files]
    view = ProgressView(Console())
    api = Api(args.url, args.wait, view.say)
    try:
        with reachable(api, args.start_stack, view.say), view:
            for song in songs:
                view.add(song)
            for song in songs:
                submit(api, song, args, view)
            follow(api, songs, args, view)
    except KeyboardInterrupt:
        if left := [s.job["id"] for s in songs if s.ok is None and s.job]:
            offer_cancel(api, left)
        raise
    finally:
        api.close()
    return EXIT_OK if all(s.ok for s in songs) else EXIT_FAILED
