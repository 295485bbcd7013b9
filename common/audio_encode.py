"""Audio encoding: float32 `(channels, n)` arrays to the result formats of `RESULT_FORMATS`.

`wav` is 32-bit float and keeps every value, also those beyond ±1.0; the integer formats
(`wav16`, `wav24`, `flac`, `flac16`) and `mp3` (320 kbit/s LAME; players decode it to integer
PCM) cannot, and are clamped to ±1.0 here after an optional `gain` (the caller's `rescale`).
Files are written block by block (memory stays flat in song length) to a hidden temporary name
beside the target and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    fmt = _check_format(fmt)
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[0] < 1:
        raise ValueError(f"samples must have shape (channels, n), got {samples.shape}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    try:
        if fmt == "mp3":
            _write_mp3(tmp, samples, sample_rate, gain)
        else:
            _write_soundfile(tmp, samples, fmt, sample_rate, gain)
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


def _blocks(samples: np.ndarray, clip: bool, gain: float = 1.0) -> Iterator[np.ndarray]:
    """Yields (k, channels) float32 C-contiguous blocks of `samples` (channels, n) * gain."""
    for start in range(0, samples.shape[1], _WRITE_BLOCK):
        block = samples[:, start : start + _WRITE_BLOCK].T.astype(np.float32)
        if gain != 1.0:
            block *= np.float32(gain)
        if clip:
            np.clip(block, -1.0, 1.0, out=block)
        yield np.ascontiguousarray(block)


def _write_soundfile(
    path: Path, samples: np.ndarray, fmt: str, sample_rate: int, gain: float
) -> None:
    container, subtype = _SOUNDFILE_FORMATS[fmt]
    channels = samples.shape[0]
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
        for block in _blocks(samples, clip, gain):
            f.write(block)


def _write_mp3(path: Path, samples: np.ndarray, sample_rate: int, gain: float) -> None:
    channels = samples.shape[0]
    if channels > 2:
        raise InvalidOption(
            f"MP3 holds at most 2 channels, these samples have {channels}; use wav or flac."
        )
    if sample_rate not in _MP3_RATES:
        raise ValueError(f"MP3 cannot store {sample_rate} Hz; it takes one of {_MP3_RATES}")
    if _pyav_has_lame():
        _write_mp3_pyav(path, samples, sample_rate, gain)
    else:
        _write_mp3_lameenc(path, samples, sample_rate, gain)


def _pyav_has_lame() -> bool:
    return "libmp3lame" in av.codecs_available


def _write_mp3_pyav(path: Path, samples: np.ndarray, sample_rate: int, gain: float) -> None:
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=sample_rate, layout=layout)
        stream.bit_rate = _MP3_BIT_RATE
        for start, interleaved in zip(
            range(0, samples.shape[1], _WRITE_BLOCK), _blocks(samples, True, gain), strict=True
        ):
            block = np.ascontiguousarray(interleaved.T)  # planar (channels, k) for fltp
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = start  # in 1/sample_rate units: lets LAME's gapless tag come out right
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _write_mp3_lameenc(path: Path, samples: np.ndarray, sample_rate: int, gain: float) -> None:
    """Fallback for an FFmpeg built without LAME; lameenc takes 16-bit PCM, hence the clip."""
    import lameenc  # optional dependency, only needed on such builds

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(_MP3_BIT_RATE // 1000)
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_channels(samples.shape[0])
    encoder.set_quality(2)  # 2 = high quality, LAME's -q 2
    with open(path, "wb") as f:
        for block in _blocks(samples, True, gain):
            pcm = np.round(block * 32767.0).astype("<i2")  # interleaved (k, channels)
            f.write(encoder.encode(pcm.tobytes()))
        f.write(encoder.flush())
