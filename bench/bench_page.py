"""What the page costs the browser on a long song: stems fetched and decoded, the timeline
drawn, the mix rendered offline, and the memory it holds.

    ./run.sh bench bench_page [--seconds 600] [--analysis] [--formats wav,wav16,mp3]

Starts the real stack (no weights: the dsp separator), separates a generated song through the
API, then opens it in headless Chromium (/usr/bin/chromium, Playwright) and prints: time to
fetch and decode every stem (as float WAV, 16-bit WAV, MP3), time to draw waveforms, analysis
rows and the spectrogram, time to render the mix offline and encode it as a 16-bit WAV, the JS
heap (CDP Performance.getMetrics) and the renderer processes' resident memory (AudioBuffers
live outside the JS heap).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="song length")
    parser.add_argument("--analysis", action="store_true", help="analyse the song too")
    parser.add_argument("--formats", default="wav,wav16,mp3", help="stem formats to load")
    return parser.parse_args()


def renderer_rss_mb() -> float:
    """Resident memory of Chromium's renderer processes (MB), from /proc."""
    total = 0
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
            if b"chromium" in cmd and b"--type=renderer" in cmd:
                for line in (proc / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def main() -> None:
    args = parse_args()
    import httpx
    import soundfile as sf
    from playwright.sync_api import sync_playwright

    from test.songgen import make_song, mixture
    from test.stackutil import start_stack, wait_job

    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp) / "data", Path(tmp) / "models", max_duration_s=3600)
        try:
            base = stack.url("gateway")
            buf = io.BytesIO()
            sf.write(buf, mixture(make_song(args.seconds, seed=1)).T, 44100, "PCM_16", format="WAV")
            with httpx.Client(base_url=base, timeout=600) as client:
                t = time.perf_counter()
                job = client.post(
                    "/api/jobs",
                    files={"file": ("long song.wav", buf.getvalue(), "audio/wav")},
                    data={"analysis": "true" if args.analysis else "false"},
                ).json()
                job = wait_job(client, job["id"], timeout=3600)
                print(f"separated {args.seconds:.0f} s in {time.perf_counter() - t:.1f} s")
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
                )
                page = browser.new_page(base_url=base)
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")
                page.goto("/")
                for fmt in args.formats.split(","):
                    open_job(page, cdp, job, fmt)
                mix = page.evaluate(MIX_JS)
                browser.close()
        finally:
            stack.stop()
    print(
        f"  my mix: rendered offline in {mix['render_ms'] / 1000:.2f} s, WAV 16 encoded in "
        f"{mix['encode_ms']:.0f} ms ({mix['bytes'] / 2**20:.0f} MB)"
    )


MIX_JS = """async () => {
  const t0 = performance.now();
  const b = await window.audiosplit.renderMix({});
  const t1 = performance.now();
  const wav = window.audiosplit.encodeWav(b, 16);
  const t2 = performance.now();
  return {render_ms: t1 - t0, encode_ms: t2 - t1, bytes: wav.byteLength};
}"""


def open_job(page, cdp, job: dict, fmt: str) -> None:
    """Opens the job in the player with stems fetched as `fmt`; prints what it took."""
    t = time.perf_counter()
    page.evaluate(
        f"window.audiosplit.state.stemFormat = {fmt!r}; window.audiosplit.openJob({job['id']!r})"
    )
    page.wait_for_function("() => window.audiosplit.state.ready", timeout=600_000)
    page.wait_for_function("() => window.audiosplit.view.drawnMs > 0", timeout=600_000)
    wall = time.perf_counter() - t
    timings = page.evaluate("window.audiosplit.state.timings")
    drawn = page.evaluate("window.audiosplit.view.drawnMs")
    lengths = page.evaluate("Object.values(window.audiosplit.buffers).map(b => b.length)")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    frames = round(job["duration_s"] * 44100)
    print(
        f"{len(job['stems'])} stems of {job['duration_s']:.0f} s as {fmt}: open "
        f"{timings['load_ms'] / 1000:.2f} s (fetch {timings['fetch_ms'] / 1000:.2f} s + decode "
        f"{timings['decode_ms'] / 1000:.2f} s, summed over stems fetched two at a time), player "
        f"{timings['build_ms']:.0f} ms, timeline drawn {drawn:.0f} ms, wall {wall:.1f} s; "
        f"frames {sorted(set(lengths))} (job {frames}); JS heap "
        f"{metrics['JSHeapUsedSize'] / 2**20:.0f} MB; renderer RSS {renderer_rss_mb():.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    main()
