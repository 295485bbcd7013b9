"""Audio decoding: an upload in any common format in, float32 stereo at 44.1 kHz out.

The format is told by content, never by the file name. The WAV family, FLAC and Ogg go through
libsndfile (soundfile), exact and fast for them; everything else (MP3, AAC/M4A, ALAC, AC3, WMA,
the sound of a video) and whatever libsndfile cannot read goes through FFmpeg (PyAV). Samples
are converted a block at a time (`common.stereo`: cleaned of NaN/inf, downmixed to stereo,
resampled with soxr's streaming resampler): `decode_audio_to_file` writes them to disk as they
come, so its memory is that of a block whatever the song's length; `decode_audio` keeps them
(about twice the float32 result at its peak). Both give the same samples.

Every failure leaves either as `AudioDecodeError` (415: not audio we can decode) or
`AudioRejected` (422: it decodes, but is unusable), with a message for the person who sent it.
Writing lives in `common.audio_encode`, re-exported here.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from common.audio_encode import file_extension, media_type, write_audio
from common.constants import SAMPLE_RATE
from common.errors import AudioDecodeError, AudioRejected, StorageError
from common.stereo import (
    BLOCK_VALUES,
    DEFAULT_LAYOUTS,
    FrameOutput,
    MemoryFrames,
    PlanarFileFrames,
    StereoSink,
    stereo_downmix_matrix,
)

log = logging.getLogger("audiosplit.audio")

__all__ = [
    "DecodedAudio",
    "DecodedFile",
    "decode_audio",
    "decode_audio_to_file",
    "file_extension",
    "media_type",
    "stereo_downmix_matrix",
    "write_audio",
]

_HEAD_BYTES = 512  # enough to recognise a container, or text, by its first bytes
# First bytes of the containers libsndfile reads well: the WAV family (RIFF, RIFX, RF64, BW64,
# Sony Wave64), FLAC, Ogg, AIFF, CAF. Everything else goes straight to FFmpeg.
_SOUNDFILE_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"BW64", b"riff", b"fLaC", b"OggS", b"FORM", b"caff")
# libsndfile hands channels on in file order; only for these is that order WAVE's (FL FR FC ...).
# Others with more than 2 channels (Vorbis, AIFF order them differently) go to FFmpeg.
_WAVE_ORDER_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "FLAC"})
# FFmpeg demuxers of bare codec streams: without a length tag their duration is a guess from the
# first frame's bitrate, which can be off several times for VBR, and random bytes named .mp3 get
# one too. Such a guess refuses a file only when twice over the limit, and only once the first
# second of it has decoded cleanly: a non-audio file should hear "not audio", not "too long".
_GUESSED_DURATION_FORMATS = frozenset({"mp3", "aac", "ac3", "eac3", "dts", "loas", "mpeg"})
_GUESS_SLACK = 2.0
_GUESS_TRUSTED_AFTER_S = 1.0
_MAX_DAMAGED_SHARE = 0.5  # more damaged packets than this and it is noise, not a song

_WAVE_SPEAKERS = ("FL", "FR", "FC", "LFE", "BL", "BR", "FLC", "FRC", "BC", "SL", "SR", "TC")
_WAVE_SPEAKERS += ("TFL", "TFC", "TFR", "TBL", "TBC", "TBR")  # bit order of a WAVEX channel mask

_MASK_RE = re.compile(r"Channel Mask\s*:\s*0x([0-9A-Fa-f]+)")
# libsndfile's header log says so when a WAV's data chunk claims more bytes than the file has.
_SHORT_DATA_RE = re.compile(r"^data\s*:\s*(\d+) \(should be (\d+)\)", re.MULTILINE)
_OGG_NO_EOS_RE = re.compile(r"^Ogg\s*:\s*Last page lacks an end-of-stream bit", re.MULTILINE)
_UNKNOWN_SIZE = 0xFFFFFFFF  # RIFF size of a WAV written while streaming: not a truncation
_NOT_AUDIO = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an office document)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
)
_FORMATS_HINT = "Upload a song as WAV, FLAC, MP3, OGG/Opus, M4A/AAC or another common audio format."


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded upload: `samples` (2, n) float32 C-contiguous at SAMPLE_RATE Hz, [L, R],
    not clipped (float sources may exceed ±1.0). `source_*` describe the file as uploaded;
    `source_format` is 'container/codec' (e.g. 'WAV/PCM_16', 'mp3/mp3float'); `warnings` are
    for the person who uploaded it (damage found, samples replaced)."""

    samples: np.ndarray
    source_rate: int
    source_channels: int
    source_format: str
    duration_s: float
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DecodedFile:
    """A decoded upload written to `path`: little-endian float32 (2, n) with n = `n_frames`,
    all of L then all of R, at SAMPLE_RATE Hz; the other fields as in `DecodedAudio`."""

    path: Path
    n_frames: int
    source_rate: int
    source_channels: int
    source_format: str
    duration_s: float
    warnings: list[str] = field(default_factory=list)


