import numpy as np
import pytest

from common.errors import BadRequest
from common.interfaces import ChunkSpec, FuseChunkMeta
from common.wire import META_HEADER, SHAPE_HEADER, decode, encode, encode_array


def test_round_trip_keeps_values_shape_and_meta():
    array = np.random.default_rng(0).standard_normal((3, 2, 17)).astype(np.float32)
    meta = FuseChunkMeta(
        chunk=ChunkSpec(index=1, offset=2, length=17, window_start=0, window_length=20)
    )
    body, headers = encode(array, meta)
    assert headers["content-type"] == "application/octet-stream"
    assert len(body) == array.size * 4
    out, got = decode(body, headers, FuseChunkMeta)
    assert np.array_equal(out, array) and got == meta


def test_float64_is_sent_as_little_endian_float32():
    body, headers = encode_array(np.array([[1.5, -2.0]], dtype=">f8"))
    assert body == np.array([1.5, -2.0], "<f4").tobytes() and headers[SHAPE_HEADER] == "1,2"


@pytest.mark.parametrize(
    "shape, body",
    [(None, b""), ("2,x", b""), ("2,3", b"\0" * 8), ("-1", b""), ("1,1,1,1,1", b"\0" * 4)],
)
def test_malformed_messages_are_bad_requests(shape, body):
    headers = {} if shape is None else {SHAPE_HEADER: shape, META_HEADER: "{}"}
    with pytest.raises(BadRequest):
        decode(body, headers, FuseChunkMeta)


def test_bad_meta_is_a_bad_request():
    body, headers = encode_array(np.zeros(3, np.float32))
    headers[META_HEADER] = '{"chunk": {"index": "x"}}'
    with pytest.raises(BadRequest, match="bad"):
        decode(body, headers, FuseChunkMeta)
