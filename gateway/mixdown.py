"""What a musician hears, rendered on the server: a finished job's stems mixed with per-stem
gains and pans, time-stretched (pitch kept) and pitch-shifted (tempo kept), in a result format.

The stretch is Rubber Band's, through Spotify's `pedalboard.time_stretch` (GPL-3.0, docs/api.md
says what that means for an installation). Speed 1 and 0 semitones never go through it: that
mix is the stems' weighted sum, exactly, made block by block. A stretch takes the whole mix at
once (pedalboard has no streaming stretch): ~21 MB of float32 stereo a minute of song, plus the
stretched copy and Rubber Band's own buffers, ~75 MB a minute at the peak (bench/bench_mix.py).

Each mix is kept beside the job's other files, `mixes/<key>.<ext>` (in the bucket too with
object storage), `key` a digest of the normalised options: the same options are rendered once
and served from there, and the mixes go when the job goes. Identical requests that arrive while
one renders wait for it (within one gateway).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.audio import file_extension
from common.audio_encode import FLOAT_FORMATS, write_audio, write_audio_blocks
from common.constants import SAMPLE_RATE
from common.errors import InvalidOption, NotFound
from gateway.jobfiles import JobFiles
from gateway.results import ResultFile
from gateway.store import JobRecord

SPEED_RANGE = (0.5, 1.5)  # x the original tempo
SEMITONE_RANGE = (-12.0, 12.0)
GAIN_DB_RANGE = (-60.0, 24.0)  # dB; besides -inf (muted)
PAN_RANGE = (-1.0, 1.0)  # -1 left only, 0 as it is, +1 right only
MIX_DIR = "mixes"  # under the job's folder
_MUTED = ("-inf", "mute", "muted", "off")


@dataclass(frozen=True)
class MixOptions:
    """One mix, normalised: values rounded to what is audible, defaults (0 dB, centre) left
    out and the rest sorted by stem, so equal mixes have equal options and one cache key."""

    speed: float = 1.0  # 0.8: 80 % of the tempo, 1.25 x as long
    semitones: float = 0.0  # +2: a whole tone up
    gains_db: tuple[tuple[str, float], ...] = ()  # (stem, dB), -inf = muted
    pans: tuple[tuple[str, float], ...] = ()  # (stem, -1..+1)
    fmt: str = "wav"
    clip: str = "rescale"

    @property
    def stretches(self) -> bool:
        return self.speed != 1.0 or self.semitones != 0.0

    def key(self) -> str:
        """16 hex digits naming this mix among a job's mixes."""
        gains = [[stem, str(db)] for stem, db in self.gains_db]  # JSON has no -inf
        pans = [list(p) for p in self.pans]
        canonical = json.dumps([self.speed, self.semitones, gains, pans, self.fmt, self.clip])
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def mix_options(
    stems: list[str],
    speed: float = 1.0,
    semitones: float = 0.0,
    gains: str | None = None,
    pan: str | None = None,
    fmt: str = "wav",
    clip: str = "rescale",
) -> MixOptions:
    """The options of a mix of `stems`, checked and normalised. Raises InvalidOption naming
    the problem: a value out of range, an unknown stem, a malformed `gains` or `pan`."""
    _check_range("speed", speed, SPEED_RANGE)
    _check_range("semitones", semitones, SEMITONE_RANGE)
    levels = parse_levels("gains", gains, stems, _gain_db, "vocals:-inf,drums:-6")
    pans = parse_levels("pan", pan, stems, _pan, "vocals:-0.5,drums:0.3")
    return MixOptions(
        speed=round(float(speed), 4),
        semitones=round(float(semitones), 2),
        gains_db=tuple((s, g) for s, g in sorted(levels.items()) if g != 0.0),
        pans=tuple((s, p) for s, p in sorted(pans.items()) if p != 0.0),
        fmt=fmt,
        clip=clip,
    )


def _check_range(name: str, value: float, bounds: tuple[float, float]) -> None:
    if not (math.isfinite(value) and bounds[0] <= value <= bounds[1]):
        raise InvalidOption(f"{name}={value} is out of range: {bounds[0]:g} to {bounds[1]:g}")


def parse_levels(name: str, text: str | None, stems: list[str], value, example: str) -> dict:
    """`stem:value,stem:value` -> {stem: value(stem, text)}; each of `stems` at most once."""
    levels: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        stem, sep, raw = item.partition(":")
        stem = stem.strip()
        if not sep or not stem or not raw.strip():
            raise InvalidOption(
                f"{name}: {item.strip()[:40]!r} is not STEM:VALUE; write e.g. {name}={example}"
            )
        if stem not in stems:
            raise InvalidOption(
                f"{name}: the job has no stem {stem[:40]!r}; its stems: {', '.join(stems)}"
            )
        if stem in levels:
            raise InvalidOption(f"{name}: {stem!r} is given twice")
        levels[stem] = value(stem, raw.strip())
    return levels


def _gain_db(stem: str, raw: str) -> float:
    if raw.lower() in _MUTED:
        return -math.inf
    try:
        db = float(raw.lower().removesuffix("db"))
    except ValueError:
        db = math.nan
    if not (math.isfinite(db) and GAIN_DB_RANGE[0] <= db <= GAIN_DB_RANGE[1]):
        raise InvalidOption(
            f"gains: {stem}:{raw[:20]} is not a gain: dB from {GAIN_DB_RANGE[0]:g} to "
            f"{GAIN_DB_RANGE[1]:g}, or -inf to mute it"
        )
    return round(db, 2)


