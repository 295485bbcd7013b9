"""Tests of common.audio (decode_audio) and common.audio_encode (write_audio).

Fixtures are generated into tmp_path; the shared tricky-file corpus beside the repo
(`../shared/testdata/tricky`) is used when present and skipped cleanly when not.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from common import audio, audio_encode
from common.audio import decode_audio, file_extension, media_type, write_audio
from common.constants import RESULT_FORMATS, SAMPLE_RATE
from common.errors import AudioDecodeError, AudioRejected, InvalidOption, StorageError

RATE = SAMPLE_RATE
SECONDS = 2.0
N = int(SECONDS * RATE)  # 88200 frames
LIMITS = {"min_duration_s": 0.1, "max_duration_s": 1200.0}
TRICKY = Path(__file__).resolve().parents[3].parent / "shared" / "testdata" / "tricky"
_H = 1.0 / np.sqrt(2.0)


def tone_noise(seconds: float = SECONDS, rate: int = RATE, channels: int = 2) -> np.ndarray:
    """(n, channels) float32: a different tone per channel plus a little noise, peak < 0.6."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    freqs = (440.0, 660.0, 550.0, 110.0, 880.0, 330.0, 770.0, 220.0)
    tones = np.stack([0.4 * np.sin(2 * np.pi * freqs[c] * t) for c in range(channels)], axis=1)
    noise = 0.05 * np.random.default_rng(channels).standard_normal((n, channels))
    return (tones + noise).astype(np.float32)


def sdr_db(reference: np.ndarray, estimate: np.ndarray, max_lag: int = 0) -> float:
    """SDR of `estimate` against `reference`, both (channels, n), at the best lag up to
    `max_lag` frames (lossy codecs may shift by their priming), over the overlapping part."""
    best = -np.inf
    for lag in range(-max_lag, max_lag + 1):
        ref = reference[:, max(0, -lag) :]
        est = estimate[:, max(0, lag) :]
        n = min(ref.shape[1], est.shape[1])
        err = np.sum((ref[:, :n] - est[:, :n]) ** 2)
        best = max(best, 10 * np.log10(np.sum(ref[:, :n] ** 2) / max(err, 1e-30)))
    return float(best)


def best_lag(reference: np.ndarray, estimate: np.ndarray, max_lag: int) -> int:
    """The lag (frames) by which estimate trails reference, from their cross-correlation."""
    width = min(reference.shape[1], estimate.shape[1]) - 2 * max_lag
    ref = reference[:, max_lag : max_lag + width]
    scores = [
        np.sum(ref * estimate[:, max_lag + lag : max_lag + lag + width])
        for lag in range(-max_lag, max_lag + 1)
    ]
    return int(np.argmax(scores)) - max_lag


def lossy_sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    lag = best_lag(reference, estimate, 3000)
    return sdr_db(reference[:, max(0, -lag) :], estimate[:, max(0, lag) :])


def encode_with_pyav(path: Path, x: np.ndarray, rate: int, codec: str, container: str) -> Path:
    """Encodes x (n, 2) float32 with an FFmpeg codec (independently of write_audio)."""
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        stream.bit_rate = 192_000
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(x.T), format="fltp", layout="stereo"
        )
        frame.sample_rate = rate
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def soundfile_writer(fmt: str, subtype: str) -> Callable[[Path, np.ndarray], Path]:
    def write(path: Path, x: np.ndarray) -> Path:
        sf.write(path, x, RATE, format=fmt, subtype=subtype)
        return path

    return write


# name -> (writer, minimum SDR in dB, lossy?, expected start of source_format)
FIXTURES = {
    "pcm16.wav": (soundfile_writer("WAV", "PCM_16"), 70.0, False, "WAV/PCM_16"),
    "pcm24.wav": (soundfile_writer("WAV", "PCM_24"), 110.0, False, "WAV/PCM_24"),
    "float.wav": (soundfile_writer("WAV", "FLOAT"), 200.0, False, "WAV/FLOAT"),
    "pcm24.flac": (soundfile_writer("FLAC", "PCM_24"), 110.0, False, "FLAC/PCM_24"),
    "vorbis.ogg": (soundfile_writer("OGG", "VORBIS"), 10.0, True, "OGG/VORBIS"),
    "lame.mp3": (lambda p, x: encode_with_pyav(p, x, RATE, "libmp3lame", "mp3"), 10.0, True, "mp3"),
    "aac.m4a": (lambda p, x: encode_with_pyav(p, x, RATE, "aac", "mp4"), 10.0, True, "mov,mp4"),
}


