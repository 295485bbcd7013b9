"""gateway/mixdown.py: the options a mix accepts, and mixes of synthetic stems measured: the
click track's spacing after a stretch, a sine's pitch after a shift, a muted stem's absence,
the cache's one render."""

from __future__ import annotations

import math
import sys
import threading

import numpy as np
import pytest
import soundfile as sf

import gateway.mixdown as mixdown
from common.config import Settings
from common.errors import InvalidOption
from gateway.jobfiles import JobFiles, job_files
from gateway.mixdown import MixOptions, mix_file, mix_options, mix_weights
from gateway.store import JobRecord

RATE = 44100
STEMS = ["vocals", "drums", "bass", "other"]
SECONDS = 4.0


# --- options ----------------------------------------------------------------------------------


def test_options_are_normalised_to_one_key():
    a = mix_options(STEMS, 0.80, 2, "drums:-6, vocals:-inf,bass:0", None, "mp3")
    b = mix_options(STEMS, 0.8, 2.0, "vocals:mute,drums:-6.0dB", "other:0", "mp3")
    assert a == b and a.key() == b.key()
    assert a.gains_db == (("drums", -6.0), ("vocals", -math.inf))  # sorted, 0 dB left out
    assert a.stretches and not mix_options(STEMS).stretches
    assert mix_options(STEMS, fmt="wav").key() != mix_options(STEMS, fmt="flac").key()
    assert mix_options(STEMS, pan="vocals:-0.5").pans == (("vocals", -0.5),)


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"speed": 1.6}, "speed=1.6 is out of range: 0.5 to 1.5"),
        ({"speed": 0.49}, "speed=0.49 is out of range"),
        ({"semitones": -12.5}, "semitones=-12.5 is out of range: -12 to 12"),
        ({"semitones": math.nan}, "semitones=nan"),
        ({"gains": "guitar:-6"}, "no stem 'guitar'; its stems: vocals, drums, bass, other"),
        ({"gains": "vocals=-6"}, "'vocals=-6' is not STEM:VALUE"),
        ({"gains": "vocals:"}, "not STEM:VALUE"),
        ({"gains": "vocals:loud"}, "vocals:loud is not a gain"),
        ({"gains": "vocals:+30"}, "dB from -60 to 24, or -inf"),
        ({"gains": "vocals:-6,vocals:-3"}, "'vocals' is given twice"),
        ({"pan": "drums:2"}, "pan: drums:2 is not a pan"),
        ({"pan": "keys:0.5"}, "no stem 'keys'"),
    ],
)
def test_bad_options_are_refused_naming_the_problem(kwargs, words):
    with pytest.raises(InvalidOption, match=words.replace("(", r"\(").replace("+", r"\+")):
        mix_options(STEMS, **kwargs)


def test_weights_are_gain_and_balance_per_side():
    options = mix_options(STEMS, gains="vocals:-inf,drums:-6", pan="bass:-0.5")
    w = mix_weights(STEMS, options)
    assert w.shape == (8, 2) and not w[0:2].any()  # vocals muted
    assert w[2, 0] == w[3, 1] == pytest.approx(10 ** (-6 / 20))
    assert (w[4, 0], w[5, 1]) == (1.0, 0.5)  # bass: right side at half
    assert w[2, 1] == w[3, 0] == 0.0  # a side never leaks into the other


# --- renders of synthetic stems ---------------------------------------------------------------


def job_with(tmp_path, stems: dict[str, np.ndarray]) -> tuple[JobFiles, JobRecord]:
    """A done job whose result.wav holds `stems` ((2, n) each) in STEMS order."""
    files = JobFiles(tmp_path / "jobs", "mixjob0001")
    files.result_dir.mkdir(parents=True)
    channels = np.concatenate([stems[s] for s in STEMS]).T
    sf.write(files.result_path, channels, RATE, subtype="FLOAT")
    job = JobRecord("mixjob0001", "done", 0.0, 0.0, stems=STEMS, duration_s=SECONDS)
    return files, job


