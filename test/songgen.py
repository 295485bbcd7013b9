"""A synthetic song with known stems, for separator tests that must not depend on shared data.

Four stems at 120 bpm in A minor, each built the way the real instrument sounds to a separator:
- vocals: a sawtooth "glottal" source with vibrato through three formant resonators, following a
  melody, panned centre (the same signal in both channels);
- drums: kick (pitch-swept decaying sine), snare (noise burst + tone), hi-hat (high-passed noise),
  hits panned a little apart;
- bass: a low sawtooth line, low-passed, centre;
- other: a pad of detuned sawtooth chords, a different detune per channel so it sounds wide.

Everything is deterministic for a seed; the whole is scaled so the mixture peaks at 0.9.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

BPM = 120.0
BEAT_S = 60.0 / BPM  # seconds per beat
BAR_S = 4 * BEAT_S  # seconds per bar
MIX_PEAK = 0.9  # full scale: the mixture peaks here, below clipping
A4_HZ = 440.0
# Relative levels of the stems before the mixture is scaled to MIX_PEAK (a typical pop balance).
STEM_RMS = {"vocals": 0.10, "drums": 0.10, "bass": 0.10, "other": 0.07}

# Chords as semitones above A2 (110 Hz): Am, F, C, G; a seed rotates the progression.
CHORDS = ((0, 3, 7), (-4, 0, 3), (3, 7, 10), (-2, 2, 5))
MELODY_STEPS = (0, 2, 3, 5, 7, 8, 10, 12)  # A natural minor, semitones above A4
# Vowel formants (Hz) and bandwidths (Hz): "a", "e", "i", "o", "u", after Peterson & Barney.
VOWELS = (
    ((800, 1150, 2900), (80, 90, 120)),
    ((400, 1600, 2700), (60, 80, 120)),
    ((280, 2250, 2900), (50, 100, 120)),
    ((450, 800, 2830), (70, 80, 100)),
    ((325, 700, 2530), (50, 60, 170)),
)


def _saw(freq_hz: np.ndarray | float, n: int, sample_rate: int, phase0: float = 0.0) -> np.ndarray:
    """(n,) naive sawtooth in [-1, 1] following a (possibly time-varying) frequency in Hz."""
    freq = np.broadcast_to(np.asarray(freq_hz, dtype=np.float64), (n,))
    phase = phase0 + np.cumsum(freq) / sample_rate
    return (2.0 * (phase - np.floor(phase)) - 1.0).astype(np.float32)


def _envelope(n: int, sample_rate: int, attack_s: float, release_s: float) -> np.ndarray:
    """(n,) linear attack, sustain at 1, linear release; shorter ramps when the note is short."""
    env = np.ones(n, dtype=np.float32)
    a = min(n // 2, int(attack_s * sample_rate))
    r = min(n - a, int(release_s * sample_rate))
    if a:
        env[:a] = np.linspace(0.0, 1.0, a, endpoint=False)
    if r:
        env[n - r :] = np.linspace(1.0, 0.0, r)
    return env


def _resonator(f_hz: float, bw_hz: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-pole resonator (b, a) at `f_hz` with bandwidth `bw_hz`, unit gain at resonance."""
    r = np.exp(-np.pi * bw_hz / sample_rate)
    theta = 2 * np.pi * f_hz / sample_rate
    a = np.array([1.0, -2 * r * np.cos(theta), r * r])
    return np.array([1.0 - r]), a


