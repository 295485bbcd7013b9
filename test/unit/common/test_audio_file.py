"""decode_audio_to_file: the same samples, checks and messages as decode_audio, written to a
float32 (2, n) file a block at a time, so memory stays that of a block."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.audio import decode_audio, decode_audio_to_file
from common.errors import AudioRejected, AudiosplitError, StorageError
from common.rawfile import RawArrayFile
from test.unit.common.test_audio import LIMITS, TRICKY, encode_with_pyav, tone_noise

TRICKY_FILES = sorted(p.name for p in TRICKY.iterdir()) if TRICKY.is_dir() else []


def both(path: Path, dest: Path, **limits: float):
    """(decode_audio's outcome, decode_audio_to_file's outcome): a result or the error."""
    limits = {**LIMITS, **limits}
    outcomes = []
    for decode in (
        lambda: decode_audio(path, **limits),
        lambda: decode_audio_to_file(path, dest, **limits),
    ):
        try:
            outcomes.append(decode())
        except AudiosplitError as e:
            outcomes.append(e)
    return outcomes


def assert_same(path: Path, tmp_path: Path, **limits: float) -> None:
    dest = tmp_path / "out" / "input.f32"
    dest.parent.mkdir(exist_ok=True)
    memory, on_disk = both(path, dest, **limits)
    if isinstance(memory, Exception):
        assert type(on_disk) is type(memory) and on_disk.message == memory.message
        assert list(dest.parent.iterdir()) == []  # nothing left behind
        return
    assert on_disk.n_frames == memory.samples.shape[1]
    assert (on_disk.source_rate, on_disk.source_channels, on_disk.source_format) == (
        memory.source_rate,
        memory.source_channels,
        memory.source_format,
    )
    assert on_disk.duration_s == memory.duration_s and on_disk.warnings == memory.warnings
    assert [p.name for p in dest.parent.iterdir()] == ["input.f32"]  # side files gone
    stored = RawArrayFile(dest, (2, on_disk.n_frames))[:, :]
    np.testing.assert_array_equal(stored, memory.samples)  # bit for bit, not to a tolerance
    dest.unlink()


@pytest.mark.skipif(not TRICKY_FILES, reason="../shared/testdata/tricky is absent")
@pytest.mark.parametrize("name", TRICKY_FILES)
def test_the_tricky_corpus_decodes_alike(tmp_path: Path, name: str) -> None:
    assert_same(TRICKY / name, tmp_path)


@pytest.mark.parametrize("rate", [48000, 22050, 44100])
def test_many_blocks_through_the_resampler_decode_alike(tmp_path: Path, rate: int) -> None:
    """12 s is ~8 conversion blocks: the file is the concatenation of what the streaming
    resampler hands on, exactly as the in-memory array is."""
    path = tmp_path / f"a{rate}.flac"
    sf.write(path, tone_noise(seconds=12.0, rate=rate), rate, subtype="PCM_24")
    assert_same(path, tmp_path)
    mp3 = encode_with_pyav(tmp_path / "a.mp3", tone_noise(12.0, rate), rate, "libmp3lame", "mp3")
    assert_same(mp3, tmp_path)


def test_six_channels_and_the_limits_decode_alike(tmp_path: Path) -> None:
    path = tmp_path / "surround.wav"
    sf.write(path, tone_noise(seconds=3.0, channels=6), 44100, subtype="PCM_16")
    assert_same(path, tmp_path)
    assert_same(path, tmp_path, max_duration_s=1.0)  # refused from the header
    assert_same(path, tmp_path, min_duration_s=5.0)  # too short


def test_too_long_while_decoding_leaves_nothing(tmp_path: Path) -> None:
    """A bare MP3's length is a guess: the cap then bites mid-decode, after blocks were written."""
    path = encode_with_pyav(tmp_path / "a.mp3", tone_noise(4.0), 44100, "libmp3lame", "mp3")
    dest = tmp_path / "out" / "input.f32"
    dest.parent.mkdir()
    with pytest.raises(AudioRejected, match="more than 2 s long"):
        decode_audio_to_file(path, dest, min_duration_s=0.1, max_duration_s=2.0)
    assert list(dest.parent.iterdir()) == []


def test_a_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, tone_noise(), 44100, subtype="PCM_16")
    with pytest.raises(StorageError, match="cannot store the decoded audio") as info:
        decode_audio_to_file(path, tmp_path / "gone" / "input.f32", **LIMITS)
    assert info.value.status == 507
    assert str(tmp_path) not in info.value.message  # the server's path is for its log


def test_memory_stays_that_of_a_block(tmp_path: Path) -> None:
    """60 s at 48 kHz decodes to 21 MB of float32; the decoder's own allocations stay a few
    blocks (~1 MB each) whatever the length, where decode_audio needs twice the result."""
    path = tmp_path / "long.wav"
    sf.write(path, tone_noise(seconds=60.0, rate=48000), 48000, subtype="PCM_16")
    result_bytes = 60 * 44100 * 2 * 4
    peaks = {}
    for name, decode in {
        "file": lambda: decode_audio_to_file(path, tmp_path / "input.f32", **LIMITS),
        "memory": lambda: decode_audio(path, **LIMITS),
    }.items():
        tracemalloc.start()
        try:
            decoded = decode()
            peaks[name] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        del decoded
    assert peaks["memory"] > 1.5 * result_bytes  # the measurement sees numpy's buffers
    assert peaks["file"] < 8_000_000, peaks
