"""The gateway's analysis plan: windows with context whose pieces join into the track's series
exactly as if the whole track had been analysed at once (through the services' own code)."""

from __future__ import annotations

import numpy as np
import pytest

from common.analysis_plan import hop_samples, track_frames
from common.constants import ANALYSIS_CONTEXT, ANALYSIS_FRAME_HOP, ANALYSIS_WINDOW, SAMPLE_RATE
from gateway.analysis import (
    Analysis,
    TrackSeries,
    tone_model,
    window_requests,
    with_stem_activity,
)
from test import musicgen
from transforms import cqt, fft, rhythm
from transforms.key import chroma_frames
from transforms.window import resolve


@pytest.mark.parametrize("hop_s", [10.24, 4.0])
def test_windows_tile_the_track_and_carry_context(hop_s):
    n = int(31.3 * SAMPLE_RATE)
    hop = hop_samples(hop_s)
    requests = window_requests("j", n, hop)
    assert hop % ANALYSIS_FRAME_HOP == 0
    own = []
    for header, lo, hi in requests:
        assert header.start == lo + header.context_before
        assert header.context_before == min(header.start, ANALYSIS_CONTEXT)
        assert header.window_length == min(ANALYSIS_WINDOW, n - header.start)
        assert hi == min(n, header.start + header.window_length + ANALYSIS_CONTEXT)
        span = resolve(hi - lo, header)  # what the services will accept
        own.append((span.first_frame, span.own_frames))
    # the windows' own frames cover the track's frames once each, in order
    covered = [f for first, count in own for f in range(first, first + count)]
    assert covered == list(range(track_frames(n)))


def test_joined_window_pieces_equal_the_whole_track_series():
    song, _ = musicgen.key_progression(4, "major", 2.5)
    drums = musicgen.drum_pattern(110.0, song.shape[1] / SAMPLE_RATE)
    audio = (0.6 * song + 0.5 * drums).astype(np.float32)[:, : int(25.3 * SAMPLE_RATE)]
    n = audio.shape[1]
    series = TrackSeries(n)
    for header, lo, hi in window_requests("j", n, hop_samples(10.24)):
        body = audio[:, lo:hi]
        values, _ = fft.series(body, resolve(hi - lo, header))
        k = header.own_frames
        f0 = header.start // ANALYSIS_FRAME_HOP
        series.onset[f0 : f0 + k] = values[:k]
        series.accent[f0 : f0 + k] = values[k : 2 * k]
        own, meta = cqt.window_tonal(body, header)
        series.chroma[:, meta.first_frame : meta.first_frame + own.shape[1]] = own

    mono = rhythm.to_analysis_rate(audio)
    whole = {
        "onset": rhythm.onset_envelope(mono),
        "accent": rhythm.accent_envelope(mono),
        "chroma": chroma_frames(mono),
    }
    for name, expected in whole.items():
        joined = getattr(series, name)
        assert joined.shape == expected.shape
        error = np.abs(joined - expected).max() / np.abs(expected).max()
        assert error < 1e-3, (name, error)


def test_stem_activity_stands_in_for_the_labels_when_ast_is_unavailable():
    windows = [
        {"index": 0, "rms_db": -20.0, "stems_present": None, "stems_present_source": None},
        {
            "index": 1,
            "rms_db": -20.0,
            "stems_present": {"vocals": 0.9},
            "stems_present_source": "ast",
        },
    ]
    analysis = Analysis(windows, {"duration_s": 20.0}, {"status": "unavailable"}, [])
    out = with_stem_activity(analysis, ["vocals", "no_vocals"], [[-20.0, -90.0], [-35.0, -21.0]])
    first, second = out["windows"]
    assert first["stem_activity"] == {"vocals": -20.0, "no_vocals": -90.0}
    assert (
        first["stems_present"] == {"vocals": 1.0}
        and first["stems_present_source"] == "stem_activity"
    )
    assert second["stems_present"] == {"vocals": 0.9}  # AST's, kept
    assert set(out) == {"track", "windows", "tone_model"}


def test_tone_model_is_ok_when_any_window_was_labelled():
    ok = {"status": "ok", "reason": ""}
    missing = {"status": "unavailable", "reason": "AST weights not found"}
    assert tone_model([{"tone": missing}, {"tone": ok}])["status"] == "ok"
    assert tone_model([{"tone": missing}])["reason"] == "AST weights not found"
    assert tone_model([{"tone": None}])["status"] == "unavailable"
    assert tone_model([{"tone": missing}])["available"] is False
    assert tone_model([{"tone": ok}])["available"] is True


def test_a_broken_analysis_tells_the_client_no_exception_text(caplog):
    from gateway.analysis import failed_analysis

    analysis = failed_analysis(OSError("[Errno 2] No such file: '/srv/data/jobs/x/a.raw'"))
    said = str([analysis.track, analysis.tone_model, analysis.warnings])
    assert "/srv/data" not in said and "Errno" not in said
    assert analysis.warnings == [
        "analysis failed: internal error (OSError; the gateway's log says why)"
    ]


def test_a_window_whose_calls_failed_is_marked_with_the_errors():
    from common.errors import UpstreamError
    from gateway.analysis import Analyser

    header, _, _ = window_requests("j", 3 * SAMPLE_RATE, hop_samples(10.24))[0]
    analyser = Analyser(None, None, 10.24)
    entry = analyser._window_entry(
        header,
        UpstreamError("the fft service refused the request (400): bad"),
        TimeoutError("cqt timed out"),
        TrackSeries(3 * SAMPLE_RATE),
    )
    assert entry["errors"] == [
        "features: the fft service refused the request (400): bad",
        "key: cqt timed out",
    ]
    assert entry["rms_db"] is None and entry["key"] is None and entry["labels"] == []
