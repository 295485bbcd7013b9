"""A chained job's links and its result assembled from them.

The first stage fuses into `result/first`; each link (a chained stem separated again by its
model) into `result/chains/<k>`. The job's result takes the first stage's stems, each chained
one replaced by its link's parts (`<stem>-<part>`), and grows while the links run: the fuser
copies every frame final in all of them (`POST /assemblies/{id}/extend`), so the job's
`ready_s` grows and a player starts on it before the job is done; the links run one after
another, so with several it grows while the last one runs. The end publishes it whole
(`POST /assemblies/{id}`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import soundfile as sf

from common.constants import CHANNELS, SAMPLE_RATE, WIRE_DTYPE
from common.errors import AudiosplitError, ModelUnavailable
from common.interfaces import AssembledStem, AssemblyStatus
from common.rawfile import RawArrayFile
from common.storage import Storage
from gateway.store import JobStore

FIRST_STAGE = "first"  # under the result's key: a chained job's first stage
CHAINS = "chains"  # under the result's key: `chains/<k>`, the k-th chained stem's parts
READ_BLOCK = 1 << 18  # frames of a stored result read at a time

log = logging.getLogger("audiosplit.pipeline")


def link_key(result_key: str, k: int) -> str:
    return f"{result_key}/{CHAINS}/{k}"


def assembled_stems(
    first_key: str, first_stems: list[str], links: list[dict], result_key: str
) -> list[AssembledStem]:
    """The job's stems, in order: the first stage's (fused into `first_key`), each chained
    stem replaced by its link's parts (fused into `link_key(result_key, k)`)."""
    out = []
    chained = {link["stem"]: (k, link) for k, link in enumerate(links)}
    for i, stem in enumerate(first_stems):
        if stem not in chained:
            out.append(AssembledStem(name=stem, out_key=first_key, index=i))
            continue
        k, link = chained[stem]
        out += [
            AssembledStem(name=name, out_key=link_key(result_key, k), index=j)
            for j, name in enumerate(link["parts"])
        ]
    return out


def check_parts(link: dict, stems: list[str]) -> None:
    """A link's model gave the parts planned for it at submission."""
    if len(stems) != len(link["parts"]):
        raise ModelUnavailable(
            f"{link['model']} gave {len(stems)} stems, {len(link['parts'])} were planned "
            f"({', '.join(link['parts'])})"
        )


class Growth:
    """How far each link's result is final; the job's result extended to the least of them
    (`extend`: the fuser's call) at most every `INTERVAL_S`, and its `ready_s` stored. A failed
    extension is logged and left: the next one, or the end's assembly, catches up."""

    INTERVAL_S = 0.5

    def __init__(
        self,
        extend: Callable[[], Awaitable[AssemblyStatus]],
        store: JobStore,
        job_id: str,
        n_links: int,
    ):
        self.extend, self.store, self.job_id = extend, store, job_id
        self.ready = [0] * n_links
        self.shown = 0
        self.last = float("-inf")
        self.lock = asyncio.Lock()

    async def link_ready(self, k: int, frames: int) -> None:
        """Link `k`'s result is final to `frames`."""
        self.ready[k] = max(self.ready[k], frames)
        if min(self.ready) <= self.shown or time.monotonic() - self.last < self.INTERVAL_S:
            return
        async with self.lock:
            if min(self.ready) <= self.shown:
                return
            self.last = time.monotonic()
            try:
                status = await self.extend()
            except (AudiosplitError, OSError) as e:  # a nicety: the end's assembly is what counts
                log.warning("cannot extend the assembled result yet: %s", e)
                return
            if status.ready_frames > self.shown:
                self.shown = status.ready_frames
                self.store.update(self.job_id, ready_s=round(self.shown / SAMPLE_RATE, 3))


def stem_file(store: Storage, key: str, index: int, path: Path) -> RawArrayFile:
    """The stem numbered `index` of a fused result (channels = stems x [L, R]) as a (2, n)
    float32 file at `path`, read a window at a time like the job's input: a chained stem
    costs the gateway a block of memory, whatever the song's length."""
    with store.open(key) as f, sf.SoundFile(f) as wav, open(path, "wb") as out:
        n = wav.frames
        out.truncate(CHANNELS * n * 4)
        for lo in range(0, n, READ_BLOCK):
            block = wav.read(min(READ_BLOCK, n - lo), dtype="float32", always_2d=True)
            pair = block[:, CHANNELS * index : CHANNELS * (index + 1)].T.astype(WIRE_DTYPE)
            for side in range(CHANNELS):
                os.pwrite(out.fileno(), pair[side].tobytes(), (side * n + lo) * 4)
    return RawArrayFile(path, (CHANNELS, n))
