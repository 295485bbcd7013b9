"""Binary float32 wire format between services.

An array travels as its raw little-endian float32 bytes with `Content-Type:
application/octet-stream`; its shape goes in `X-Audiosplit-Shape` ("2,441000") and the message
model (a `common.interfaces.Message`) as JSON in `X-Audiosplit-Meta`.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from common.constants import WIRE_DTYPE
from common.errors import BadRequest

OCTET = "application/octet-stream"
SHAPE_HEADER = "x-audiosplit-shape"
META_HEADER = "x-audiosplit-meta"
MAX_DIMS = 4

M = TypeVar("M", bound=BaseModel)


def encode_array(array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """array -> (body, headers). Any float array is sent as little-endian float32."""
    data = np.ascontiguousarray(array, dtype=WIRE_DTYPE)
    headers = {"content-type": OCTET, SHAPE_HEADER: ",".join(str(d) for d in data.shape)}
    return data.tobytes(), headers


def encode(array: np.ndarray, meta: BaseModel) -> tuple[bytes, dict[str, str]]:
    body, headers = encode_array(array)
    headers[META_HEADER] = meta.model_dump_json()
    return body, headers


def parse_shape(value: str | None) -> tuple[int, ...]:
    if not value:
        raise BadRequest(f"missing {SHAPE_HEADER} header", code="bad_wire_format")
    try:
        shape = tuple(int(d) for d in value.split(","))
    except ValueError as e:
        raise BadRequest(f"bad {SHAPE_HEADER} {value!r}", code="bad_wire_format") from e
    if not 1 <= len(shape) <= MAX_DIMS or any(d < 0 for d in shape):
        raise BadRequest(f"bad {SHAPE_HEADER} {value!r}", code="bad_wire_format")
    return shape


def decode_array(body: bytes, shape_header: str | None) -> np.ndarray:
    """(body, shape header) -> float32 array (read-only view of the body)."""
    shape = parse_shape(shape_header)
    expected = int(np.prod(shape)) * 4
    if len(body) != expected:
        raise BadRequest(
            f"body has {len(body)} bytes, shape {shape} needs {expected}", code="bad_wire_format"
        )
    return np.frombuffer(body, WIRE_DTYPE).reshape(shape)


def decode_meta(model: type[M], header: str | None) -> M:
    if not header:
        raise BadRequest(f"missing {META_HEADER} header", code="bad_wire_format")
    try:
        return model.model_validate_json(header)
    except ValidationError as e:
        raise BadRequest(f"bad {META_HEADER}: {e}", code="bad_wire_format") from e


def decode(body: bytes, headers, model: type[M]) -> tuple[np.ndarray, M]:
    """Headers may be any case-insensitive mapping (Starlette's or httpx's)."""
    return decode_array(body, headers.get(SHAPE_HEADER)), decode_meta(
        model, headers.get(META_HEADER)
    )