def _vocals(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) a sung melody: two notes per beat at most, with rests between phrases."""
    out = np.zeros(n, dtype=np.float32)
    note_n = int(BEAT_S * sample_rate)
    for start in range(0, n, note_n):
        if rng.random() < 0.2:  # a breath between phrases
            continue
        length = min(note_n * int(rng.integers(1, 3)), n - start)
        f0 = A4_HZ / 2 * 2 ** (MELODY_STEPS[int(rng.integers(len(MELODY_STEPS)))] / 12)
        t = np.arange(length) / sample_rate
        # 5.5 Hz vibrato of ±30 cents: what makes a voice move between STFT bins.
        freq = f0 * 2 ** (0.3 / 12 * np.sin(2 * np.pi * 5.5 * t))
        source = _saw(freq, length, sample_rate, rng.random())
        formants, bandwidths = VOWELS[int(rng.integers(len(VOWELS)))]
        voice = np.zeros(length)
        for f, bw, gain in zip(formants, bandwidths, (1.0, 0.6, 0.3), strict=True):
            b, a = _resonator(f, bw, sample_rate)
            voice += gain * signal.lfilter(b, a, source)
        voice *= _envelope(length, sample_rate, 0.03, 0.08)
        end = min(start + length, n)
        out[start:end] += voice[: end - start].astype(np.float32)
    return out


def _hit(kind: str, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """(m,) one drum hit: "kick", "snare" or "hat"."""
    if kind == "kick":
        t = np.arange(int(0.35 * sample_rate)) / sample_rate
        freq = 50 + 70 * np.exp(-t / 0.04)  # the pitch drop that makes a kick thump
        return np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) * np.exp(-t / 0.12)
    if kind == "snare":
        t = np.arange(int(0.2 * sample_rate)) / sample_rate
        noise = rng.standard_normal(t.size) * np.exp(-t / 0.05)
        return 0.5 * noise + 0.5 * np.sin(2 * np.pi * 185 * t) * np.exp(-t / 0.04)
    t = np.arange(int(0.06 * sample_rate)) / sample_rate
    cutoff = min(7000.0, 0.4 * sample_rate)  # below Nyquist at any rate
    sos = signal.butter(4, cutoff, "highpass", fs=sample_rate, output="sos")
    return 0.4 * signal.sosfilt(sos, rng.standard_normal(t.size)) * np.exp(-t / 0.015)


def _drums(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """(2, n) a rock beat in 8ths: kick on 1 and 3, snare on 2 and 4, hats throughout."""
    out = np.zeros((2, n + sample_rate), dtype=np.float64)  # room for the last hit's tail
    pans = {"kick": 0.0, "snare": -0.2, "hat": 0.4}  # -1 left .. +1 right
    eighth = int(BEAT_S / 2 * sample_rate)
    for step, start in enumerate(range(0, n, eighth)):
        kinds = ["hat"] if rng.random() < 0.9 else []
        if step % 4 == 0 or (step % 8 == 7 and rng.random() < 0.3):
            kinds.append("kick")
        if step % 4 == 2:
            kinds.append("snare")
        for kind in kinds:
            hit = _hit(kind, sample_rate, rng) * (0.8 + 0.2 * rng.random())
            pan = pans[kind]
            out[0, start : start + hit.size] += np.sqrt((1 - pan) / 2) * hit
            out[1, start : start + hit.size] += np.sqrt((1 + pan) / 2) * hit
    return out[:, :n].astype(np.float32)


def _chord_at(start: int, sample_rate: int, offset: int) -> tuple[int, int, int]:
    """The chord (semitones above A2) of the bar that sample `start` falls in."""
    return CHORDS[(int(start / sample_rate / BAR_S) + offset) % len(CHORDS)]


def _bass(n: int, sample_rate: int, offset: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) the chord roots in 8ths, an octave below A2, low-passed saw plus a sine."""
    out = np.zeros(n, dtype=np.float32)
    eighth = int(BEAT_S / 2 * sample_rate)
    sos = signal.butter(2, 500, "lowpass", fs=sample_rate, output="sos")
    for start in range(0, n, eighth):
        length = min(eighth, n - start)
        root = _chord_at(start, sample_rate, offset)[0] + (12 if rng.random() < 0.15 else 0)
        f = 55.0 * 2 ** (root / 12)
        t = np.arange(length) / sample_rate
        tone = 0.6 * _saw(f, length, sample_rate) + 0.8 * np.sin(2 * np.pi * f * t)
        out[start : start + length] = tone * _envelope(length, sample_rate, 0.005, 0.03)
    return signal.sosfilt(sos, out).astype(np.float32)


def _pad(n: int, sample_rate: int, offset: int, rng: np.random.Generator) -> np.ndarray:
    """(2, n) sustained chords an octave above A2: a shared tone plus a differently detuned
    one per channel, so the pad sounds wide (channel correlation about 0.5)."""
    out = np.zeros((2, n), dtype=np.float32)
    bar = int(BAR_S * sample_rate)
    sos = signal.butter(2, 2500, "lowpass", fs=sample_rate, output="sos")
    for start in range(0, n, bar):
        length = min(bar, n - start)
        env = _envelope(length, sample_rate, 0.15, 0.3)
        for semis in _chord_at(start, sample_rate, offset):
            f = 220.0 * 2 ** (semis / 12)
            out[:, start : start + length] += env * _saw(f, length, sample_rate, rng.random())
            for ch, cents in enumerate((-9.0, 9.0)):
                detuned = f * 2 ** (cents * rng.uniform(0.5, 1.5) / 1200)
                out[ch, start : start + length] += env * _saw(
                    detuned, length, sample_rate, rng.random()
                )
    return signal.sosfilt(sos, out, axis=-1).astype(np.float32)


def _at_rms(stem: np.ndarray, rms: float) -> np.ndarray:
    """The stem scaled to the given RMS (left alone when silent)."""
    current = float(np.sqrt(np.mean(np.square(stem, dtype=np.float64))))
    return stem * np.float32(rms / current) if current > 0 else stem


def make_song(
    seconds: float = 8.0, sample_rate: int = 44100, seed: int = 0
) -> dict[str, np.ndarray]:
    """The four true stems of a generated song: name -> (2, n) float32, n = seconds * rate.

    Keys in `common.constants.DSP_STEMS` order: vocals, drums, bass, other. The stems are
    scaled together so that their sum peaks at `MIX_PEAK`.
    """
    n = max(1, int(round(seconds * sample_rate)))
    rng = np.random.default_rng(seed)
    offset = int(rng.integers(len(CHORDS)))
    vocals = _vocals(n, sample_rate, rng)
    stems = {
        "vocals": np.stack([vocals, vocals]),
        "drums": _drums(n, sample_rate, rng),
        "bass": np.stack([_bass(n, sample_rate, offset, rng)] * 2),
        "other": _pad(n, sample_rate, offset, rng),
    }
    stems = {name: _at_rms(stem, STEM_RMS[name]) for name, stem in stems.items()}
    peak = float(np.abs(mixture(stems)).max())
    scale = MIX_PEAK / peak if peak > 0 else 1.0
    return {name: (stem * scale).astype(np.float32) for name, stem in stems.items()}


def mixture(stems: dict[str, np.ndarray]) -> np.ndarray:
    """(2, n) float32: the sum of the stems."""
    return np.sum(list(stems.values()), axis=0, dtype=np.float32)
