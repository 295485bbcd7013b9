"""Server paths kept out of what a client reads: every service's error answers and the gateway's
job messages pass through `without_paths`; the whole text goes to the log.

A path says where a server keeps its data, its weights and its code: nothing a client needs,
and something a stranger should not learn.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from common.config import REPO_ROOT, Settings


def server_paths(*paths: str | Path | None) -> list[str]:
    """Absolute forms of the directories whose names must not reach a client, longest first
    (so that a path inside another is replaced whole)."""
    found = set()
    for p in paths:
        if p:
            found.add(str(Path(p).expanduser().resolve()))
            found.add(str(Path(p).expanduser().absolute()))
    return sorted((f for f in found if f not in ("/", "")), key=len, reverse=True)


def settings_paths(settings: Settings) -> list[str]:
    """The server's own directories: data, models, the weight caches, the repository."""
    caches = (os.environ.get(v) for v in ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE"))
    return server_paths(settings.data_dir, settings.models_dir, REPO_ROOT, *caches)


def without_paths(text: str, paths: Iterable[str]) -> str:
    """`text` with every server path (and whatever follows it up to a space, quote, bracket
    or a colon that ends a clause) replaced by "<server path>"."""
    for root in paths:
        rest = r"(?:[^\s'\"()\[\],;:]|:(?![\s]|$))*"
        text = re.sub(re.escape(root) + rest, "<server path>", text)
    return text
