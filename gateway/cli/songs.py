"""The songs of `audiosplit separate`: a file or a link each, and the folder its stems go to.

A file's folder is known at once (`out_dirs`: its name); a link's once the gateway has its
title (`link_dir`), made safe as a folder name (`folder_name`).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import TaskID

from gateway.cli.api import UsageError

LINK = re.compile(r"https?://", re.IGNORECASE)
NAME_CHARS = 100  # a link's folder name is cut here: titles can be a paragraph
SHOWN_LINK_CHARS = 48  # a link is shown this long until its title is known


def song_source(value: str) -> Path | str:
    """argparse's type for a song: a link (http:// or https://) stays a string, else a path."""
    return value if LINK.match(value) else Path(value)


@dataclass
class Song:
    source: Path | str  # a file as given, relative to the caller's folder; or a link
    out_dir: Path | None  # where its stems go; a link's is chosen once its title is known
    name: str = ""  # as the progress shows it: the file's name, a link's title once known
    # sent with every try of its POST: a retry after a timeout answers the job the first made
    idempotency_key: str = field(default_factory=lambda: str(uuid.uuid4()))
    task: TaskID | None = None
    job: dict = field(default_factory=dict)
    ok: bool | None = None  # None: not finished
    shown: tuple = ()  # the last progress shown without a terminal

    def __post_init__(self) -> None:
        if not self.name:
            self.name = shown_link(self.source) if self.is_link else self.source.name

    @property
    def is_link(self) -> bool:
        return isinstance(self.source, str)


def shown_link(link: str) -> str:
    """A link as a name: without its scheme, cut to SHOWN_LINK_CHARS."""
    bare = LINK.sub("", link, count=1)
    return bare if len(bare) <= SHOWN_LINK_CHARS else bare[: SHOWN_LINK_CHARS - 1] + "…"


def checked_inputs(sources: list[Path | str]) -> None:
    for path in sources:
        if isinstance(path, str):
            continue  # a link: the gateway says whether it may fetch it
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


def folder_name(title: str) -> str:
    """A link's title as one folder name: no path separators, control or shell-awkward
    characters, no leading dot (a hidden folder), at most NAME_CHARS characters."""
    name = " ".join(re.sub(r'[\x00-\x1f\x7f/\\:*?"<>|]', " ", title).split())
    return name[:NAME_CHARS].strip(" .") or "audio"


def free_dir(folder: Path, taken: set[Path]) -> Path:
    """`folder`, or `folder-2`, `-3`… when another song of this run has it."""
    candidate, n = folder, 1
    while candidate in taken:
        n += 1
        candidate = folder.with_name(f"{folder.name}-{n}")
    return candidate


def link_dir(song: Song, songs: list[Song], out: Path) -> Path:
    """Where a link's stems go: `out/<title>`, else `out/<file name's stem>` as the gateway
    named it, unless another song of this run has that folder."""
    job = song.job
    name = job.get("title") or Path(job.get("filename") or "audio").stem
    return free_dir(out / folder_name(name), {s.out_dir for s in songs if s.out_dir})


def shown_path(path: Path) -> str:
    """A folder as the caller would type it: relative to the current folder when inside."""
    with contextlib.suppress(ValueError):
        return f"./{path.resolve().relative_to(Path.cwd().resolve())}/".replace("/./", "/")
    return f"{path.resolve()}/"
