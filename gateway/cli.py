"""`audiosplit`: separate songs with an audiosplit gateway and look after its jobs.

    audiosplit separate FILE... [options]   upload, follow the jobs, write the stems
    audiosplit status ID | list | delete ID... | models

The gateway is at `--url` (env AUDIOSPLIT_URL, else http://127.0.0.1:8000); an API key, when
the gateway needs one, comes from env AUDIOSPLIT_API_KEY. Exit status: 0 all done, 1 a job
failed or the gateway refused a request, 2 bad usage, 3 the gateway cannot be reached,
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from common.constants import CLIP_MODES, MODEL_NAMES, RESULT_FORMATS

URL_ENV = "AUDIOSPLIT_URL"
API_KEY_ENV = "AUDIOSPLIT_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
# gateway.access.API_KEY_HEADER (a unit test keeps them equal); importing it would pull in
# FastAPI, half a second at every start
API_KEY_HEADER = "X-API-Key"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
POLL_S = 0.5  # between two looks at a running job
BACKOFF_S = (0.5, 5.0)  # first and longest pause between tries while the gateway is away
DEFAULT_WAIT_S = 300.0  # how long a gateway may be away before we give up
PLAIN_STEP = 10  # percent: without a terminal, a progress line at most every 10 %
FORMAT_HELP = {
    "wav": "32-bit float WAV (every value kept, never clips)",
    "wav16": "16-bit PCM WAV",
    "wav24": "24-bit PCM WAV",
    "flac": "24-bit FLAC (lossless)",
    "flac16": "16-bit FLAC",
    "mp3": "MP3 at 320 kbit/s",
}
UP_HINT = "start it with `./run.sh up`, or pass --start-stack to start one for this run"


class UsageError(Exception):
    """The command line asks for something impossible (exit 2)."""


class Unreachable(Exception):
    """Nothing answers at the URL, or it stopped answering for longer than --wait (exit 3)."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message  # the cause alone, e.g. 'ConnectError: ...'


class Refused(Exception):
    """The gateway answered with an error status (exit 1); the message is the gateway's."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_message(response: httpx.Response) -> str:
    """The gateway's `{"error": {"message"}}`, or what else the body says."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text.strip()[:300] or response.reason_phrase


class Api:
    """The gateway's REST API; `patiently` rides out a gateway that is restarting."""

    def __init__(self, url: str, wait_s: float = DEFAULT_WAIT_S, say=None):
        key = os.environ.get(API_KEY_ENV, "")
        self.url = url.rstrip("/")
        self.wait_s = wait_s
        self.say = say or (lambda line: None)
        self.http = httpx.Client(
            base_url=self.url,
            headers={API_KEY_HEADER: key} if key else {},
            timeout=httpx.Timeout(600.0, connect=5.0),  # an upload or a conversion takes time
        )

    def close(self) -> None:
        self.http.close()

    def answers(self) -> bool:
        try:
            return self.http.get("/health", timeout=3.0).status_code == 200
        except httpx.HTTPError:
            return False

    def check(self, response: httpx.Response, *ok: int) -> httpx.Response:
        if response.status_code not in (ok or (200,)):
            response.read()
            message = error_message(response)
            if response.status_code == 401:
                message += f" (set {API_KEY_ENV})"
            raise Refused(response.status_code, message)
        return response

    def call(self, method: str, path: str, *ok: int, **kwargs) -> httpx.Response:
        """One request; a connection failure is `Unreachable`, an error status `Refused`."""
        try:
            return self.check(self.http.request(method, path, **kwargs), *ok)
        except httpx.TransportError as e:
            raise self.unreachable(e) from e

    def unreachable(self, e: httpx.TransportError) -> Unreachable:
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return Unreachable(f"cannot reach the gateway at {self.url} ({reason})", reason)

    def patiently(self, attempt: Callable[[], object], retry_5xx: bool = True):
        """Run `attempt` until it succeeds: connection failures (and 5xx answers) are retried
        with backoff for up to `wait_s` seconds, said once, not every try."""
        lost_at, pause = None, BACKOFF_S[0]
        while True:
            try:
                result = attempt()
            except (Unreachable, Refused) as e:
                if isinstance(e, Refused) and not (retry_5xx and e.status >= 500):
                    raise
                reason = e.reason if isinstance(e, Unreachable) else f"{e.status}: {e.message}"
                now = time.monotonic()
                if lost_at is None:
                    lost_at = now
                    self.say(
                        f"lost the gateway at {self.url} ({reason}), retrying for up to "
                        f"{self.wait_s:.0f} s…"
                    )
                elif now - lost_at > self.wait_s:
                    raise Unreachable(
                        f"the gateway at {self.url} has not answered for {self.wait_s:.0f} s"
                        f" ({reason}); the jobs already submitted go on when it is back"
                    ) from e
                time.sleep(pause)
                pause = min(pause * 2, BACKOFF_S[1])
                continue
            if lost_at is not None:
                self.say(f"the gateway at {self.url} answers again")
            return result

    def job(self, job_id: str) -> dict:
        return self.call("GET", f"/api/jobs/{job_id}").json()


