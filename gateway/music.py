"""The music of a finished separation: beats, key, chords, sections and MIDI, from the stems.

Runs once the stems are final (result.wav written). Where a neural separator ran, each part
listens to the stems that carry it: beats to the drums and bass summed (no vocals or pads to
blur the attacks; the mix where they hear no beat), key and chords to the harmonic stems
(other, piano, guitar: no drums, no vocals) with the bass stem naming the root; with `dsp`,
one-stem jobs or no such stems, to the mix. Sections always come from the mix (a part is as
much its texture as its harmony). The pitched stems (and the drums) go to Basic Pitch one at a
time, and their notes make one multi-track MIDI file with the track's tempo map.

Each part that fails is null with its reason, and the job still ends `done`.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import mido
import numpy as np
import soundfile as sf
import soxr
from anyio import to_thread

from common.constants import ANALYSIS_RATE, SAMPLE_RATE
from common.interfaces import MusicRequest, Notes, TrackBeats, TrackHarmony
from common.midi import Note, midi_file
from common.rawfile import RawArrayFile
from common.replicas import ReplicaPool, expect_ok
from common.wire import encode
from gateway.chains import parent_stem
from gateway.jobfiles import JobFiles

log = logging.getLogger("audiosplit.music")

RHYTHM_STEMS = ("drums", "bass")
HARMONIC_STEMS = ("other", "piano", "guitar")
PITCHED_STEMS = ("bass", "vocals", "other", "guitar", "piano")  # Basic Pitch's, in file order
DRUM_STEMS = ("drums",)  # as General MIDI drums: kick, snare, closed hi-hat
NEURAL_FREE = ("dsp",)  # separators whose stems are too rough to listen to instead of the mix
BLOCK = 1 << 18  # frames read from result.wav at a time (1 MB a channel)
TRANSCRIBER = {"name": "basic-pitch", "licence": "Apache-2.0"}


@dataclass
class Music:
    """What the music stage adds to the analysis' track, and its warnings."""

    track: dict = field(default_factory=dict)
    reasons: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    midi: bytes | None = None


def listens_to_stems(model: str, stems: list[str]) -> bool:
    """Whether the stems are worth listening to: a neural separator's full set."""
    has_drums = "drums" in {parent_stem(s) for s in stems}  # or a chained job's drum parts
    return not any(m in NEURAL_FREE for m in model.split(",")) and has_drums


def read_rows(
    files: JobFiles, stems: list[str], rows: dict[str, tuple[str, ...]]
) -> dict[str, np.ndarray]:
    """Mono float32 rows at 22.05 kHz from result.wav: each row the sum of the stems it names
    (those the job has; a chained stem's parts stand for it), read block by block and
    resampled as it streams."""
    files.fetch(files.result_path)
    wanted = {
        name: [i for i, s in enumerate(stems) if parent_stem(s) in parts]
        for name, parts in rows.items()
    }
    wanted = {name: idx for name, idx in wanted.items() if idx}
    streams = {
        name: soxr.ResampleStream(SAMPLE_RATE, ANALYSIS_RATE, 1, "float32") for name in wanted
    }
    out: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    with sf.SoundFile(str(files.result_path)) as f:
        while len(block := f.read(BLOCK, dtype="float32", always_2d=True)):
            last = f.tell() == f.frames
            for name, idx in wanted.items():
                channels = [c for i in idx for c in (2 * i, 2 * i + 1)]
                mono = block[:, channels].sum(axis=1) / 2
                out[name].append(streams[name].resample_chunk(mono, last=last))
    return {name: np.concatenate(parts).astype(np.float32) for name, parts in out.items()}


def mix_row(track: RawArrayFile) -> np.ndarray:
    """The input's mono mix at 22.05 kHz, read block by block."""
    stream = soxr.ResampleStream(SAMPLE_RATE, ANALYSIS_RATE, 1, "float32")
    n = track.shape[1]
    parts = []
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        mono = np.asarray(track[:, lo:hi]).mean(axis=0).astype(np.float32)
        parts.append(stream.resample_chunk(mono, last=hi == n))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


