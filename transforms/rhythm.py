"""Onset strength of a window, and the tempo and beats of a whole track, with librosa.

Two envelopes on the track's analysis frame grid, computed window by window (their pieces join
into the track's): librosa's onset strength (spectral flux of a log-mel spectrogram, with a
fixed 0 dB reference instead of each window's own maximum), which the beat tracker follows, and
the accent (rise of the frame RMS), which says how loud each onset is. Tempo and beats are
librosa's dynamic-programming beat tracker (Ellis 2007) on the onset strength. Spectral flux in
dB hears a quiet hi-hat as well as a kick, so the tracker's tempo is often half or twice the
beat; the metrical level is then chosen by the accents: the beat is the level at which every
beat is accented (kick or snare) and the points between beats mostly are not.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

from common.constants import ANALYSIS_FRAME_HOP, ANALYSIS_RATE, SAMPLE_RATE

HOP = ANALYSIS_FRAME_HOP * ANALYSIS_RATE // SAMPLE_RATE  # 512 samples at 22.05 kHz
FRAME_S = ANALYSIS_FRAME_HOP / SAMPLE_RATE  # 23.2 ms
N_MELS = 128
RMS_FRAME = 1024  # samples at 22.05 kHz (46 ms)
MIN_TEMPO_S = 6.0  # s: shorter tracks hold too few beats for a tempo
# Below this autocorrelation at the beat period there is no steady beat (noise measures ~0.01,
# generated drum patterns 0.4 and more, a real pop song with vocals 0.17-0.24).
MIN_TEMPO_CONFIDENCE = 0.1
MIN_ONSET = 1.0  # strongest onset (dB of spectral flux) for a track to have any rhythm
START_BPM = 120.0  # the tracker's tempo prior: log-normal around 120 BPM, one octave wide
# The metrical correction never leaves this range: on a real pop song tracked at 112 BPM, the
# alternate-beat rule would halve to 56, a tempo few songs have.
MIN_BPM, MAX_BPM = 70.0, 210.0
# Metrical level, from accents measured on generated grooves at 70-180 BPM: the lower quartile
# of the accents half-way between beats is <= 0.10 of the beats' median at the right level and
# >= 0.29 at half tempo; alternate beats' medians are >= 0.39 of each other at the right level
# and <= 0.13 at twice the tempo.
DOUBLE_IF_MIDPOINTS_ABOVE = 0.2
HALVE_IF_ALTERNATE_BELOW = 0.25
PEAK_FRAMES = 2  # an onset's accent is the largest within +-2 frames (46 ms) of its time


@dataclass(frozen=True)
class Tempo:
    bpm: float | None
    confidence: float | None
    beats_s: list[float] | None
    reason: str = ""


def to_analysis_rate(stereo_44k: np.ndarray) -> np.ndarray:
    """Float32 `(2, n)` at 44.1 kHz -> mono `(ceil(n / 2),)` at 22.05 kHz (librosa / soxr)."""
    mono = np.mean(stereo_44k, axis=0, dtype=np.float32)
    return librosa.resample(mono, orig_sr=SAMPLE_RATE, target_sr=ANALYSIS_RATE)


def onset_envelope(mono_22k: np.ndarray) -> np.ndarray:
    """Onset strength `(1 + n // HOP,)` of mono audio at 22.05 kHz; frame t is centred on
    sample t * HOP."""
    mel = librosa.feature.melspectrogram(
        y=mono_22k, sr=ANALYSIS_RATE, hop_length=HOP, n_mels=N_MELS
    )
    log_mel = librosa.power_to_db(mel, ref=1.0, top_db=None)
    return librosa.onset.onset_strength(S=log_mel, sr=ANALYSIS_RATE, hop_length=HOP)


def accent_envelope(mono_22k: np.ndarray) -> np.ndarray:
    """Rise of the frame RMS `(1 + n // HOP,)`: how loud the onsets are, on the same grid."""
    rms = librosa.feature.rms(y=mono_22k, frame_length=RMS_FRAME, hop_length=HOP)[0]
    return np.maximum(0.0, np.diff(rms, prepend=rms[:1]))


def track_tempo(envelope: np.ndarray, accent: np.ndarray, duration_s: float) -> Tempo:
    """Tempo (BPM), its confidence in [0, 1] and beat times (s) from a track's onset strength
    and accent envelopes `(n_frames,)`."""
    if duration_s < MIN_TEMPO_S:
        length = length_below(duration_s, MIN_TEMPO_S)
        reason = f"the track is {length}; a tempo needs at least {MIN_TEMPO_S:g} s"
        return Tempo(None, None, None, reason)
    if envelope.size == 0 or float(np.max(envelope)) < MIN_ONSET:
        return Tempo(None, None, None, "no onsets: the track is silent or has no attacks")
    bpm, beats = beat_track(envelope)
    if bpm <= 0 or len(beats) < 4:
        return Tempo(None, None, None, "the beat tracker found no steady beat")
    confidence = beat_periodicity(envelope, bpm)
    if confidence < MIN_TEMPO_CONFIDENCE:
        reason = (
            f"no steady beat: the onsets repeat at the best period with autocorrelation "
            f"{confidence:.2f} (< {MIN_TEMPO_CONFIDENCE})"
        )
        return Tempo(None, round(confidence, 3), None, reason)
    level = metrical_level(accent, beats)
    if level != 1.0 and MIN_BPM <= bpm * level <= MAX_BPM:
        bpm, beats = beat_track(envelope, bpm * level)
        confidence = beat_periodicity(envelope, bpm)
    times = beats * FRAME_S
    beats_s = [round(float(t), 3) for t in times]
    return Tempo(round(fitted_bpm(times), 2), round(confidence, 3), beats_s)


def length_below(seconds: float, minimum_s: float) -> str:
    """A length shorter than `minimum_s`, written so that it reads shorter: 5.96 s is "5.96 s",
    not the "6.0 s" one decimal gives (which a "needs at least 6 s" next to it contradicts)."""
    for decimals in (1, 2, 3):
        shown = f"{seconds:.{decimals}f}"
        if float(shown) < minimum_s:
            return f"{shown} s"
    return f"just under {minimum_s:g} s"


def beat_track(envelope: np.ndarray, bpm: float | None = None) -> tuple[float, np.ndarray]:
    """librosa's beat tracker: (tempo, beat frames); at the given tempo when `bpm` is set."""
    tempo, beats = librosa.beat.beat_track(
        onset_envelope=envelope, sr=ANALYSIS_RATE, hop_length=HOP, start_bpm=START_BPM, bpm=bpm
    )
    return float(np.atleast_1d(tempo)[0]), np.asarray(beats)