def no_job(job_id: str, e: Refused) -> Refused:
    """404, or 422 for an id that cannot be one: both mean there is no such job."""
    return Refused(e.status, f"no job {job_id}") if e.status in (404, 422) else e


# ---------------------------------------------------------------------------- separate


@dataclass
class Song:
    path: Path  # as given, relative to the caller's folder
    out_dir: Path  # where its stems go
    task: TaskID | None = None
    job: dict = field(default_factory=dict)
    ok: bool | None = None  # None: not finished
    shown: tuple = ()  # the last progress shown without a terminal


class ProgressView:
    """One bar per song on a terminal; one line per stage or 10 % step otherwise."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self.reasons: set[str] = set()  # the model reasons said so far
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
        song.task = self.progress.add_task("", total=100, name=song.path.name, stage="waiting")

    def update(self, song: Song, stage: str, fraction: float | None = None) -> None:
        """The bar shows `fraction` (0..1); a plain line shows it in 10 % steps, when given."""
        percent = None if fraction is None else round(100 * fraction)
        if self.live:
            if percent is not None:
                self.progress.update(song.task, completed=percent)
            self.progress.update(song.task, stage=stage)
            return
        if stage in ("downloading", "done", "failed"):
            percent = None  # said by the line that follows
        shown = (stage, None if percent is None else percent // PLAIN_STEP)
        if shown != song.shown:
            song.shown = shown
            self.say(f"{song.path.name}: {stage}" + ("" if percent is None else f" {percent}%"))

    def say(self, line: str) -> None:
        if self.live:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def checked_inputs(paths: list[Path]) -> None:
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
        if not os.access(path, os.R_OK):
            raise UsageError(f"{path}: cannot be read (permission denied)")


def out_dirs(paths: list[Path], out: Path) -> list[Path]:
    """`out/<song name>` per input; a name given twice gets `-2`, `-3`."""
    seen: dict[str, int] = {}
    dirs = []
    for path in paths:
        name = path.stem or "audio"
        seen[name] = seen.get(name, 0) + 1
        dirs.append(out / (name if seen[name] == 1 else f"{name}-{seen[name]}"))
    return dirs


def shown_path(path: Path) -> str:
    """A folder as the caller would type it: relative to the current folder when inside."""
    with contextlib.suppress(ValueError):
        return f"./{path.resolve().relative_to(Path.cwd().resolve())}/".replace("/./", "/")
    return f"{path.resolve()}/"


def submit(api: Api, song: Song, args: argparse.Namespace, view: ProgressView) -> None:
    fields = {"model": args.model, "stems": args.stems, "quality": args.quality}
    fields["analysis"] = "false" if args.no_analysis else "true"
    view.update(song, "uploading")

    def upload() -> httpx.Response:
        deadline = time.monotonic() + api.wait_s
        while True:
            with open(song.path, "rb") as f:
                files = {"file": (song.path.name, f)}
                response = api.call("POST", "/api/jobs", 202, 429, files=files, data=fields)
            if response.status_code == 202 or time.monotonic() > deadline:
                return api.check(response, 202)
            # rate limited: wait as the gateway says, within --wait
            view.say(f"{song.path.name}: {error_message(response)}")
            time.sleep(float(response.headers.get("Retry-After", "5")))

    try:
        song.job = api.patiently(upload, retry_5xx=False).json()
    except Refused as e:
        finish(song, view, False, f"refused ({e.status}): {e.message}")
        return
    job = song.job
    reason = job["model_reason"]
    if reason in view.reasons:  # the same for every song of the call: said once
        view.say(f"{song.path.name}: job {job['id']}, model {job['model']}")
    else:
        view.reasons.add(reason)
        view.say(f"{song.path.name}: job {job['id']}, model {job['model']}: {reason}")


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
    try:
        with api.http.stream("GET", link, params=params) as response:
            api.check(response)
            target = folder / f"{name}{extension(response)}"
            part = target.with_name(target.name + ".part")
            with open(part, "wb") as f:
                for block in response.iter_bytes():
                    f.write(block)
    except httpx.TransportError as e:
        raise api.unreachable(e) from e
    os.replace(part, target)
    return target


def extension(response: httpx.Response) -> str:
    """'.flac' from `Content-Disposition: attachment; filename="song_vocals.flac"`."""
    header = Message()
    header["content-disposition"] = response.headers.get("content-disposition", "")
    if name := header.get_filename():
        return Path(name).suffix
    return ".json" if "json" in response.headers.get("content-type", "") else ""


def finish(song: Song, view: ProgressView, ok: bool, outcome: str) -> None:
    song.ok = ok
    if view.live:
        view.update(song, "done" if ok else "failed", 1.0 if ok else None)
    for warning in dict.fromkeys(song.job.get("warnings", [])):
        view.say(f"{song.path.name}: warning: {warning}")
    for note in song.job.get("notes", []):
        view.say(f"{song.path.name}: note: {note}")
    view.say(f"{song.path.name}: {outcome}")


def follow(api: Api, songs: list[Song], args: argparse.Namespace, view: ProgressView) -> None:
    """Poll the running jobs in turn until each is done (stems written) or failed."""
    while running := [s for s in songs if s.ok is None]:
        for song in running:
            try:
                song.job = api.patiently(lambda song=song: api.job(song.job["id"]))
            except Refused as e:
                finish(song, view, False, f"job {song.job['id']} is gone: {e.message}")
                continue
            job = song.job
            if job["status"] not in ("done", "failed"):
                view.update(song, job["stage"], job["progress"])
            if job["status"] == "done":
                download(api, song, args, view)
                names = " ".join(sorted(p.name for p in song.out_dir.iterdir()))
                finish(song, view, True, f"stems in {shown_path(song.out_dir)} ({names})")
            elif job["status"] == "failed":
                message = (job.get("error") or {}).get("message", "no reason given")
                finish(song, view, False, f"failed: {message}")
        if any(s.ok is None for s in songs):
            time.sleep(POLL_S)


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
    songs = [Song(p, d) for p, d in zip(args.files, out_dirs(args.files, args.out), strict=True)]
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
            sys.stderr.write(f"unfinished jobs stay in the gateway: audiosplit status {left[0]}\n")
        raise
    finally:
        api.close()
    return EXIT_OK if all(s.ok for s in songs) else EXIT_FAILED


# ---------------------------------------------------------------------------- jobs, models


def table_console() -> Console:
    # Without a terminal rich assumes 80 columns and would wrap every table row.
    return Console(width=None if sys.stdout.isatty() else 200)


def print_json(value) -> None:
    sys.stdout.write(json.dumps(value, indent=1) + "\n")


def run_status(args: argparse.Namespace) -> int:
    api = Api(args.url)
    try:
        job = api.job(args.id)
    except Refused as e:
        raise no_job(args.id, e) from None
    if args.json:
        print_json(job)
        return EXIT_OK
    width = max(map(len, job))
    for key, value in job.items():
        if not isinstance(value, str | int | float):
            value = json.dumps(value) if value not in (None, [], {}) else "-"
        sys.stdout.write(f"{key:<{width}}  {value}\n")
    return EXIT_OK if job["status"] != "failed" else EXIT_FAILED


def run_list(args: argparse.Namespace) -> int:
    params = {"limit": args.limit, **({"status": args.status} if args.status else {})}
    jobs = Api(args.url).call("GET", "/api/jobs", params=params).json()["jobs"]
    if args.json:
        print_json(jobs)
        return EXIT_OK
    table = Table("id", "status", "filename", "model", "created", "duration")
    for job in jobs:
        minutes, seconds = divmod(round(job["duration_s"] or 0), 60)
        status = job["status"] if job["status"] != "running" else f"running {job['stage']}"
        created = job["created_at"].replace("T", " ").rstrip("Z")
        table.add_row(
            job["id"], status, job["filename"], job["model"], created, f"{minutes}:{seconds:02d}"
        )
    table_console().print(table)
    return EXIT_OK


def run_delete(args: argparse.Namespace) -> int:
    api, failed = Api(args.url), 0
    for job_id in args.ids:
        try:
            api.call("DELETE", f"/api/jobs/{job_id}", 204)
            sys.stdout.write(f"deleted {job_id}\n")
        except Refused as e:
            sys.stderr.write(f"audiosplit: {no_job(job_id, e).message}\n")
            failed += 1
    return EXIT_FAILED if failed else EXIT_OK


def run_models(args: argparse.Namespace) -> int:
    models = Api(args.url).call("GET", "/api/models").json()["models"]
    if args.json:
        print_json(models)
        return EXIT_OK
    table = Table("name", "available", "stems", "reason")
    for m in models:
        table.add_row(
            m["name"], "yes" if m["available"] else "no", ", ".join(m["stems"]), m["reason"]
        )
    table_console().print(table)
    return EXIT_OK


# ---------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiosplit",
        description="Separate songs into stems with an audiosplit gateway, and manage its jobs.",
        epilog=f"Environment: {URL_ENV} (the gateway's URL), {API_KEY_ENV} (sent as "
        f"{API_KEY_HEADER} when the gateway needs a key). Exit status: 0 all done, 1 a job "
        "failed or a request was refused, 2 bad usage, 3 the gateway cannot be reached, "
        "130 interrupted.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"the gateway (default: env {URL_ENV}, else {DEFAULT_URL})",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", help="print the JSON the gateway sent instead of text"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sep = commands.add_parser(
        "separate",
        parents=[common],
        help="upload songs, follow their jobs, write their stems",
        description="Upload each FILE, show its job's progress and write its stems to "
        "DIR/<song name>/<stem>.<ext> (DIR: --out), the analysis (analysis.json) beside them.",
    )
    sep.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="audio files (any format ffmpeg decodes), relative to this folder",
    )
    sep.add_argument(
        "--model",
        default="auto",
        choices=("auto", *MODEL_NAMES),
        help="the separator; auto: the best one whose weights the stack has, for "
        "--quality (default: auto)",
    )
    sep.add_argument(
        "--quality",
        default="preview",
        choices=("preview", "render"),
        help="with --model auto: preview runs htdemucs without shifts (fast), "
        "render htdemucs_ft with one shift (slow, best) (default: preview)",
    )
    sep.add_argument(
        "--stems",
        default="all",
        metavar="STEMS",
        help="all, or one stem (vocals, drums, bass, other; guitar, piano with "
        "htdemucs_6s) to get it and the rest as no_<stem> (default: all)",
    )
    formats = "; ".join(f"{f}: {FORMAT_HELP.get(f, f)}" for f in RESULT_FORMATS)
    sep.add_argument(
        "--format",
        default="wav",
        choices=RESULT_FORMATS,
        help=f"the stems' file format: {formats} (default: wav)",
    )
    sep.add_argument(
        "--clip",
        choices=CLIP_MODES,
        help="how formats other than float wav keep samples beyond full scale: "
        "rescale scales the whole set of stems so the loudest sample fits (as "
        "Demucs does), clamp cuts each sample at full scale; float wav never "
        "clips (default: the gateway's, rescale)",
    )
    sep.add_argument(
        "--no-analysis",
        action="store_true",
        help="skip the analysis (key, tempo, beats, chords, instruments): faster "
        "(default: analyse)",
    )
    sep.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="folder for the stems, one subfolder per song (default: the current folder)",
    )
    sep.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help="how long to keep retrying when the gateway stops answering, e.g. "
        f"while it restarts (default: {DEFAULT_WAIT_S:.0f})",
    )
    sep.add_argument(
        "--start-stack",
        action="store_true",
        help="when nothing answers at --url (a local one), start a temporary "
        "stack for this run and stop it afterwards (default: off)",
    )
    sep.set_defaults(run=run_separate)

    status = commands.add_parser(
        "status",
        parents=[common, as_json],
        help="one job's state",
        description="Show one job's fields (exit 1 if it failed).",
    )
    status.add_argument("id", metavar="ID", help="the job's id")
    status.set_defaults(run=run_status)

    listing = commands.add_parser(
        "list",
        parents=[common, as_json],
        help="the jobs, newest first",
        description="List the gateway's jobs, newest first.",
    )
    listing.add_argument(
        "--status",
        choices=("queued", "running", "done", "failed"),
        help="only jobs with this status (default: all)",
    )
    listing.add_argument(
        "--limit", type=int, default=20, metavar="N", help="at most N jobs, 1 to 500 (default: 20)"
    )
    listing.set_defaults(run=run_list)

    delete = commands.add_parser(
        "delete",
        parents=[common],
        help="delete jobs and their files",
        description="Delete jobs and their files from the gateway.",
    )
    delete.add_argument("ids", nargs="+", metavar="ID", help="the jobs' ids")
    delete.set_defaults(run=run_delete)

    models = commands.add_parser(
        "models",
        parents=[common, as_json],
        help="the separators and whether their weights are here",
        description="List the gateway's separators: available or why not, and their stems.",
    )
    models.set_defaults(run=run_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as e:
        sys.stderr.write(f"audiosplit: {e}\n")
        return EXIT_USAGE
    except Unreachable as e:
        hint = "" if "run.sh up" in str(e) or "--start-stack" in str(e) else f"; {UP_HINT}"
        sys.stderr.write(f"audiosplit: {e}{hint}\n")
        return EXIT_UNREACHABLE
    except Refused as e:
        sys.stderr.write(f"audiosplit: {e.message}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("audiosplit: interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
