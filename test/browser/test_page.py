"""The page at `/` in a real headless Chromium against the real stack (dsp separator, no
weights): upload, progress, the sample-locked player, the offline mix, downloads, history."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from playwright.sync_api import Page, expect

from common.audio import decode_audio
from test.browser.conftest import SAMPLE_RATE, SONG_S
from test.songgen import make_song, mixture

READY = "() => window.audiosplit && window.audiosplit.state.ready === true"
# The job's card past 0 % (or done already: the dsp separator is quick on a short song).
PROGRESSED = """() => [...document.querySelectorAll("li.job")].some(li =>
  li.dataset.status === "done"
  || (li.dataset.status === "running" && li.querySelector("progress").value > 0))"""
WAIT_MS = 120_000  # a job and its stems on a slow 2-core machine
MP3_FRAME = 1152  # samples per MPEG-1 layer III frame
SILENCE_RMS = 1e-6


def new_page(context) -> Page:
    """A page that records script errors and failed requests (checked by the tests)."""
    page = context.new_page()
    page.errors = []
    page.bad_responses = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on(
        "response",
        lambda r: page.bad_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )
    return page


def settled_box(page, locator) -> dict:
    """The element's box once two reads 100 ms apart agree: the player's rows can still move as
    the page lays out what the job brought (a tap at a box read too early missed the lane, in
    one CI run: the position stayed 0)."""
    box = locator.bounding_box()
    for _ in range(50):
        page.wait_for_timeout(100)
        now = locator.bounding_box()
        if now == box:
            return box
        box = now
    raise AssertionError(f"the element kept moving: {box}")


def goto_page(page: Page) -> None:
    """Loads `/` and waits for its script, failing at once with the script's errors."""
    page.goto("/")
    try:
        page.wait_for_function("() => window.audiosplit !== undefined", timeout=30_000)
    except Exception as e:
        raise AssertionError(f"the page's script did not start: {page.errors}") from e


def upload(page: Page, path, *, analysis: bool = True, stems: str = "all") -> None:
    page.set_input_files("#file", str(path))
    page.select_option("#stems", stems)
    page.set_checked("#analysis", analysis)
    page.click("#go")


def card(page: Page, job_id: str):
    return page.locator(f'li.job[data-job-id="{job_id}"]')


@pytest.fixture(scope="module")
def done(context, song, shots):
    """The page after uploading the song: the job done and open in the player."""
    page = new_page(context)
    goto_page(page)
    expect(page.locator("#model option[value=dsp]")).to_be_attached()
    shots(page, "page-start.png", full_page=True)
    upload(page, song)
    page.wait_for_function(PROGRESSED, timeout=WAIT_MS)
    shots(page, "page-progress.png", full_page=True)
    page.wait_for_function(READY, timeout=WAIT_MS)
    job = page.evaluate("window.audiosplit.state.job")
    assert job["status"] == "done", job
    if page.evaluate("window.audiosplit.player.playing"):
        # the page followed the running job (the analysis of the stems outlasts the dsp
        # separation) and played it at once: open the finished job afresh, not playing
        card(page, job["id"]).get_by_role("button", name="Open").click()
        page.wait_for_function(
            READY + " && !window.audiosplit.player.playing"
            " && window.audiosplit.player.position() === 0",
            timeout=WAIT_MS,
        )
    expect(page.locator(".lane")).to_have_count(len(job["stems"]))
    page.wait_for_timeout(300)  # the waveforms are drawn 80 ms after layout
    shots(page, "page-done-mixer.png", full_page=True)
    return page, job


