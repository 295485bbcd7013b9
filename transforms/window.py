"""Where an analysis request's window, context and own span lie in its body, checked."""

from __future__ import annotations

from dataclasses import dataclass

from common.analysis_plan import track_frames
from common.constants import ANALYSIS_FRAME_HOP
from common.errors import BadRequest
from common.interfaces import AnalysisWindow


@dataclass(frozen=True)
class WindowSpan:
    """Body sample ranges of one analysis request, and its frames on the track's grid."""

    window: slice  # the window proper (per-window features, labels, key)
    own_start: int  # body sample where the window's own span of the track series starts
    own_length: int  # samples
    first_frame: int  # track frame of the own span's first frame
    local_frame: int  # the same frame, counted from the body's first sample
    own_frames: int


def resolve(n_samples: int, meta: AnalysisWindow) -> WindowSpan:
    """The spans of a body of `n_samples`; 400 when the header does not fit the body."""
    hop = ANALYSIS_FRAME_HOP
    before = meta.context_before
    if before % hop or meta.start % hop:
        raise BadRequest(
            f"start ({meta.start}) and context_before ({before}) must be multiples of the "
            f"analysis frame hop ({hop} samples)",
            code="bad_analysis_window",
        )
    length = meta.window_length or n_samples - before
    if length <= 0 or before + length > n_samples:
        raise BadRequest(
            f"a window of {length} samples after {before} of context does not fit a body of "
            f"{n_samples} samples",
            code="bad_analysis_window",
        )
    own_length = meta.own_length or length
    if own_length > length:
        raise BadRequest(
            f"own_length ({own_length}) exceeds the window ({length} samples)",
            code="bad_analysis_window",
        )
    own_frames = meta.own_frames if meta.own_frames is not None else -(-own_length // hop)
    local = before // hop
    if local + own_frames > track_frames(n_samples):
        raise BadRequest(
            f"{own_frames} frames from frame {local} do not fit a body of {n_samples} samples",
            code="bad_analysis_window",
        )
    return WindowSpan(
        window=slice(before, before + length),
        own_start=before,
        own_length=own_length,
        first_frame=meta.start // hop,
        local_frame=local,
        own_frames=own_frames,
    )
