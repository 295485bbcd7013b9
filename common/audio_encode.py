"""Audio encoding: float32 `(channels, n)` arrays to the result formats of `RESULT_FORMATS`.

`wav` is 32-bit float and keeps every value, also those beyond ±1.0; the integer formats
(`wav16`, `wav24`, `flac`, `flac16`) and `mp3` (320 kbit/s LAME; players decode it to integer
PCM) cannot, and are clamped to ±1.0 here after an optional `gain` (the caller's `rescale`).
Files are written block by block (memory stays flat in song length) to a hidden temporary name
beside the target and renamed into place, so a reader never sees half a file; `write_audio_blocks`
takes the blocks from an iterator, so the samples need never be in memory at once.
`pcm_bytes` and `wav_header` make a WAV file's bytes without a file, for streaming.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from common.constants import RESULT_FORMATS, SAMPLE_RATE
from common.errors import InvalidOption, StorageError

_WRITE_BLOCK = 1 << 16  # frames per block written: ~1.5 s at 44.1 kHz
_MP3_BIT_RATE = 320_000  # bit/s
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # Hz, MPEG-1/2/2.5
_FLAC_MAX_CHANNELS = 8  # the FLAC format's own limit

# fmt -> (libsndfile container, subtype)
_SOUNDFILE_FORMATS = {
    "wav": ("WAV", "FLOAT"),
    "wav16": ("WAV", "PCM_16"),
    "wav24": ("WAV", "PCM_24"),
    "flac": ("FLAC", "PCM_24"),
    "flac16": ("FLAC", "PCM_16"),
}
_MEDIA_TYPES = {
    "wav": "audio/wav",
    "wav16": "audio/wav",
    "wav24": "audio/wav",
    "flac": "audio/flac",
    "flac16": "audio/flac",
    "mp3": "audio/mpeg",
}
_EXTENSIONS = {
    "wav": "wav",
    "wav16": "wav",
    "wav24": "wav",
    "flac": "flac",
    "flac16": "flac",
    "mp3": "mp3",
}
FLOAT_FORMATS = ("wav",)  # never clipped


def media_type(fmt: str) -> str:
    """The HTTP media type of a result format: 'flac' -> 'audio/flac'."""
    return _MEDIA_TYPES[_check_format(fmt)]


def file_extension(fmt: str) -> str:
    """The file name extension of a result format, without the dot: 'wav24' -> 'wav'."""
    return _EXTENSIONS[_check_format(fmt)]


def write_audio(
    path: Path, samples: np.ndarray, fmt: str, sample_rate: int = SAMPLE_RATE, gain: float = 1.0
) -> None:
    """Writes `samples` (channels, n) float32 at `sample_rate` Hz, times `gain`, to `path` in
    `fmt`; all formats but `wav` clamp to ±1.0 after the gain.

    Any channel count for `wav*` (a float WAV of 20 min x 12 channels is 2.5 GB, under the
    4 GB RIFF limit), at most 8 for `flac`, 1 or 2 for `mp3`. Raises `InvalidOption` for an
    unknown format or a channel count the format cannot hold, `StorageError` when the write fails.
    """
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[0] < 1:
        raise ValueError(f"samples must have shape (channels, n), got {samples.shape}")
    blocks = (
        samples[:, start : start + _WRITE_BLOCK].T
        for start in range(0, samples.shape[1], _WRITE_BLOCK)
    )
    write_audio_blocks(path, blocks, samples.shape[0], fmt, sample_rate, gain)


def write_audio_blocks(
    path: Path,
    blocks: Iterable[np.ndarray],
    channels: int,
    fmt: str,
    sample_rate: int = SAMPLE_RATE,
    gain: float = 1.0,
) -> None:
    """`write_audio` for samples that come as (k, channels) float32 blocks in track order
    (any k): memory stays that of a block. Raises what `write_audio` raises."""
    fmt = _check_format(fmt)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    try:
        if fmt == "mp3":
            _write_mp3(tmp, blocks, channels, sample_rate, gain)
        else:
            _write_soundfile(tmp, blocks, channels, fmt, sample_rate, gain)
        os.replace(tmp, path)
    except (OSError, sf.LibsndfileError) as e:
        raise StorageError(f"Could not write the {fmt} file {path.name}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def _check_format(fmt: str) -> str:
    if fmt not in RESULT_FORMATS:
        raise InvalidOption(
            f"Unknown audio format {fmt!r}; choose one of {', '.join(RESULT_FORMATS)}."
        )
    return fmt


def _blocks(blocks: Iterable[np.ndarray], clip: bool, gain: float = 1.0) -> Iterator[np.ndarray]:
    """Yields (k, channels) float32 C-contiguous copies of `blocks` (k, channels) * gain,
    clamped to ±1.0 if `clip`."""
    for raw in blocks:
        block = raw.astype(np.float32)
        if gain != 1.0:
            block *= np.float32(gain)
        if clip:
            np.clip(block, -1.0, 1.0, out=block)
        yield np.ascontiguousarray(block)


# fmt -> (WAVE format tag, bytes a sample, integer PCM?)
_WAV_PCM = {"wav": (3, 4, False), "wav16": (1, 2, True), "wav24": (1, 3, True)}
WAV_MAX_DATA_BYTES = 0xFFFFFFFF - 64  # a RIFF size is 32 bits


def wav_header(fmt: str, channels: int, frames: int, sample_rate: int = SAMPLE_RATE) -> bytes:
    """The header of a WAV file of `frames` frames in `fmt` (wav, wav16, wav24): RIFF, `fmt `
    (18 bytes with a `fact` chunk for float, as WAVE wants for non-PCM), then `data`'s header.
    Raises `InvalidOption` when the data would pass the 4 GB a RIFF size can say."""
    tag, width, _ = _WAV_PCM[fmt]
    data = frames * channels * width
    if data > WAV_MAX_DATA_BYTES:
        raise InvalidOption(
            f"{frames / sample_rate / 3600:.1f} h of {channels} channels in {fmt} passes the "
            "4 GB a WAV file can hold; ask for flac."
        )
    block_align = channels * width
    fmt_chunk = struct.pack(
        "<HHIIHH", tag, channels, sample_rate, sample_rate * block_align, block_align, 8 * width
    )
    chunks = b""
    if tag == 3:
        fmt_chunk += b"\0\0"  # cbSize: no extension
        chunks = b"fact" + struct.pack("<II", 4, frames)
    chunks = b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk + chunks
    chunks += b"data" + struct.pack("<I", data)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks) + data) + b"WAVE" + chunks


def wav_size(fmt: str, channels: int, frames: int) -> int:
    """Bytes of the WAV file `wav_header` begins."""
    return len(wav_header(fmt, channels, 0)) + frames * channels * _WAV_PCM[fmt][1]


def pcm_bytes(block: np.ndarray, fmt: str, gain: float = 1.0) -> bytes:
    """A (k, channels) float32 block as the data bytes of a WAV in `fmt`: float as it is (times
    `gain`), integers clamped to ±1.0 after the gain and rounded as libsndfile 1.2 rounds them
    (to 32 bits, then the top bits kept), so the bytes are those `write_audio` writes."""
    _, width, integer = _WAV_PCM[fmt]
    (block,) = _blocks([block], clip=integer, gain=gain)
    if not integer:
        return block.astype("<f4", copy=False).tobytes()
    full = np.rint(block.astype(np.float64) * 2.0**31)
    top = (np.clip(full, -(2.0**31), 2.0**31 - 1).astype("<i4") >> (32 - 8 * width)).astype("<i4")
    if width == 3:  # the low three bytes of each little-endian int32
        return top.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    return top.astype("<i2").tobytes()


def _write_soundfile(
    path: Path, blocks: Iterable[np.ndarray], channels: int, fmt: str, sample_rate: int, gain: float
) -> None:
    container, subtype = _SOUNDFILE_FORMATS[fmt]
    if container == "FLAC" and channels > _FLAC_MAX_CHANNELS:
        raise InvalidOption(
            f"FLAC holds at most {_FLAC_MAX_CHANNELS} channels, these samples have {channels}; "
            "use wav, or one file per stem."
        )
    # Integer PCM cannot hold values beyond full scale: clip rather than let them wrap around.
    clip = subtype != "FLOAT"
    with sf.SoundFile(
        str(path), "w", samplerate=sample_rate, channels=channels, format=container, subtype=subtype
    ) as f:
        for block in _blocks(blocks, clip, gain):
            f.write(block)


def _write_mp3(
    path: Path, blocks: Iterable[np.ndarray], channels: int, sample_rate: int, gain: float
) -> None:
    if channels > 2:
        raise InvalidOption(
            f"MP3 holds at most 2 channels, these samples have {channels}; use wav or flac."
        )
    if sample_rate not in _MP3_RATES:
        raise ValueError(f"MP3 cannot store {sample_rate} Hz; it takes one of {_MP3_RATES}")
    if _pyav_has_lame():
        _write_mp3_pyav(path, blocks, channels, sample_rate, gain)
    else:
        _write_mp3_lameenc(path, blocks, channels, sample_rate, gain)


def _pyav_has_lame() -> bool:
    return "libmp3lame" in av.codecs_available


def _write_mp3_pyav(
    path: Path, blocks: Iterable[np.ndarray], channels: int, sample_rate: int, gain: float
) -> None:
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=sample_rate, layout=layout)
        stream.bit_rate = _MP3_BIT_RATE
        start = 0
        for interleaved in _blocks(blocks, True, gain):
            block = np.ascontiguousarray(interleaved.T)  # planar (channels, k) for fltp
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = start  # in 1/sample_rate units: lets LAME's gapless tag come out right
            start += len(interleaved)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _write_mp3_lameenc(
    path: Path, blocks: Iterable[np.ndarray], channels: int, sample_rate: int, gain: float
) -> None:
    """Fallback for an FFmpeg built without LAME; lameenc takes 16-bit PCM, hence the clip."""
    import lameenc  # optional dependency, only needed on such builds

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(_MP3_BIT_RATE // 1000)
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_channels(channels)
    encoder.set_quality(2)  # 2 = high quality, LAME's -q 2
    with open(path, "wb") as f:
        for block in _blocks(blocks, True, gain):
            pcm = np.round(block * 32767.0).astype("<i2")  # interleaved (k, channels)
            f.write(encoder.encode(pcm.tobytes()))
        f.write(encoder.flush())
