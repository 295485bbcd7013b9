"""First use fetches: whether the model hubs answer, one shared download per model, and how
far a download has got.

The download itself is the library's own where there is one (`demucs.pretrained.get_model`,
openunmix's loaders through torch.hub), run with the hubs online, so the files are verified as
the library verifies them (torch.hub's SHA-256 prefix in the file name, huggingface_hub's size
and hash checks) and land where the offline lookup finds them; a checkpoint published only as a
URL (the RoFormers) comes through `fetch_url`. Progress is read from the disk, never from inside
a library: torch.hub writes `<file>.<hex>.partial` beside its destination, huggingface_hub
`blobs/<etag>.incomplete`, `fetch_url` `<file>.<hex>.partial`; the expected size comes from a
HEAD of each URL. This module never imports a family (the family modules import it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from common.config import Settings
from common.errors import ModelUnavailable
from common.interfaces import DownloadProgress

log = logging.getLogger("audiosplit.download")

CHECK_TIMEOUT_S = 2.0  # one HEAD to a hub: long enough for a slow link, short enough per job
PARTIAL_SUFFIXES = (".partial", ".incomplete")  # torch.hub and fetch_url; huggingface_hub
READ_BLOCK = 1 << 16  # bytes per read of fetch_url: the partial file grows as they come

_answers: dict[str, tuple[float, bool]] = {}  # url -> (monotonic time checked, answered)
_answers_lock = threading.Lock()


def hub_answers(url: str, ttl_s: float) -> bool:
    """Whether `url`'s host answers HTTP at all (any status), checked at most once per `ttl_s`.

    Offline, the libraries' own retries cost ~25 s per attempt; this costs one short HEAD a
    minute, so `model=auto` falls back at once."""
    now = time.monotonic()
    with _answers_lock:
        cached = _answers.get(url)
        if cached is not None and now - cached[0] < ttl_s:
            return cached[1]
    parts = urlsplit(url)
    try:
        httpx.head(f"{parts.scheme}://{parts.netloc}/", timeout=CHECK_TIMEOUT_S)
        answered = True
    except httpx.HTTPError:
        answered = False
    with _answers_lock:
        _answers[url] = (time.monotonic(), answered)
    if not answered:
        log.info("%s does not answer: treating the hub as offline", url)
    return answered


def fetch_refusal(settings: Settings, urls: list[str]) -> str | None:
    """None when weights may be fetched from one of `urls` now; else why not, for a person."""
    if not settings.auto_fetch:
        return "fetching on first use is off (AUTO_FETCH=false)"
    if settings.hf_hub_offline:
        return "the hubs are switched off (HF_HUB_OFFLINE=1)"
    if any(hub_answers(u, settings.network_check_ttl_s) for u in urls):
        return None
    hosts = " nor ".join(urlsplit(u).netloc for u in urls)
    return f"no network: neither {hosts} answered within {CHECK_TIMEOUT_S:.0f} s"


def download_failed(name: str, error: BaseException, timeout_s: float) -> ModelUnavailable:
    """The job's error for a failed download: what happened and what to do."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, TimeoutError) or "timed out" in str(error).lower():
        text = f"no data for {timeout_s:g} s (FETCH_TIMEOUT_S): {text}"
    return ModelUnavailable(
        f"{name}: downloading the weights failed ({text}). Nothing was kept; try again later, "
        f"run `./run.sh fetch-models {name}` where the network allows, or copy the file(s) "
        "into models/ by hand.",
        code="model_download_failed",
    )


