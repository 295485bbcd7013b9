"""The practice player's page in a real headless Chromium against the real stack (dsp separator):
key and chords moved with the pitch, tempo with the speed, loops snapped to beats and bars,
section loops, A/B keys, a phone's touches at 375 px, and a job kept for offline.

One job (the generated 10 s song, analysed), uploaded once. Its analysis has no sections (10 s
is too short for a form), so the desktop page adds two to the analysis response with
`page.route`; everything else on that page is the analysis as the stack made it.
"""

from __future__ import annotations

import json
import re
import socket
import threading

import httpx
import pytest
from playwright.sync_api import Page, expect

from test.browser.conftest import SAMPLE_RATE
from test.browser.test_page import READY, goto_page, new_page, settled_box, shown
from test.stackutil import wait_job
from transforms.spelling import chord_label, pitch_class, spell_key

# Two sections over the 10 s song: A then B (the stack's song is too short to have any).
SECTIONS = [
    {"start_s": 0.0, "end_s": 4.0, "label": "A"},
    {"start_s": 4.0, "end_s": 10.0, "label": "B"},
]
PHONE = {"width": 375, "height": 812}
DESK = {"width": 1280, "height": 900}
ONE_MS = 1e-3


@pytest.fixture(scope="module")
def job(base_url, song) -> dict:
    """The song separated and analysed (dsp), through the API."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        files = {"file": (song.name, song.read_bytes(), "audio/wav")}
        created = client.post("/api/jobs", files=files, data={"model": "dsp", "analysis": "true"})
        assert created.status_code == 202, created.text
        job = wait_job(client, created.json()["id"])
        assert job["status"] == "done", job
        job["analysis"] = client.get(job["links"]["analysis"]).json()
    return job


def open_job(page: Page, job_id: str) -> None:
    page.evaluate("id => window.audiosplit.openJob(id)", job_id)
    page.wait_for_function(READY, timeout=60_000)


def add_sections(page: Page, job_id: str) -> None:
    """The job's analysis as the stack made it, with SECTIONS (the context must block service
    workers: page.route does not see what a worker answers)."""

    def with_sections(route):
        analysis = route.fetch().json()
        analysis["track"]["sections"] = SECTIONS
        route.fulfill(json=analysis)

    page.route(f"**/api/jobs/{job_id}/analysis", with_sections)


def shoot(shots, page: Page, name: str) -> None:
    """The player from its title to the end of the timeline (not the downloads)."""
    page.wait_for_timeout(300)  # the waveforms are drawn 80 ms after layout
    top = page.locator("#player").bounding_box()
    bottom = page.locator("#timeline").bounding_box()
    scroll = page.evaluate("({x: scrollX, y: scrollY})")
    clip = {"x": top["x"] + scroll["x"], "y": top["y"] + scroll["y"], "width": top["width"]}
    clip["height"] = bottom["y"] + bottom["height"] - top["y"] + 8
    shots(page, name, full_page=True, clip=clip)


@pytest.fixture(scope="module")
def desk(browser, base_url, job):
    """The job open at desktop width, its analysis with SECTIONS added."""
    context = browser.new_context(base_url=base_url, viewport=DESK, service_workers="block")
    context.set_default_timeout(60_000)
    page = new_page(context)
    add_sections(page, job["id"])
    goto_page(page)
    open_job(page, job["id"])
    yield page
    context.close()


def set_practice(page: Page, semitones: int, speed: float) -> None:
    """The player's pitch and speed, through setPitch/setSpeed where the player has them."""
    page.evaluate(
        """([n, speed]) => {
          const p = window.audiosplit.player;
          if (p.setPitch) p.setPitch(n); else p.semitones = n;
          if (p.setSpeed) p.setSpeed(speed); else p.speed = speed;
          p.onChange();
        }""",
        [semitones, speed],
    )


def test_transposed_spelling_matches_transforms_spelling(desk):
    """transpose.js against transforms/spelling.py: every key, chord and transposition."""
    cases = []
    for mode in ("major", "minor"):
        for tonic in range(12):
            key = {"tonic": spell_key(tonic, mode)[0], "mode": mode}
            for root in range(12):
                for quality in ("maj", "min"):
                    label = chord_label(root, quality, (tonic, mode))
                    for n in range(-11, 12):
                        moved = ((tonic + n) % 12, mode)
                        want = chord_label((root + n) % 12, quality, moved)
                        cases.append([label, n, key, want, spell_key(*moved)[0]])
    plain = [
        [chord_label(r, q, None), n, None, chord_label((r + n) % 12, q, None), None]
        for r in range(12)
        for q in ("maj", "min")
        for n in range(-11, 12)
    ]
    wrong = desk.evaluate(
        """async (cases) => {
          const { transposeChord, transposeKey } = await import("/static/transpose.js");
          return cases.filter(([label, n, key, chord, tonic]) =>
            transposeChord(label, n, key) !== chord
            || (key && transposeKey(key, n).tonic !== tonic));
        }""",
        cases + plain,
    )
    assert len(cases) == 24 * 24 * 23
    assert wrong == []


