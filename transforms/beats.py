"""Tempo, beats, downbeats and metre of a whole track, by a trained model.

BeatNet (Heydari, Cwitkowitz & Duan, ISMIR 2021; CC BY 4.0, weights in its wheel): a CRNN
reads a filtered log spectrogram (24 bands an octave, and its positive difference) at 50
frames a second and gives each frame a beat and a downbeat activation; madmom's dynamic Bayesian
network (BSD code) decodes the most likely bar-and-beat path from them, for 2, 3 or 4 beats a
bar. Only BeatNet's network and feature modules are imported: its front module imports pyaudio
(microphone mode) and matplotlib at load.

`BEAT_MODEL=madmom` uses madmom's own RNN downbeat models instead (Böck et al. 2016), which are
CC BY-NC-SA: non-commercial use only, an opt-in whose licence the job and /api/models say.

Tempo: the median beat period of the decoded path. The DBN keeps the tempo within 55-215 BPM
and its transition prior penalises tempo jumps, so it does not halve or double mid-song; the
network was trained on annotated beats, which is what settles the metrical level (a tracker of
onset periodicity alone hears the eighth notes as often as the beat).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.constants import ANALYSIS_RATE

log = logging.getLogger("audiosplit.beats")

BEATNET_FPS = 50  # BeatNet's frame rate: a 20 ms hop at 22.05 kHz (441 samples)
BEATNET_HOP = ANALYSIS_RATE // BEATNET_FPS  # 441 samples
BEATNET_WINDOW = int(0.064 * ANALYSIS_RATE)  # 64 ms frames (1411 samples), as BeatNet trains
BEATNET_BANDS = 24  # filter bands an octave
BEATNET_WEIGHTS = 2  # BeatNet ships 3 networks, each trained with one dataset left out: 1 GTZAN,
# 2 Ballroom, 3 Rock Corpus. Network 2 on the development set (bench/bench_analysis_real.py):
# tempo right on 5 of 6 items against 4 of 6 for network 1 (GiantSteps at 150 BPM for 139).
MADMOM_FPS = 100
MIN_BEATS_S = 2.5  # shorter tracks hold too few beats for a tempo
MIN_BEATS = 4
# A track whose strongest beat activation stays below this has no beat the network hears.
MIN_ACTIVATION = 0.15
# The decoder finds a path in any activation; a beat is there when the activation at the
# decoded beats is this many times its mean over the track. Measured: the development set's
# songs 2.7-11.8, generated songs 13, a click track 3.4; white noise 1.2-1.4, a sustained
# tone 1.0 (the network answers those with a flat ~0.3-0.5 everywhere).
MIN_BEAT_CONTRAST = 2.0
BEATS_PER_BAR = (2, 3, 4)
# Double time: where the activation half-way between the decoded beats is this share of the
# activation on them, the network hears every half beat as a beat and the decoder took every
# other one (a flamenco song at 191 BPM decoded at 97: 0.97; the other items of the development
# set measure 0.52 at most, 0.003-0.36 on most).
DOUBLE_IF_MIDPOINTS_ABOVE = 0.8
PEAK_FRAMES = 2  # a beat's activation is the largest within +-2 frames of it
MAX_BPM = 215.0  # madmom's default range, 55-215 BPM
LICENCES = {"beatnet": "CC BY 4.0", "madmom": "CC BY-NC-SA 4.0 (non-commercial use only)"}


@dataclass(frozen=True)
class Beats:
    tempo_bpm: float | None
    beats_s: list[float] | None
    downbeats_s: list[float] | None
    time_signature: int | None  # beats a bar
    confidence: float | None  # mean beat activation at the decoded beats, in [0, 1]
    model: str
    reason: str = ""  # why there is no tempo


class BeatTracker:
    """One network, loaded once; `track` is thread-safe (the network's LSTM state is reset
    and used under a lock)."""

    def __init__(self, model: str = "beatnet", threads: int = 0):
        if model not in LICENCES:
            raise ValueError(f"unknown beat model {model!r}; known: {', '.join(LICENCES)}")
        self.model = model
        self.licence = LICENCES[model]
        self._lock = threading.Lock()
        self._threads = threads
        if model == "beatnet":
            self._load_beatnet()
        else:
            self._load_madmom()

    def _load_beatnet(self) -> None:
        import torch
        from BeatNet.log_spect import LOG_SPECT
        from BeatNet.model import BDA

        self._features = LOG_SPECT(
            sample_rate=ANALYSIS_RATE,
            win_length=BEATNET_WINDOW,
            hop_size=BEATNET_HOP,
            n_bands=[BEATNET_BANDS],
            mode="offline",
        )
        network = BDA(272, 150, 2, "cpu")
        path = Path(__import__("BeatNet").__file__).parent / "models"
        state = torch.load(path / f"model_{BEATNET_WEIGHTS}_weights.pt", map_location="cpu")
        network.load_state_dict(state, strict=False)
        self._network = network.eval()
        self._fps = BEATNET_FPS

    def _load_madmom(self) -> None:
        from madmom.features.downbeats import RNNDownBeatProcessor

        self._rnn = RNNDownBeatProcessor()
        self._fps = MADMOM_FPS

    def _decoder(self, min_bpm: float = 55.0, max_bpm: float = MAX_BPM):
        from madmom.features.downbeats import DBNDownBeatTrackingProcessor

        return DBNDownBeatTrackingProcessor(
            beats_per_bar=list(BEATS_PER_BAR), fps=self._fps, min_bpm=min_bpm, max_bpm=max_bpm
        )

    def activations(self, mono_22k: np.ndarray) -> tuple[np.ndarray, int]:
        """`(n_frames, 2)` activations of (a beat that is not a downbeat, a downbeat), as madmom's
        decoder reads them (one minus their sum: no beat), and their frame rate."""
        if self.model == "madmom":
            import soxr
            from madmom.audio.signal import Signal

            # madmom's networks read 44.1 kHz (it would call ffmpeg to resample)
            mono_44k = soxr.resample(mono_22k, ANALYSIS_RATE, 2 * ANALYSIS_RATE)
            return self._rnn(Signal(mono_44k, sample_rate=2 * ANALYSIS_RATE)), MADMOM_FPS
        import torch

        feats = self._features.process_audio(mono_22k).T  # (n_frames, 272)
        with self._lock, torch.no_grad():
            if self._threads:
                torch.set_num_threads(self._threads)
            # BDA keeps its LSTM state between calls (for streaming): start every track afresh
            self._network.hidden = torch.zeros_like(self._network.hidden)
            self._network.cell = torch.zeros_like(self._network.cell)
            out = self._network(torch.from_numpy(np.ascontiguousarray(feats))[None])[0]
            probs = self._network.final_pred(out).numpy()  # (3, n): beat, downbeat, neither
        return np.ascontiguousarray(probs[:2].T), BEATNET_FPS

    def track(self, mono_22k: np.ndarray) -> Beats:
        """The beats of mono float32 audio at 22.05 kHz."""
        duration = len(mono_22k) / ANALYSIS_RATE
        if duration < MIN_BEATS_S:
            return self._none(f"the track is {duration:.1f} s; a tempo needs {MIN_BEATS_S:g} s")
        if not np.any(np.abs(mono_22k) > 1e-4):
            return self._none("silent: no beats")
        acts, fps = self.activations(mono_22k.astype(np.float32, copy=False))
        any_beat = acts.sum(axis=1)
        strongest = float(any_beat.max(initial=0.0))
        if strongest < MIN_ACTIVATION:
            return self._none(
                f"no steady beat: the beat activation peaks at {strongest:.2f} (< {MIN_ACTIVATION})"
            )
        acts = np.clip(acts, 1e-6, 1 - 1e-6)
        path = self._decoder()(acts)  # (n_beats, 2): time (s), position in its bar
        if len(path) < MIN_BEATS:
            return self._none("the beat tracker found no steady beat")
        contrast = float(np.median(peaks_at(any_beat, path[:, 0], fps))) / max(
            float(any_beat.mean()), 1e-6
        )
        if contrast < MIN_BEAT_CONTRAST:
            return self._none(
                f"no steady beat: the beat activation at the beats is {contrast:.1f} times its "
                f"mean (< {MIN_BEAT_CONTRAST:g}): noise or a held sound"
            )
        bpm = fitted_bpm(path[:, 0])
        if (
            2 * bpm <= MAX_BPM
            and midpoint_share(any_beat, path[:, 0], fps) > DOUBLE_IF_MIDPOINTS_ABOVE
        ):
            doubled = self._decoder(1.5 * bpm, MAX_BPM)(acts)
            if len(doubled) >= MIN_BEATS:
                path = doubled
        return beats_from_path(path, any_beat, fps, self.model)

    def _none(self, reason: str) -> Beats:
        return Beats(None, None, None, None, None, self.model, reason)


def beats_from_path(path: np.ndarray, beat_act: np.ndarray, fps: int, model: str) -> Beats:
    """Tempo, beats, downbeats and metre from a decoded `(n_beats, 2)` path of (time in s,
    position in its bar, 1 = downbeat)."""
    times = path[:, 0]
    positions = path[:, 1].astype(int)
    tempo = fitted_bpm(times)
    frames = np.clip(np.round(times * fps).astype(int), 0, len(beat_act) - 1)
    confidence = float(np.clip(beat_act[frames].mean(), 0.0, 1.0))
    downbeats = times[positions == 1]
    return Beats(
        tempo_bpm=round(tempo, 2),
        beats_s=[round(float(t), 3) for t in times],
        downbeats_s=[round(float(t), 3) for t in downbeats] or None,
        time_signature=bar_length(positions),
        confidence=round(confidence, 3),
        model=model,
    )


def bar_length(positions: np.ndarray) -> int | None:
    """Beats a bar: the most common highest position before a downbeat."""
    lengths = [int(positions[i - 1]) for i in range(1, len(positions)) if positions[i] == 1]
    if not lengths:
        return None
    values, counts = np.unique(lengths, return_counts=True)
    return int(values[np.argmax(counts)])


def fitted_bpm(times: np.ndarray) -> float:
    """The tempo of beat times (s): 60 over the mean of the beat periods within 10 % of their
    median. The median alone keeps the decoder's frame grid (at 50 frames a second a period of
    0.44 s reads 136.4 BPM for a 139 BPM track; the mean of the periods near it reads 137.9);
    a line fitted through all the beats follows a rubato (a flamenco song at 191 BPM that
    slows to 150 for a few bars: the fit 173, this 190)."""
    periods = np.diff(times)
    median = float(np.median(periods))
    steady = periods[np.abs(periods - median) <= 0.1 * median]
    return 60.0 / float(steady.mean())


def peaks_at(activation: np.ndarray, times: np.ndarray, fps: int) -> np.ndarray:
    """The largest activation within +-PEAK_FRAMES of each time (s)."""
    frames = np.round(np.asarray(times) * fps).astype(int)
    frames = frames[(frames >= 0) & (frames < len(activation))]
    return np.array(
        [activation[max(0, f - PEAK_FRAMES) : f + PEAK_FRAMES + 1].max() for f in frames]
    )


def midpoint_share(activation: np.ndarray, times: np.ndarray, fps: int) -> float:
    """Median activation half-way between beats over the median activation on them."""
    on = peaks_at(activation, times, fps)
    between = peaks_at(activation, (times[1:] + times[:-1]) / 2, fps)
    if on.size == 0 or between.size == 0 or np.median(on) <= 0:
        return 0.0
    return float(np.median(between) / np.median(on))
