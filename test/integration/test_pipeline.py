"""The whole path through the six real services, on the embedded dsp separator."""

import io
import zipfile

import mido
import numpy as np
import pytest
import soundfile as sf

from common.audio import decode_audio
from common.quality import sdr_db
from prediction.dsp import separate_dsp
from test.songgen import make_song, mixture
from test.stackutil import wait_job

from .conftest import MAX_UPLOAD_BYTES

STEMS = ["vocals", "drums", "bass", "other"]


def wav_bytes(samples: np.ndarray, rate: int = 44100, subtype: str = "PCM_24") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples.T, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def submit(client, data: bytes, name: str = "song.wav", **fields):
    return client.post("/api/jobs", files={"file": (name, data)}, data=fields)


def read_wav(client, url: str, **params) -> tuple[np.ndarray, int, str]:
    r = client.get(url, params=params)
    assert r.status_code == 200, r.text
    info = sf.info(io.BytesIO(r.content))
    samples, rate = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    return samples.T, rate, info.subtype


@pytest.fixture(scope="module")
def song():
    stems = make_song(seconds=12.0, seed=3)
    return stems, mixture(stems)


@pytest.fixture(scope="module")
def upload(song) -> bytes:
    # made once: libsndfile stamps float WAVs with the time in their PEAK chunk
    return wav_bytes(song[1], subtype="FLOAT")


@pytest.fixture(scope="module")
def done_job(client, upload):
    r = submit(client, upload)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and job["model"] == "dsp"
    assert job["stems"] == STEMS
    assert "htdemucs" in job["model_reason"]  # says why auto did not pick it
    assert " ran " not in job["model_reason"]  # nothing has run yet
    return wait_job(client, job["id"])


def test_job_finishes_with_four_stems(done_job):
    assert done_job["status"] == "done", done_job
    assert done_job["progress"] == 1.0
    assert done_job["stems"] == STEMS
    assert set(done_job["links"]["stems"]) == set(STEMS)


def test_result_is_float_multichannel_as_long_as_the_input_and_sums_to_it(client, song, done_job):
    _, mix = song
    result, rate, subtype = read_wav(client, done_job["links"]["result"])
    assert (rate, subtype, result.shape) == (44100, "FLOAT", (8, mix.shape[1]))
    stems = result.reshape(4, 2, -1)
    for i, name in enumerate(STEMS):
        assert np.sqrt(np.mean(stems[i] ** 2)) > 1e-3, f"{name} is silent"
    assert np.abs(stems.sum(0) - mix).max() <= 1e-4 * np.abs(mix).max()


def test_stems_separate_the_generated_song(client, song, done_job):
    truth, mix = song
    result, _, _ = read_wav(client, done_job["links"]["result"])
    stems = result.reshape(4, 2, -1)
    for i, name in enumerate(STEMS):
        assert sdr_db(truth[name], stems[i]) > sdr_db(truth[name], mix / 4), name


def test_chunked_result_equals_whole_track_dsp(client, song, done_job):
    """Chunks with 1 s of real context, on the track's STFT frame grid, cross-faded: the fused
    result equals separating the whole track at once (up to float rounding)."""
    _, mix = song
    result, _, _ = read_wav(client, done_job["links"]["result"])
    whole = separate_dsp(mix.astype(np.float32))
    for i, name in enumerate(STEMS):
        agreement = sdr_db(whole[i], result.reshape(4, 2, -1)[i])
        assert agreement > 80.0, f"{name}: chunked vs whole {agreement:.1f} dB"


@pytest.mark.parametrize(
    "fmt, subtype",
    [
        ("wav", "FLOAT"),
        ("wav16", "PCM_16"),
        ("wav24", "PCM_24"),
        ("flac", "PCM_24"),
        ("flac16", "PCM_16"),
    ],
)
def test_each_stem_downloads_in_each_format(client, song, done_job, fmt, subtype):
    _, mix = song
    stem, rate, got = read_wav(client, done_job["links"]["stems"]["vocals"], format=fmt)
    assert (rate, got, stem.shape) == (44100, subtype, (2, mix.shape[1]))
    reference, _, _ = read_wav(client, done_job["links"]["stems"]["vocals"])
    # the song peaks below 1.0: nothing rescaled (a gain of 0.9 alone would give 20 dB)
    assert sdr_db(reference, stem) > (55.0 if subtype == "PCM_16" else 100.0)


