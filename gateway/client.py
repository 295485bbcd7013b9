"""`./run.sh separate FILE...`: whole jobs against the stack, stems written to a folder.

Uses the stack at `--url` (default: the gateway of the local settings); when nothing answers
there, starts a temporary stack for the run and stops it afterwards.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

from common.config import Settings
from gateway.stack import Stack, say

POLL_S = 1.0


def separate_file(client: httpx.Client, path: Path, args: argparse.Namespace) -> bool:
    fields = {"model": args.model, "stems": args.stems, "quality": args.quality}
    fields["analysis"] = "false" if args.no_analysis else "true"
    with open(path, "rb") as f:
        r = client.post("/api/jobs", files={"file": (path.name, f)}, data=fields, timeout=600)
    if r.status_code != 202:
        say(f"{path.name}: refused ({r.status_code}): {r.json()['error']['message']}")
        return False
    job = r.json()
    say(f"{path.name}: job {job['id']} with {job['model']} ({job['model_reason']})")
    last = ""
    while job["status"] in ("queued", "running"):
        time.sleep(POLL_S)
        job = client.get(f"/api/jobs/{job['id']}").json()
        line = f"{job['stage']} {job['progress'] * 100:.0f}%"
        if line != last:
            say(f"{path.name}: {line}")
            last = line
    if job["status"] != "done":
        say(f"{path.name}: failed: {job['error']['message']}")
        return False
    out = Path(args.out) / path.stem
    out.mkdir(parents=True, exist_ok=True)
    for stem, link in job["links"]["stems"].items():
        target = out / f"{stem}.{'wav' if args.format.startswith('wav') else args.format}"
        with client.stream("GET", link, params={"format": args.format}) as resp:
            resp.raise_for_status()
            with open(target, "wb") as f:
                for block in resp.iter_bytes():
                    f.write(block)
    for w in job["warnings"]:
        say(f"{path.name}: warning: {w}")
    say(f"{path.name}: stems in {out}/")
    return True


def main(argv: list[str]) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="./run.sh separate")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--model", default="auto")
    parser.add_argument("--stems", default="all")
    parser.add_argument("--quality", default="preview", choices=["preview", "render"])
    parser.add_argument("--format", default="wav", choices=["wav", "wav16", "wav24", "flac", "mp3"])
    parser.add_argument("--out", default="separated")
    parser.add_argument("--no-analysis", action="store_true")
    parser.add_argument("--url", default=f"http://127.0.0.1:{settings.gateway_port}")
    args = parser.parse_args(argv)
    stack = None
    try:
        httpx.get(args.url + "/health", timeout=2).raise_for_status()
    except httpx.HTTPError:
        say(f"no stack answers at {args.url}; starting one for this run")
        stack = Stack(settings)
        stack.start()
        stack.wait_healthy()
    try:
        with httpx.Client(base_url=args.url, timeout=60) as client:
            ok = [separate_file(client, p, args) for p in args.files]
    finally:
        if stack is not None:
            stack.stop()
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