def decode(path: Path, **limits: float) -> audio.DecodedAudio:
    return decode_audio(path, **{**LIMITS, **limits})


def assert_valid(decoded: audio.DecodedAudio) -> None:
    s = decoded.samples
    assert s.dtype == np.float32 and s.ndim == 2 and s.shape[0] == 2
    assert s.flags.c_contiguous
    assert np.isfinite(s).all()
    assert decoded.duration_s == pytest.approx(s.shape[1] / SAMPLE_RATE)


# --- decoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_decodes_each_format_to_matching_stereo(tmp_path: Path, name: str) -> None:
    writer, min_sdr, lossy, source_format = FIXTURES[name]
    x = tone_noise()
    decoded = decode(writer(tmp_path / name, x))
    assert_valid(decoded)
    assert decoded.source_rate == RATE and decoded.source_channels == 2
    assert decoded.source_format.startswith(source_format)
    assert decoded.warnings == []
    if lossy:  # codec priming and padding: at most a few frames of 1024-2048 samples
        assert abs(decoded.samples.shape[1] - N) <= 3000
        assert lossy_sdr_db(x.T, decoded.samples) >= min_sdr
    else:
        assert decoded.samples.shape[1] == N
        assert sdr_db(x.T, decoded.samples) >= min_sdr


def test_mono_22k_is_resampled_and_duplicated(tmp_path: Path) -> None:
    x = tone_noise(rate=22050, channels=1)
    sf.write(tmp_path / "mono.wav", x, 22050, subtype="FLOAT")
    decoded = decode(tmp_path / "mono.wav")
    assert_valid(decoded)
    assert (decoded.source_rate, decoded.source_channels) == (22050, 1)
    assert decoded.samples.shape == (2, N)
    np.testing.assert_array_equal(decoded.samples[0], decoded.samples[1])
    expected = soxr.resample(x[:, 0], 22050, RATE, quality="HQ")
    assert sdr_db(expected[None], decoded.samples[:1]) >= 60.0


@pytest.mark.parametrize("rate", [8000, 48000, 96000])
def test_resampled_length_is_exact(tmp_path: Path, rate: int) -> None:
    sf.write(tmp_path / "x.flac", tone_noise(rate=rate), rate, subtype="PCM_24")
    decoded = decode(tmp_path / "x.flac")
    assert decoded.samples.shape == (2, N)
    assert decoded.source_rate == rate


@pytest.mark.parametrize("fmt", ["WAV", "WAVEX", "FLAC"])
def test_six_channels_are_downmixed_itu_style(tmp_path: Path, fmt: str) -> None:
    x = tone_noise(channels=6)  # FL FR FC LFE BL BR
    path = tmp_path / f"six.{fmt.lower()}"
    sf.write(path, x, RATE, format=fmt, subtype="PCM_24")
    decoded = decode(path)
    assert decoded.source_channels == 6
    fl, fr, fc, _lfe, bl, br = sf.read(path, dtype="float32")[0].T
    expected = np.stack([fl + _H * fc + _H * bl, fr + _H * fc + _H * br])
    assert sdr_db(expected, decoded.samples) >= 100.0
    assert np.abs(decoded.samples).max() > 1.0  # the mix is not clipped nor normalised


def test_six_channels_through_ffmpeg_use_its_layout(tmp_path: Path) -> None:
    """AC3 5.1 goes through PyAV, which names the channels."""
    x = tone_noise(channels=6)
    with av.open(str(tmp_path / "six.ac3"), "w", format="ac3") as out:
        stream = out.add_stream("ac3", rate=RATE, layout="5.1")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T), format="fltp", layout="5.1")
        frame.sample_rate, frame.pts = RATE, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    decoded = decode(tmp_path / "six.ac3")
    assert decoded.source_channels == 6 and decoded.source_format == "ac3/ac3"
    fl, fr, fc, _lfe, bl, br = x.T
    expected = np.stack([fl + _H * fc + _H * bl, fr + _H * fc + _H * br])
    assert lossy_sdr_db(expected, decoded.samples) >= 10.0


