"""One job, from decoded input to fused files: its model runs (`gateway.modelrun`: plan, fan
out chunks, fuse), one model's or an ensemble's members' then a chain's links; analysis beside.
A job that resumes after a restart skips the runs that had finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial

from anyio import to_thread

from common.config import Settings
from common.constants import ANALYSIS_WINDOW, SAMPLE_RATE
from common.errors import AudiosplitError
from common.interfaces import AssemblyJob, AssemblyStatus, EnsembleJob, EnsembleMember, FusedResult
from common.logs import job_id_var
from common.redact import settings_paths, without_paths
from common.replicas import ReplicaPool
from gateway.analysis import Analyser, failed_analysis, with_stem_activity
from gateway.assembly import (
    CHAINS,
    FIRST_STAGE,
    Growth,
    assembled_stems,
    check_parts,
    link_key,
    stem_file,
)
from gateway.ensemble import MemberResult, finished_member
from gateway.jobfiles import JobFiles, drop_input, job_files, load_input
from gateway.modelrun import ModelRuns
from gateway.music import Music, MusicAnalyser
from gateway.results import clip_warning
from gateway.schedule import fuser_job_id, separation_share
from gateway.store import JobCancelled, JobStore

log = logging.getLogger("audiosplit.pipeline")


@dataclass
class Pools:
    predictor: ReplicaPool
    fuser: ReplicaPool
    fft: ReplicaPool
    cqt: ReplicaPool


class Pipeline:
    def __init__(
        self, settings: Settings, store: JobStore, pools: Pools, on_end=None, importer=None
    ):
        self.settings = settings
        self.store = store
        self.importer = importer  # gateway/fetching.py's Importer: jobs given as a link
        self.on_end = on_end  # (connection, job) -> None, in the job's last transaction
        self.analyser = Analyser(pools.fft, pools.cqt, settings.analysis_hop_s)
        self.music = MusicAnalyser(pools.fft, pools.cqt, settings.request_timeout_s)
        self.paths = settings_paths(settings)  # kept out of what a job tells its client
        self.runs = ModelRuns(
            settings, store, pools.predictor, pools.fuser, self.analyser.hop, self.paths
        )

    async def run(self, job_id: str) -> None:
        token = job_id_var.set(job_id)
        try:
            await self._run(job_id)
        except AudiosplitError as e:  # becomes the job's error: the client's, so no paths
            public = without_paths(e.message, self.paths)
            if public != e.message:
                log.warning("job failed: %s", e.message)  # the whole message, for the admin
                e.message = public
                e.args = (public,)
            raise
        finally:
            job_id_var.reset(token)

    async def _run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        files = job_files(self.settings, job_id)
        opts = job.options["resolved"]
        if job.source_url and not job.n_frames:  # a link not fetched yet (or not to the end)
            if self.store.transition(job_id, status="running", stage="fetching") is None:
                raise JobCancelled("was cancelled before it started")
            await self.importer.fetch_into(self.store, job, files)
        track = await to_thread.run_sync(load_input, files)  # from the bucket if not here
        if self.store.transition(job_id, status="running", stage="planning") is None:
            raise JobCancelled("was cancelled before it started")
        start = time.perf_counter()
        chained = [link["model"] for link in opts.get("chain") or []]
        await self.runs.fetch_weights(job_id, ",".join(dict.fromkeys([opts["model"], *chained])))

        analysis = None
        if opts["analysis"]:
            analysis = asyncio.create_task(self.analyser.run(job_id, track))
        try:
            result, total = await self._separate_all(job_id, track, opts, files)
        except BaseException:
            if analysis:
                analysis.cancel()
            raise
        # the whole result is final now (an ensemble's too, once combined)
        self.store.update(job_id, ready_s=round(result.n_frames / SAMPLE_RATE, 3))
        warnings = self.store.get(job_id).warnings
        if analysis is not None:
            self.store.update(job_id, stage="analysing")
            warnings += await self._write_analysis(
                files, analysis, result, await self._music(job_id, files, track, opts, result)
            )
        log.info(
            "job done in %.2fs",
            time.perf_counter() - start,
            extra={"fields": {"chunks": total, "model": opts["model"], "peak": result.peak}},
        )
        if (clipping := clip_warning(result.peak)) is not None:
            warnings = [*warnings, clipping]
        ended = self.store.transition(
            job_id,
            self.on_end,
            status="done",
            stage="done",
            progress=1.0,
            stems=result.stems,
            peak=result.peak,
            warnings=warnings,
        )
        if ended is None:
            raise JobCancelled("was cancelled as it finished")
        # Done: the result is all the job needs now; the decoded input goes (disk in proportion).
        await to_thread.run_sync(drop_input, files)

    async def _separate_all(
        self, job_id: str, track, opts: dict, files: JobFiles
    ) -> tuple[FusedResult, int]:
        """The first stage (one model or an ensemble), then a chain's second stages; returns
        the job's result and the number of chunks run."""
        members = opts.get("members") or [{"model": opts["model"]}]
        links = opts.get("chain") or []
        if len(members) == 1 and not links:
            return await self.runs.separate(
                job_id, job_id, opts["model"], track, opts, files.result_key, (0, 1)
            )
        # a chained job's first stage fuses into files of its own, like an ensemble's members
        n_frames, n_parts = track.shape[1], len(members) + len(links)
        if not links:
            return await self._separate_ensemble(
                job_id, members, track, opts, files, files.result_key, n_parts
            )
        first_key = f"{files.result_key}/{FIRST_STAGE}"
        first = await to_thread.run_sync(finished_member, files.store, first_key, n_frames)
        total = 0
        if first is not None:
            log.info("the chain's first stage finished before: not run again")
        elif len(members) == 1:
            result, total = await self.runs.separate(
                job_id,
                fuser_job_id(job_id, "s"),
                opts["model"],
                track,
                opts,
                first_key,
                (0, n_parts),
            )
            first = MemberResult(result.result_key, result.stems)
        else:
            result, total = await self._separate_ensemble(
                job_id, members, track, opts, files, first_key, n_parts
            )
            first = MemberResult(result.result_key, result.stems)
        chained = await self._separate_chain(
            job_id, links, first, first_key, n_frames, opts, files, n_parts
        )
        return chained[0], total + chained[1]

    async def _separate_chain(
        self,
        job_id: str,
        links: list[dict],
        first: MemberResult,
        first_key: str,
        n_frames: int,
        opts: dict,
        files: JobFiles,
        n_parts: int,
    ) -> tuple[FusedResult, int]:
        """Each chained stem of the first stage separated by its model, as that model alone
        separates a track (its own plan, normalisation and defaults), into `result/chains/<k>`;
        the job's result assembled from them as they go (`gateway.assembly`): it grows while
        the last link runs, and is published once every link is done. A resumed job skips the
        links whose result is complete."""
        total = 0
        alone = {**opts, "stem": None, "overlap": None}  # the second model's own defaults
        job = AssemblyJob(
            job_id=job_id,
            stems=assembled_stems(first_key, first.stems, links, files.result_key),
            n_frames=n_frames,
            out_key=files.result_key,
            activity_window=ANALYSIS_WINDOW if opts["analysis"] else 0,
            activity_hop=self.analyser.hop if opts["analysis"] else 0,
        )
        path = f"/assemblies/{job_id}"
        body = job.model_dump()
        growth = Growth(
            lambda: self.runs.fuser_json("POST", f"{path}/extend", AssemblyStatus, json=body),
            self.store,
            job_id,
            len(links),
        )
        for k, link in enumerate(links):
            out_key = link_key(files.result_key, k)
            done = await to_thread.run_sync(finished_member, files.store, out_key, n_frames)
            if done is not None:
                log.info("chain link %d (%s) finished before: not run again", k, link["model"])
                check_parts(link, done.stems)
                await growth.link_ready(k, n_frames)
                continue
            stem_path = files.dir / f"chain-{k}.f32"
            index = first.stems.index(link["stem"])
            stem = await to_thread.run_sync(
                stem_file, files.store, first.result_key, index, stem_path
            )
            at = (n_parts - len(links) + k, n_parts)
            ready = partial(growth.link_ready, k)
            try:
                result, chunks = await self.runs.separate(
                    job_id,
                    fuser_job_id(job_id, f"c{k}"),
                    link["model"],
                    stem,
                    alone,
                    out_key,
                    at,
                    ready,
                )
            finally:
                stem_path.unlink(missing_ok=True)
            check_parts(link, result.stems)
            await growth.link_ready(k, n_frames)
            total += chunks
        self.store.update(job_id, stage="fusing")
        result = await self.runs.fuser_json("POST", path, FusedResult, json=body)
        for folder in (FIRST_STAGE, CHAINS):
            await to_thread.run_sync(files.delete_results_under, folder)
        return result, total

    async def _separate_ensemble(
        self,
        job_id: str,
        members: list[dict],
        track,
        opts: dict,
        files: JobFiles,
        out_key: str,
        n_parts: int,
    ) -> tuple[FusedResult, int]:
        """Each member as its own model run into `result/members/<k>`, then the fuser's
        weighted average into `out_key` (the job's result, or a chain's first stage); the
        members' files are removed after. A resumed job skips the members that had finished
        (their result is complete). `n_parts`: the job's model runs, chained ones included."""
        fused, total = [], 0
        measure = opts["analysis"] and out_key == files.result_key  # a chain measures its end
        for k, member in enumerate(members):
            member_key = f"{files.result_key}/members/{k}"
            done = await to_thread.run_sync(
                finished_member, files.store, member_key, track.shape[1]
            )
            if done is not None:
                log.info(
                    "ensemble member %d (%s) finished before: not run again", k, member["model"]
                )
                fused.append(done)
                continue
            result, chunks = await self.runs.separate(
                job_id,
                fuser_job_id(job_id, f"m{k}"),
                member["model"],
                track,
                opts,
                member_key,
                (k, n_parts),
            )
            fused.append(MemberResult(result.result_key, result.stems))
            total += chunks
        self.store.update(job_id, stage="fusing")
        job = EnsembleJob(
            job_id=job_id,
            members=[
                EnsembleMember(
                    model=m["model"], result_key=r.result_key, stems=r.stems, weight=m["weight"]
                )
                for m, r in zip(members, fused, strict=True)
            ],
            stems=fused[0].stems,
            method=opts.get("ensemble_method") or "avg_wave",
            out_key=out_key,
            activity_window=ANALYSIS_WINDOW if measure else 0,
            activity_hop=self.analyser.hop if measure else 0,
        )
        result = await self.runs.fuser_json(
            "POST", f"/ensembles/{job_id}", FusedResult, json=job.model_dump()
        )
        await to_thread.run_sync(files.delete_results_under, "members")
        return result, total

    async def _music(self, job_id, files, track, opts, result: FusedResult) -> Music:
        """Beats, key, chords, sections and MIDI from the final stems (gateway/music.py)."""
        try:
            midi = opts.get("midi", False)
            start = separation_share(True, midi)

            def report(stage: str, fraction: float) -> None:
                progress = round(start + (0.99 - start) * fraction, 4)
                self.store.update(job_id, stage=f"analysing: {stage}", progress=progress)

            return await self.music.run(
                job_id, files, track, opts["model"], result.stems, midi, report
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug here must not cost the user the stems
            log.exception("music analysis failed")
            return Music(
                errors=[f"internal error ({type(e).__name__}; the gateway's log says why)"]
            )

    async def _write_analysis(
        self, files: JobFiles, task: asyncio.Task, result: FusedResult, music: Music
    ):
        """Wait for the analysis, add the stems' levels and the music of the stems, write
        analysis.json and the MIDI file; never raises but for cancellation (analysis never
        fails a job). Returns its warnings."""
        try:
            analysis = await task
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug in the analysis must not cost the user the stems
            analysis = failed_analysis(e)
        document = with_stem_activity(analysis, result.stems, result.activity_db)
        warnings = list(analysis.warnings)
        with_music(document["track"], music)
        if music.errors:
            warnings.append("analysis of the stems failed in part: " + "; ".join(music.errors))
        if music.midi is not None:
            files.write_bytes(files.midi_path, music.midi)
        files.write_json(files.analysis_path, document)
        return warnings


def with_music(track: dict, music: Music) -> None:
    """The music stage's parts over the windows' (tempo, beats, key, chords), in place: where
    a part of the music stage failed, the windows' value stays."""
    track.update(music.track)
    for name, why in music.reasons.items():
        if why:
            track.setdefault("reasons", {})[name] = why
        else:
            track.get("reasons", {}).pop(name, None)
    if music.errors:
        track["errors"] = [*track.get("errors", []), *music.errors]