def test_page_and_static_files_are_served(base_url):
    with httpx.Client(base_url=base_url) as c:
        assert c.get("/").headers["content-type"].startswith("text/html")
        for path in ("/favicon.ico", "/favicon.svg"):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml"
        for name, media in (("app.js", "text/javascript"), ("style.css", "text/css")):
            r = c.get(f"/static/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(media)
        for bad in ("/static/..%2Fpage.py", "/static/.hidden", "/static/index.htm", "/static/x.py"):
            assert c.get(bad).status_code == 404, bad


def test_stems_decode_to_the_exact_length_in_stereo(done):
    page, job = done
    buffers = page.evaluate(
        """() => Object.entries(window.audiosplit.buffers).map(([name, b]) =>
             ({name, length: b.length, channels: b.numberOfChannels, rate: b.sampleRate}))"""
    )
    frames = round(job["duration_s"] * SAMPLE_RATE)
    assert frames == round(SONG_S * SAMPLE_RATE)
    assert [b["name"] for b in buffers] == job["stems"] == ["vocals", "drums", "bass", "other"]
    for b in buffers:
        assert (b["length"], b["channels"], b["rate"]) == (frames, 2, SAMPLE_RATE), b
    assert page.errors == []
    assert page.bad_responses == []  # the favicon and every static file were found


def shown(name: str) -> str:
    """A key or chord name as the page shows it: "Bb" -> "B♭", "F#m" -> "F♯m"."""
    accidental = {"b": "♭", "#": "♯"}
    return re.sub(r"(?<=[A-G])[b#]{1,2}", lambda m: "".join(accidental[c] for c in m[0]), name)


# The analysis helpers on a made-up analysis: key, metre, spelled chords, sections A B A.
MADE_UP_JS = """async () => {
  const { fillAnalysisRows, trackSummary, withAccidentals } = await import("/static/views.js");
  const sections = [[0, 3, "A"], [3, 6, "B"], [6, 8, "A"]]
    .map(([start_s, end_s, label]) => ({ start_s, end_s, label }));
  const chords = [{ start_s: 0, end_s: 4, chord: "Ebm" }, { start_s: 4, end_s: 8, chord: "N" }];
  const track = { key: { tonic: "Bb", mode: "major" }, tempo_bpm: 120, time_signature: 3,
    chords, sections };
  const div = () => document.createElement("div");
  const rows = { windows: div(), sections: div(), chords: div() };
  fillAnalysisRows(rows, { track, windows: [] }, 8);
  return {
    names: ["Bb", "Ebm", "F#m", "N", "C/Bb", "C7b9", "Gbb"].map(withAccidentals),
    summary: trackSummary({ track }),
    chords: [...rows.chords.children].map((c) => c.textContent),
    sections: [...rows.sections.children].map((c) => [c.textContent, c.className, c.style.width]),
  };
}"""


def test_analysis_is_on_the_timeline(done):
    page, job = done
    analysis = page.evaluate("window.audiosplit.state.analysis")
    track = analysis["track"]
    info = page.locator("#track-info")
    key = track["key"]
    expect(info).to_contain_text(f"key {shown(key['tonic'])} {key['mode']}")
    expect(info).to_contain_text("bpm")
    if track.get("time_signature"):
        expect(info).to_contain_text(f"bpm · {track['time_signature']}/4")
    named = [shown(c["chord"]) for c in track["chords"] if c["chord"] != "N"]
    expect(page.locator(".seg.chord")).to_have_text(named)
    expect(page.locator(".seg.win")).to_have_count(len(analysis["windows"]))
    if track.get("sections"):
        expect(page.locator(".seg.part")).to_have_text([s["label"] for s in track["sections"]])
    else:
        expect(page.locator(".segs .none").filter(has_text="no sections")).to_have_count(1)
    assert page.locator("canvas.beats").count() == 1
    # The song here is too short for sections: the blocks (one colour per label) made up.
    made_up = page.evaluate(MADE_UP_JS)
    assert made_up["names"] == ["B♭", "E♭m", "F♯m", "N", "C/B♭", "C7b9", "G♭♭"]
    assert made_up["summary"].startswith("key B♭ major · 120.0 bpm · 3/4 · ")
    assert made_up["chords"] == ["E♭m"]
    assert made_up["sections"] == [
        ["A", "seg part part-0", "37.5%"],
        ["B", "seg part part-1", "37.5%"],
        ["A", "seg part part-0", "25%"],
    ]


# Every text of the page, shown or not, and every attribute's value.
ALL_TEXT_JS = """() => [document.body.innerText, document.documentElement.textContent,
  ...[...document.querySelectorAll("*")].flatMap(e => [...e.attributes].map(a => a.value))
].join("\\n")"""


def test_a_dsp_job_says_once_what_its_stems_are_and_no_server_path_shows(done, stack, shots):
    """No weights here, so auto ran dsp: the job's card says once, in the job's own sentence
    (a measured figure and how to get the neural models' stems), what these stems are worth;
    not as a warning, not in the player. Nothing on the page names a directory of the server."""
    page, job = done
    assert job["model"] == "dsp", job
    notice = job.get("notice")
    assert notice and "dsp" in notice.lower(), job
    item = card(page, job["id"])
    expect(item.locator(".notice")).to_have_count(1)
    shown = notice.replace("`", "")  # the names in backticks are shown as code
    expect(item.get_by_role("note")).to_have_text(shown)
    assert item.locator(".notice code").first.inner_text() == "dsp"
    expect(page.locator("#player .notice")).to_have_count(0)
    shown_text = page.evaluate("document.body.innerText")
    assert shown_text.count(shown) == 1
    # No AST weights here either: said once, beside the analysis, not again on the card.
    assert shown_text.count("instrument labels unavailable") == 1, shown_text
    expect(item.locator(".warn")).to_have_count(0)
    rect = page.evaluate(
        """() => { const r = (id) => document.getElementById(id).getBoundingClientRect();
             return {top: r("jobs-h").top + scrollY, bottom: r("keys-help").bottom + scrollY,
                     left: r("main").left, width: r("main").width}; }"""
    )
    margin = 12
    clip = {
        "x": max(0, rect["left"] - margin),
        "y": rect["top"] - margin,
        "width": rect["width"] + 2 * margin,
        "height": rect["bottom"] - rect["top"] + 2 * margin,
    }
    shots(page, "page-dsp-notice.png", full_page=True, clip=clip)
    page.locator("#models-details summary").click()  # the models' list rendered too
    text = page.evaluate(ALL_TEXT_JS)
    page.locator("#models-details summary").click()
    settings = stack.settings
    for folder in {settings.data_dir, settings.models_dir}:
        for spelling in {str(folder), str(Path(folder).resolve())}:
            assert spelling not in text, f"the page shows the server's {spelling}"


def test_play_advances_the_shared_clock_and_pause_stops_it(done):
    """The status line says what the transport does: ready, playing (the audio clock seen
    moving), paused where it stopped."""
    page, _ = done
    status = page.locator("#player-status")
    expect(status).to_have_text("Ready — Space or ▶ plays.")
    page.click("#play")
    page.wait_for_function("() => window.audiosplit.player.playing")
    page.wait_for_function("() => window.audiosplit.position() > 0.2", timeout=WAIT_MS)
    moved = page.evaluate("window.audiosplit.ctx.currentTime")
    page.wait_for_function(f"() => window.audiosplit.ctx.currentTime > {moved}")
    expect(page.locator("#clock")).not_to_have_text("0:00.0 / 0:10.0")
    expect(status).to_have_text("Playing — Space pauses.")
    assert page.evaluate("window.audiosplit.ctx.currentTime") > moved  # still playing
    page.click("#play")
    page.wait_for_function("() => !window.audiosplit.player.playing")
    at = page.evaluate("window.audiosplit.position()")
    page.wait_for_timeout(300)
    assert page.evaluate("window.audiosplit.position()") == at  # paused: the clock holds
    clock = page.locator("#clock").inner_text().split(" / ")[0]
    expect(status).to_have_text(f"Paused at {clock} — Space or ▶ plays on from there.")


RMS_JS = """async (opts) => {
  const rms = (a, b) => {
    let s = 0, n = 0;
    for (let c = 0; c < 2; c++) {
      const x = a.getChannelData(c), y = b ? b.getChannelData(c) : null;
      for (let i = 0; i < x.length; i++) { const d = x[i] - (y ? y[i] : 0); s += d * d; n++; }
    }
    return Math.sqrt(s / n);
  };
  const all = await window.audiosplit.renderMix({});
  const muted = await window.audiosplit.renderMix(opts);
  return {length: all.length, mix: rms(all), muted: rms(muted), diff: rms(all, muted)};
}"""


def test_muting_a_stem_changes_the_rendered_mix(done):
    page, job = done
    frames = round(job["duration_s"] * SAMPLE_RATE)
    vocals = page.evaluate(RMS_JS, {"mute": ["vocals"]})
    assert vocals["length"] == frames
    assert vocals["mix"] > 0.05
    assert vocals["diff"] > 0.01 * vocals["mix"], vocals
    silent = page.evaluate(RMS_JS, {"mute": "all"})
    assert silent["muted"] < SILENCE_RMS, silent
    # The rendered mix with nothing muted is the sum of the stems, the uploaded song.
    song = mixture(make_song(SONG_S, SAMPLE_RATE, seed=3))
    assert abs(vocals["mix"] - float(np.sqrt(np.mean(song**2)))) < 0.01


def test_the_mute_button_and_keyboard_change_the_mixer(done):
    page, _ = done
    lane = page.locator('.lane[data-stem="drums"]')
    lane.locator("button.mute").click()
    expect(lane.locator("button.mute")).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("window.audiosplit.player.mixer[1].mute") is True
    page.locator("#player-h").click()  # focus off the buttons: the page's keys apply
    page.keyboard.press("m")
    page.keyboard.press("2")
    expect(lane.locator("button.mute")).to_have_attribute("aria-pressed", "false")
    page.keyboard.press("s")
    page.keyboard.press("1")
    expect(page.locator('.lane[data-stem="vocals"] button.solo')).to_have_attribute(
        "aria-pressed", "true"
    )
    page.locator('.lane[data-stem="vocals"] button.solo').click()
    assert page.evaluate("window.audiosplit.player.mixer.some(m => m.mute || m.solo)") is False


def test_space_toggles_play_and_arrows_seek(done):
    page, _ = done
    page.locator("#player-h").click()
    assert page.evaluate("window.audiosplit.player.playing") is False
    page.keyboard.press("Space")
    page.wait_for_function("() => window.audiosplit.player.playing")
    expect(page.locator("#player-status")).to_have_text("Playing — Space pauses.")
    page.keyboard.press("Space")
    page.wait_for_function("() => !window.audiosplit.player.playing")
    expect(page.locator("#player-status")).to_contain_text("Paused at")
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("window.audiosplit.position()") == pytest.approx(5.0)
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("window.audiosplit.position()") == pytest.approx(0.0)
    expect(page.locator("#player-status")).to_have_text("Ready — Space or ▶ plays.")


def test_clicking_seeks_and_dragging_selects_a_loop(done):
    page, _ = done
    wave = page.locator('.lane[data-stem="bass"] .tl')
    wave.scroll_into_view_if_needed()
    box = settled_box(page, wave)
    y = box["y"] + box["height"] / 2
    page.mouse.click(box["x"] + box["width"] / 2, y)
    assert page.evaluate("window.audiosplit.position()") == pytest.approx(SONG_S / 2, abs=0.1)
    page.mouse.move(box["x"] + box["width"] * 0.2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, y, steps=4)
    page.mouse.move(box["x"] + box["width"] * 0.4, y, steps=4)
    page.mouse.up()
    loop = page.evaluate("window.audiosplit.player.loop")
    assert loop["start"] == pytest.approx(0.2 * SONG_S, abs=0.1)
    assert loop["end"] == pytest.approx(0.4 * SONG_S, abs=0.1)
    expect(page.locator("#loop-on")).to_be_checked()
    page.click("#play")  # looping starts at the selection's start and stays in it
    page.wait_for_function("() => window.audiosplit.player.playing")
    at = page.evaluate("window.audiosplit.position()")
    assert loop["start"] <= at <= loop["end"]
    page.click("#play")
    page.click("#loop-clear")
    assert page.evaluate("window.audiosplit.player.loop") is None


@pytest.mark.parametrize("bits,subtype", [("16", "PCM_16"), ("32", "FLOAT")])
def test_download_my_mix_is_a_wav_of_the_song_length(done, bits, subtype):
    page, job = done
    page.select_option("#mix-bits", bits)
    with page.expect_download() as info:
        page.click("#dl-mix")
    path = info.value.path()
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert sf.info(path).subtype == subtype
    assert (data.shape, rate) == ((round(job["duration_s"] * SAMPLE_RATE), 2), SAMPLE_RATE)
    assert info.value.suggested_filename == "generated song_mix.wav"
    song = mixture(make_song(SONG_S, SAMPLE_RATE, seed=3)).T
    assert np.abs(data - song).max() < (1e-4 if bits == "32" else 2e-4)


def fetch(base_url: str, href: str) -> httpx.Response:
    r = httpx.get(href if href.startswith("http") else base_url + href, timeout=60)
    assert r.status_code == 200, f"{href}: {r.status_code} {r.text[:300]}"
    return r


def test_every_download_link_gives_a_file_of_the_right_length(done, base_url, tmp_path):
    page, job = done
    frames = round(job["duration_s"] * SAMPLE_RATE)
    links = page.eval_on_selector_all(
        ".stem-links a[data-format]",
        "as => as.map(a => [a.dataset.stem, a.dataset.format, a.href])",
    )
    assert len(links) == 6 * len(job["stems"])
    subtypes = {"wav": "FLOAT", "wav24": "PCM_24", "wav16": "PCM_16", "flac": "PCM_24"}
    subtypes["flac16"] = "PCM_16"
    failures = []
    for stem, fmt, href in links:
        r = httpx.get(href, timeout=60)
        if r.status_code != 200:
            failures.append(f"{stem} {fmt}: {r.status_code} {r.text[:200]}")
            continue
        if fmt == "mp3":
            path = tmp_path / f"{stem}.mp3"
            path.write_bytes(r.content)
            decoded = decode_audio(path, min_duration_s=0, max_duration_s=3600).samples
            assert abs(decoded.shape[1] - frames) <= MP3_FRAME + 1105, (stem, decoded.shape)
        else:
            info = sf.info(io.BytesIO(r.content))
            assert (info.frames, info.channels, info.subtype) == (frames, 2, subtypes[fmt]), fmt
    result = sf.info(io.BytesIO(fetch(base_url, page.get_attribute("#dl-result", "href")).content))
    assert (result.frames, result.channels) == (frames, 2 * len(job["stems"]))
    zipped = fetch(base_url, page.get_attribute("#dl-zip", "href"))
    assert zipped.content[:2] == b"PK"
    page.select_option("#zip-format", "flac16")
    page.select_option("#clip", "clamp")
    assert page.get_attribute("#dl-zip", "href").endswith("?format=flac16&clip=clamp")
    with zipfile.ZipFile(
        io.BytesIO(fetch(base_url, page.get_attribute("#dl-zip", "href")).content)
    ) as z:
        flacs = [n for n in z.namelist() if n.endswith(".flac")]
        assert len(flacs) == len(job["stems"]), z.namelist()
        assert sf.info(io.BytesIO(z.read(flacs[0]))).subtype == "PCM_16"
    page.select_option("#zip-format", "wav")
    page.select_option("#clip", "rescale")
    assert failures == [], failures
    # The MIDI: the whole file beside the ZIP, each transcribed stem's beside its audio.
    transcribed = page.evaluate("window.audiosplit.state.analysis.track.midi.stems")
    assert job["links"]["midi"] == page.get_attribute("#dl-midi", "href")
    midi_links = page.eval_on_selector_all(
        ".stem-links a[data-midi-stem]", "as => as.map(a => [a.dataset.midiStem, a.href])"
    )
    assert [stem for stem, _ in midi_links] == [s for s in job["stems"] if s in transcribed]
    for _, href in midi_links:
        assert fetch(base_url, href).content[:4] == b"MThd", href
    with page.expect_download() as caught:
        page.click("#dl-midi")
    assert open(caught.value.path(), "rb").read(4) == b"MThd"  # noqa: SIM115 - read once


def open_brings_the_player_into_view(page: Page, job_id: str) -> None:
    """Clicks the job's Open: the player, below the fold, comes into view with the focus, so
    Space plays it (and does not press Open again)."""
    item = card(page, job_id)
    expect(item.get_by_role("button", name="Open")).to_be_visible(timeout=WAIT_MS)
    item.get_by_role("button", name="Open").click()
    page.wait_for_function(READY, timeout=WAIT_MS)
    assert page.evaluate("window.audiosplit.state.job.id") == job_id
    below = "() => { const p = document.getElementById('player');"
    below += " return p.getBoundingClientRect().top + scrollY > innerHeight; }"
    assert page.evaluate(below)  # where it is, it was out of view before the click
    for what in ("#player-h", "#player-status", "#play"):
        expect(page.locator(what)).to_be_in_viewport()
    assert page.evaluate("document.activeElement.id") == "player"
    page.keyboard.press("Space")
    page.wait_for_function("() => window.audiosplit.player.playing")
    page.keyboard.press("Space")
    page.wait_for_function("() => !window.audiosplit.player.playing")


def test_history_finds_the_job_after_a_reload_and_reopens_it(done, context):
    _, job = done
    page = new_page(context)
    goto_page(page)
    expect(card(page, job["id"])).to_contain_text("generated song.wav")
    open_brings_the_player_into_view(page, job["id"])
    page.close()


def test_a_running_job_is_followed_again_after_a_reload(context, song, tmp_path):
    """The page reloads while the job runs (the server's answer is held at "running" for the
    first polls, so the job cannot finish before the reload); the new page polls it to done."""
    page = new_page(context)
    goto_page(page)
    other = tmp_path / "short song.wav"
    sf.write(other, mixture(make_song(4.0, SAMPLE_RATE, seed=5)).T, SAMPLE_RATE, "PCM_16")
    upload(page, other, analysis=False, stems="vocals")
    mine = page.locator("li.job[data-job-id]", has_text="short song.wav")
    expect(mine).to_be_visible(timeout=WAIT_MS)
    job_id = mine.get_attribute("data-job-id")
    held = []

    def hold(route):
        if len(held) < 3:
            held.append(route.request.url)
            r = route.fetch()
            body = {**r.json(), "status": "running", "stage": "separating", "progress": 0.5}
            body.update(eta_s=4.0, notes=["result reused from an identical earlier job"])
            route.fulfill(json=body)
        else:
            route.continue_()

    page.route(f"**/api/jobs/{job_id}", hold)
    page.reload()
    item = card(page, job_id)
    expect(item).to_contain_text("separating", timeout=WAIT_MS)
    expect(item).to_contain_text("4 s left")
    expect(item.locator(".note")).to_contain_text("result reused")
    expect(item.get_by_role("button", name="Open")).to_be_visible(timeout=WAIT_MS)
    assert len(held) == 3
    # Analysis was off: the player says so instead of drawing rows.
    item.get_by_role("button", name="Open").click()
    page.wait_for_function(READY, timeout=WAIT_MS)
    expect(page.locator("#track-info")).to_contain_text("No analysis")
    assert page.evaluate("Object.keys(window.audiosplit.buffers)") == ["vocals", "no_vocals"]
    # Delete: gone from the server and from the list, also after a reload.
    item.get_by_role("button", name="Delete").click()
    expect(item).to_have_count(0)
    assert httpx.get(f"{page.url.rstrip('/')}/api/jobs/{job_id}").status_code == 404
    page.reload()
    expect(page.locator("li.job").first).to_be_visible()
    expect(card(page, job_id)).to_have_count(0)
    page.close()


def test_a_text_file_is_refused_with_a_message(context, tmp_path):
    page = new_page(context)
    goto_page(page)
    text = tmp_path / "notes.txt"
    text.write_text("these are not the songs you are looking for\n" * 20)
    upload(page, text)
    alert = page.get_by_role("alert").filter(has_text="notes.txt was refused")
    expect(alert).to_be_visible(timeout=WAIT_MS)
    expect(alert).to_contain_text("not decodable audio")
    page.close()


def test_phone_width_has_no_horizontal_scroll(browser, base_url, done, shots):
    _, job = done
    phone = browser.new_context(base_url=base_url, viewport={"width": 375, "height": 800})
    page = phone.new_page()
    goto_page(page)
    expect(page.locator("#go")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.evaluate(
        "(h) => localStorage.setItem('audiosplit.jobs', JSON.stringify([h]))",
        {"id": job["id"], "filename": job["filename"], "created": job["created_at"]},
    )
    page.reload()
    open_brings_the_player_into_view(page, job["id"])
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shots(page, "page-phone.png", full_page=True)
    phone.close()


def test_every_control_is_labelled(done):
    page, _ = done
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('button, input, select, [tabindex]')]
             .filter(e => !e.closest('[hidden]'))
             .filter(e => !(e.getAttribute('aria-label') || e.labels?.length
                            || e.textContent.trim()))
             .map(e => e.outerHTML.slice(0, 80))"""
    )
    assert unlabelled == []


# The Player on an OfflineAudioContext: one stem, a ramp (every sample distinct) in the left
# channel, a quarter of it final at first. Rendering stops (suspend) at chosen frames to play,
# to extend while playing (a swap of sources, here with a new buffer as when the job finishes)
# and to extend once playback has caught up with what was final and waits.
JOIN_JS = """async () => {
  const { Player } = await import("/static/player.js");
  const rate = 44100, n = 44100, q = 128;
  const ctx = new OfflineAudioContext(2, 2 * n, rate);
  Object.defineProperty(ctx, "state", { get: () => "running" }); // play() must not resume() it
  const ramp = (buffer) => {
    const x = buffer.getChannelData(0);
    for (let i = 0; i < n; i++) x[i] = (i + 1) / n;
    return buffer;
  };
  const first = ramp(ctx.createBuffer(2, n, rate));
  const player = new Player(ctx, [{ name: "a", buffer: first }], () => {}, 0.25);
  const log = [];
  ctx.suspend(1 * q / rate).then(() => {
    player.play();
    log.push(["play", player.startedAt * rate]);
    ctx.resume();
  });
  ctx.suspend(64 * q / rate).then(() => {
    player.extend(0.5, [{ name: "a", buffer: ramp(ctx.createBuffer(2, n, rate)) }]);
    log.push(["swap", player.startedAt * rate, player.waiting]); ctx.resume();
  });
  ctx.suspend(200 * q / rate).then(() => {
    player.extend(1.0);
    log.push(["restart", player.startedAt * rate, player.waiting]);
    ctx.resume();
  });
  const out = (await ctx.startRendering()).getChannelData(0);
  return { log, out: Array.from(out) };
}"""


def test_the_player_plays_on_across_a_join_without_a_gap(context):
    """Every sample once, in order: across the swap no gap and no repeat; where playback had
    caught up with what was final it waits, and goes on from the very next sample."""
    page = new_page(context)
    goto_page(page)
    r = page.evaluate(JOIN_JS)
    (_, play), (_, swap, swap_waits), (_, restart, restart_waits) = r["log"]
    assert play == 128 + 2205 and not swap_waits and not restart_waits, r["log"]
    out = np.array(r["out"], dtype=np.float32)
    n = SAMPLE_RATE
    quarter = n // 4
    assert play < swap < play + quarter  # swapped while the first quarter still played
    heard = np.nonzero(out)[0]
    ramp = (np.arange(1, n + 1) / n).astype(np.float32)
    assert np.array_equal(out[heard], ramp)  # each sample once, in order, unchanged
    # Gapless up to what was final before the wait; then on from round(restart).
    play = int(play)
    assert np.array_equal(heard[: 2 * quarter], np.arange(play, play + 2 * quarter))
    restart = round(restart)
    assert restart > play + 2 * quarter
    assert np.array_equal(heard[2 * quarter :], np.arange(restart, restart + n - 2 * quarter))
    assert page.errors == []
    page.close()
