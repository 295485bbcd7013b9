"""One model run of a job: plan, fan the chunks out, fuse; and a model's weights fetched first.

Chunks go to the channel predictor with bounded concurrency and their stems on to the fuser,
which keeps them on disk; a run that resumes after a restart asks the fuser which chunks it
already holds and sends only the others. `gateway.pipeline` composes runs into a job (one
model, an ensemble's members, a chain's stages).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from common.chunks import chunk_window, standardisation
from common.config import Settings
from common.constants import ANALYSIS_WINDOW
from common.errors import ModelUnavailable, UpstreamError
from common.interfaces import (
    ChunkSpec,
    FuseChunkMeta,
    FusedResult,
    FuseJob,
    FuseStatus,
    Normalisation,
    PlanRequest,
    PlanResponse,
    SeparateMeta,
    SeparateResult,
    SeparatorInfo,
)
from common.redact import without_paths
from common.replicas import ReplicaPool, expect_ok
from common.wire import decode, encode
from gateway.schedule import (
    ProgressReport,
    group_batches,
    output_stems,
    separation_share,
    track_order,
)
from gateway.store import JobStore

SHIFT_SEED = 0  # random shifts are drawn from a fixed seed: the same job gives the same stems


DOWNLOAD_POLL_S = 1.0  # how often a job in stage `downloading model` asks how far it is


def download_stage(done: int, total: int | None) -> str:
    """The job's stage while its model downloads: "downloading model (12.0 of 80.3 MB)"."""
    if total:
        return f"downloading model ({done / 1e6:.1f} of {total / 1e6:.1f} MB)"
    return f"downloading model ({done / 1e6:.1f} MB so far)"