class Downloads:
    """One download per model at a time: a second job asking for the same model waits for the
    first one's result instead of starting another. `progress(name)` says how far it is."""

    def __init__(self) -> None:
        self._running: dict[str, Future] = {}
        self._watches: dict[str, DownloadWatch] = {}
        self._lock = threading.Lock()

    def fetch(
        self,
        name: str,
        download: Callable[[], None],
        plan: Callable[[], list[list[Expected]]] | None = None,
        timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        """Run `download` for `name`, or wait for the one already running; re-raises its error.
        `plan`: the files it will write (see `Expected`), for `progress`. Blocks: call it in a
        worker thread."""
        with self._lock:
            future = self._running.get(name)
            owner = future is None
            if owner:
                future = self._running[name] = Future()
                if plan is not None:
                    self._watches[name] = DownloadWatch(plan, timeout_s)
        assert future is not None
        if owner:
            try:
                start = time.perf_counter()
                log.info("downloading %s", name)
                download()
                log.info("downloaded %s in %.1fs", name, time.perf_counter() - start)
                future.set_result(None)
            except BaseException as e:
                log.warning("downloading %s failed: %s", name, e)
                future.set_exception(e)
            finally:
                with self._lock:
                    self._running.pop(name, None)
                    self._watches.pop(name, None)
        future.result()

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def progress(self, name: str) -> DownloadProgress | None:
        """Bytes on disk so far and the total expected, while `name` downloads; else None."""
        with self._lock:
            watch = self._watches.get(name)
        return None if watch is None else watch.progress()


@dataclass(frozen=True)
class Expected:
    """A file a download writes: the folder it lands in, a prefix of its name there (and of
    its partial file's; "" for huggingface_hub's blobs, named by hash), and the URL whose
    HEAD gives its size (None: not known)."""

    folder: Path
    prefix: str
    url: str | None


class DownloadWatch:
    """How far one download is, from the files it has written since it started.

    `plan()` gives alternatives (e.g. the Hugging Face hub, then a legacy repo), each a list of
    `Expected`: the bytes count files of any alternative (only one gets written), the total is
    that of the first alternative whose every HEAD answers with a size, found in the background
    so that a slow HEAD never delays the download."""

    def __init__(self, plan: Callable[[], list[list[Expected]]], timeout_s: float):
        try:
            self.alternatives = plan()
        except Exception as e:  # progress is a nicety: the download goes ahead without it
            log.warning("no download progress: %s", e)
            self.alternatives = []
        self.before = {f for files in self.alternatives for f in self._files(files)}
        self.total: int | None = None
        threading.Thread(target=self._find_total, args=(timeout_s,), daemon=True).start()

    @staticmethod
    def _files(expected: list[Expected]) -> set[Path]:
        found = set()
        for e in expected:
            if e.folder.is_dir():
                found |= {p for p in e.folder.iterdir() if p.name.startswith(e.prefix)}
        return found

    def progress(self) -> DownloadProgress:
        size = 0
        for path in {f for files in self.alternatives for f in self._files(files)} - self.before:
            try:
                if not path.is_symlink() and path.is_file():
                    size += path.stat().st_size
            except OSError:  # renamed between the listing and the stat: counted next time
                pass
        return DownloadProgress(bytes=size, total=self.total)

    def _find_total(self, timeout_s: float) -> None:
        for files in self.alternatives:
            sizes = [remote_size(e.url, timeout_s) if e.url else None for e in files]
            if sizes and all(s is not None for s in sizes):
                self.total = sum(sizes)
                return


def remote_size(url: str, timeout_s: float) -> int | None:
    """The size a HEAD of `url` announces (the hub's X-Linked-Size for LFS files, else
    Content-Length after redirects); None when it does not answer with one."""
    try:
        r = httpx.head(
            url, follow_redirects=True, timeout=timeout_s, headers={"Accept-Encoding": "identity"}
        )
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    size = r.headers.get("X-Linked-Size") or r.headers.get("Content-Length")
    return int(size) if size and size.isdigit() else None


def fetch_url(
    url: str,
    dst: Path,
    timeout_s: float,
    sha256: str | None = None,
    check: Callable[[Path], None] | None = None,
) -> None:
    """Download `url` to `dst` through `<dst>.<hex>.partial`, renamed only once complete (as
    many bytes as announced), of the pinned `sha256` (None: not published) and passing `check`
    (e.g. loading it); otherwise nothing is left. `timeout_s`: the longest wait for a byte.
    Raises httpx.HTTPError, ValueError (size or hash), or what `check` raises."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f"{dst.name}.{uuid.uuid4().hex}.partial")
    try:
        digest, size = hashlib.sha256(), 0
        headers = {"Accept-Encoding": "identity"}  # the announced length is the file's
        with (
            httpx.stream(
                "GET", url, follow_redirects=True, timeout=timeout_s, headers=headers
            ) as r,
            partial.open("wb") as f,
        ):
            r.raise_for_status()
            announced = r.headers.get("Content-Length")
            for block in r.iter_raw(READ_BLOCK):
                f.write(block)
                digest.update(block)
                size += len(block)
        if announced is not None and size != int(announced):
            raise ValueError(f"{url}: got {size} bytes of the {announced} announced")
        if sha256 is not None and digest.hexdigest() != sha256:
            raise ValueError(
                f"{url}: SHA-256 hash mismatch: expected {sha256}, got {digest.hexdigest()}"
            )
        if check is not None:
            check(partial)
        os.replace(partial, dst)
    finally:
        partial.unlink(missing_ok=True)
