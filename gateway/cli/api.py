"""The gateway's REST API as the `audiosplit` command sees it: the client, its errors, its settings.

`Api` sends the API key (env AUDIOSPLIT_API_KEY) and turns a connection failure into `Unreachable`
(exit 3) and an error status into `Refused` (exit 1); `Api.patiently` rides out a gateway that is
restarting. The exit statuses and environment names of the whole command live here too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from email.message import Message
from pathlib import Path

import httpx

URL_ENV = "AUDIOSPLIT_URL"
API_KEY_ENV = "AUDIOSPLIT_API_KEY"
PORT_ENV = "GATEWAY_PORT"  # the stack's own setting: `./run.sh up` with GATEWAY_PORT=9000 …
DEFAULT_URL = "http://127.0.0.1:8000"


def default_url(env: Mapping[str, str] = os.environ) -> str:
    """AUDIOSPLIT_URL, else this machine's gateway at GATEWAY_PORT (where `./run.sh up` put it
    when that is set too), else DEFAULT_URL."""
    if env.get(URL_ENV, "").strip():
        return env[URL_ENV].strip().rstrip("/")
    port = env.get(PORT_ENV, "").strip()
    return f"http://127.0.0.1:{port}" if port.isdigit() else DEFAULT_URL


# gateway.access.API_KEY_HEADER (a unit test keeps them equal); importing it would pull in
# FastAPI, half a second at every start
API_KEY_HEADER = "X-API-Key"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
BACKOFF_S = (0.5, 5.0)  # first and longest pause between tries while the gateway is away
DEFAULT_WAIT_S = 300.0  # how long a gateway may be away before we give up
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


def error_code(response: httpx.Response) -> str:
    """The gateway's `{"error": {"code"}}` ('not_cancellable'), '' when the body has none."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


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

    def save(
        self, link: str, params: Mapping[str, str], target_of: Callable[[httpx.Response], Path]
    ) -> Path:
        """GET `link` streamed to `<target>.part`, renamed to the target when whole; the target
        is chosen from the answer (its attachment name) by `target_of`."""
        try:
            with self.http.stream("GET", link, params=params) as response:
                self.check(response)
                target = target_of(response)
                part = target.with_name(target.name + ".part")
                with open(part, "wb") as f:
                    for block in response.iter_bytes():
                        f.write(block)
        except httpx.TransportError as e:
            raise self.unreachable(e) from e
        os.replace(part, target)
        return target

    def job(self, job_id: str) -> dict:
        return self.call("GET", f"/api/jobs/{job_id}").json()

    def cancel(self, job_id: str) -> dict:
        """The job, cancelled; `Refused` 409 when it had ended, 404 when there is none."""
        return self.call("POST", f"/api/jobs/{job_id}/cancel").json()


def attachment_name(response: httpx.Response) -> str | None:
    """The file name of `Content-Disposition: attachment; filename="song_vocals.flac"`."""
    header = Message()
    header["content-disposition"] = response.headers.get("content-disposition", "")
    name = header.get_filename()
    return Path(name).name if name else None


def no_job(job_id: str, e: Refused) -> Refused:
    """404, or 422 for an id that cannot be one: both mean there is no such job."""
    return Refused(e.status, f"no job {job_id}") if e.status in (404, 422) else e