def _pan(stem: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and PAN_RANGE[0] <= value <= PAN_RANGE[1]):
        raise InvalidOption(f"pan: {stem}:{raw[:20]} is not a pan from -1 (left) to 1 (right)")
    return round(value, 2)


def mix_weights(stems: list[str], options: MixOptions) -> np.ndarray:
    """(2 * len(stems), 2) float32: result.wav's channels -> the mix's left and right. A stem's
    gain scales both its sides; its pan is a balance (-0.5: the right side at half, the left
    as it is). A muted stem's weights are 0: it adds exact zeros."""
    gains = dict(options.gains_db)
    pans = dict(options.pans)
    weights = np.zeros((2 * len(stems), 2), np.float32)
    for i, stem in enumerate(stems):
        db = gains.get(stem, 0.0)
        gain = 0.0 if db == -math.inf else 10.0 ** (db / 20.0)
        p = pans.get(stem, 0.0)
        weights[2 * i, 0] = gain * min(1.0, 1.0 - p)
        weights[2 * i + 1, 1] = gain * min(1.0, 1.0 + p)
    return weights


def mix_blocks(result: ResultFile, weights: np.ndarray) -> Iterator[np.ndarray]:
    """(k, 2) float32 blocks of the mix, in track order."""
    for block in result.blocks():
        yield block @ weights


def stretch(mix: np.ndarray, speed: float, semitones: float) -> np.ndarray:
    """(2, n) float32 at 44.1 kHz -> (2, round(n / speed)): `speed` x the tempo at the same
    pitch, shifted by `semitones` at the same tempo (Rubber Band, its high-quality mode)."""
    try:
        import pedalboard  # here: GPL-3.0, and only the stretched mixes need it
    except ImportError as e:
        raise InvalidOption(
            "this gateway cannot stretch or transpose: it is installed without pedalboard "
            "(GPL-3.0, left out on purpose); speed=1 and semitones=0 mix the stems as they are",
            code="stretch_unavailable",
        ) from e
    return pedalboard.time_stretch(
        np.ascontiguousarray(mix, np.float32),
        SAMPLE_RATE,
        stretch_factor=speed,
        pitch_shift_in_semitones=semitones,
        high_quality=True,
        transient_mode="crisp",  # drum hits stay hits
        preserve_formants=True,  # a transposed voice keeps its timbre
    )


def render_mix(files: JobFiles, job: JobRecord, options: MixOptions, path: Path) -> None:
    """Writes the mix of a done job to `path` in `options.fmt`. Speed 1 and 0 semitones: block
    by block (twice through result.wav for clip=rescale: the peak, then the mix); else the
    whole mix in memory, stretched."""
    result = ResultFile(files, job)
    weights = mix_weights(result.stems, options)
    rescales = options.fmt not in FLOAT_FORMATS and options.clip == "rescale"
    if not options.stretches:
        peak = _peak(mix_blocks(result, weights)) if rescales else 0.0
        gain = 1.0 / peak if peak > 1.0 else 1.0
        write_audio_blocks(path, mix_blocks(result, weights), 2, options.fmt, gain=gain)
        return
    mix = np.empty((2, result.frames), np.float32)
    start = 0
    for block in mix_blocks(result, weights):
        mix[:, start : start + len(block)] = block.T
        start += len(block)
    with _STRETCHES:
        out = stretch(mix, options.speed, options.semitones)
    del mix
    peak = max(float(out.max(initial=0.0)), -float(out.min(initial=0.0))) if rescales else 0.0
    write_audio(path, out, options.fmt, gain=1.0 / peak if peak > 1.0 else 1.0)


def _peak(blocks: Iterator[np.ndarray]) -> float:
    return max((float(np.abs(b).max(initial=0.0)) for b in blocks), default=0.0)


def mix_path(files: JobFiles, options: MixOptions) -> Path:
    return files.dir / MIX_DIR / f"{options.key()}.{file_extension(options.fmt)}"


def mix_file(files: JobFiles, job: JobRecord, options: MixOptions) -> Path:
    """The mix of a done job as a file here: the kept one, else rendered now (and kept, and
    put in the bucket with object storage). Raises NotFound when the job's files are gone."""
    path = mix_path(files, options)
    if files.fetch(path):
        return path
    with _one_render(f"{job.id}/{path.name}"):
        if files.fetch(path):  # rendered while this request waited
            return path
        ResultFile(files, job)  # the result into the cache (and 404 when it is gone)
        try:
            path.parent.mkdir(exist_ok=True)  # not parents: a deleted job stays deleted
        except FileNotFoundError as e:
            raise NotFound("the job's files are gone (deleted or expired)") from e
        render_mix(files, job, options, path)
        files.publish(path)
    return path


# Stretches at once in this gateway (others wait): each holds the whole song, ~75 MB a minute
# of it at its peak (docs/api.md), so a few requests for long songs cannot exhaust memory.
_STRETCHES = threading.BoundedSemaphore(2)
_renders_guard = threading.Lock()
_renders: dict[str, list] = {}  # name -> [lock, requests holding or waiting for it]


@contextmanager
def _one_render(name: str) -> Iterator[None]:
    """Requests for the same mix take turns; the lock goes when the last one is done."""
    with _renders_guard:
        entry = _renders.setdefault(name, [threading.Lock(), 0])
        entry[1] += 1
    try:
        with entry[0]:
            yield
    finally:
        with _renders_guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _renders[name]
