"""Streaming multipart upload: the file goes straight to disk, the size cap is enforced while the
bytes arrive (a 10 GB upload is refused at 500 MB, not after), the small form fields are kept."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from common.errors import BadRequest, StorageError, UploadTooLarge
from common.metrics import UPLOAD_BYTES

log = logging.getLogger("audiosplit.upload")

MAX_FIELD_BYTES = 4096
MAX_FIELDS = 32
REPEATABLE = frozenset({"chain"})  # fields a client may give more than once


@dataclass
class Upload:
    path: Path | None = None
    filename: str = ""
    size: int = 0
    sha256: str = ""
    fields: dict[str, str] = field(default_factory=dict)


class _Receiver:
    """Callbacks of the multipart parser: one file part to disk, other parts to `fields`."""

    def __init__(self, dest: Path, max_bytes: int):
        self.dest, self.max_bytes = dest, max_bytes
        self.upload = Upload()
        self._headers: dict[str, bytes] = {}
        self._name = b""
        self._value = b""
        self._field_name, self._field = "", bytearray()
        self._file = None
        self._hash = hashlib.sha256()
        self._in_file = False

    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.decode("latin-1").lower()] = self._value
        self._name, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in params and name != "file":
            raise BadRequest(
                f"the song goes in form field 'file' (got a file in {name[:40]!r})",
                code="wrong_field",
            )
        if name == "file":  # with a file name (a browser, curl -F file=@x) or without (-F file=<x)
            if self._file is not None:
                raise BadRequest("send one file per job (field `file`)")
            self.upload.filename = params.get(b"filename", b"").decode("utf-8", "replace")
            self.upload.path = self.dest
            self._file = open(self.dest, "wb")  # noqa: SIM115 - closed in close()
            self._in_file = True
        else:
            if len(self.upload.fields) >= MAX_FIELDS:
                raise BadRequest("too many form fields")
            self._field_name, self._field, self._in_file = name, bytearray(), False

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._in_file:
            self.upload.size += len(chunk)
            if self.upload.size > self.max_bytes:
                raise UploadTooLarge(
                    f"the upload is larger than the limit of {megabytes(self.max_bytes)}"
                )
            self._hash.update(chunk)
            self._file.write(chunk)
        else:
            self._field += chunk
            if len(self._field) > MAX_FIELD_BYTES:
                raise BadRequest(f"form field {self._field_name!r} is too long")

    def on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
        elif self._field_name:
            add_field(self.upload.fields, self._field_name, self._field.decode("utf-8", "replace"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self.upload.sha256 = self._hash.hexdigest()


def megabytes(n: int) -> str:
    """2_600_000 -> '2.6 MB', 20_000_000 -> '20 MB' (a tenth below 100 MB: a limit of 2.6 MB
    is not rounded down to a 2 MB that would let a 2.4 MB upload look too large)."""
    mb = n / 1_000_000
    text = f"{mb:.1f}" if mb < 100 else f"{mb:.0f}"
    return f"{text.removesuffix('.0')} MB"


async def receive_upload(request: Request, dest: Path, max_bytes: int) -> Upload:
    """Stream a `multipart/form-data` body; the part named `file` is written to `dest`."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type == b"application/x-www-form-urlencoded":  # `curl -d url=…`: a link job
        return checked(await receive_form(request), dest)
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise BadRequest(
            "send the song as multipart/form-data with the audio in a field named `file`",
            code="bad_content_type",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise UploadTooLarge(
            f"the upload ({megabytes(int(declared))}) is larger than the limit of "
            f"{megabytes(max_bytes)}"
        )
    receiver = _Receiver(dest, max_bytes)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
        )
    }
    parser = MultipartParser(params[b"boundary"], callbacks)
    try:
        async for chunk in request.stream():
            UPLOAD_BYTES.inc(len(chunk))
            parser.write(chunk)
        parser.finalize()
    except OSError as e:  # its text names the server's path: the log gets it, not the client
        log.error("cannot store the upload at %s: %s", dest, e)
        raise StorageError(f"cannot store the upload: {e.strerror or 'the disk refused it'}") from e
    except (BadRequest, UploadTooLarge):
        raise
    except Exception as e:  # the parser's own errors: a malformed body
        raise BadRequest(f"malformed multipart body: {e}", code="bad_multipart") from e
    finally:
        receiver.close()
        if receiver.upload.path is None and dest.exists():
            os.unlink(dest)
    return checked(receiver.upload, dest)


def checked(upload: Upload, dest: Path) -> Upload:
    """The song came as a file or as a link: exactly one of the two."""
    has_url = bool(upload.fields.get("url", "").strip())
    if upload.path is None and not has_url:
        raise BadRequest(
            "no file in the upload: send the audio in a form field named `file`, or a link "
            "to it in `url`"
        )
    if upload.path is not None and has_url:
        dest.unlink(missing_ok=True)
        raise BadRequest("send the song in `file` or a link to it in `url`, not both")
    return upload


async def receive_form(request: Request) -> Upload:
    """A url-encoded form: fields only (no file can come this way), at most MAX_FIELDS of
    MAX_FIELD_BYTES each."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FIELDS * MAX_FIELD_BYTES:
            raise BadRequest("the form is too long")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as e:
        raise BadRequest("the form is not UTF-8", code="bad_form") from e
    if len(pairs) > MAX_FIELDS:
        raise BadRequest("too many form fields")
    fields: dict[str, str] = {}
    for name, value in pairs:
        add_field(fields, name, value)
    return Upload(fields=fields)


def add_field(fields: dict[str, str], name: str, value: str) -> None:
    """A form field; a repeatable one given again is joined to the earlier (`chain=a>x` twice
    reads as `a>x,b>y`), any other given again replaces it."""
    if name in REPEATABLE and fields.get(name, "").strip():
        fields[name] = f"{fields[name]},{value}"
    else:
        fields[name] = value