def test_downmix_matrix() -> None:
    m = audio.stereo_downmix_matrix(("FL", "FR", "FC", "LFE", "SL", "SR"))
    np.testing.assert_allclose(m, [[1, 0, _H, 0, _H, 0], [0, 1, _H, 0, 0, _H]], atol=1e-7)
    np.testing.assert_array_equal(audio.stereo_downmix_matrix(("FC",)), [[1], [1]])
    np.testing.assert_array_equal(audio.stereo_downmix_matrix(("X", "Y")), np.eye(2))
    unnamed = audio.stereo_downmix_matrix(("",) * 6)  # default 5.1 order
    np.testing.assert_allclose(unnamed, m, atol=1e-7)
    many = audio.stereo_downmix_matrix(("",) * 10)  # no default layout: alternate, averaged
    np.testing.assert_allclose(many.sum(axis=1), [1.0, 1.0], atol=1e-6)
    assert (many[0, 1::2] == 0).all() and (many[1, 0::2] == 0).all()


def test_format_is_told_by_content_not_name(tmp_path: Path) -> None:
    x = tone_noise()
    mp3 = encode_with_pyav(tmp_path / "a.mp3", x, RATE, "libmp3lame", "mp3")
    wav = tmp_path / "b.wav"
    sf.write(wav, x, RATE, subtype="PCM_16")
    for source, alias in [(mp3, "no_extension"), (mp3, "song.wav"), (wav, "song.mp3")]:
        shutil.copy(source, tmp_path / alias)
        original, renamed = decode(source), decode(tmp_path / alias)
        np.testing.assert_array_equal(original.samples, renamed.samples)
        assert original.source_format == renamed.source_format


def test_float_values_beyond_full_scale_are_kept(tmp_path: Path) -> None:
    x = tone_noise() * 5.0
    sf.write(tmp_path / "loud.wav", x, RATE, subtype="FLOAT")
    decoded = decode(tmp_path / "loud.wav")
    np.testing.assert_array_equal(decoded.samples, x.T)


def test_non_finite_samples_become_zero_with_a_warning(tmp_path: Path) -> None:
    x = tone_noise()
    x[100, 0], x[200, 1], x[300, 0] = np.nan, np.inf, -np.inf
    sf.write(tmp_path / "nan.wav", x, RATE, subtype="FLOAT")
    decoded = decode(tmp_path / "nan.wav")
    assert_valid(decoded)
    assert decoded.samples[0, 100] == 0 and decoded.samples[1, 200] == 0
    assert len(decoded.warnings) == 1 and "3 non-finite" in decoded.warnings[0]