class MusicAnalyser:
    def __init__(self, fft: ReplicaPool, cqt: ReplicaPool, timeout_s: float):
        self.fft = fft
        self.cqt = cqt
        self.timeout_s = timeout_s

    async def run(
        self,
        job_id: str,
        files: JobFiles,
        track: RawArrayFile,
        model: str,
        stems: list[str],
        midi: bool,
        report=lambda stage, fraction: None,
    ) -> Music:
        """`report(stage, fraction done)` is told each part as it starts."""
        music = Music()
        neural = listens_to_stems(model, stems)
        mix = await to_thread.run_sync(mix_row, track)
        rows = {}
        if neural:
            rows = await to_thread.run_sync(
                read_rows,
                files,
                stems,
                {"drums+bass": RHYTHM_STEMS, "harmonic": HARMONIC_STEMS, "bass": ("bass",)},
            )
        # the parts' shares of the stage, as they measure on a 60 s song (figures.md)
        steps = 2 + (len(self.midi_stems(stems)) if midi else 0)
        report("beats", 0.0)
        beats = None
        if "drums+bass" in rows:
            beats = await self._beats(job_id, music, rows["drums+bass"], "drums+bass")
        if beats is None or beats.tempo_bpm is None:
            # the mix where the stems hear no beat (a separator's rough drums, a song whose
            # pulse is in the guitar): BeatNet was trained on mixes
            beats = await self._beats(job_id, music, mix, "mix")
        harmony_rows = {"mix": mix, **{k: rows[k] for k in ("harmonic", "bass") if k in rows}}
        report("key, chords and sections", 1 / steps)
        await self._harmony(job_id, music, harmony_rows, beats)
        del rows, mix, harmony_rows
        if midi:
            await self._midi(job_id, music, files, stems, beats, report, steps)
        return music

    @staticmethod
    def midi_stems(stems: list[str]) -> list[str]:
        """The stems transcribed; a chained stem is, as the sum of its parts (`vocals`)."""
        present = {parent_stem(s) for s in stems}
        return [s for s in (*PITCHED_STEMS, *DRUM_STEMS) if s in present]

    async def _call(self, pool: ReplicaPool, path: str, audio: np.ndarray, meta: MusicRequest):
        body, headers = encode(np.ascontiguousarray(audio, dtype=np.float32), meta)
        response = await pool.request(
            "POST", path, content=body, headers=headers, timeout=self.timeout_s
        )
        expect_ok(response, f"the {pool.service} service")
        return response

    async def _beats(
        self, job_id: str, music: Music, audio: np.ndarray, source: str
    ) -> TrackBeats | None:
        try:
            response = await self._call(
                self.fft, "/beats", audio[None], MusicRequest(job_id=job_id, rows=["beats"])
            )
        except Exception as e:  # analysis never fails a job
            log.warning("beats failed: %s", e)
            music.errors.append(f"beats: {e}")
            return None
        beats = TrackBeats.model_validate_json(response.content)
        music.track.update(
            tempo_bpm=beats.tempo_bpm,
            tempo_confidence=beats.tempo_confidence,
            beats_s=beats.beats_s,
            downbeats_s=beats.downbeats_s,
            time_signature=beats.time_signature,
        )
        music.track.setdefault("sources", {})["beats"] = source
        music.track.setdefault("models", {})["beats"] = {
            "name": beats.model,
            "licence": beats.licence,
        }
        music.reasons["tempo"] = beats.reason
        music.reasons["downbeats"] = beats.reason or (
            "" if beats.downbeats_s else "no downbeat found"
        )
        return beats

    async def _harmony(
        self, job_id: str, music: Music, rows: dict[str, np.ndarray], beats: TrackBeats | None
    ) -> None:
        names = list(rows)
        n = min(len(r) for r in rows.values())
        body = np.stack([rows[k][:n] for k in names])
        meta = MusicRequest(
            job_id=job_id,
            rows=names,
            beats_s=beats.beats_s if beats else None,
            downbeats_s=beats.downbeats_s if beats else None,
        )
        try:
            response = await self._call(self.cqt, "/harmony", body, meta)
        except Exception as e:
            log.warning("harmony failed: %s", e)
            music.errors.append(f"key, chords and sections: {e}")
            return
        h = TrackHarmony.model_validate_json(response.content)
        music.track.update(
            key=h.key.model_dump(exclude={"version"}) if h.key else None,
            chords=[c.model_dump(exclude={"version"}) for c in h.chords] if h.chords else None,
            sections=[s.model_dump(exclude={"version"}) for s in h.sections]
            if h.sections
            else None,
        )
        source = "stems" if "harmonic" in rows else "mix"
        music.track.setdefault("sources", {}).update(key=source, chords=source, sections="mix")
        music.reasons.update(key=h.key_reason, chords=h.chords_reason, sections=h.sections_reason)

    async def _midi(
        self,
        job_id: str,
        music: Music,
        files: JobFiles,
        stems: list[str],
        beats: TrackBeats | None,
        report,
        steps: int,
    ) -> None:
        """Each pitched stem (and the drums) transcribed in turn: one stem's audio in memory."""
        wanted = self.midi_stems(stems)
        tracks: dict[str, list[Note]] = {}
        for i, stem in enumerate(wanted):
            report(f"MIDI of {stem} ({i + 1} of {len(wanted)})", (2 + i) / steps)
            try:
                row = (await to_thread.run_sync(read_rows, files, stems, {stem: (stem,)}))[stem]
                response = await self._call(
                    self.cqt,
                    "/transcribe",
                    row[None],
                    MusicRequest(job_id=job_id, rows=[stem], stem=stem),
                )
            except Exception as e:
                log.warning("transcription of %s failed: %s", stem, e)
                music.errors.append(f"MIDI of {stem}: {e}")
                continue
            notes = Notes.model_validate_json(response.content).notes
            tracks[stem] = [Note(a, b, p, v) for a, b, p, v in notes]
        if not wanted:
            music.reasons["midi"] = "no pitched stem: the job's stems are " + ", ".join(stems)
        music.midi = midi_file(
            tracks,
            tempo_bpm=beats.tempo_bpm if beats else None,
            beats_s=beats.beats_s if beats else None,
            downbeats_s=beats.downbeats_s if beats else None,
            time_signature=beats.time_signature if beats else None,
        )
        music.track["midi"] = {
            "stems": list(tracks),
            "notes": {s: len(n) for s, n in tracks.items()},
            "model": TRANSCRIBER,
        }


def single_track(data: bytes, stem: str) -> bytes:
    """One stem's track of the job's multi-track MIDI file, with the tempo map (the first
    track). KeyError when the file has no track of that name."""
    whole = mido.MidiFile(file=io.BytesIO(data))
    named = [t for t in whole.tracks[1:] if t.name == stem]
    if not named:
        raise KeyError(stem)
    one = mido.MidiFile(type=1, ticks_per_beat=whole.ticks_per_beat)
    one.tracks.extend([whole.tracks[0], named[0]])
    out = io.BytesIO()
    one.save(file=out)
    return out.getvalue()