def test_key_chords_and_tempo_follow_pitch_and_speed(desk, job):
    track = job["analysis"]["track"]
    info = desk.locator("#track-info")
    chords = desk.locator(".seg.chord")
    first = next((c["chord"] for c in track.get("chords") or [] if c["chord"] != "N"), None)
    try:
        set_practice(desk, 2, 0.8)
        if track.get("key"):
            tonic = (pitch_class(track["key"]["tonic"]) + 2) % 12
            mode = track["key"]["mode"]
            expect(info).to_contain_text(f"key {shown(spell_key(tonic, mode)[0])} {mode} (+2)")
            if first:
                root = pitch_class(re.match(r"[A-G][#b]?", first)[0])
                quality = "min" if first.endswith("m") else "maj"
                want = chord_label((root + 2) % 12, quality, (tonic, mode))
                expect(chords.first).to_have_text(shown(want))
        if track.get("tempo_bpm"):
            expect(info).to_contain_text(f"{track['tempo_bpm'] * 0.8:.1f} bpm at 80 %")
    finally:
        set_practice(desk, 0, 1.0)
    if track.get("key"):
        expect(info).to_contain_text(f"key {shown(track['key']['tonic'])} {track['key']['mode']} ·")


def drag(page: Page, lane, t0: float, t1: float, duration: float) -> None:
    """A real mouse drag across a lane's timeline from t0 to t1 seconds."""
    lane.scroll_into_view_if_needed()
    box = settled_box(page, lane)
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * t0 / duration, y)
    page.mouse.down()
    for f in (0.3, 0.6, 1.0):
        page.mouse.move(box["x"] + box["width"] * (t0 + f * (t1 - t0)) / duration, y)
    page.mouse.up()


def loop(page: Page) -> dict:
    return page.evaluate(
        "() => { const p = window.audiosplit.player; return {...p.loop, on: p.loopOn}; }"
    )


@pytest.mark.parametrize(("snap", "grid"), [("beats", "beats_s"), ("bars", "downbeats_s")])
def test_a_dragged_loop_snaps_to_beats_or_bars(desk, job, snap, grid):
    times = job["analysis"]["track"].get(grid) or []
    assert len(times) >= 3, f"the generated song has no {grid}"
    duration = job["duration_s"]
    desk.get_by_label("Snap to").select_option(snap)
    lane = desk.locator(".lane .tl").first
    t0, t1 = times[0] + 0.37 * (times[1] - times[0]), times[-1] - 0.2
    drag(desk, lane, t0, t1, duration)
    got = loop(desk)
    nearest = min(times, key=lambda t: abs(t - got["start"]))
    assert abs(got["start"] - nearest) < ONE_MS, (got, times)
    assert nearest == min(times, key=lambda t: abs(t - t0))  # the beat nearest the press
    assert min(abs(got["end"] - t) for t in times) < ONE_MS, (got, times)
    assert got["on"]
    desk.get_by_label("Snap to").select_option("off")
    drag(desk, lane, 1.23, 2.71, duration)
    unsnapped = loop(desk)
    assert abs(unsnapped["start"] - 1.23) < 0.05 and abs(unsnapped["end"] - 2.71) < 0.05


def test_sections_are_drawn_and_each_loops_with_one_click(desk, shots):
    expect(desk.locator("#timeline .band")).not_to_have_count(0)
    lanes = desk.locator(".lane")
    expect(lanes.first.locator(".band")).to_have_text(["A", "B"])
    desk.get_by_role("button", name="Loop section B (0:04–0:10)").click()
    got = loop(desk)
    assert (got["start"], got["end"], got["on"]) == (4.0, 10.0, True)
    expect(desk.locator("#loop-info")).to_contain_text("0:04.0–0:10.0")
    desk.get_by_role("button", name="Loop section A (0:00–0:04)").click()
    assert loop(desk)["end"] == 4.0
    desk.get_by_label("Snap to").select_option("beats")
    drag(desk, lanes.first.locator(".tl"), 5.2, 8.4, 10.0)
    shoot(shots, desk, "page-practice.png")
    desk.get_by_label("Snap to").select_option("off")


def test_a_and_b_keys_set_the_loop_at_the_playhead(desk):
    desk.locator("#player").focus()
    desk.evaluate("() => window.audiosplit.player.seek(1.5)")
    desk.keyboard.press("a")
    desk.evaluate("() => window.audiosplit.player.seek(3.25)")
    desk.keyboard.press("b")
    got = loop(desk)
    assert abs(got["start"] - 1.5) < ONE_MS and abs(got["end"] - 3.25) < ONE_MS and got["on"]
    expect(desk.locator("#keys-help")).to_contain_text("A loop from here")
    assert desk.errors == []