@pytest.mark.parametrize("name", ["pcm16.wav", "pcm24.flac", "lame.mp3", "vorbis.ogg", "opus.ogg"])
def test_truncated_file_decodes_what_is_there_with_a_warning(tmp_path: Path, name: str) -> None:
    writer = FIXTURES[name][0] if name in FIXTURES else opus_ogg
    data = writer(tmp_path / name, tone_noise(seconds=10.0)).read_bytes()
    cut = tmp_path / f"cut_{name}"
    cut.write_bytes(data[: len(data) * 4 // 10])
    decoded = decode(cut)
    assert_valid(decoded)
    assert 2.5 < decoded.duration_s < 5.0  # 40 % of 10 s (of 9.2 s for Opus at 48 kHz)
    assert any("truncated" in w for w in decoded.warnings), decoded.warnings


def opus_ogg(path: Path, x: np.ndarray) -> Path:
    """Opus in Ogg (Opus runs at 48 kHz: the samples are taken as 48 kHz ones)."""
    sf.write(path, x, 48000, format="OGG", subtype="OPUS")
    return path


def test_a_complete_ogg_gets_no_truncation_warning(tmp_path: Path) -> None:
    for name, writer in (("vorbis.ogg", FIXTURES["vorbis.ogg"][0]), ("opus.ogg", opus_ogg)):
        assert decode(writer(tmp_path / name, tone_noise(3.0))).warnings == []


def pcm64_wav(path: Path, x: np.ndarray) -> Path:
    """x (n, 2) float in [-1, 1] as a 64-bit integer PCM WAV (as FFmpeg writes pcm_s64le;
    libsndfile cannot write one)."""
    pcm = np.round(x.astype(np.float64) * 2.0**63).clip(-(2.0**63), 2.0**63 - 1024)
    data = pcm.astype("<i8").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 2, RATE, RATE * 16, 16, 64)
    header = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    header += b"data" + struct.pack("<I", len(data))
    path.write_bytes(b"RIFF" + struct.pack("<I", len(header) + len(data)) + header + data)
    return path


def test_a_64_bit_integer_wav_decodes(tmp_path: Path) -> None:
    """Was a 415 quoting PyAV ("ValueError: Conversion from 's64' format ...")."""
    x = tone_noise()
    decoded = decode(pcm64_wav(tmp_path / "pcm64.wav", x))
    assert_valid(decoded)
    assert decoded.source_format == "wav/pcm_s64le" and decoded.warnings == []
    assert decoded.samples.shape[1] == N and sdr_db(x.T, decoded.samples) >= 130.0


def test_a_decoder_crash_reaches_the_client_without_its_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(frame):
        raise ValueError("Conversion from 'x' failed in /srv/audiosplit/lib/av/frame.pyx")

    monkeypatch.setattr(audio, "_frame_samples", crash)
    path = FIXTURES["lame.mp3"][0](tmp_path / "a.mp3", tone_noise())
    with pytest.raises(AudioDecodeError) as refused:
        decode(path)
    message = refused.value.message
    assert "Conversion" not in message and "/srv" not in message and "ValueError" not in message
    assert message.startswith("The file could not be decoded as audio")


def test_streamed_wav_with_unknown_sizes(tmp_path: Path) -> None:
    x = tone_noise()
    sf.write(tmp_path / "x.wav", x, RATE, subtype="PCM_16")
    data = bytearray((tmp_path / "x.wav").read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"  # RIFF size, as a streaming writer leaves it
    data[40:44] = b"\xff\xff\xff\xff"  # data chunk size
    (tmp_path / "streamed.wav").write_bytes(bytes(data))
    decoded = decode(tmp_path / "streamed.wav")
    assert decoded.samples.shape == (2, N) and decoded.warnings == []


# --- refusals ------------------------------------------------------------------------------------


def write_file(tmp_path: Path, name: str, data: bytes) -> Path:
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("empty.wav", b"", "empty"),
        ("noise.mp3", np.random.default_rng(1).bytes(100_000), "not decodable audio"),
        ("noise.bin", np.random.default_rng(2).bytes(5_000), "not decodable audio"),
        ("notes.mp3", b"Shopping list:\n- milk\n- eggs\n" * 40, "text file"),
        ("cover.mp3", b"\x89PNG\r\n\x1a\n" + bytes(2000), "PNG image"),
        ("short_header.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", "WAV file whose header"),
        ("cut.m4a", b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(5000), "moov"),
    ],
)
def test_undecodable_input_is_a_415(tmp_path: Path, name: str, data: bytes, words: str) -> None:
    with pytest.raises(AudioDecodeError) as info:
        decode(write_file(tmp_path, name, data))
    assert info.value.status == 415
    assert words in info.value.message
    assert str(tmp_path) not in info.value.message  # no server paths in a user's message


def test_missing_file_and_directory_are_415(tmp_path: Path) -> None:
    for path in (tmp_path / "gone.wav", tmp_path):
        with pytest.raises(AudioDecodeError):
            decode(path)


def test_zero_frames_is_rejected(tmp_path: Path) -> None:
    sf.write(tmp_path / "none.wav", np.zeros((0, 2), np.float32), RATE, subtype="PCM_16")
    with pytest.raises(AudioRejected, match="no samples"):
        decode(tmp_path / "none.wav")


def test_too_short_is_rejected(tmp_path: Path) -> None:
    sf.write(tmp_path / "blip.wav", tone_noise(seconds=0.05), RATE, subtype="PCM_16")
    with pytest.raises(AudioRejected, match=r"only 50 ms long; at least 100 ms") as info:
        decode(tmp_path / "blip.wav")
    assert info.value.status == 422


class SinkSpy:
    """Records how much audio reached the stereo converter (source seconds)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seconds = 0.0
        original = audio._StereoSink.add

        def add(sink: audio._StereoSink, block: np.ndarray, rate: int, names: object) -> None:
            self.seconds += len(block) / rate
            original(sink, block, rate, names)

        monkeypatch.setattr(audio._StereoSink, "add", add)


@pytest.mark.parametrize("name", ["pcm16.wav", "pcm24.flac", "vorbis.ogg", "aac.m4a"])
def test_too_long_is_refused_from_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    path = FIXTURES[name][0](tmp_path / name, tone_noise())
    spy = SinkSpy(monkeypatch)
    with pytest.raises(AudioRejected, match=r"The audio is 2.* long; the limit is 1 s"):
        decode(path, max_duration_s=1.0)
    assert spy.seconds == 0


def test_too_long_is_also_enforced_while_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare MP3 stream's length is a guess, so it is only trusted when far over the limit."""
    path = encode_with_pyav(tmp_path / "a.mp3", tone_noise(), RATE, "libmp3lame", "mp3")
    spy = SinkSpy(monkeypatch)
    with pytest.raises(AudioRejected, match="more than 1.5 s long"):
        decode(path, max_duration_s=1.5)
    assert spy.seconds > 1.5


