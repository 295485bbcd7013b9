"""Import of a song from a URL with yt-dlp: direct links to audio or video files (its generic
extractor) and the pages of the sites it knows (YouTube, SoundCloud, Bandcamp, ...).

Every connection yt-dlp makes goes through the gateway's EgressProxy (gateway/egress_proxy.py), so
the public-address rule holds for each redirect and each fragment. `probe` reads what is at
the URL before a job is queued, for a clear 422 (a playlist, a live stream, a song too long or
too large); `fetch` downloads the best audio to one file, with the size cap and a deadline
enforced while the bytes arrive. Our decoder takes any container, so nothing is converted and
yt-dlp runs no program (no ffmpeg, no JavaScript runtime).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from yt_dlp import YoutubeDL
from yt_dlp.networking.exceptions import HTTPError
from yt_dlp.utils import UnsupportedError, YoutubeDLError

from common.audio import clock  # the wording of the decoder's duration refusal
from common.errors import AudiosplitError
from gateway.egress import FAILED_HEADER, REFUSED_HEADER, EgressRefused, check_url, with_deadline
from gateway.upload import megabytes

log = logging.getLogger("audiosplit.urlimport")

DEADLINE_FLOOR_S = 60.0  # the least time a fetch is given, whatever its size cap
SLOWEST_RATE = 50_000  # bytes/s: a fetch may take max_bytes / SLOWEST_RATE (at least the floor)
RETRIES = 3  # yt-dlp's retries of a dropped download or fragment
# yt-dlp runs ffmpeg for fixups and some streams when it finds one; at a path that does not
# exist it goes on without ("Continuing without ffmpeg"), so it never starts a program.
NO_FFMPEG = "/nonexistent/audiosplit-runs-no-ffmpeg"
_TUNNEL = re.compile(r"Tunnel connection failed: (\d{3}) (.*)")  # http.client's CONNECT error


class UrlRejected(AudiosplitError):
    """The URL was reached but holds nothing we import: a playlist, a live stream, no audio,
    too long, too large, or a server that failed or did not answer."""

    code = "url_rejected"
    status = 422


@dataclass(frozen=True)
class Probe:
    url: str  # the page's own URL as yt-dlp names it (the URL given, for a direct link)
    title: str
    duration_s: float | None  # None when unknown before download (a direct link, mostly)
    filesize: int | None  # bytes of the audio that would be fetched; None when unknown
    extractor: str  # yt-dlp's name for the site ("generic" for a direct link)


@dataclass(frozen=True)
class Fetched:
    path: Path
    title: str
    bytes: int


def default_deadline_s(max_bytes: int) -> float:
    return max(DEADLINE_FLOOR_S, max_bytes / SLOWEST_RATE)


async def probe(
    url: str,
    *,
    proxy_url: str,
    max_duration_s: float,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool = False,
) -> Probe:
    """What is at `url`, read without downloading the audio; UrlRejected or EgressRefused
    (both 422) when it is nothing we would import. Takes at most `timeout_s`."""
    await check_url(url, allow_private)  # the early refusal in plain words; the proxy enforces
    options = _options(with_deadline(proxy_url, timeout_s), timeout_s)
    try:
        info = await asyncio.wait_for(asyncio.to_thread(_probe, url, options), timeout_s)
    except TimeoutError:
        raise UrlRejected(_no_answer(url, timeout_s)) from None
    _check(info, url, max_duration_s, max_bytes)
    size = info.get("filesize") or info.get("filesize_approx")
    return Probe(
        url=info.get("webpage_url") or url,
        title=_title(info, url),
        duration_s=float(info["duration"]) if info.get("duration") else None,
        filesize=int(size) if size else None,
        extractor=str(info.get("extractor") or "generic"),
    )


def _probe(url: str, options: dict[str, Any]) -> dict[str, Any]:
    with YoutubeDL(options) as ydl:
        return _extract(ydl, url, options["socket_timeout"])


def fetch(
    url: str,
    dest: Path,
    *,
    proxy_url: str,
    max_bytes: int,
    max_duration_s: float,
    timeout_s: float,
    on_progress: Callable[[int, int | None], None],
    deadline_s: float | None = None,
) -> Fetched:
    """Downloads the best audio at `url` to `dest` (one file, any container); blocking, run it
    in a worker thread. `on_progress(done_bytes, total_bytes or None)` is called as bytes
    arrive. Refuses (422) past `max_bytes` while downloading, when a read waits more than
    `timeout_s`, or when the whole fetch passes `deadline_s` (default: default_deadline_s);
    no partial file is left behind."""
    deadline_s = default_deadline_s(max_bytes) if deadline_s is None else deadline_s
    watch = _Watch(url, max_bytes, deadline_s, on_progress)
    options = _options(with_deadline(proxy_url, deadline_s), timeout_s) | {
        "outtmpl": {"default": str(dest).replace("%", "%%")},  # a template: % is special
        "max_filesize": max_bytes,  # a declared Content-Length over the cap: not even begun
        "progress_hooks": [watch],
    }
    _remove_partial(dest)
    try:
        with YoutubeDL(options) as ydl:
            info = _extract(ydl, url, timeout_s)
            _check(info, url, max_duration_s, max_bytes)
            try:
                ydl.process_ie_result(info, download=True)
            except YoutubeDLError as e:
                watch.check_deadline()  # the proxy's cut at the deadline, in our words
                raise _rejection(e, url, timeout_s) from e
        watch.check_deadline()  # a body of unknown length cut at the deadline looks complete
        if not dest.is_file():  # yt-dlp declines a declared size over max_filesize quietly
            raise UrlRejected(_too_large(url, max_bytes))
    except BaseException:
        _remove_partial(dest)
        raise
    return Fetched(path=dest, title=_title(info, url), bytes=dest.stat().st_size)


class _Watch:
    """yt-dlp's progress hook: the size cap and the deadline, checked at every block."""

    def __init__(
        self,
        url: str,
        max_bytes: int,
        deadline_s: float,
        on_progress: Callable[[int, int | None], None],
    ) -> None:
        self.url, self.max_bytes, self.deadline_s = url, max_bytes, deadline_s
        self.until = time.monotonic() + deadline_s
        self.on_progress = on_progress

    def __call__(self, status: dict[str, Any]) -> None:
        if status.get("status") != "downloading":
            return
        done = int(status.get("downloaded_bytes") or 0)
        total = status.get("total_bytes")
        if done > self.max_bytes or (total and total > self.max_bytes):
            raise UrlRejected(_too_large(self.url, self.max_bytes))  # yt-dlp lets it through
        self.check_deadline()
        self.on_progress(done, total or status.get("total_bytes_estimate"))

    def check_deadline(self) -> None:
        if time.monotonic() > self.until:
            raise UrlRejected(
                f"the download from {_host(self.url)} took longer than the "
                f"{clock(self.deadline_s)} allowed for it"
            )