def decode_audio(path: Path, *, min_duration_s: float, max_duration_s: float) -> DecodedAudio:
    """Decodes the audio file at `path` to float32 stereo at SAMPLE_RATE Hz, in memory.

    Raises `AudioDecodeError` when it is not decodable audio and `AudioRejected` when it holds
    no samples or lasts less than `min_duration_s` or more than `max_duration_s` seconds (the
    latter judged from the header before decoding where the header tells it). No other exception
    type leaves this function.
    """
    decoded = _decode_checked(Path(path), min_duration_s, max_duration_s, MemoryFrames)
    samples = decoded.sink.out.finish()
    return DecodedAudio(samples, *decoded.source, samples.shape[1] / SAMPLE_RATE, decoded.warnings)


def decode_audio_to_file(
    path: Path, dest: Path, *, min_duration_s: float, max_duration_s: float
) -> DecodedFile:
    """Decodes the audio file at `path` as `decode_audio` does, into the file `dest` (float32
    (2, n), see `DecodedFile`) a block at a time: memory stays that of a block.

    `dest` appears only once complete and accepted; nothing is left beside it on failure.
    Raises what `decode_audio` raises, and `StorageError` when the disk refuses the samples.
    """
    dest = Path(dest)
    decoded = _decode_checked(
        Path(path), min_duration_s, max_duration_s, lambda: PlanarFileFrames(dest)
    )
    n = decoded.sink.out.finish()
    return DecodedFile(dest, n, *decoded.source, n / SAMPLE_RATE, decoded.warnings)


class _StereoSink(StereoSink):
    """The stereo converter with the duration cap: refuses the file once more than
    `max_duration_s` has been decoded (a header may not tell, or lie)."""

    def __init__(self, max_duration_s: float, out: FrameOutput) -> None:
        super().__init__(out)
        self.max_duration_s = max_duration_s

    def add(self, block: np.ndarray, rate: int, names: tuple[str, ...]) -> None:
        super().add(block, rate, names)
        if self.source_seconds > self.max_duration_s:
            raise _too_long(self.source_seconds, self.max_duration_s, at_least=True)


@dataclass
class _Decoded:
    """What a decoder made: the sink (flushed: its `out` holds every frame), the source's
    (rate, channels, 'container/codec'), and warnings for the uploader."""

    sink: _StereoSink
    source: tuple[int, int, str]
    warnings: list[str]


_NewOutput = Callable[[], FrameOutput]


def _decode_checked(
    path: Path, min_duration_s: float, max_duration_s: float, new_output: _NewOutput
) -> _Decoded:
    """`_decode` with its promise: only our own errors leave it; an output of a failed or
    refused decode is discarded."""
    outputs: list[FrameOutput] = []

    def open_output() -> FrameOutput:
        outputs.append(new_output())
        return outputs[-1]

    try:
        decoded = _decode(path, max_duration_s, open_output)
        frames = decoded.sink.out.frames
        if frames == 0:
            raise AudioRejected(
                f"The file is valid {decoded.source[2]} audio but holds no samples (0 frames)."
            )
        if frames / SAMPLE_RATE < min_duration_s - 1e-9:
            raise AudioRejected(
                f"The audio is only {clock(frames / SAMPLE_RATE)} long; at least "
                f"{clock(min_duration_s)} is needed."
            )
        return decoded
    except BaseException as e:
        for out in outputs:
            out.discard()
        if isinstance(e, StorageError):  # the OS's words name the server's path: logged
            log.error("storing the decoded upload failed: %s", e.message)
            raise StorageError(
                "cannot store the decoded audio: the server's disk refused it; try again later"
            ) from e
        if isinstance(e, AudioDecodeError | AudioRejected) or not isinstance(e, Exception):
            raise
        if isinstance(e, MemoryError):
            raise AudioRejected(
                "The audio is too large to decode on this server; upload a shorter file."
            ) from e
        # the promise above: a decoder's own error becomes a 415; its text (a library's words,
        # maybe a server path) is for the log
        log.warning("decoding %s failed: %s: %s", path.name, type(e).__name__, e)
        raise AudioDecodeError(
            f"The file could not be decoded as audio: the decoder stopped on it. {_FORMATS_HINT}"
        ) from e


