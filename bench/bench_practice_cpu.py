"""What live speed and pitch cost the browser: the CPU share of one core that Chromium spends
while the player plays 4 and 6 stems at speed 0.8 and +2 semitones (the stems through one
Signalsmith Stretch node) against speed 1.0 (buffer sources, no stretching).

    ./run.sh bench bench_practice_cpu [--seconds 10] [--stems 4,6]

Serves the page (the gateway's page routes alone, no stack) and opens it in headless
Chromium (/usr/bin/chromium, Playwright); builds a Player on generated stems (a minute of
noise and tones each) and plays it live. CPU time is read from /proc over the measured
seconds: all of Chromium's processes together, and the threads that render audio (named
Audio*, Realtime*, or the AudioWorklet's). 100 % is one core.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TICKS = os.sysconf("SC_CLK_TCK")
SONG_S = 60.0  # seconds of each generated stem
WARM_UP_S = 1.5  # played before the measuring starts (the node loads, the feed settles)
AUDIO_THREADS = ("audio", "realtime", "worklet")
SETTINGS = [
    ("speed 1.0, 0 st (buffer sources)", 1.0, 0.0),
    ("speed 0.8, +2 st (stretched)", 0.8, 2.0),
]

SETUP_JS = """async ({stems, seconds}) => {
  const { Player } = await import("/static/player.js");
  const rate = 44100, n = Math.round(seconds * rate);
  const ctx = new AudioContext({ sampleRate: rate, latencyHint: "playback" });
  const made = [];
  for (let s = 0; s < stems; s++) {
    const b = ctx.createBuffer(2, n, rate);
    for (let c = 0; c < 2; c++) {
      const x = b.getChannelData(c);
      const hz = 110 * (s + 1) * (c ? 1.01 : 1);
      for (let i = 0; i < n; i++) {
        x[i] = 0.1 * Math.sin(2 * Math.PI * hz * i / rate) + 0.02 * (Math.random() - 0.5);
      }
    }
    made.push({ name: `stem${s}`, buffer: b });
  }
  window.bench = new Player(ctx, made);
}"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds measured per case")
    parser.add_argument("--stems", default="4,6", help="numbers of stems, comma-separated")
    return parser.parse_args()


def chromium_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"chromium" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def cpu_seconds() -> tuple[float, float]:
    """(all of Chromium's processes, their audio threads): CPU seconds used so far."""
    total = audio = 0.0
    for pid in chromium_pids():
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                name = (task / "comm").read_text().strip().lower()
            except OSError:
                continue
            used = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
            total += used
            if any(word in name for word in AUDIO_THREADS):
                audio += used
    return total, audio


def serve_page() -> str:
    """The gateway's page routes alone on a free loopback port, in a thread."""
    import uvicorn

    from common.config import Settings
    from common.service import create_service_app
    from gateway import page

    settings = Settings(_env_file=None, log_level="WARNING")
    app = create_service_app("page", settings, routers=[page.router])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


def measure(
    page, stems: int, speed: float, semitones: float, seconds: float
) -> tuple[float, float, float]:
    """CPU share of one core (all Chromium, its audio threads) while playing, and the position
    the player reached (to show it played)."""
    page.evaluate(SETUP_JS, {"stems": stems, "seconds": SONG_S})
    page.evaluate(
        "async ([s, t]) => { await window.bench.setSpeed(s); await window.bench.setPitch(t); "
        "await window.bench.play(); }",
        [speed, semitones],
    )
    time.sleep(WARM_UP_S)
    total0, audio0 = cpu_seconds()
    t0 = time.perf_counter()
    time.sleep(seconds)
    total1, audio1 = cpu_seconds()
    wall = time.perf_counter() - t0
    at = page.evaluate("window.bench.position()")
    page.evaluate("window.bench.dispose(); window.bench.ctx.close()")
    return 100 * (total1 - total0) / wall, 100 * (audio1 - audio0) / wall, at


def main() -> None:
    args = parse_args()
    from playwright.sync_api import sync_playwright

    base = serve_page()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        page = browser.new_page(base_url=base)
        page.goto("/")
        page.wait_for_function("() => window.audiosplit !== undefined")
        cores = os.cpu_count()
        print(f"Chromium playing live, {args.seconds:.0f} s measured per case ({cores} cores here)")
        print(f"{'stems':>5}  {'setting':<34} {'Chromium':>9} {'audio threads':>14}")
        for stems in (int(s) for s in args.stems.split(",")):
            for label, speed, semitones in SETTINGS:
                total, audio, at = measure(page, stems, speed, semitones, args.seconds)
                played = f"(played to {at:.1f} s)"
                print(f"{stems:>5}  {label:<34} {total:>8.1f}% {audio:>13.1f}%   {played}")
        browser.close()


if __name__ == "__main__":
    main()
