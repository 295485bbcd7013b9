import numpy as np
import pytest

from common.rawfile import RawArrayFile


def test_reads_frame_ranges_of_every_row(tmp_path):
    data = np.random.default_rng(0).standard_normal((4, 2, 1000)).astype("<f4")
    path = tmp_path / "a.f32"
    data.tofile(path)
    f = RawArrayFile(path, (4, 2, 1000))
    np.testing.assert_array_equal(f.read(10, 250), data[..., 10:250])
    np.testing.assert_array_equal(f[..., 990:1200], data[..., 990:])  # clipped like a slice
    assert f[..., 5:5].shape == (4, 2, 0)
    blocks = list(f.blocks(300))
    assert [lo for lo, _ in blocks] == [0, 300, 600, 900]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks], axis=-1), data)


def test_two_dimensional_track_and_bad_use(tmp_path):
    track = np.arange(20, dtype="<f4").reshape(2, 10)
    track.tofile(tmp_path / "t.f32")
    f = RawArrayFile(tmp_path / "t.f32", (2, 10))
    np.testing.assert_array_equal(f[:, 3:7], track[:, 3:7])
    with pytest.raises(TypeError):
        f[0, 1:2]
    with pytest.raises(ValueError, match="bytes"):
        RawArrayFile(tmp_path / "t.f32", (2, 11))
