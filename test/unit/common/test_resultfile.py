import io

import numpy as np
import pytest
import soundfile as sf

from common.resultfile import float_wav_header, read_record


@pytest.mark.parametrize("channels", [1, 2, 8, 12])
@pytest.mark.parametrize("rf64", [False, True])
def test_hand_written_header_reads_back_through_libsndfile(channels, rf64):
    frames = np.random.default_rng(channels).standard_normal((1234, channels)).astype("<f4")
    data = float_wav_header(1234, channels, rf64=rf64) + frames.tobytes()
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.frames) == (44100, channels, 1234)
    assert info.format == ("RF64" if rf64 else "WAVEX" if channels > 2 else "WAV")
    assert info.subtype == "FLOAT"
    back, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert np.array_equal(back, frames)


def test_rf64_only_past_the_riff_limit():
    assert float_wav_header(100, 8)[:4] == b"RIFF"
    assert float_wav_header(0xFFFF0000 // 32 + 1, 8)[:4] == b"RF64"
    with pytest.raises(ValueError):
        float_wav_header(-1, 2)


def test_an_unreadable_record_means_nothing_is_final(tmp_path):
    assert read_record(tmp_path) is None
    (tmp_path / "prefix.json").write_text('{"ready_frames": 3}')
    assert read_record(tmp_path) is None