def _decode(path: Path, max_duration_s: float, open_output: _NewOutput) -> _Decoded:
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError as e:
        log.error("reading the upload %s failed: %s", path, e)
        raise AudioDecodeError("The uploaded file could not be read back on the server.") from e
    if not head:
        raise AudioDecodeError(
            f"The file is empty (0 bytes): nothing was uploaded, or the upload broke off. "
            f"{_FORMATS_HINT}"
        )
    if head.startswith(_SOUNDFILE_MAGIC):
        audio = _decode_soundfile(path, max_duration_s, open_output)
        if audio is not None:
            return audio
    return _decode_ffmpeg(path, head, max_duration_s, open_output)


def _decode_soundfile(
    path: Path, max_duration_s: float, open_output: _NewOutput
) -> _Decoded | None:
    """Decodes with libsndfile; None where it cannot (unknown codec, damage mid-stream): FFmpeg
    then gets its turn, and it decodes damaged files up to the damage and past it."""
    try:
        f = sf.SoundFile(str(path))
    except Exception:  # libsndfile's refusal says little; FFmpeg may know the codec
        return None
    with f:
        if f.channels > 2 and f.format not in _WAVE_ORDER_FORMATS:
            return None
        rate = f.samplerate
        declared = f.frames if 0 <= f.frames < 2**62 else None  # SF_COUNT_MAX: unknown length
        if declared is not None and declared / rate > max_duration_s:
            raise _too_long(declared / rate, max_duration_s)
        names = _soundfile_channel_names(f)
        sink = _StereoSink(max_duration_s, open_output())
        try:
            frames = max(1, BLOCK_VALUES // f.channels)
            while len(block := f.read(frames, dtype="float32", always_2d=True)):
                sink.add(block, rate, names)
        except RuntimeError:  # LibsndfileError: "flac decoder lost sync" and the like
            sink.out.discard()
            return None
        warnings = _sample_warnings(sink)
        declared_s = _wav_declared_seconds(f.extra_info, sink.source_seconds)
        if declared_s is None and declared is not None:
            declared_s = declared / rate
        warnings += _truncation_warnings(declared_s, sink.source_seconds)
        warnings += _ogg_cut_warnings(f.extra_info, sink.source_seconds)
        sink.flush()
        return _Decoded(sink, (rate, f.channels, f"{f.format}/{f.subtype}"), warnings)


def _soundfile_channel_names(f: sf.SoundFile) -> tuple[str, ...]:
    """Speaker names from a WAVEX channel mask, else the default layout of the count."""
    match = _MASK_RE.search(f.extra_info)
    if match:
        mask = int(match.group(1), 16)
        names = tuple(name for bit, name in enumerate(_WAVE_SPEAKERS) if mask >> bit & 1)
        if len(names) == f.channels:
            return names
    return DEFAULT_LAYOUTS.get(f.channels, ("",) * f.channels)


def _wav_declared_seconds(extra_info: str, decoded_s: float) -> float | None:
    """What a truncated WAV's header promised, in seconds; None unless libsndfile found the
    data chunk shorter than its header says (a streamed WAV's 0xFFFFFFFF size is no promise)."""
    match = _SHORT_DATA_RE.search(extra_info)
    if not match:
        return None
    claimed, present = int(match.group(1)), int(match.group(2))
    if claimed == _UNKNOWN_SIZE or claimed <= present or present <= 0:
        return None
    return decoded_s * claimed / present


def _ogg_cut_warnings(extra_info: str, decoded_s: float) -> list[str]:
    """An Ogg stream announces no length: one cut short shows as a last page without the
    end-of-stream mark every complete stream ends with (libsndfile's header log says so)."""
    if not _OGG_NO_EOS_RE.search(extra_info):
        return []
    return [
        f"The file looks truncated: its Ogg stream breaks off after {clock(decoded_s)} "
        "without the end-of-stream mark; only the audio before that point was decoded."
    ]


def _decode_ffmpeg(
    path: Path, head: bytes, max_duration_s: float, open_output: _NewOutput
) -> _Decoded:
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        what = _what_broken_header(head) or _what_it_is(head)
        log.info("FFmpeg cannot open the upload: %s", e.strerror)
        message = f"The file is not decodable audio: {what}. {_FORMATS_HINT}"
        raise AudioDecodeError(message) from e
    with container:
        stream = _audio_stream(container, head)
        fmt = container.format.name
        declared_s = _declared_seconds(container, stream)
        guessed = fmt in _GUESSED_DURATION_FORMATS
        limit_s = max_duration_s * (_GUESS_SLACK if guessed else 1.0)
        refusal = None
        if declared_s is not None and declared_s > limit_s:
            refusal = _too_long(declared_s, max_duration_s)
        if refusal and not guessed:
            raise refusal
        sink = _StereoSink(max_duration_s, open_output())
        decoded, damaged, broke_off = _feed_ffmpeg(container, stream, sink, refusal)
        source_format = f"{fmt}/{stream.codec_context.codec.name}"
        total = decoded + damaged
        if sink.source_seconds == 0 or damaged > _MAX_DAMAGED_SHARE * total:
            failed = "none" if sink.source_seconds == 0 else f"only {decoded}"
            detail = (
                f"FFmpeg took it for {source_format}, but {failed} of its {total} packets decode"
            )
            raise AudioDecodeError(_not_audio(head, detail))
        warnings = _sample_warnings(sink) + _ffmpeg_warnings(damaged, broke_off, sink)
        # A guessed length counts damaged bytes (junk after the song) as audio: no proof of a cut.
        if not broke_off and not (damaged and guessed):
            warnings += _truncation_warnings(declared_s, sink.source_seconds)
        sink.flush()
        return _Decoded(sink, (sink.source_rate, sink.source_channels, source_format), warnings)


def _audio_stream(container: av.container.InputContainer, head: bytes) -> av.AudioStream:
    if not container.streams.audio:
        kinds = " and ".join(sorted({s.type for s in container.streams}))
        detail = f"FFmpeg reads it as {container.format.long_name} with " + (
            f"{kinds} streams only" if kinds else "no streams at all"
        )
        what = _what_it_is(head, otherwise="it holds no audio track")
        raise AudioDecodeError(
            f"The file is not decodable audio: {what} ({detail}). {_FORMATS_HINT}"
        )
    stream = container.streams.best("audio") or container.streams.audio[0]
    if stream.codec_context is None:  # FFmpeg has no decoder for this codec id
        raise AudioDecodeError(
            f"The file is not decodable audio: its audio codec is unknown (FFmpeg reads it as "
            f"{container.format.long_name}, but has no decoder for its audio). {_FORMATS_HINT}"
        )
    return stream


def _declared_seconds(
    container: av.container.InputContainer, stream: av.AudioStream
) -> float | None:
    """The duration the container states (or FFmpeg estimates), in seconds; None if unknown."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _feed_ffmpeg(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    sink: _StereoSink,
    refusal: AudioRejected | None,
) -> tuple[int, int, bool]:
    """Decodes `stream` into `sink`: (packets decoded, packets damaged, container broke off).
    `refusal` (a guessed length over the limit) is raised once the stream proves to be audio."""
    decoded = damaged = 0
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return decoded, damaged, False
        except av.FFmpegError:
            # The container breaks off (an upload cut short): keep what came before it.
            try:
                _feed_frames(stream.codec_context.decode(None), sink)
            except av.FFmpegError:
                pass
            return decoded, damaged, True
        try:
            frames = packet.decode()
        except av.FFmpegError:  # one bad packet is a dropout, not a reason to refuse the song
            damaged += 1
            continue
        decoded += packet.size > 0
        _feed_frames(frames, sink)
        if refusal and sink.source_seconds >= _GUESS_TRUSTED_AFTER_S and damaged <= decoded:
            raise refusal


def _feed_frames(frames: list[av.AudioFrame], sink: _StereoSink) -> None:
    for frame in frames:
        names = tuple(channel.name for channel in frame.layout.channels)
        sink.add(_frame_samples(frame), frame.sample_rate, names)


def _frame_samples(frame: av.AudioFrame) -> np.ndarray:
    """(frames, channels) float32; integer formats scaled to [-1, 1), floats kept as they are."""
    if frame.format.name in ("s64", "s64p"):  # PyAV's to_ndarray has no 64-bit integers
        data = _int64_samples(frame)
    else:
        data = frame.to_ndarray()
        data = data.T if frame.format.is_planar else data.reshape(-1, frame.layout.nb_channels)
    if data.dtype.kind == "f":
        return data.astype(np.float32, copy=False)
    full_scale = float(2 ** (8 * data.dtype.itemsize - 1))
    samples = data.astype(np.float32)
    if data.dtype.kind == "u":  # unsigned 8-bit is offset binary: 128 is silence
        samples -= full_scale
    samples *= 1.0 / full_scale
    return samples


def _int64_samples(frame: av.AudioFrame) -> np.ndarray:
    """(frames, channels) int64 of a 64-bit integer PCM frame (a 64-bit WAV), packed or planar."""
    channels, n = frame.layout.nb_channels, frame.samples
    if frame.format.is_planar:
        planes = [np.frombuffer(p, dtype="<i8", count=n) for p in frame.planes[:channels]]
        return np.stack(planes, axis=1)
    return np.frombuffer(frame.planes[0], dtype="<i8", count=n * channels).reshape(n, channels)


def _sample_warnings(sink: _StereoSink) -> list[str]:
    if not sink.nonfinite:
        return []
    return [f"Replaced {sink.nonfinite} non-finite sample values (NaN or infinity) with silence."]


def _ffmpeg_warnings(damaged: int, broke_off: bool, sink: _StereoSink) -> list[str]:
    warnings = []
    if damaged:
        warnings.append(
            f"Skipped {damaged} damaged packet(s) that could not be decoded; "
            "the audio may have short dropouts there."
        )
    if broke_off:
        warnings.append(
            f"The file breaks off after {clock(sink.source_seconds)} (truncated or damaged); "
            "only the audio before that point was decoded."
        )
    if sink.rate_changes:
        warnings.append(
            f"The sample rate changes {sink.rate_changes} time(s) within the file "
            "(joined recordings?); every part was resampled to 44.1 kHz."
        )
    return warnings


def _truncation_warnings(declared_s: float | None, decoded_s: float) -> list[str]:
    # Codec priming, padding and header rounding differ by far less than this tolerance.
    if declared_s is None or decoded_s >= declared_s - max(0.5, 0.05 * declared_s):
        return []
    return [
        f"The file looks truncated: its header announces {clock(declared_s)} of audio, but "
        f"only {clock(decoded_s)} could be decoded; the rest is missing."
    ]


def _too_long(seconds: float, max_s: float, *, at_least: bool = False) -> AudioRejected:
    length = f"more than {clock(max_s)}" if at_least else clock(seconds)
    return AudioRejected(
        f"The audio is {length} long; the limit is {clock(max_s)}. "
        "Trim it, or split it into parts shorter than that."
    )


def _not_audio(head: bytes, detail: str) -> str:
    return f"The file is not decodable audio: {_what_it_is(head)} ({detail}). {_FORMATS_HINT}"


def _what_it_is(head: bytes, otherwise: str = "it is damaged, or not audio at all") -> str:
    """A guess from the first bytes of why FFmpeg found no audio, for the error message."""
    for magic, what in _NOT_AUDIO:
        if head.startswith(magic):
            return f"it is {what}"
    if _looks_like_text(head):
        return "it is a text file"
    return otherwise


def _what_broken_header(head: bytes) -> str | None:
    """Why FFmpeg cannot even open a file that starts like audio; None if it does not."""
    if head[4:8] == b"ftyp":
        return (
            "it looks like an MP4/M4A file without its index (the 'moov' atom), as happens "
            "when an upload or download breaks off before the end"
        )
    if head[:4] in (b"RIFF", b"RF64"):
        return "it looks like a WAV file whose header is damaged or cut short"
    return None


def _looks_like_text(head: bytes) -> bool:
    try:  # an incremental decoder tolerates a character cut in two at the end of `head`
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def clock(seconds: float) -> str:
    """0.01 -> '10 ms', 3.2 -> '3.2 s', 598.4 -> '9 min 58 s' (for messages)."""
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
