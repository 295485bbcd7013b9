"""The public REST API's downloads: the multi-channel WAV, one stem, the ZIP, the analysis,
the MIDI of the stems, a mix of the stems (stretched, transposed: gateway/mixdown.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from anyio import to_thread
from fastapi import Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response, StreamingResponse

from common.audio import media_type
from common.constants import CLIP_MODES, RESULT_FORMATS
from common.errors import Conflict, InvalidOption, NotFound
from gateway.api import Gw, JobId, api_router, job_json, store_call
from gateway.jobfiles import job_files
from gateway.mixdown import SEMITONE_RANGE, SPEED_RANGE, mix_file, mix_options
from gateway.music import single_track
from gateway.partial import done_piece, progress_headers, wav_range
from gateway.results import Answer, stem_answer, zip_answer
from gateway.schemas import Analysis, binary, error_responses
from gateway.store import JobRecord

router = api_router("results")

Format = Annotated[
    Literal[RESULT_FORMATS],  # type: ignore[valid-type]
    Query(
        description="wav: 32-bit float (never clipped); wav16, wav24: PCM; flac: 24-bit, "
        "flac16: 16-bit; mp3: 320 kbit/s"
    ),
]
Clip = Annotated[
    Literal[CLIP_MODES],  # type: ignore[valid-type]
    Query(
        description="for all formats but wav, samples beyond full scale: rescale (the whole "
        "set scaled so its loudest sample fits, as Demucs does) or clamp"
    ),
]
STEM_NAME = re.compile(r"[a-z0-9_][a-z0-9_-]{0,47}")  # a chained stem's part: `vocals-lead`


def stem_param(stem: Annotated[str, PathParam(description="One of the job's `stems`.")]) -> str:
    if not STEM_NAME.fullmatch(stem):
        raise NotFound(f"no stem {stem[:80]!r}")
    return stem


StemName = Annotated[str, Depends(stem_param)]


async def done_job(gw, job_id: str) -> JobRecord:
    job = await store_call(gw.store.get, job_id)
    if job.status != "done":
        raise Conflict(f"job {job_id} is {job.status}, its results are not ready", code="not_ready")
    return job


FromFrame = Annotated[
    int,
    Query(
        ge=0,
        le=2**40,
        description="only frames [from_frame, ready) of the result (44.1 kHz frames), e.g. "
        "the part of a running job's prefix a player does not have yet; float WAV only",
    ),
]


# The result routes' answers, besides their audio: how much of the result is final.
PROGRESS_HEADERS = {
    name: {"description": description, "schema": {"type": kind}}
    for name, description, kind in (
        ("X-Audiosplit-Partial", "true when the answer is less than the whole result", "string"),
        ("X-Audiosplit-Ready-Frames", "frames of the result that are final so far", "integer"),
        ("X-Audiosplit-Ready-S", "the same in seconds", "number"),
        ("X-Audiosplit-From-Frame", "the result's frame the answer starts at", "integer"),
    )
}
RESULT_ERRORS = error_responses(
    404,
    409,
    422,
    503,
    507,
    why={
        404: "No such job or stem, or its result is gone (not_found).",
        409: "No part of the result is final yet, the job failed, or (stems) a format other "
        "than wav was asked for while the job runs (not_ready).",
        422: "A query parameter is not accepted, e.g. from_frame past the end "
        "(invalid_request, invalid_option).",
    },
)


class WavResponse(Response):
    media_type = "audio/wav"  # for the spec: these routes answer their own responses


@router.get(
    "/jobs/{job_id}/result",
    summary="All stems as one multi-channel 32-bit float WAV (while the job runs: the final "
    "prefix so far)",
    response_class=WavResponse,
    responses={
        **binary(
            "audio/wav",
            description="32-bit float WAV, 44.1 kHz, 2 channels per stem (the job's "
            "`channels`), as many frames as the input (while running: the final prefix).",
            headers=PROGRESS_HEADERS,
        ),
        **RESULT_ERRORS,
    },
)
async def get_result(job_id: JobId, gw: Gw, from_frame: FromFrame = 0) -> Response:
    job = await store_call(gw.store.get, job_id)
    files = job_files(gw.settings, job_id)
    name = f"{stem_of(job.filename)}_stems.wav"
    if job.status != "done" or from_frame:
        return await to_thread.run_sync(wav_range, files, job, None, from_frame, name)
    await to_thread.run_sync(files.fetch, files.result_path)  # into the cache, once
    response = file_response(files.result_path, name, "audio/wav")
    response.headers.update(progress_headers(done_piece(job, 0)))
    return response


@router.get(
    "/result/{job_id}",
    summary="Alias of GET /api/jobs/{id}/result",
    response_class=WavResponse,
    responses={
        **binary(
            "audio/wav", description="As GET /api/jobs/{id}/result.", headers=PROGRESS_HEADERS
        ),
        **RESULT_ERRORS,
    },
)
async def get_result_alias(job_id: JobId, gw: Gw, from_frame: FromFrame = 0) -> Response:
    return await get_result(job_id, gw, from_frame)


@router.get(
    "/jobs/{job_id}/stems/{stem}",
    summary="One stem (while the job runs: the final prefix so far, format=wav)",
    response_class=WavResponse,
    responses={
        **binary(
            *sorted({media_type(f) for f in RESULT_FORMATS}),
            description="The stem, stereo, 44.1 kHz, in the format asked for.",
            headers=PROGRESS_HEADERS,
        ),
        **RESULT_ERRORS,
    },
)
async def get_stem(
    job_id: JobId,
    stem: StemName,
    gw: Gw,
    format: Format = "wav",
    clip: Clip = "rescale",
    from_frame: FromFrame = 0,
) -> Response:
    job = await store_call(gw.store.get, job_id)
    if stem not in job.stems:
        raise NotFound(f"job {job_id} has no stem {stem!r}; its stems: {', '.join(job.stems)}")
    files = job_files(gw.settings, job_id)
    if job.status != "done" or from_frame:  # a frame range: the running job's prefix
        if format != "wav" and job.status == "done":
            raise InvalidOption("from_frame works with format=wav (32-bit float) only")
        if format != "wav":
            raise Conflict(
                f"job {job_id} is {job.status}: format={format} is available when the job is "
                "done (while it runs, format=wav gives the final part so far)",
                code="not_ready",
            )
        name = f"{stem_of(job.filename)}_{stem}.wav"
        return await to_thread.run_sync(wav_range, files, job, stem, from_frame, name)
    # made from result.wav while it is sent (a FLAC or MP3 is encoded first), never kept
    answer = await to_thread.run_sync(stem_answer, files, job, stem, format, clip)
    name = f"{stem_of(job.filename)}_{stem}.{answer.ext}"
    return streamed(answer, name, progress_headers(done_piece(job, 0)))


@router.get(
    "/jobs/{job_id}/download.zip",
    summary="All stems (24-bit FLAC unless `format` says otherwise) and the analysis, zipped",
    response_class=StreamingResponse,
    responses={
        **binary("application/zip", description="A ZIP of the stems, the job and its analysis."),
        **error_responses(
            404,
            409,
            422,
            503,
            507,
            why={
                404: "No such job, or its result is gone (not_found).",
                409: "The job is not done (not_ready).",
            },
        ),
    },
)
async def download_zip(
    job_id: JobId, gw: Gw, format: Format = "flac", clip: Clip = "rescale"
) -> StreamingResponse:
    """Streamed as it is zipped (its length is known only at the end), never stored."""
    job = await done_job(gw, job_id)
    files = job_files(gw.settings, job_id)
    chunks = await to_thread.run_sync(zip_answer, files, job, job_json(job), format, clip)
    disposition = attachment(f"{stem_of(job.filename)}_stems.zip")
    return StreamingResponse(
        chunks, media_type="application/zip", headers={"Content-Disposition": disposition}
    )


@router.get(
    "/jobs/{job_id}/analysis",
    summary="What is playing where: the track's key, tempo, beats, chords, loudness; per window "
    "labels, stems present, stem levels, key",
    response_model=Analysis,
    responses=error_responses(
        404,
        503,
        507,
        why={
            404: "No such job (not_found), it ran with analysis=false (no_analysis), or its "
            "analysis is not written yet (not_ready)."
        },
    ),
)
async def get_analysis(job_id: JobId, gw: Gw) -> FileResponse:
    job = await store_call(gw.store.get, job_id)
    files = job_files(gw.settings, job_id)
    path = files.analysis_path
    if not job.options.get("resolved", {}).get("analysis", True):
        raise NotFound(
            f"job {job_id} ran without analysis (analysis=false was asked); submit the song "
            "again with analysis=true to get one",
            code="no_analysis",
        )
    if not await to_thread.run_sync(files.fetch, path):
        why = "it failed" if job.status == "failed" else "it is written when the job is done"
        raise NotFound(f"job {job_id} is {job.status}: no analysis yet ({why})", code="not_ready")
    return FileResponse(path, media_type="application/json")


MIDI_RESPONSES = {
    **binary("audio/midi", description="A Standard MIDI File (type 1) with the tempo map."),
    **error_responses(
        404,
        409,
        503,
        507,
        why={
            404: "No such job (not_found); it ran with midi=false or analysis=false (no_midi); "
            "no MIDI track of that stem (not_found).",
            409: "The job is not done (not_ready).",
        },
    ),
}


async def midi_bytes(gw, job_id: str) -> tuple[JobRecord, bytes]:
    job = await done_job(gw, job_id)
    if not job.options.get("resolved", {}).get("midi"):
        raise NotFound(
            f"job {job_id} ran without MIDI (midi=false or analysis=false); submit the song "
            "again with midi=true to get it",
            code="no_midi",
        )
    files = job_files(gw.settings, job_id)
    if not await to_thread.run_sync(files.fetch, files.midi_path):
        raise NotFound("the MIDI file is gone (deleted or expired)")
    return job, await to_thread.run_sync(files.midi_path.read_bytes)


@router.get(
    "/jobs/{job_id}/midi",
    summary="The stems as one multi-track MIDI file (a track per stem, named after it)",
    response_class=Response,
    responses=MIDI_RESPONSES,
)
async def get_midi(job_id: JobId, gw: Gw) -> Response:
    job, data = await midi_bytes(gw, job_id)
    disposition = attachment(f"{stem_of(job.filename)}.mid")
    return Response(data, media_type="audio/midi", headers={"Content-Disposition": disposition})


@router.get(
    "/jobs/{job_id}/midi/{stem}",
    summary="One stem as MIDI, with the track's tempo map",
    response_class=Response,
    responses=MIDI_RESPONSES,
)
async def get_stem_midi(job_id: JobId, stem: StemName, gw: Gw) -> Response:
    job, data = await midi_bytes(gw, job_id)
    try:
        one = await to_thread.run_sync(single_track, data, stem)
    except KeyError:
        raise NotFound(
            f"job {job_id} has no MIDI track {stem!r}; pitched stems only (and drums)"
        ) from None
    disposition = attachment(f"{stem_of(job.filename)}_{stem}.mid")
    return Response(one, media_type="audio/midi", headers={"Content-Disposition": disposition})


MIX_FORMATS = sorted({media_type(f) for f in RESULT_FORMATS})


@router.get(
    "/jobs/{job_id}/mix",
    summary="The stems mixed with gains and pans, time-stretched and pitch-shifted: what a "
    "musician practising hears",
    response_class=WavResponse,
    responses={
        **binary(
            *MIX_FORMATS,
            description="The mix, stereo, 44.1 kHz, round(frames / speed) frames, in the "
            "format asked for. Made once per set of options and kept with the job.",
        ),
        **error_responses(
            404,
            409,
            422,
            503,
            507,
            why={
                404: "No such job, or its result is gone (not_found).",
                409: "The job is not done (not_ready).",
                422: "An option is not accepted: speed or semitones out of range, a stem the "
                "job lacks, gains or pan not STEM:VALUE, an unknown format (invalid_request, "
                "invalid_option).",
            },
        ),
    },
)
async def get_mix(
    job_id: JobId,
    gw: Gw,
    speed: Annotated[
        float,
        Query(
            ge=SPEED_RANGE[0],
            le=SPEED_RANGE[1],
            description="Tempo factor, pitch kept: 0.8 plays at 80 % (1.25 x as long).",
        ),
    ] = 1.0,
    semitones: Annotated[
        float,
        Query(
            ge=SEMITONE_RANGE[0],
            le=SEMITONE_RANGE[1],
            description="Transposition, tempo kept; fractions too (0.5: a quarter tone). "
            "Speed 1 and 0 semitones: the exact sum of the stems, never stretched.",
        ),
    ] = 0.0,
    gains: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="Per stem, dB: STEM:DB,... with -inf to mute, e.g. "
            "`vocals:-inf,drums:-6`; stems not listed: 0 dB.",
        ),
    ] = None,
    pan: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="Per stem, a balance from -1 (left) to 1 (right): STEM:PAN,..., "
            "e.g. `vocals:-0.5`; stems not listed: 0.",
        ),
    ] = None,
    format: Format = "wav",
    clip: Clip = "rescale",
) -> FileResponse:
    job = await done_job(gw, job_id)
    options = mix_options(job.stems, speed, semitones, gains, pan, format, clip)
    files = job_files(gw.settings, job_id)
    path = await to_thread.run_sync(mix_file, files, job, options)
    name = f"{stem_of(job.filename)}_mix.{path.suffix.lstrip('.')}"
    return file_response(path, name, media_type(format))


def streamed(answer: Answer, filename: str, headers: dict[str, str]) -> StreamingResponse:
    """An answer made while it is sent, with its length known up front (players and progress
    bars want it) and the download name a FileResponse would give."""
    headers = {
        **headers,
        "Content-Length": str(answer.size),
        "Content-Disposition": attachment(filename),
    }
    return StreamingResponse(answer.chunks, media_type=answer.media_type, headers=headers)


def attachment(filename: str) -> str:
    """Content-Disposition as Starlette's FileResponse writes it."""
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'


def file_response(path: Path, filename: str, media_type: str) -> FileResponse:
    if not path.exists():
        raise NotFound("the result file is gone (deleted or expired)")
    return FileResponse(path, media_type=media_type, filename=filename)


def stem_of(filename: str) -> str:
    return (Path(filename).stem or "audio").replace(" ", "_")
