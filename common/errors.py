"""Errors of audiosplit.

Core code raises these; one handler per service (see `common.service`) maps them to the JSON
body `{"error": {"code", "message"}}` with the error's HTTP status. Messages are written for the
person who sent the request: they say what was expected and what was found.
"""

from __future__ import annotations


class AudiosplitError(Exception):
    """Base error: `code` is a stable machine-readable name, `status` the HTTP status."""

    code = "internal_error"
    status = 500
    headers: dict[str, str] = {}  # extra response headers (e.g. Retry-After)

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(AudiosplitError):
    code = "bad_request"
    status = 400


class InvalidOption(AudiosplitError):
    """A form field or query parameter has a value we do not accept."""

    code = "invalid_option"
    status = 422


class AudioDecodeError(AudiosplitError):
    """The upload is not audio we can decode (empty, corrupt, not audio at all)."""

    code = "undecodable_audio"
    status = 415


class AudioRejected(AudiosplitError):
    """The upload decodes, but is unusable (too short, too long, no samples)."""

    code = "audio_rejected"
    status = 422


class UploadTooLarge(AudiosplitError):
    code = "upload_too_large"
    status = 413


class NotFound(AudiosplitError):
    code = "not_found"
    status = 404


class Conflict(AudiosplitError):
    code = "conflict"
    status = 409


class ModelUnavailable(AudiosplitError):
    """A model was asked for by name but its weights are not present (or it cannot load)."""

    code = "model_unavailable"
    status = 422


class UpstreamError(AudiosplitError):
    """A downstream service failed or could not be reached after retries."""

    code = "upstream_error"
    status = 502


class StorageError(AudiosplitError):
    """A write to the data dir failed (disk full, permissions)."""

    code = "storage_error"
    status = 507
