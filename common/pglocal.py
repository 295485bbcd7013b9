"""A real PostgreSQL server on this machine, from Debian's `postgresql` binaries: what the tests
start (a throw-away one per session, `test/postgres.py`) and what `./run.sh up --scaled` starts
(one whose data lives under the data dir, so jobs survive a restart).

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user that the
Debian package makes, or as an `audiosplit` system user made here if that is missing. It listens
on 127.0.0.1 only, with trust authentication for the one role `audiosplit`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from common.children import die_with_parent

SUPERUSER = "audiosplit"  # the database role clients connect as (trust auth on loopback)


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries (pg_ctl, initdb, postgres) were found."""


def find_bindir() -> Path | None:
    """Where pg_ctl and initdb are: PATH, else Debian's /usr/lib/postgresql/<major>/bin."""
    for pg_ctl in [shutil.which("pg_ctl"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))]:
        if pg_ctl and (Path(pg_ctl).resolve().parent / "initdb").exists():
            return Path(pg_ctl).resolve().parent
    return None


def require_bindir() -> Path:
    bindir = find_bindir()
    if bindir is None:
        raise PostgresMissing(
            "PostgreSQL is not installed (no pg_ctl/initdb on PATH or under "
            "/usr/lib/postgresql): `./run.sh install` installs Debian's postgresql as root"
        )
    return bindir


def server_user() -> str | None:
    """None when not root (the server runs as us); else an unprivileged user to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "audiosplit"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "audiosplit"],
        check=True,
    )
    return "audiosplit"


class PostgresServer:
    """A cluster in `root/data` on 127.0.0.1:`port`, its socket in `root`.

    `durable=False` turns fsync off (tests: a database that need not survive a power cut, and
    fsyncs on a busy 2-core machine would dominate every commit)."""

    def __init__(
        self, bindir: Path, root: Path, port: int, user: str | None, *, durable: bool = False
    ):
        self.bindir, self.root, self.port, self.user = bindir, root, port, user
        self.durable = durable
        self.data = root / "data"
        self.log = root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip()}\n{log}")

    def _own_root(self) -> None:
        """`root` belongs to the server user, who must also reach it through its parents."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user is None:
            return
        shutil.chown(self.root, self.user)
        reach = subprocess.run(["runuser", "-u", self.user, "--", "test", "-x", str(self.root)])
        if reach.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL runs as the user {self.user!r}, who cannot reach {self.root}: a "
                "folder above it is not traversable (chmod o+x it, or choose another DATA_DIR)"
            )

    def init(self) -> None:
        self._own_root()
        sync = [] if self.durable else ["--no-sync"]
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", *sync)

    def options(self) -> list[str]:
        """The server's settings, as `-c` arguments."""
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.root),
            "max_connections": "300",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        return [a for key, value in settings.items() for a in ("-c", f"{key}={value}")]

    # --- in the background, through pg_ctl (the tests: stopped and started again at will) ----

    def start(self) -> None:
        options = " ".join([f"-p {self.port}", *self.options()])
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    # --- in the foreground, as a child process (the stack: it dies with its launcher) ---------

    def spawn(self) -> subprocess.Popen:
        """`postgres` itself as a child in its own process group, logging to `self.log`; SIGINT
        stops it (a fast shutdown), and it gets one if the launcher dies."""
        self._own_root()
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                [*cmd, *self.options()],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=self.user,
                group=pwd.getpwnam(self.user).pw_gid if self.user else None,
                extra_groups=[] if self.user else None,
                cwd=self.root,
                preexec_fn=die_with_parent(signal.SIGINT),
            )

    # --- databases ----------------------------------------------------------------------------

    def create_database(self, name: str | None = None) -> str:
        """A new database (`name`, or a random one); an existing `name` is kept. Its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            found = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if found is None:
                c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def wait_accepting(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Until a connection to `url` succeeds; RuntimeError at once if `proc` (the server) exits."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode} during start")
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def on_both_engines(prefix: str, run: Callable[[str, str], None]) -> None:
    """`run(engine, url)` on a fresh SQLite file, then on a throwaway PostgreSQL server (said
    and skipped when its binaries are not installed): the benches' way to measure both."""
    import tempfile

    from common.ports import free_port  # only the benches need it

    root = Path(tempfile.mkdtemp(prefix=f"audiosplit-{prefix}-"))
    try:
        run("sqlite", f"sqlite:///{root / 'jobs.sqlite3'}")
        bindir = find_bindir()
        if bindir is None:
            print("postgresql: not installed (./run.sh install installs it as root); skipped")
            return
        pg_root = Path(tempfile.mkdtemp(prefix="audiosplit-bench-pg-"))  # its user's own
        server = PostgresServer(bindir, pg_root, free_port(), server_user())
        server.init()
        server.start()
        try:
            run("postgresql", server.create_database())
        finally:
            server.stop("immediate")
            shutil.rmtree(pg_root, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