def _options(proxy_url: str, timeout_s: float) -> dict[str, Any]:
    return {
        "proxy": proxy_url,
        "socket_timeout": timeout_s,
        "format": "bestaudio/best",
        "noplaylist": True,  # a watch URL inside a playlist means the one track
        "playlistend": 1,  # a playlist reached through a redirect is read no further
        "retries": RETRIES,
        "fragment_retries": RETRIES,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _Logger(),  # nothing on stdout: yt-dlp's lines go to logging
        "cachedir": False,  # nothing written outside the destination's folder
        "js_runtimes": {},  # no deno/node for YouTube's JavaScript (fewer formats, no program)
        "ffmpeg_location": NO_FFMPEG,
        "fixup": "never",
        "hls_prefer_native": True,
        "overwrites": True,
        "updatetime": False,
    }


class _Logger:
    """yt-dlp's logger interface, forwarded to logging; its errors reach the caller as
    exceptions, so they are logged at info only."""

    def debug(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

    def info(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

    def warning(self, message: str) -> None:
        log.info("yt-dlp: %s", message)

    def error(self, message: str) -> None:
        log.info("yt-dlp: %s", message)


def _extract(ydl: YoutubeDL, url: str, timeout_s: float) -> dict[str, Any]:
    """The info of the one track at `url`, formats chosen, nothing downloaded yet."""
    try:
        # unprocessed first: a channel is refused before yt-dlp pages through its entries
        info = ydl.extract_info(url, download=False, process=False)
        _refuse_collection(info, url)
        info = ydl.process_ie_result(info, download=False)
    except YoutubeDLError as e:
        raise _rejection(e, url, timeout_s) from e
    _refuse_collection(info, url)
    return info


def _refuse_collection(info: dict[str, Any] | None, url: str) -> None:
    if info is None:  # yt-dlp reported an error it was told to ignore: there is no track
        raise UrlRejected(f"no audio found at {url}")
    if info.get("_type") in ("playlist", "multi_video"):
        raise UrlRejected(f"{url} is a playlist: give one track's URL")


def _check(info: dict[str, Any], url: str, max_duration_s: float, max_bytes: int) -> None:
    if info.get("live_status") == "is_upcoming":
        raise UrlRejected(f"{url} is a live stream that has not begun: give a recording's URL")
    if info.get("is_live") or info.get("live_status") == "is_live":
        raise UrlRejected(f"{url} is a live stream: give a recording's URL")
    duration = info.get("duration")
    if duration and duration > max_duration_s:
        raise UrlRejected(
            f"The audio at {url} is {clock(duration)} long; the limit is "
            f"{clock(max_duration_s)}. Give a shorter track."
        )
    size = info.get("filesize") or info.get("filesize_approx")
    if size and size > max_bytes:
        raise UrlRejected(
            f"the audio at {url} ({megabytes(int(size))}) is larger than the limit of "
            f"{megabytes(max_bytes)}"
        )
    if not (info.get("url") or info.get("requested_formats") or info.get("requested_downloads")):
        raise UrlRejected(f"no audio found at {url}")


def _rejection(error: BaseException, url: str, timeout_s: float) -> AudiosplitError:
    """Our error for one of yt-dlp's: the proxy's refusal and failures in its own words,
    then the server's status, a timeout, or yt-dlp's own message."""
    causes = list(_causes(error))
    for cause in causes:
        if isinstance(cause, AudiosplitError):  # raised by our progress hook
            return cause
        headers = getattr(getattr(cause, "response", None), "headers", None) or {}
        if REFUSED_HEADER in headers:
            return EgressRefused(headers[REFUSED_HEADER])
        if FAILED_HEADER in headers:
            return UrlRejected(headers[FAILED_HEADER])
        tunnel = _TUNNEL.fullmatch(str(cause))
        if tunnel:  # a refused https CONNECT: the status line is all clients keep
            status, message = tunnel.groups()
            return EgressRefused(message) if status == "403" else UrlRejected(message)
    for cause in causes:
        if isinstance(cause, UnsupportedError):
            return UrlRejected(f"no audio found at {url}: no link to audio or video in the page")
        if isinstance(cause, HTTPError):
            return UrlRejected(
                f"the server at {_host(url)} answered {cause.status} {cause.reason} for {url}"
            )
        if isinstance(cause, TimeoutError) or "timed out" in str(cause).lower():
            return UrlRejected(_no_answer(url, timeout_s))
    text = str(error).removeprefix("ERROR: ").split("; please report this issue")[0]
    if "Requested format is not available" in text:
        return UrlRejected(f"no audio found at {url}")
    return UrlRejected(f"could not fetch {url}: {text}")


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and every error behind it: yt-dlp keeps them in `exc_info` and `cause`,
    requests and urllib3 in `reason` and `args`."""
    seen: set[int] = set()
    todo: list[object] = [error]
    while todo:
        item = todo.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        exc_info = getattr(item, "exc_info", None)
        todo += list(exc_info or ())[1:2]
        todo += [getattr(item, "cause", None), getattr(item, "reason", None)]
        todo += [item.__cause__, item.__context__, *item.args]


def _remove_partial(dest: Path) -> None:
    """The file and yt-dlp's leftovers beside it (.part, .ytdl, .part-Frag<n>)."""
    leftovers = dest.parent.glob(f"{_glob_escape(dest.name)}.part*")
    for path in [dest, dest.with_name(f"{dest.name}.ytdl"), *leftovers]:
        path.unlink(missing_ok=True)


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _title(info: dict[str, Any], url: str) -> str:
    return str(info.get("title") or Path(urlsplit(url).path).name or url)


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _no_answer(url: str, timeout_s: float) -> str:
    return f"the server at {_host(url)} did not answer within {timeout_s:g} s"


def _too_large(url: str, max_bytes: int) -> str:
    return f"the audio at {url} is larger than the limit of {megabytes(max_bytes)}"