def silence() -> np.ndarray:
    return np.zeros((2, int(SECONDS * RATE)), np.float32)


def quiet() -> dict[str, np.ndarray]:
    return {s: silence() for s in STEMS}


def clicks(every_s: float = 0.5) -> np.ndarray:
    """A 5 ms 2 kHz tone burst every `every_s`, the first at 0.25 s."""
    track = silence()
    burst = np.sin(2 * np.pi * 2000 * np.arange(220) / RATE) * np.hanning(220) * 0.8
    for t in np.arange(0.25, SECONDS - 0.1, every_s):
        i = int(t * RATE)
        track[:, i : i + len(burst)] += burst
    return track


def sine(hz: float, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(SECONDS * RATE)) / RATE
    return np.tile(level * np.sin(2 * np.pi * hz * t), (2, 1)).astype(np.float32)


def render(files, job, **kwargs) -> np.ndarray:
    """(2, n) float32: the mix as the route would make it (float WAV unless asked)."""
    path = mix_file(files, job, mix_options(STEMS, **kwargs))
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == RATE and audio.shape[1] == 2
    return audio.T


def onsets(x: np.ndarray) -> np.ndarray:
    """Seconds where the envelope first passes half its peak after 0.2 s below it."""
    env = np.abs(x).max(axis=0)
    above = np.flatnonzero(env > 0.5 * env.max())
    starts = above[np.insert(np.diff(above) > 0.2 * RATE, 0, True)]
    return starts / RATE


def test_a_click_track_at_speed_0_8_is_spaced_1_25_times_wider(tmp_path):
    files, job = job_with(tmp_path, {**quiet(), "drums": clicks()})
    out = render(files, job, speed=0.8)
    assert out.shape[1] == round(SECONDS * RATE / 0.8)
    before, after = np.diff(onsets(clicks())), np.diff(onsets(out))
    assert len(after) == len(before) == 7
    assert np.mean(after) / np.mean(before) == pytest.approx(1.25, rel=0.01)
    assert np.allclose(after, 0.625, rtol=0.01)


