"""Audio decoding: an upload in any common format in, float32 stereo at 44.1 kHz out.

The format is told by content, never by the file name. The WAV family, FLAC and Ogg go through
libsndfile (soundfile), exact and fast for them; everything else (MP3, AAC/M4A, ALAC, AC3, WMA,
the sound of a video) and whatever libsndfile cannot read goes through FFmpeg (PyAV). Samples
are converted a block at a time (cleaned of NaN/inf, downmixed to stereo, resampled with soxr),
so peak memory is about twice the float32 result.

Every failure leaves `decode_audio` as `AudioDecodeError` (415: not audio we can decode) or
`AudioRejected` (422: it decodes, but is unusable), with a message for the person who sent it.
Writing lives in `common.audio_encode`, re-exported here.
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

from common.audio_encode import file_extension, media_type, write_audio
from common.constants import SAMPLE_RATE
from common.errors import AudioDecodeError, AudioRejected

__all__ = [
    "DecodedAudio",
    "decode_audio",
    "file_extension",
    "media_type",
    "stereo_downmix_matrix",
    "write_audio",
]

_BLOCK_VALUES = 1 << 17  # source samples converted at a time: ~1.5 s of stereo at 44.1 kHz
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

_M3DB = 1.0 / math.sqrt(2.0)  # -3 dB: ITU-R BS.775 gain of centre and surrounds in a downmix
_WAVE_SPEAKERS = ("FL", "FR", "FC", "LFE", "BL", "BR", "FLC", "FRC", "BC", "SL", "SR", "TC")
_WAVE_SPEAKERS += ("TFL", "TFC", "TFR", "TBL", "TBC", "TBR")  # bit order of a WAVEX channel mask
_DEFAULT_LAYOUTS = {  # WAVE/SMPTE order of a file that names no layout
    3: ("FL", "FR", "FC"),
    4: ("FL", "FR", "BL", "BR"),
    5: ("FL", "FR", "FC", "BL", "BR"),
    6: ("FL", "FR", "FC", "LFE", "BL", "BR"),
    7: ("FL", "FR", "FC", "LFE", "BC", "SL", "SR"),
    8: ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"),
}
_SIDE_SPEAKERS = ("BL", "SL", "TFL", "TBL", "WL", "SDL", "TSL", "BFL")  # each with its R twin
_CENTRE_SPEAKERS = ("FC", "BC", "TC", "TFC", "TBC", "BFC")
_STEREO_GAINS: dict[str, tuple[float, float]] = {  # speaker -> (gain into L, gain into R)
    "FL": (1.0, 0.0),
    "FR": (0.0, 1.0),
    "FLC": (1.0, 0.0),  # FFmpeg's default downmix takes the inner fronts at full level too
    "FRC": (0.0, 1.0),
    "LFE": (0.0, 0.0),  # dropped, as the ITU downmix does: music carries its bass in L/R
    "LFE2": (0.0, 0.0),
    **{name: (_M3DB, 0.0) for name in _SIDE_SPEAKERS},
    **{name[:-1] + "R": (0.0, _M3DB) for name in _SIDE_SPEAKERS},
    **{name: (_M3DB, _M3DB) for name in _CENTRE_SPEAKERS},
}

_MASK_RE = re.compile(r"Channel Mask\s*:\s*0x([0-9A-Fa-f]+)")
# libsndfile's header log says so when a WAV's data chunk claims more bytes than the file has.
_SHORT_DATA_RE = re.compile(r"^data\s*:\s*(\d+) \(should be (\d+)\)", re.MULTILINE)
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


def decode_audio(path: Path, *, min_duration_s: float, max_duration_s: float) -> DecodedAudio:
    """Decodes the audio file at `path` to float32 stereo at SAMPLE_RATE Hz.

    Raises `AudioDecodeError` when it is not decodable audio and `AudioRejected` when it holds
    no samples or lasts less than `min_duration_s` or more than `max_duration_s` seconds (the
    latter judged from the header before decoding where the header tells it). No other exception
    type leaves this function.
    """
    try:
        audio = _decode(Path(path), max_duration_s)
    except (AudioDecodeError, AudioRejected):
        raise
    except MemoryError as e:
        raise AudioRejected(
            "The audio is too large to decode on this server; upload a shorter file."
        ) from e
    except Exception as e:  # the promise above: a decoder's own error becomes a 415
        raise AudioDecodeError(
            f"The file could not be decoded as audio ({type(e).__name__}: {e}). {_FORMATS_HINT}"
        ) from e
    if audio.samples.shape[1] == 0:
        raise AudioRejected(
            f"The file is valid {audio.source_format} audio but holds no samples (0 frames)."
        )
    if audio.duration_s < min_duration_s - 1e-9:
        raise AudioRejected(
            f"The audio is only {_clock(audio.duration_s)} long; at least "
            f"{_clock(min_duration_s)} is needed."
        )
    return audio


def stereo_downmix_matrix(names: Sequence[str]) -> np.ndarray:
    """(2, channels) float32 gains from channels named as FFmpeg names them (FL, FR, FC, LFE,
    BL, ...) to [L, R]: mono is duplicated, stereo kept, 5.1 mixed the ITU way
    (L = FL + 0.707 FC + 0.707 BL, LFE dropped). Unnamed channels take the default layout of
    their count; beyond 8 unnamed channels, even ones go left and odd ones right, averaged."""
    count = len(names)
    if count == 1:
        return np.ones((2, 1), np.float32)
    if count == 2:
        return np.eye(2, dtype=np.float32)
    if not any(name in _STEREO_GAINS for name in names):
        names = _DEFAULT_LAYOUTS.get(count, ())
    if not names:
        matrix = np.zeros((2, count), np.float32)
        matrix[0, 0::2] = 1.0 / len(range(0, count, 2))
        matrix[1, 1::2] = 1.0 / len(range(1, count, 2))
        return matrix
    # A speaker we do not know sits somewhere between the two: both sides at -3 dB.
    gains = [_STEREO_GAINS.get(name, (_M3DB, _M3DB)) for name in names]
    return np.asarray(gains, np.float32).T.copy()


class _StereoSink:
    """Collects (frames, channels) float32 blocks of one stream and turns them into
    float32 stereo at SAMPLE_RATE: NaN/inf -> 0, downmix, soxr resampling (HQ). The rate and
    the layout may change mid-stream (chained MP3s); each rate gets its own resampler."""

    def __init__(self, max_duration_s: float) -> None:
        self.max_duration_s = max_duration_s
        self.source_seconds = 0.0  # decoded so far, at the source rate
        self.source_rate = 0  # Hz, of the first block
        self.source_channels = 0
        self.nonfinite = 0  # sample values replaced by 0
        self.rate_changes = 0
        self._key: tuple[int, tuple[str, ...]] | None = None
        self._matrix = np.eye(2, dtype=np.float32)
        self._resampler: soxr.ResampleStream | None = None
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._out: list[np.ndarray] = []  # (2, k) float32 at SAMPLE_RATE

    def add(self, block: np.ndarray, rate: int, names: tuple[str, ...]) -> None:
        """block: (frames, channels) float32 at `rate` Hz, channels named in `names`."""
        if not len(block):
            return
        if (rate, names) != self._key:
            self._switch(rate, names)
        self.source_seconds += len(block) / rate
        if self.source_seconds > self.max_duration_s:
            raise _too_long(self.source_seconds, self.max_duration_s, at_least=True)
        self._pending.append(block)
        self._pending_frames += len(block)
        # Counted in values, not frames: a damaged header may claim a thousand channels.
        if self._pending_frames * len(names) >= _BLOCK_VALUES:
            self._convert_pending()

    def finish(self) -> np.ndarray:
        """All samples so far: (2, n) float32 C-contiguous at SAMPLE_RATE."""
        self._convert_pending()
        self._flush_resampler()
        samples = np.empty((2, sum(b.shape[1] for b in self._out)), np.float32)
        start = 0
        for block in self._out:
            samples[:, start : start + block.shape[1]] = block
            start += block.shape[1]
        self._out = []
        return samples

    def _switch(self, rate: int, names: tuple[str, ...]) -> None:
        self._convert_pending()  # with the old matrix and resampler
        if self._key is None:
            self.source_rate, self.source_channels = rate, len(names)
        if self._key is None or self._key[0] != rate:
            self.rate_changes += self._key is not None
            self._flush_resampler()
            self._resampler = (
                None
                if rate == SAMPLE_RATE
                else soxr.ResampleStream(rate, SAMPLE_RATE, 2, dtype="float32", quality="HQ")
            )
        self._key = (rate, names)
        self._matrix = stereo_downmix_matrix(names)

    def _convert_pending(self) -> None:
        if not self._pending:
            return
        block = np.concatenate(self._pending)  # a copy we own, C-contiguous
        self._pending, self._pending_frames = [], 0
        bad = ~np.isfinite(block)
        if bad.any():  # NaN would smear through the resampler and the separator
            self.nonfinite += int(bad.sum())
            block[bad] = 0.0
        if block.shape[1] != 2:
            block = block @ self._matrix.T
        self._emit(block, last=False)

    def _flush_resampler(self) -> None:
        if self._resampler is not None:
            self._emit(np.zeros((0, 2), np.float32), last=True)

    def _emit(self, stereo: np.ndarray, last: bool) -> None:
        if self._resampler is not None:
            stereo = self._resampler.resample_chunk(stereo, last=last)
        if len(stereo):  # transposed a block at a time: cache-friendly, unlike one big .T
            self._out.append(np.ascontiguousarray(stereo.T))


def _decode(path: Path, max_duration_s: float) -> DecodedAudio:
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError as e:
        raise AudioDecodeError(f"The uploaded file could not be read: {e.strerror}.") from e
    if not head:
        raise AudioDecodeError(
            f"The file is empty (0 bytes): nothing was uploaded, or the upload broke off. "
            f"{_FORMATS_HINT}"
        )
    if head.startswith(_SOUNDFILE_MAGIC):
        audio = _decode_soundfile(path, max_duration_s)
        if audio is not None:
            return audio
    return _decode_ffmpeg(path, head, max_duration_s)


def _decode_soundfile(path: Path, max_duration_s: float) -> DecodedAudio | None:
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
        sink = _StereoSink(max_duration_s)
        try:
            frames = max(1, _BLOCK_VALUES // f.channels)
            while len(block := f.read(frames, dtype="float32", always_2d=True)):
                sink.add(block, rate, names)
        except RuntimeError:  # LibsndfileError: "flac decoder lost sync" and the like
            return None
        warnings = _sample_warnings(sink)
        declared_s = _wav_declared_seconds(f.extra_info, sink.source_seconds)
        if declared_s is None and declared is not None:
            declared_s = declared / rate
        warnings += _truncation_warnings(declared_s, sink.source_seconds)
        samples = sink.finish()
        source_format = f"{f.format}/{f.subtype}"
        return DecodedAudio(
            samples, rate, f.channels, source_format, samples.shape[1] / SAMPLE_RATE, warnings
        )


def _soundfile_channel_names(f: sf.SoundFile) -> tuple[str, ...]:
    """Speaker names from a WAVEX channel mask, else the default layout of the count."""
    match = _MASK_RE.search(f.extra_info)
    if match:
        mask = int(match.group(1), 16)
        names = tuple(name for bit, name in enumerate(_WAVE_SPEAKERS) if mask >> bit & 1)
        if len(names) == f.channels:
            return names
    return _DEFAULT_LAYOUTS.get(f.channels, ("",) * f.channels)


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


def _decode_ffmpeg(path: Path, head: bytes, max_duration_s: float) -> DecodedAudio:
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        what = _what_broken_header(head) or _what_it_is(head)
        message = f"The file is not decodable audio: {what} (FFmpeg: {e.strerror}). {_FORMATS_HINT}"
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
        sink = _StereoSink(max_duration_s)
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
        samples = sink.finish()
        return DecodedAudio(
            samples,
            sink.source_rate,
            sink.source_channels,
            source_format,
            samples.shape[1] / SAMPLE_RATE,
            warnings,
        )


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
            f"The file breaks off after {_clock(sink.source_seconds)} (truncated or damaged); "
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
        f"The file looks truncated: its header announces {_clock(declared_s)} of audio, but "
        f"only {_clock(decoded_s)} could be decoded; the rest is missing."
    ]


def _too_long(seconds: float, max_s: float, *, at_least: bool = False) -> AudioRejected:
    length = f"more than {_clock(max_s)}" if at_least else _clock(seconds)
    return AudioRejected(
        f"The audio is {length} long; the limit is {_clock(max_s)}. "
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


def _clock(seconds: float) -> str:
    """0.01 -> '10 ms', 3.2 -> '3.2 s', 598.4 -> '9 min 58 s' (for messages)."""
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
