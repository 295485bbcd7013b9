"""Channel fuser service (port 8006): reassembles predicted chunks into the final file.

`PUT /jobs/{id}` records a job's plan; `PUT /jobs/{id}/chunks/{index}` stores one chunk's stems
(idempotent: a retried chunk replaces itself) and fuses by weighted overlap-add the part of the
track it makes final into the job's result dir (`prediction/prefix.py`: the answer's
`ready_frames` says how far); `POST /jobs/{id}/finalize` fuses the rest and publishes the
multi-channel WAV; `POST /ensembles/{id}` combines several members' results, weighted, into one;
`POST /assemblies/{id}` (and `/extend` while it runs) assembles a chained job's result.
"""

from __future__ import annotations

import shutil
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import soundfile as sf
from anyio import to_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi import Path as PathParam

from common.config import Settings, get_settings
from common.errors import BadRequest, StorageError
from common.interfaces import (
    AssemblyJob,
    AssemblyStatus,
    EnsembleJob,
    FuseChunkMeta,
    FusedResult,
    FuseJob,
    FuseStatus,
)
from common.service import create_service_app
from common.storage import Storage, storage_for
from common.wire import decode
from prediction.assembly import assemble_stems, extend_assembly
from prediction.fusion import JobAccumulator, combine_members

router = APIRouter()

JobId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class Jobs:
    """The fuser's job files: under `<data dir>/fuser`, and the storage the settings name."""

    def __init__(self, root: Path, store: Storage):
        self.root, self.store = root, store

    def __call__(self, job_id: str) -> JobAccumulator:
        return JobAccumulator(self.root, job_id, self.store)


def get_jobs(request: Request) -> Jobs:
    return request.app.state.jobs


Root = Annotated[Jobs, Depends(get_jobs)]


@router.put("/jobs/{job_id}", response_model=FuseStatus)
async def create_job(job_id: JobId, job: FuseJob, root: Root) -> FuseStatus:
    acc = root(job_id)
    if job.job_id != job_id:
        raise BadRequest(f"path says job {job_id}, body says {job.job_id}")
    await to_thread.run_sync(acc.create, job)
    return await to_thread.run_sync(acc.status)


@router.get("/jobs/{job_id}", response_model=FuseStatus)
async def job_status(job_id: JobId, root: Root) -> FuseStatus:
    return await to_thread.run_sync(root(job_id).status)


@router.put("/jobs/{job_id}/chunks/{index}", response_model=FuseStatus)
async def put_chunk(job_id: JobId, index: int, request: Request, root: Root) -> FuseStatus:
    stems, meta = decode(await request.body(), request.headers, FuseChunkMeta)
    if meta.chunk.index != index:
        raise BadRequest(f"path says chunk {index}, header says {meta.chunk.index}")
    acc = root(job_id)
    await to_thread.run_sync(acc.add_chunk, meta.chunk, stems)
    return await to_thread.run_sync(acc.status)


@router.post("/jobs/{job_id}/finalize", response_model=FusedResult)
async def finalize(job_id: JobId, root: Root) -> FusedResult:
    return await to_thread.run_sync(root(job_id).finalize)


@router.post("/ensembles/{job_id}", response_model=FusedResult)
async def combine(job_id: JobId, job: EnsembleJob, root: Root) -> FusedResult:
    """An ensemble's final file from its members' results (weighted, per stem)."""
    if job.job_id != job_id:
        raise BadRequest(f"path says job {job_id}, body says {job.job_id}")
    missing = [s for m in job.members for s in job.stems if s not in m.stems]
    if missing:
        raise BadRequest(f"members lack stems {sorted(set(missing))}")
    acc = root(job_id)
    try:
        return await to_thread.run_sync(combine_members, job, acc)
    except (OSError, sf.LibsndfileError) as e:
        raise StorageError(f"cannot combine the members of {job_id}: {e}") from e
    finally:
        if root.store.remote:  # the combination is in the bucket: drop the local copy
            await to_thread.run_sync(shutil.rmtree, acc.dir, True)


def assembly_of(job_id: str, job: AssemblyJob, root: Jobs) -> JobAccumulator:
    if job.job_id != job_id:
        raise BadRequest(f"path says job {job_id}, body says {job.job_id}")
    names = [stem.name for stem in job.stems]
    if len(set(names)) != len(names):
        raise BadRequest(f"stems named twice: {names}")
    return root(job_id)


@router.post("/assemblies/{job_id}/extend", response_model=AssemblyStatus)
async def extend(job_id: JobId, job: AssemblyJob, root: Root) -> AssemblyStatus:
    """A chained job's result grown by what is final in every result it takes stems from."""
    acc = assembly_of(job_id, job, root)
    try:
        grow = await to_thread.run_sync(extend_assembly, job, acc)
    except (OSError, sf.LibsndfileError) as e:
        raise StorageError(f"cannot assemble the stems of {job_id}: {e}") from e
    # in object storage the local copy is kept while it grows: the next call appends to it
    return AssemblyStatus(job_id=job_id, ready_frames=grow.ready, n_frames=job.n_frames)


@router.post("/assemblies/{job_id}", response_model=FusedResult)
async def assemble(job_id: JobId, job: AssemblyJob, root: Root) -> FusedResult:
    """A chained job's final file: each stem taken from the fused result that holds it."""
    acc = assembly_of(job_id, job, root)
    try:
        return await to_thread.run_sync(assemble_stems, job, acc)
    except (OSError, sf.LibsndfileError) as e:
        raise StorageError(f"cannot assemble the stems of {job_id}: {e}") from e
    finally:
        if root.store.remote:  # the assembly is in the bucket: drop the local copy
            await to_thread.run_sync(shutil.rmtree, acc.dir, True)


@router.delete("/jobs/{job_id}", status_code=204)
async def delete_job(job_id: JobId, root: Root) -> None:
    await to_thread.run_sync(root(job_id).delete)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        root = Path(settings.data_dir) / "fuser"
        root.mkdir(parents=True, exist_ok=True)
        app.state.jobs = Jobs(root, storage_for(settings))
        app.state.ready = True
        yield

    return create_service_app(
        "fuser",
        settings,
        routers=[router],
        lifespan=lifespan,
        description="Weighted overlap-add of predicted chunks into the final stem files.",
    )