def touch(cdp, kind: str, x: float, y: float) -> None:
    points = [] if kind == "touchEnd" else [{"x": x, "y": y}]
    cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})


def test_phone_width_taps_seek_and_a_touch_drag_loops(browser, base_url, job, shots):
    context = browser.new_context(
        base_url=base_url, viewport=PHONE, has_touch=True, is_mobile=True, service_workers="block"
    )
    context.set_default_timeout(60_000)
    try:
        page = new_page(context)
        add_sections(page, job["id"])
        goto_page(page)
        open_job(page, job["id"])
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        tl = page.locator(".lane .tl").first
        tl.scroll_into_view_if_needed()
        box = settled_box(page, tl)
        y = box["y"] + box["height"] / 2
        at = lambda f: box["x"] + box["width"] * f  # noqa: E731
        page.touchscreen.tap(at(0.3), y)
        position = page.evaluate("window.audiosplit.position()")
        assert abs(position - 0.3 * job["duration_s"]) < 0.1, position
        cdp = context.new_cdp_session(page)
        touch(cdp, "touchStart", at(0.2), y)
        for f in (0.3, 0.4, 0.5):
            touch(cdp, "touchMove", at(f), y)
        touch(cdp, "touchEnd", at(0.5), y)
        got = loop(page)
        assert abs(got["start"] - 2.0) < 0.1 and abs(got["end"] - 5.0) < 0.1 and got["on"], got
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        shoot(shots, page, "page-phone.png")
        assert page.errors == []
    finally:
        context.close()


class CuttableProxy:
    """A TCP forwarder to the gateway that can be cut: then every connection is refused, as
    on a machine without a network. (Playwright's set_offline does not reach a service
    worker's own fetches, microsoft/playwright#2311: this does.)"""

    def __init__(self, port: int):
        self.upstream = ("127.0.0.1", port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open: list[socket.socket] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.upstream)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                s.close()

    def cut(self) -> None:
        self.server.close()
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def from_worker(page: Page, url: str) -> bool:
    """Whether the service worker answered a fetch of url (online: it fetched it itself)."""
    with page.expect_response(lambda r: r.url.endswith(url)) as response:
        page.evaluate("url => fetch(url).then(r => r.status)", url)
    return response.value.from_service_worker


def test_a_job_kept_for_offline_opens_and_plays_without_a_network(browser, stack, job):
    proxy = CuttableProxy(int(stack.url("gateway").rsplit(":", 1)[1]))
    context = browser.new_context(base_url=f"http://127.0.0.1:{proxy.port}")
    context.set_default_timeout(60_000)
    try:
        page = new_page(context)
        goto_page(page)
        page.evaluate("() => navigator.serviceWorker.ready")
        history = [{"id": job["id"], "filename": job["filename"], "created": job.get("created_at")}]
        page.evaluate("h => localStorage.setItem('audiosplit.jobs', JSON.stringify(h))", history)
        page.reload()  # now under the worker
        page.wait_for_function("() => navigator.serviceWorker.controller !== null")
        open_job(page, job["id"])
        assert not from_worker(page, f"/api/jobs/{job['id']}")  # not kept: not touched
        keep = page.get_by_role("button", name="Keep for offline")
        keep.click()
        expect(page.locator("#offline-status")).to_contain_text("Kept in this browser")
        # The worker re-reads the kept jobs when the page tells it: a moment later.
        assert any(from_worker(page, f"/api/jobs/{job['id']}") for _ in range(20))
        expect(page.get_by_role("button", name="Remove offline copy")).to_be_visible()

        proxy.cut()
        context.set_offline(True)
        page.reload()
        page.wait_for_function("() => window.audiosplit !== undefined")
        reach = "url => fetch(url).then(() => 'reached', () => 'unreachable')"
        # Not kept (another query): the worker's own fetch fails, so it comes from no network.
        assert page.evaluate(reach, f"/api/jobs/{job['id']}?fresh=1") == "unreachable"
        card = page.locator(f'li.job[data-job-id="{job["id"]}"]')
        card.get_by_role("button", name="Open").click()
        page.wait_for_function(READY, timeout=60_000)
        frames = round(job["duration_s"] * SAMPLE_RATE)
        buffers = page.evaluate(
            "() => Object.values(window.audiosplit.buffers)"
            ".map(b => [b.length, b.numberOfChannels])"
        )
        assert buffers == [[frames, 2]] * len(job["stems"])
        duration = page.evaluate("window.audiosplit.player.duration")
        assert duration == pytest.approx(job["duration_s"])
        page.get_by_role("button", name="Play", exact=True).click()
        page.wait_for_function("() => window.audiosplit.position() > 0.3")

        page.get_by_role("button", name="Remove offline copy").click()
        expect(page.get_by_role("button", name="Keep for offline")).to_be_visible()
        names = page.evaluate("() => caches.keys()")
        assert not any(job["id"] in n for n in names), names
        assert json.dumps(page.errors) == "[]"
    finally:
        context.close()
        proxy.cut()