def test_mp3_stem(client, song, done_job, tmp_path):
    r = client.get(done_job["links"]["stems"]["bass"], params={"format": "mp3"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
    (tmp_path / "bass.mp3").write_bytes(r.content)
    decoded = decode_audio(tmp_path / "bass.mp3", min_duration_s=0.1, max_duration_s=60)
    assert decoded.samples.shape == song[1].shape  # LAME's gapless tag trims the padding
    assert 300_000 <= len(r.content) * 8 / 12.0 <= 340_000  # 320 kbit/s CBR


def test_channel_layout_in_the_job(done_job):
    layout = done_job["channels"]
    assert [(c["channel"], c["stem"], c["side"]) for c in layout[:3]] == [
        (0, "vocals", "left"),
        (1, "vocals", "right"),
        (2, "drums", "left"),
    ]
    assert len(layout) == 8 and layout[-1] == {"channel": 7, "stem": "other", "side": "right"}


def test_zip_has_every_stem_and_the_analysis(client, done_job):
    r = client.get(done_job["links"]["zip"])
    assert r.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    names = archive.namelist()
    expected_names = {f"{s}.flac" for s in STEMS} | {"analysis.json", "song.mid"}
    assert {n.split("/")[-1] for n in names} >= expected_names
    for info in archive.infolist():  # FLAC by default, stored; the JSON and MIDI deflated
        expected = zipfile.ZIP_STORED if info.filename.endswith(".flac") else zipfile.ZIP_DEFLATED
        assert info.compress_type == expected, info.filename


@pytest.mark.parametrize(
    "fmt, ext, subtype",
    [("flac16", "flac", "PCM_16"), ("wav16", "wav", "PCM_16"), ("wav", "wav", "FLOAT")],
)
def test_zip_in_a_format_is_smaller(client, song, done_job, fmt, ext, subtype):
    float_zip = client.get(done_job["links"]["zip"], params={"format": "wav"}).content
    r = client.get(done_job["links"]["zip"], params={"format": fmt})
    assert r.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    stems = [n for n in archive.namelist() if n.endswith(f".{ext}")]
    assert sorted(n.split("/")[-1] for n in stems) == sorted(f"{s}.{ext}" for s in STEMS)
    for name in stems:
        info = sf.info(io.BytesIO(archive.read(name)))
        assert (info.subtype, info.frames) == (subtype, song[1].shape[1])
    assert len(r.content) <= (1.0 if fmt == "wav" else 0.6) * len(float_zip)


def test_a_loud_input_is_rescaled_with_a_warning(client, song):
    _, mix = song
    loud = mix * np.float32(3.7 / np.abs(mix).max())  # peak 3.7, as a float WAV can hold
    r = submit(client, wav_bytes(loud, subtype="FLOAT"), name="loud.wav", analysis="false")
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "done" and job["peak"] > 1.0
    assert any("peak at" in w and "clip=clamp" in w for w in job["warnings"]), job["warnings"]
    floats = {s: read_wav(client, job["links"]["stems"][s])[0] for s in STEMS}
    assert max(np.abs(x).max() for x in floats.values()) == pytest.approx(job["peak"], rel=1e-6)
    rescaled = {s: read_wav(client, job["links"]["stems"][s], format="wav24")[0] for s in STEMS}
    assert max(np.abs(x).max() for x in rescaled.values()) <= 1.0
    for s in STEMS:  # one factor for the whole set: the stems still add up to the (scaled) mix
        assert sdr_db(floats[s] / job["peak"], rescaled[s]) > 100.0, s
    clamped = {
        s: read_wav(client, job["links"]["stems"][s], format="wav24", clip="clamp")[0]
        for s in STEMS
    }
    loudest = max(STEMS, key=lambda s: np.abs(floats[s]).max())
    np.testing.assert_allclose(clamped[loudest], np.clip(floats[loudest], -1, 1), atol=2e-7)
    assert client.get(job["links"]["stems"]["bass"], params={"clip": "fold"}).status_code == 422


def test_analysis_timeline(client, done_job):
    analysis = client.get(done_job["links"]["analysis"]).json()
    assert set(analysis) == {"track", "windows", "tone_model"}
    windows = analysis["windows"]
    assert [w["start_s"] for w in windows] == [0.0, 10.24]
    assert analysis["tone_model"]["status"] == "unavailable"  # no AST weights here
    for w in windows:
        assert w["labels"] == [] and len(w["chroma"]) == 12 and "rms_db" in w
        # the stems' own levels stand in for AST's labels
        assert set(w["stem_activity"]) == set(STEMS)
        assert w["stems_present_source"] == "stem_activity"
        assert set(w["stems_present"]) == set(STEMS)
    track = analysis["track"]
    assert track["duration_s"] == 12.0
    assert track["key"]["tonic"] in ("A", "C") and track["tempo_bpm"] is not None
    assert abs(track["tempo_bpm"] - 120.0) < 2.4  # the generated song is at 120 BPM
    assert track["chords"] and track["loudness_lufs"] < 0 and track["peak_dbfs"] <= 0
    # AST's absence is the server's, said by tone_model (short, pathless), not every job's
    assert not any("instrument labels" in warning for warning in done_job["warnings"])
    assert (
        analysis["tone_model"]["reason"] == "AST weights not installed (./run.sh fetch-models ast)"
    )


def test_aliases_and_listing(client, done_job):
    job_id = done_job["id"]
    assert client.get(f"/api/status/{job_id}").json()["status"] == "done"
    assert (
        client.get(f"/api/result/{job_id}").content
        == client.get(done_job["links"]["result"]).content
    )
    assert job_id in [j["id"] for j in client.get("/api/jobs").json()["jobs"]]


def test_one_stem_and_its_complement(client, song):
    _, mix = song
    r = submit(client, wav_bytes(mix), stems="vocals", analysis="false", quality="render")
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "done" and job["stems"] == ["vocals", "no_vocals"]
    assert job["options"]["shifts"] == 1  # render: one random shift, from a fixed seed
    result, _, _ = read_wav(client, job["links"]["result"])
    assert result.shape[0] == 4
    pair = result.reshape(2, 2, -1)
    assert np.abs(pair.sum(0) - mix).max() <= 1e-3  # 24-bit input: compare loosely
    assert "analysis" not in job["links"] and "midi" not in job["links"]
    no_analysis = client.get(f"/api/jobs/{job['id']}/analysis")
    assert no_analysis.status_code == 404
    assert "ran without analysis" in no_analysis.json()["error"]["message"]
    no_midi = client.get(f"/api/jobs/{job['id']}/midi")  # no analysis: no MIDI either
    assert no_midi.status_code == 404 and no_midi.json()["error"]["code"] == "no_midi"


def test_the_stems_as_midi_with_the_tempo_map(client, done_job):
    """dsp ran: beats, key and chords from the mix; Basic Pitch on every pitched stem."""
    track = client.get(done_job["links"]["analysis"]).json()["track"]
    assert track["sources"]["beats"] == "mix" and track["sources"]["chords"] == "mix"
    assert track["models"]["beats"] == {"name": "beatnet", "licence": "CC BY 4.0"}
    assert track["time_signature"] in (2, 4) and track["downbeats_s"]
    assert track["midi"]["stems"] == ["bass", "vocals", "other", "drums"]
    assert track["midi"]["model"]["licence"] == "Apache-2.0"
    r = client.get(done_job["links"]["midi"])
    assert r.status_code == 200 and r.headers["content-type"] == "audio/midi"
    assert 'filename="song.mid"' in r.headers["content-disposition"]
    whole = mido.MidiFile(file=io.BytesIO(r.content))
    assert [t.name for t in whole.tracks[1:]] == ["bass", "vocals", "other", "drums"]
    notes = [m for t in whole.tracks[1:] for m in t if m.type == "note_on" and m.velocity]
    assert len(notes) == sum(track["midi"]["notes"].values()) > 0
    tempo = [m.tempo for m in whole.tracks[0] if m.type == "set_tempo"]
    assert tempo and abs(mido.tempo2bpm(tempo[0]) - track["tempo_bpm"]) < 3
    one = client.get(f"{done_job['links']['midi']}/bass")
    assert one.status_code == 200
    assert [t.name for t in mido.MidiFile(file=io.BytesIO(one.content)).tracks[1:]] == ["bass"]
    analysis_models = client.get("/api/models").json()["analysis"]
    assert {"task": "beats", "name": "beatnet", "licence": "CC BY 4.0"} in analysis_models
    drums = mido.MidiFile(file=io.BytesIO(client.get(f"{done_job['links']['midi']}/drums").content))
    drum_notes = {m.note for m in drums.tracks[1] if m.type == "note_on" and m.velocity}
    assert drum_notes and drum_notes <= {36, 38, 42}  # General MIDI kick, snare, closed hi-hat
    assert all(m.channel == 9 for m in drums.tracks[1] if m.type == "note_on")
    missing = client.get(f"{done_job['links']['midi']}/vocals_2")
    assert missing.status_code == 404 and "no MIDI track 'vocals_2'" in missing.text


def test_delete_removes_the_job(client, song):
    _, mix = song
    job = submit(client, wav_bytes(mix[:, :44100]), analysis="false").json()
    wait_job(client, job["id"])
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    assert client.get(f"/api/jobs/{job['id']}/result").status_code == 404


@pytest.mark.parametrize(
    "data, fields, status, words",
    [
        (b"", {}, 415, "audio"),
        (b"just some text, not audio at all\n" * 50, {}, 415, "audio"),
        (None, {"model": "nonsense"}, 422, "htdemucs"),
        (None, {"model": "htdemucs"}, 422, "./run.sh fetch-models htdemucs"),
        (None, {"stems": "guitar"}, 422, "vocals"),
        (None, {"shifts": "11"}, 422, "shifts"),
        (None, {"overlap": "0.95"}, 422, "overlap"),
        (None, {"analysis": "maybe"}, 422, "analysis"),
        (None, {"colour": "red"}, 422, "colour"),
    ],
)
def test_bad_uploads_get_a_4xx_naming_the_problem(client, song, data, fields, status, words):
    _, mix = song
    body = wav_bytes(mix[:, :44100]) if data is None else data
    r = submit(client, body, **fields)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]


def test_too_short_and_too_large(client):
    r = submit(client, wav_bytes(np.zeros((2, 100), np.float32)))
    assert r.status_code == 422 and "at least" in r.json()["error"]["message"]
    r = submit(client, b"\0" * (MAX_UPLOAD_BYTES + 1))
    message = r.json()["error"]["message"]
    assert r.status_code == 413 and "limit of 20 MB" in message, message


def test_no_file_field_and_not_multipart(client):
    r = client.post("/api/jobs", data={"model": "dsp"})
    assert r.status_code == 400 and "file" in r.json()["error"]["message"]
    r = client.post("/api/jobs", content=b"abc", headers={"content-type": "audio/wav"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]


def test_unknown_job_and_bad_stem_names(client, done_job):
    assert client.get("/api/jobs/doesnotexist123").status_code == 404
    for malformed in ("x", "a" * 65, "bad*id!!"):  # a malformed id names no job either
        r = client.get(f"/api/jobs/{malformed}")
        assert r.status_code == 404 and "no job" in r.json()["error"]["message"]
    assert client.delete("/api/jobs/x").status_code == 404
    r = client.get(f"/api/jobs/{done_job['id']}/stems/..%2F..%2Fetc")
    assert r.status_code == 404
    assert client.get(f"/api/jobs/{done_job['id']}/stems/guitar").status_code == 404
    assert (
        client.get(done_job["links"]["stems"]["bass"], params={"format": "exe"}).status_code == 422
    )


def test_every_service_is_healthy_and_has_metrics(stack):
    import httpx

    for name in ("gateway", "fft", "cqt", "tone", "predictor", "fuser"):
        assert httpx.get(stack.url(name) + "/health").status_code == 200
        assert "audiosplit_request_seconds" in httpx.get(stack.url(name) + "/metrics").text
        assert httpx.get(stack.url(name) + "/ready").json()["status"] == "ready"
    checks = httpx.get(stack.url("gateway") + "/ready").json()["checks"]
    assert len(checks) == 6 and all(v == "ok" for v in checks.values())  # loaded + 5 services
    assert httpx.get(stack.url("predictor") + "/ready").json()["checks"]["model dsp"] == "ok"


def test_upload_page_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text  # test/browser drives it
    assert client.get("/docs").status_code == 200
    assert "/api/jobs" in client.get("/openapi.json").json()["paths"]


def test_same_audio_and_options_reuse_the_result(client, upload, done_job):
    r = submit(client, upload, name="again.wav")
    assert r.status_code == 202
    again = r.json()
    assert again["status"] == "done" and again["id"] != done_job["id"]
    assert again["notes"] == [f"result reused from the identical earlier job {done_job['id']}"]
    assert not any("reused" in w for w in again["warnings"])  # information, not a warning
    third = submit(client, upload, name="third.wav").json()  # said once, not piled up
    assert len(third["notes"]) == 1 and third["warnings"] == done_job["warnings"]
    first = client.get(done_job["links"]["result"]).content
    assert client.get(again["links"]["result"]).content == first
    client.delete(f"/api/jobs/{again['id']}")  # deleting the copy keeps the original
    assert client.get(done_job["links"]["result"]).content == first


def test_models_list_says_what_is_here_and_what_is_published(client):
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert models["dsp"]["available"] and not models["htdemucs"]["available"]
    # what to do, without the server's paths (those are in the gateway's log)
    assert "./run.sh fetch-models htdemucs" in models["htdemucs"]["reason"]
    assert "/" not in models["htdemucs"]["reason"].replace("./run.sh", "")
    card = models["htdemucs"]["card"]
    assert card["published_sdr"].startswith("9.00 dB") and "Demucs" in card["sdr_source"]
    assert card["parameters_m"] > 20 and card["rtf_cpu"] > 0
    assert "non-commercial" in models["umxl"]["card"]["licence"]
