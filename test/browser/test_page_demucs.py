"""The page against a stack with (small, random-weight) Demucs models written where their
downloads land: an ensemble chosen on the page, and listening to a long song while it separates
(dsp, one chunk at a time, so the job is seen partial), until the player holds the finished
stems; and a recipe chosen on the page (lead and backing vocals: htdemucs, then its vocals by
the karaoke RoFormer, its published config narrowed, random weights)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re

import httpx
import numpy as np
import pytest
import soundfile as sf
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from common.config import Settings
from prediction import roformer_networks as rn
from test.browser.conftest import SAMPLE_RATE
from test.browser.test_page import WAIT_MS, card, goto_page, new_page, upload
from test.separation_fixtures import FOUR, SIX, SMALL, htdemucs, install_published
from test.songgen import make_song, mixture
from test.stackutil import REPO, start_stack, wait_job
from test.unit.prediction import test_roformer_separator as rt

KARAOKE = "mel_band_roformer_karaoke"
KARAOKE_CONFIG = (
    REPO
    / "test/resources/roformer/model_mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956.ckpt.yaml"
)

# Seconds of the song heard while it separates (dsp, one chunk at a time, separated 60 s of it
# in 24 s on this contended 2-core machine). On a quiet machine 120 s finished before playback
# had passed its first 15 final seconds (a clean-clone CI run, 2026-12-02): 240 s keeps it
# partial for longer than playback takes to cross the first join.
LONG_S = 240.0
DONE = "() => window.audiosplit.state.ready === true"
# The page's held buffers, interleaved as the WAV file holds them, hashed in the page (the
# buffers are too big to hand over): SHA-256 of the float32 bytes, per stem.
HASH_JS = """async () => {
  const out = {};
  for (const [name, b] of Object.entries(window.audiosplit.buffers)) {
    const l = b.getChannelData(0), r = b.getChannelData(1);
    const x = new Float32Array(2 * b.length);
    for (let i = 0; i < b.length; i++) { x[2 * i] = l[i]; x[2 * i + 1] = r[i]; }
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", x.buffer));
    const hex = [...digest].map(v => v.toString(16).padStart(2, "0")).join("");
    out[name] = {length: b.length, sha256: hex};
  }
  return out;
}"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """htdemucs and htdemucs_6s (the real architectures, small, random weights) beside dsp;
    one chunk of a job in flight at a time, so a long song stays partial for a while."""
    models = tmp_path_factory.mktemp("page_models")
    settings = Settings(_env_file=None, models_dir=models)
    install_published(settings, "htdemucs", [htdemucs(FOUR, 0, **SMALL)])
    install_published(settings, "htdemucs_6s", [htdemucs(SIX, 1, **SMALL)])
    # the karaoke model's outputs as published (karaoke, other: renamed lead, backing)
    training = rn.read_config(KARAOKE_CONFIG)["training"]
    rt.install(settings, KARAOKE, {**rt.SMALL_MEL, "training": training}, seed=2)
    stack = start_stack(
        tmp_path_factory.mktemp("page_data"), models, compile_models="off", chunk_concurrency=1
    )
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("page_songs")
    paths = {}
    for name, seconds, seed in (("short song.wav", 6.0, 7), ("long song.wav", LONG_S, 8)):
        paths[name] = folder / name
        song = mixture(make_song(seconds, SAMPLE_RATE, seed=seed))
        sf.write(paths[name], song.T, SAMPLE_RATE, "PCM_16")
    return paths


def choose_ensemble(page, weights: dict[str, str]) -> None:
    page.set_checked("#ensemble-on", True)
    for box in page.locator("#ensemble-models input.member").all():
        box.set_checked(box.get_attribute("value") in weights)
    for name, weight in weights.items():
        page.fill(f'#ensemble-models input.weight[data-model="{name}"]', weight)


def test_an_ensemble_chosen_on_the_page_runs_and_lists_its_members(context, songs):
    page = new_page(context)
    goto_page(page)
    expect(page.locator('#ensemble-models input.member[value="htdemucs"]')).to_be_attached()
    expect(page.locator("#ensemble-choice")).to_be_hidden()
    # One model is not an ensemble: the form says so and sends nothing.
    choose_ensemble(page, {"htdemucs": "1"})
    expect(page.locator("#model")).to_be_disabled()
    upload(page, songs["short song.wav"], analysis=False)
    expect(page.locator("#form-error")).to_contain_text("Choose 2 to 4 models")
    expect(page.locator("li.job")).to_have_count(0)
    # Members whose stems differ: the API's 422, shown as the page shows a refused upload.
    choose_ensemble(page, {"htdemucs": "1", "htdemucs_6s": "1"})
    upload(page, songs["short song.wav"], analysis=False)
    alert = page.get_by_role("alert").filter(has_text="short song.wav was refused")
    expect(alert).to_be_visible(timeout=WAIT_MS)
    expect(alert).to_contain_text("different stems")
    # htdemucs x1 + dsp x2: it runs, and the job's card and the player name both members.
    choose_ensemble(page, {"htdemucs": "1", "dsp": "2"})
    upload(page, songs["short song.wav"], analysis=False)
    page.wait_for_function(DONE, timeout=WAIT_MS)
    job = page.evaluate("window.audiosplit.state.job")
    assert job["status"] == "done" and job["model"] == "htdemucs,dsp", job
    assert job["options"]["members"] == [
        {"model": "htdemucs", "weight": 1.0, "share": 0.333333},
        {"model": "dsp", "weight": 2.0, "share": 0.666667},
    ]
    members = "htdemucs ×1 (33 %) + dsp ×2 (67 %)"
    expect(card(page, job["id"]).locator(".members")).to_have_text(f"Ensemble: {members}")
    expect(page.locator("#player-title")).to_contain_text(f"the weighted average of {members}")
    expect(page.locator(".lane")).to_have_count(4)
    assert page.errors == []
    page.close()


def test_a_recipe_chosen_on_the_page_replaces_the_vocals_by_their_parts(context, songs, shots):
    page = new_page(context)
    goto_page(page)
    karaoke = page.locator('#stems option[value="recipe:karaoke"]')
    expect(karaoke).to_have_text("lead and backing vocals")
    expect(karaoke).to_be_enabled()
    drums = page.locator('#stems option[value="recipe:drum_parts"]')
    expect(drums).to_be_disabled()
    expect(drums).to_contain_text("mdx23c_drumsep not installed")
    upload(page, songs["short song.wav"], analysis=False, stems="recipe:karaoke")
    page.wait_for_function(DONE, timeout=WAIT_MS)
    job = page.evaluate("window.audiosplit.state.job")
    assert job["status"] == "done" and job["model"] == "htdemucs", job  # the recipe's own
    parts = ["vocals-lead", "vocals-backing"]
    assert job["stems"] == [p for s in FOUR for p in (parts if s == "vocals" else [s])], job
    chained = f"vocals by {KARAOKE}"
    expect(card(page, job["id"]).locator(".chain")).to_have_text(f"Separated again: {chained}")
    expect(page.locator("#player-title")).to_contain_text(f"5 stems by htdemucs (then {chained})")
    expect(page.locator(".lane")).to_have_count(5)
    for part in parts:
        expect(page.locator(".lane").filter(has_text=part)).to_have_count(1)
    assert page.errors == []
    page.wait_for_timeout(500)  # the waveforms drawn
    # the job's card down to the last lane, in page coordinates
    top = card(page, job["id"]).evaluate("e => e.getBoundingClientRect().top + scrollY")
    bottom = page.locator(".lane").last.evaluate("e => e.getBoundingClientRect().bottom + scrollY")
    width = page.locator("#player").evaluate("e => e.getBoundingClientRect().right")
    clip = {"x": 0, "y": top - 8, "width": width + 8, "height": bottom - top + 16}
    shots(page, "page-chained.png", full_page=True, clip=clip)
    page.close()


def stem_sha256(base_url: str, job: dict, stem: str) -> dict:
    """The finished stem file as the server gives it, read by soundfile: length and SHA-256
    of its float32 samples, interleaved."""
    r = httpx.get(f"{base_url}{job['links']['stems'][stem]}?format=wav", timeout=120)
    assert r.status_code == 200, r.text[:300]
    data, rate = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    assert rate == SAMPLE_RATE and data.shape[1] == 2
    digest = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
    return {"length": data.shape[0], "sha256": digest}


def progressive_results_served(base_url: str, song) -> bool:
    """Whether the gateway serves frame ranges (`from_frame` with its X-Audiosplit-* headers):
    asked of a finished dsp job."""
    with httpx.Client(base_url=base_url, timeout=120) as client:
        with open(song, "rb") as f:
            files = {"file": ("probe.wav", f.read())}
        created = client.post("/api/jobs", files=files, data={"model": "dsp", "analysis": "false"})
        assert created.status_code == 202, created.text
        job = wait_job(client, created.json()["id"])
        assert job["status"] == "done", job
        r = client.get(f"{job['links']['stems'][job['stems'][0]]}?format=wav&from_frame=1")
        return r.status_code == 200 and "X-Audiosplit-From-Frame" in r.headers


def test_a_long_song_plays_while_it_separates_and_ends_as_the_result(
    context, songs, base_url, shots
):
    if not progressive_results_served(base_url, songs["short song.wav"]):
        pytest.skip("server side of progressive results not landed")
    page = new_page(context)
    goto_page(page)
    page.select_option("#model", "dsp")
    upload(page, songs["long song.wav"], analysis=False)
    # The page opens the job and plays as soon as its first seconds are final.
    page.wait_for_function(
        "() => window.audiosplit.state.playable && window.audiosplit.player.playing"
        " && window.audiosplit.position() > 0.3",
        timeout=WAIT_MS,
    )
    job_id = page.evaluate("window.audiosplit.state.job.id")
    status = page.locator("#player-status")
    expect(status).to_contain_text("Space pauses")  # playing (or waiting for more), not "Ready"
    heard = httpx.get(f"{base_url}/api/jobs/{job_id}").json()
    assert heard["status"] == "running", heard  # playing, and the job still separates
    first_ready = page.evaluate("window.audiosplit.player.ready")
    assert 0 < first_ready < LONG_S
    info = page.locator("#ready-info")
    length = f"{int(LONG_S // 60)}:{int(LONG_S % 60):02d}"
    expect(info).to_contain_text(re.compile(rf"ready to \d:\d\d of {length}"))
    expect(page.locator(".lane .pending").first).to_be_visible()
    # Playback runs on past what was final when it started (the page notes it at a poll):
    # the pieces joined while playing. It is sent to a second before the edge that is final
    # now, so that it crosses in a second rather than after the whole first piece: the dsp
    # job could end first (playback at 13 s of the first 15 on a loaded machine).
    page.wait_for_function("() => window.audiosplit.state.live.heard", timeout=WAIT_MS)
    edge = page.evaluate("window.audiosplit.player.ready")
    page.evaluate(f"window.audiosplit.player.seek({edge - 1.0})")
    page.wait_for_function(
        f"() => (window.audiosplit.state.live.joined && window.audiosplit.position() > {edge})"
        " || window.audiosplit.state.ready",
        timeout=WAIT_MS,
    )
    assert page.evaluate("window.audiosplit.position()") > edge >= first_ready
    live = page.evaluate("window.audiosplit.state.live")
    assert live["heard"]["status"] == "running", live
    assert live["joined"], live  # heard past a join while the job still ran
    # A seek beyond what is final goes as far as it is, and says so.
    if page.evaluate("window.audiosplit.player.partial()"):
        page.wait_for_timeout(1600)  # the waveforms are redrawn as they grow
        shots(page, "page-progressive.png", full_page=True)
        page.locator("#player-h").click()
        page.keyboard.press("End")
        ready = page.evaluate("window.audiosplit.player.ready")
        assert page.evaluate("window.audiosplit.position()") <= ready + 1e-6
        if page.evaluate("window.audiosplit.player.partial()"):
            expect(info).to_contain_text("is final so far")
        page.keyboard.press("Home")
    # Muting a stem mid-song holds across the pieces still to come.
    page.locator('.lane[data-stem="drums"] button.mute').click()
    page.wait_for_function(DONE, timeout=WAIT_MS)
    live = page.evaluate("window.audiosplit.state.live")
    assert live["status"] == "done" and live["pieces"] > 4, live  # more than one piece per stem
    # Still muted, through the same gain node every piece's sources played into. The gain
    # glides to 0 (time constant 10 ms of the audio clock, which a loaded machine runs late):
    # read it once it has had time to arrive, however little of the song was left.
    drums_gain = """() => { const p = window.audiosplit.player;
                   const i = p.stems.findIndex(s => s.name === "drums");
                   return {mute: p.mixer[i].mute, gain: p.nodes[i].gain.gain.value}; }"""
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function(f"({drums_gain})().gain < 1e-3", timeout=5000)
    muted = page.evaluate(drums_gain)
    assert muted["mute"] is True and muted["gain"] < 1e-3, muted
    expect(info).to_be_hidden()
    expect(status).to_contain_text("Separated: the player holds the finished stems.")
    expect(page.locator("#dl-zip")).to_be_attached()
    # The player holds exactly the finished stems: the pieces, joined, are the stem files.
    job = httpx.get(f"{base_url}/api/jobs/{job_id}").json()
    held = page.evaluate(HASH_JS)
    assert list(held) == job["stems"]
    for stem in job["stems"]:
        assert held[stem] == stem_sha256(base_url, job, stem), stem
    assert page.errors == []
    page.close()