def test_no_other_exception_escapes_damaged_files(tmp_path: Path) -> None:
    """Cut and scrambled versions of every fixture: a result or one of our two errors."""
    rng = np.random.default_rng(3)
    for name, (writer, *_rest) in FIXTURES.items():
        data = writer(tmp_path / name, tone_noise(seconds=1.0)).read_bytes()
        variants = [data[:n] for n in (1, 12, 44, 100, 600, len(data) // 2)]
        scrambled = np.frombuffer(data, np.uint8).copy()
        scrambled[rng.integers(len(data) // 10, len(data), 200)] = rng.integers(0, 256, 200)
        variants.append(scrambled.tobytes())
        for i, variant in enumerate(variants):
            path = write_file(tmp_path, f"v{i}_{name}", variant)
            try:
                assert_valid(decode(path, min_duration_s=0.0))
            except (AudioDecodeError, AudioRejected):
                pass


# --- writing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", RESULT_FORMATS)
def test_write_audio_round_trip(tmp_path: Path, fmt: str) -> None:
    x = tone_noise().T  # (2, n)
    path = tmp_path / f"out.{file_extension(fmt)}"
    write_audio(path, x, fmt)
    decoded = decode(path)
    min_sdr = {"wav": 200.0, "wav16": 70.0, "wav24": 110.0, "flac": 110.0, "flac16": 70.0}
    min_sdr = {**min_sdr, "mp3": 20.0}[fmt]
    if fmt == "mp3":  # the LAME tag carries the gapless trim: same length, no shift
        assert decoded.samples.shape[1] == N
        assert best_lag(x, decoded.samples, 1200) == 0
    else:
        assert decoded.samples.shape == (2, N)
    assert sdr_db(x, decoded.samples) >= min_sdr
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_write_audio_clips_only_integer_formats(tmp_path: Path) -> None:
    x = np.stack([np.linspace(-3, 3, 1000), np.linspace(2, -2, 1000)]).astype(np.float32)
    for fmt, peak in [("wav", 3.0), ("wav16", 1.0), ("wav24", 1.0), ("flac", 1.0), ("flac16", 1)]:
        write_audio(tmp_path / f"{fmt}.x", x, fmt)  # the name's extension does not matter
        y, _ = sf.read(tmp_path / f"{fmt}.x", dtype="float32")
        assert np.abs(y).max() == pytest.approx(peak, abs=1e-4), fmt


@pytest.mark.parametrize("fmt", ["wav", "wav24", "flac16", "mp3"])
def test_write_audio_gain_comes_before_the_clamp(tmp_path: Path, fmt: str) -> None:
    x = tone_noise().T * 3.0  # peaks near 3x full scale
    path = tmp_path / f"out.{file_extension(fmt)}"
    write_audio(path, x, fmt, gain=1 / 3.0)
    y = decode(path).samples
    limit = {"wav": 30.0, "wav24": 30.0, "flac16": 30.0, "mp3": 15.0}[fmt]
    aligned = y[:, : x.shape[1]]
    assert sdr_db(x / 3.0, aligned) >= limit  # scaled, not clipped: the shape is kept


def test_write_audio_clamps_mp3(tmp_path: Path) -> None:
    x = tone_noise().T * 3.0
    write_audio(tmp_path / "x.mp3", x, "mp3")
    assert np.abs(decode(tmp_path / "x.mp3").samples).max() < 1.2  # LAME's ripple above 1.0


@pytest.mark.parametrize("fmt", ["wav", "wav24", "flac"])
def test_write_audio_many_channels(tmp_path: Path, fmt: str) -> None:
    x = tone_noise(channels=8).T * 1.5  # e.g. 4 stems x [L, R], beyond full scale
    write_audio(tmp_path / "stems", x[:, ::2], fmt)  # a non-contiguous view is fine
    y, rate = sf.read(tmp_path / "stems", dtype="float32", always_2d=True)
    assert rate == RATE and y.shape == (N // 2, 8)
    expected = x[:, ::2] if fmt == "wav" else np.clip(x[:, ::2], -1, 1)
    np.testing.assert_allclose(y.T, expected, atol=1e-6 if fmt == "wav" else 2e-7 * 2**8)


def test_write_audio_mp3_fallback_lameenc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lameenc")
    monkeypatch.setattr(audio_encode, "_pyav_has_lame", lambda: False)
    x = tone_noise().T
    write_audio(tmp_path / "x.mp3", x, "mp3")
    decoded = decode(tmp_path / "x.mp3")
    assert abs(decoded.samples.shape[1] - N) <= 3000
    assert lossy_sdr_db(x, decoded.samples) >= 20.0


def test_write_audio_refusals(tmp_path: Path) -> None:
    x = np.zeros((2, 100), np.float32)
    with pytest.raises(InvalidOption, match="wav, wav16, wav24, flac, flac16, mp3"):
        write_audio(tmp_path / "x", x, "ogg")
    with pytest.raises(InvalidOption, match="MP3 holds at most 2 channels"):
        write_audio(tmp_path / "x", np.zeros((4, 100), np.float32), "mp3")
    with pytest.raises(InvalidOption, match="FLAC holds at most 8"):
        write_audio(tmp_path / "x", np.zeros((12, 100), np.float32), "flac")
    with pytest.raises(StorageError):
        write_audio(tmp_path / "no" / "such" / "dir.wav", x, "wav")
    with pytest.raises(ValueError):
        write_audio(tmp_path / "x", np.zeros(100, np.float32), "wav")


def test_media_types_and_extensions() -> None:
    table = {fmt: (media_type(fmt), file_extension(fmt)) for fmt in RESULT_FORMATS}
    assert table == {
        "wav": ("audio/wav", "wav"),
        "wav16": ("audio/wav", "wav"),
        "wav24": ("audio/wav", "wav"),
        "flac": ("audio/flac", "flac"),
        "flac16": ("audio/flac", "flac"),
        "mp3": ("audio/mpeg", "mp3"),
    }
    with pytest.raises(InvalidOption):
        media_type("aiff")


# --- the shared corpus of tricky uploads ---------------------------------------------------------

# name -> expected duration in s (README's figure unless noted) or the error, and a word that a
# warning must contain ("" for none). Codec priming/padding moves lengths by up to ~50 ms.
_TRICKY: dict[str, tuple[float | type[Exception], str]] = {
    "clipped_hard_+20dB.wav": (6.803, ""),
    "dc_offset_+0.3.wav": (6.803, ""),
    "filename with spaces ünïcødé 🎵.wav": (2.0, ""),
    "float32_wav_inf_samples.wav": (6.803, "non-finite"),
    "float32_wav_nan_inf_samples.wav": (6.803, "non-finite"),
    "fmt_spleeter.ac3": (10.902, ""),
    "fmt_spleeter.wma": (10.867, ""),  # README: 10.912 as the header says; FFmpeg decodes less
    "fmt_spleeter_192k_s24_stereo_4s.wav": (4.0, ""),
    "fmt_spleeter_22k_u8_stereo.wav": (10.881, ""),
    "fmt_spleeter_44k_s16_stereo.wav": (10.881, ""),
    "fmt_spleeter_48k_24bit.flac": (10.881, ""),
    "fmt_spleeter_8k_s16_mono.wav": (10.881, ""),
    "fmt_spleeter_96k_s24_stereo.wav": (10.881, ""),
    "fmt_spleeter_aac.m4a": (10.881, ""),
    "fmt_spleeter_adts.aac": (10.913, ""),  # README: 11.224 is FFmpeg's bitrate estimate
    "fmt_spleeter_alac.m4a": (10.881, ""),
    "fmt_spleeter_f32_peaks_above_0dBFS.wav": (10.881, ""),
    "fmt_spleeter_opus.opus": (10.881, ""),
    "fmt_spleeter_vbr.mp3": (10.881, ""),
    "fmt_spleeter_vorbis.ogg": (10.881, ""),
    "id3v2.3_with_cover_and_id3v1.mp3": (10.881, ""),
    "long_10min_spleeter_loop_128k.mp3": (598.43, ""),
    "m4a_first_64KiB_only.m4a": (AudioDecodeError, ""),
    "mono_11025Hz.wav": (6.803, ""),
    "mp3_starting_mid_frame_no_header.mp3": (10.535, ""),
    "mp3_with_64KiB_garbage_appended.mp3": (10.881, "damaged"),
    "musdb_80sRock_6ch_5.1.wav": (6.803, ""),
    "music_after_5s_leading_silence.wav": (11.803, ""),
    "music_quiet_-40dB.wav": (6.803, ""),
    "near_silence_-80dBFS_noise_7s.wav": (6.803, ""),
    "no_extension_mp3_file": (10.881, ""),
    "random_bytes.mp3": (AudioDecodeError, ""),
    "random_bytes.wav": (AudioDecodeError, ""),
    "short_100ms_stereo.wav": (0.1, ""),
    "short_10ms_stereo.wav": (AudioRejected, ""),
    "short_1_sample_stereo.wav": (AudioRejected, ""),
    "short_500ms_stereo.wav": (0.5, ""),
    "silence_digital_7s_stereo_44k.flac": (6.803, ""),
    "silence_digital_7s_stereo_44k.wav": (6.803, ""),
    "stereo_dual_mono_identical.wav": (6.803, ""),
    "stereo_phase_inverted_L_eq_minus_R.wav": (6.803, ""),
    "stereo_right_channel_silent.wav": (6.803, ""),
    "text_file_named.mp3": (AudioDecodeError, ""),
    "truncated_60pct.flac": (6.432, "truncated"),  # README: 10.881 as the header claims
    "truncated_60pct.m4a": (AudioDecodeError, ""),
    "truncated_60pct.ogg": (6.076, "truncated"),  # its last page lacks the end-of-stream mark
    "truncated_mid_frame_50pct.mp3": (5.435, "truncated"),  # README: the Xing tag's 10.881
    "uppercase_ext_MUSIC.WAV": (6.803, ""),
    "wav_header_only_0_frames_stereo.wav": (AudioRejected, ""),
    "wav_streamed_unknown_sizes_0xFFFFFFFF.wav": (6.803, ""),
    "wav_truncated_40pct_header_claims_full.wav": (2.721, "truncated"),
    "wav_truncated_inside_header_30B.wav": (AudioDecodeError, ""),
    "zero_bytes.mp3": (AudioDecodeError, ""),
    "zero_bytes.wav": (AudioDecodeError, ""),
}


def _tricky_params() -> list[object]:
    if not TRICKY.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{TRICKY} is absent"))]
    return sorted(p.name for p in TRICKY.iterdir() if p.is_file())


@pytest.mark.parametrize("name", _tricky_params())
def test_tricky_file(name: str) -> None:
    expected, warning = _TRICKY.get(name, (None, ""))
    try:
        decoded = decode(TRICKY / name)
    except (AudioDecodeError, AudioRejected) as e:
        assert e.message.endswith(".") and len(e.message) > 40  # a sentence, not a code
        if expected is not None:
            assert isinstance(expected, type) and isinstance(e, expected), e.message
        return
    assert_valid(decoded)
    if expected is None:  # a file added after this table: any valid audio will do
        return
    assert not isinstance(expected, type), f"expected {expected.__name__}"
    assert decoded.duration_s == pytest.approx(expected, abs=0.06)
    if warning:
        assert any(warning in w for w in decoded.warnings), decoded.warnings
    else:
        assert decoded.warnings == []


def test_tricky_long_mp3_is_refused_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare MP3's length is a guess, trusted once its first second decodes cleanly."""
    if not TRICKY.is_dir():
        pytest.skip(f"{TRICKY} is absent")
    spy = SinkSpy(monkeypatch)
    with pytest.raises(AudioRejected, match=r"9 min 58 s long; the limit is 1 min"):
        decode(TRICKY / "long_10min_spleeter_loop_128k.mp3", max_duration_s=60.0)
    assert spy.seconds < 1.1


def test_non_audio_hears_not_audio_rather_than_too_long(tmp_path: Path) -> None:
    """FFmpeg guesses 50 s for 100 kB of random bytes named .mp3: still a 415, not a 422."""
    path = write_file(tmp_path, "noise.mp3", np.random.default_rng(1).bytes(100_000))
    with pytest.raises(AudioDecodeError, match="not decodable audio"):
        decode(path, max_duration_s=10.0)