class ModelRuns:
    """The calls one model run makes to the channel predictor and the fuser. `hop`: the
    analysis hop (frames) the fuser measures a job's stem activity at."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        predictor: ReplicaPool,
        fuser: ReplicaPool,
        hop: int,
        paths,
    ):
        self.settings, self.store, self.hop = settings, store, hop
        self.predictor, self.fuser = predictor, fuser
        self.paths = paths  # kept out of the warnings a job tells its client

    async def fetch_weights(self, job_id: str, model: str) -> None:
        """First use fetches: a model whose weights are missing is downloaded by the predictor
        (the job in stage `downloading model`) before planning; a failed download fails the job
        with the predictor's message."""
        for name in model.split(","):  # an ensemble's members, each fetched in turn
            if name != "dsp" and "/" not in name:  # dsp has no weights, a path no hub
                await self._fetch_one(job_id, name)

    async def _fetch_one(self, job_id: str, model: str) -> None:
        response = await self.predictor.request("GET", f"/models/{model}")
        expect_ok(response, "the channel predictor")
        if SeparatorInfo.model_validate_json(response.content).available:
            return
        self.store.update(job_id, stage="downloading model")
        # the fetch and the polls of its progress go to one replica: the one downloading
        sticky = f"fetch {model}"
        fetch = asyncio.create_task(
            self.predictor.request(
                "POST",
                f"/models/{model}/fetch",
                sticky_key=sticky,
                timeout=max(self.settings.request_timeout_s, 3600.0),
            )
        )
        try:
            shown = "downloading model"
            while not (await asyncio.wait({fetch}, timeout=DOWNLOAD_POLL_S))[0]:
                try:
                    poll = await self.predictor.request(
                        "GET", f"/models/{model}", sticky_key=sticky
                    )
                except UpstreamError:  # progress is a nicety: the fetch says how it ended
                    continue
                if poll.status_code != 200:
                    continue
                progress = SeparatorInfo.model_validate_json(poll.content).download
                if progress is not None:
                    stage = download_stage(progress.bytes, progress.total)
                    if stage != shown:
                        self.store.update(job_id, stage=stage)
                        shown = stage
        finally:
            fetch.cancel()  # the job was cancelled or failed: stop waiting (no-op when done)
        response = fetch.result()
        if 400 <= response.status_code < 500:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "model_unavailable", "message": response.text[:300]}
            raise ModelUnavailable(error["message"], code=error["code"])
        expect_ok(response, "the channel predictor")
        self.store.update(job_id, stage="planning")

    async def separate(
        self,
        job_id: str,
        fuse_id: str,
        model: str,
        track,
        opts: dict,
        out_key: str,
        part: tuple[int, int],
        on_ready: Callable[[int], Awaitable[None]] | None = None,
    ) -> tuple[FusedResult, int]:
        """One model over the whole track: plan, fan the chunks out, fuse them into `out_key`
        as fuser job `fuse_id`. `part` = (k, n): this is the k-th of n models of the job (its
        share of the progress). `on_ready`: told how far the result is final as it grows (a
        chain's link; the job's own result reports it itself). Returns the fused result and
        the number of chunks."""
        plan = await self._plan(
            PlanRequest(
                model=model,
                n_frames=track.shape[1],
                overlap=opts["overlap"],
                shifts=opts["shifts"],
                seed=SHIFT_SEED,
            )
        )
        norm = standardisation(track) if plan.model.normalise else Normalisation()
        measure = opts["analysis"] and part[1] == 1  # an ensemble measures its combination
        fuse_job = FuseJob(
            job_id=fuse_id,
            plans=plan.plans,
            model_stems=plan.model.stems,
            stem=opts["stem"],
            norm=norm,
            out_key=out_key,
            activity_window=ANALYSIS_WINDOW if measure else 0,
            activity_hop=self.hop if measure else 0,
        )
        status = await self.fuser_json(
            "PUT", f"/jobs/{fuse_id}", FuseStatus, json=fuse_job.model_dump()
        )
        received = set(status.received)
        todo = [(p.lead, c) for p in plan.plans for c in p.chunks if c.index not in received]
        total = sum(len(p.chunks) for p in plan.plans)
        done = total - len(todo)
        # an ensemble's members and a chain's runs fuse into files of their own: the job's
        # result is final only once they are combined (a chain's `Growth` writes its ready_s;
        # a run's report must not write it back to 0)
        own = part[1] == 1
        share = separation_share(opts["analysis"], opts.get("midi", False))
        report = ProgressReport(
            self.store, job_id, total, part, status.ready_frames if own else None, share
        )
        # the stems are known once planned: a client can lay out its players while it runs
        first = part[0] == 0 and not opts.get("chain")  # a chain's stems are known at submission
        stems = {"stems": output_stems(fuse_job)} if first else {}
        report.write(done, stage="separating", **stems)
        if on_ready is not None and status.ready_frames:  # resumed: part of it final already
            await on_ready(status.ready_frames)
        limiter = asyncio.Semaphore(self.settings.chunk_concurrency)
        normalise = norm if plan.model.normalise else None

        async def one(batch: list[tuple[int, ChunkSpec]]) -> None:
            nonlocal done
            async with limiter:
                windows = np.stack(
                    [chunk_window(track, c, normalise, lead=lead) for lead, c in batch]
                )
                chunks = [c for _, c in batch]
                stems = await self._predict(job_id, model, chunks, windows)
                for chunk, piece in zip(chunks, stems, strict=True):
                    fused = await self._fuse_chunk(fuse_id, chunk, piece)
                    if own:
                        report.ready(fused.ready_frames)
                    elif on_ready is not None:
                        await on_ready(fused.ready_frames)
            done += len(batch)
            report.tick(done)

        batches = track_order(group_batches(todo, plan.model.batch_size))
        tasks = [asyncio.create_task(one(b)) for b in batches]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        report.write(done, stage="fusing")
        result = await self.fuser_json("POST", f"/jobs/{fuse_id}/finalize", FusedResult)
        await self.fuser.request("DELETE", f"/jobs/{fuse_id}", sticky_key=fuse_id)
        return result, total

    async def _plan(self, req: PlanRequest) -> PlanResponse:
        response = await self.predictor.request(
            "POST", "/plan", json=req.model_dump(), timeout=self.settings.request_timeout_s
        )
        expect_ok(response, "the channel predictor")
        return PlanResponse.model_validate_json(response.content)

    async def _predict(
        self, job_id: str, model: str, chunks: list[ChunkSpec], windows: np.ndarray
    ) -> np.ndarray:
        """(batch, 2, window) -> (batch, n_stems, 2, length) from the predictor."""
        meta = SeparateMeta(model=model, chunks=chunks, job_id=job_id)
        body, headers = encode(windows, meta)
        response = await self.predictor.request(
            "POST",
            "/separate",
            content=body,
            headers=headers,
            timeout=self.settings.request_timeout_s,
        )
        expect_ok(response, "the channel predictor")
        stems, result = decode(response.content, response.headers, SeparateResult)
        self._note_warnings(job_id, result.warnings)
        if stems.shape[0] != len(chunks):
            raise UpstreamError(f"the predictor answered {stems.shape[0]} of {len(chunks)} chunks")
        return stems

    def _note_warnings(self, job_id: str, new: list[str]) -> None:
        """Add the predictor's warnings (device fallbacks) to the job, each once."""
        if not new:
            return
        new = [without_paths(w, self.paths) for w in new]
        job = self.store.get(job_id)
        merged = job.warnings + [w for w in dict.fromkeys(new) if w not in job.warnings]
        if merged != job.warnings:
            self.store.update(job_id, warnings=merged)

    async def _fuse_chunk(self, job_id: str, chunk: ChunkSpec, stems: np.ndarray) -> FuseStatus:
        """Send one chunk's stems to the fuser; its answer says how far the result is final."""
        body, headers = encode(stems, FuseChunkMeta(chunk=chunk))
        response = await self.fuser.request(
            "PUT",
            f"/jobs/{job_id}/chunks/{chunk.index}",
            content=body,
            headers=headers,
            sticky_key=job_id,
        )
        expect_ok(response, "the channel fuser")
        return FuseStatus.model_validate_json(response.content)

    async def fuser_json(self, method: str, path: str, model, **kwargs):
        job_id = path.split("/")[2]
        response = await self.fuser.request(
            method, path, sticky_key=job_id, timeout=self.settings.request_timeout_s, **kwargs
        )
        expect_ok(response, "the channel fuser")
        return model.model_validate_json(response.content)