def dominant_hz(x: np.ndarray) -> float:
    """The strongest frequency of the middle half of x[0] (Hann window, parabolic peak)."""
    mid = x[0, x.shape[1] // 4 : 3 * x.shape[1] // 4]
    spectrum = np.abs(np.fft.rfft(mid * np.hanning(len(mid)), n=8 * len(mid)))
    k = int(np.argmax(spectrum))
    a, b, c = np.log(spectrum[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * RATE / (8 * len(mid))


def test_a_sine_two_semitones_up_is_493_9_hz_and_as_long(tmp_path):
    files, job = job_with(tmp_path, {**quiet(), "vocals": sine(440.0)})
    out = render(files, job, semitones=2)
    assert dominant_hz(out) == pytest.approx(440 * 2 ** (2 / 12), rel=0.005)  # 493.88 Hz
    assert out.shape[1] == pytest.approx(SECONDS * RATE, rel=0.01)
    assert dominant_hz(render(files, job)) == pytest.approx(440.0, rel=0.001)


def test_a_muted_stem_is_gone_exactly_and_speed_1_is_the_sum(tmp_path):
    rng = np.random.default_rng(3)
    shape = (2, int(SECONDS * RATE))
    stems = {s: rng.uniform(-0.3, 0.3, shape).astype(np.float32) for s in STEMS}
    files, job = job_with(tmp_path, stems)
    others = stems["drums"] + stems["bass"] + stems["other"]
    out = render(files, job, gains="vocals:-inf")
    assert out.shape == others.shape
    np.testing.assert_allclose(out, others, atol=1e-6, rtol=0)
    np.testing.assert_allclose(render(files, job), others + stems["vocals"], atol=1e-6, rtol=0)
    # gains to 0.01 dB: -6.0206 is applied as -6.02
    half = render(files, job, gains="vocals:-inf,bass:-6.0206", pan="other:1")
    bass = 10 ** (-6.02 / 20) * stems["bass"]
    expected = stems["drums"] + bass + stems["other"] * [[0.0], [1.0]]
    np.testing.assert_allclose(half, expected, atol=1e-6, rtol=0)


def test_formats_other_than_float_wav_are_rescaled_to_fit(tmp_path):
    loud = {s: sine(220.0, 0.6) for s in STEMS}  # sums to 2.4
    files, job = job_with(tmp_path, loud)
    flac = render(files, job, fmt="flac")
    assert 0.99 < np.abs(flac).max() <= 1.0
    clamped = render(files, job, fmt="wav16", clip="clamp")
    assert np.abs(clamped).max() == pytest.approx(1.0, abs=1e-4)
    assert np.abs(render(files, job)).max() == pytest.approx(2.4, rel=1e-3)  # float: kept


def test_the_cache_answers_the_same_bytes_without_rendering_again(tmp_path, monkeypatch):
    files, job = job_with(tmp_path, {s: sine(330.0, 0.1) for s in STEMS})
    renders = []
    real = mixdown.render_mix

    def counted(*args):
        renders.append(args[2])
        real(*args)

    monkeypatch.setattr(mixdown, "render_mix", counted)
    options = mix_options(STEMS, 1.25, -1.5, "drums:-3", None, "mp3")
    first = mix_file(files, job, options).read_bytes()
    again = mix_options(STEMS, 1.250, -1.50, " drums:-3.0 ", "", "mp3")
    assert mix_file(files, job, again).read_bytes() == first and len(renders) == 1
    assert mix_file(files, job, MixOptions(fmt="mp3")).read_bytes() != first
    assert len(renders) == 2
    # identical requests at once: one renders, the others wait for it and read its file
    options = mix_options(STEMS, 0.9, 0, None, None, "wav")
    threads = [threading.Thread(target=mix_file, args=(files, job, options)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(renders) == 3 and not mixdown._renders
    # the mixes live with the job's files and go with them
    assert len(list((files.dir / mixdown.MIX_DIR).iterdir())) == 3
    files.delete()
    assert not files.dir.exists()


def test_without_pedalboard_a_stretch_is_refused_and_the_exact_mix_works(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pedalboard", None)  # `import pedalboard` fails
    files, job = job_with(tmp_path, {s: sine(330.0, 0.1) for s in STEMS})
    with pytest.raises(InvalidOption, match="installed without pedalboard") as refused:
        render(files, job, speed=0.9)
    assert refused.value.code == "stretch_unavailable" and refused.value.status == 422
    assert not list((files.dir / mixdown.MIX_DIR).iterdir())  # no half file left
    assert render(files, job).shape == (2, int(SECONDS * RATE))


def test_with_object_storage_a_mix_is_rendered_once_for_every_gateway(
    tmp_path, s3server, s3_url, monkeypatch
):
    """Gateway A renders and puts the mix in the bucket; gateway B (its own data dir) serves
    it from there without rendering; deleting the job removes it from the bucket."""
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    extra = {"storage_url": s3_url, "s3_endpoint_url": s3server.endpoint_url}
    a, b = (Settings(_env_file=None, data_dir=tmp_path / n, **extra) for n in ("a", "b"))
    local, job = job_with(tmp_path / "fuser", {s: sine(330.0, 0.1) for s in STEMS})
    here, there = job_files(a, job.id), job_files(b, job.id)
    here.store.put_file(f"{here.result_key}/result.wav", local.result_path)  # as the fuser does
    renders = []
    real = mixdown.render_mix
    monkeypatch.setattr(mixdown, "render_mix", lambda *a: (renders.append(1), real(*a)))
    options = mix_options(STEMS, 0.9, 1, "vocals:-inf", None, "flac")
    first = mix_file(here, job, options).read_bytes()
    assert mix_file(there, job, options).read_bytes() == first and len(renders) == 1
    assert any("/mixes/" in key for key in here.store.list_prefix(here.key))
    here.delete()
    assert here.store.list_prefix(here.key) == []