def accents_at(accent: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The accent of each frame position: the largest within +-PEAK_FRAMES of it."""
    idx = np.round(frames).astype(int)
    idx = idx[(idx >= PEAK_FRAMES) & (idx < len(accent) - PEAK_FRAMES)]
    return np.array([accent[i - PEAK_FRAMES : i + PEAK_FRAMES + 1].max() for i in idx])


def metrical_level(accent: np.ndarray, beats: np.ndarray) -> float:
    """2.0 when the tracked beats are half the beat (the points between them are accented
    too), 0.5 when they are twice it (every other beat unaccented), else 1.0."""
    on = accents_at(accent, beats)
    if on.size < 4 or np.median(on) <= 0:
        return 1.0
    between = accents_at(accent, (beats[:-1] + beats[1:]) / 2)
    if between.size and np.percentile(between, 25) > DOUBLE_IF_MIDPOINTS_ABOVE * np.median(on):
        return 2.0
    even = np.median(accents_at(accent, beats[0::2]))
    odd = np.median(accents_at(accent, beats[1::2]))
    if min(even, odd) < HALVE_IF_ALTERNATE_BELOW * max(even, odd):
        return 0.5
    return 1.0


def fitted_bpm(beat_times: np.ndarray) -> float:
    """The tempo of the least-squares line through the beat times: finer than the tracker's
    own estimate, which moves in whole frames of lag (2 % steps at 170 BPM)."""
    slope = np.polyfit(np.arange(len(beat_times)), beat_times, 1)[0]
    return 60.0 / float(slope)


def beat_periodicity(envelope: np.ndarray, bpm: float) -> float:
    """How steadily the onsets repeat at the beat: their autocorrelation at one beat or at two
    (a groove often repeats every two beats, kick then snare), whichever is higher."""
    beat_s = 60.0 / bpm
    return max(periodicity(envelope, beat_s), periodicity(envelope, 2 * beat_s))


def periodicity(envelope: np.ndarray, period_s: float) -> float:
    """Normalised autocorrelation of the (mean-removed) envelope at a lag of `period_s`, in
    [0, 1]: 1 when the onsets repeat exactly at that period."""
    x = envelope - envelope.mean()
    ac = librosa.autocorrelate(x)
    if ac[0] <= 0:
        return 0.0
    lag = period_s / FRAME_S
    lo = int(np.floor(lag))
    if lo + 1 >= len(ac):
        return 0.0
    # the beat period falls between frames: take the better of its two neighbours
    return float(np.clip(max(ac[lo], ac[lo + 1]) / ac[0], 0.0, 1.0))
