"""`audiosplit status | list | delete | cancel | models`: the gateway's jobs and separators.

Each prints text (a table when there are rows) or, with --json, the JSON the gateway sent.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich import box
from rich.console import Console
from rich.table import Table

from gateway.cli.api import EXIT_FAILED, EXIT_OK, Api, Refused, no_job
from gateway.cli.separate import notice_lines


def table_console() -> Console:
    # Without a terminal rich assumes 80 columns and would wrap every table row.
    return Console(width=None if sys.stdout.isatty() else 200)


def print_json(value) -> None:
    sys.stdout.write(json.dumps(value, indent=1) + "\n")


SHORT_LIST = 60  # characters: a list of short items that fits this is shown on one line


def run_status(args: argparse.Namespace) -> int:
    api = Api(args.url)
    try:
        job = api.job(args.id)
    except Refused as e:
        raise no_job(args.id, e) from None
    if args.json:
        print_json(job)
        return EXIT_OK
    width = max(map(len, job))
    for key, value in job.items():
        for i, line in enumerate(field_lines(key, value)):
            sys.stdout.write(f"{key if i == 0 else '':<{width}}  {line}\n")
    return EXIT_OK if job["status"] != "failed" else EXIT_FAILED


def field_lines(key: str, value) -> list[str]:
    """A job field as lines, one fact each: a list an item a line, a mapping a key a line
    (nested ones with dotted keys), the notice a clause a line."""
    if value in (None, [], {}, ""):
        return ["-"]
    if key == "notice" and isinstance(value, str):
        return [line.removeprefix("notice: ").strip() for line in notice_lines(value)]
    if isinstance(value, dict):
        return [f"{k}: {v}" for k, v in flat(value)]
    if isinstance(value, list):
        items = [v if isinstance(v, str) else json.dumps(v) for v in value]
        joined = ", ".join(items)  # short items (stem names) are one fact: one line
        return (
            [joined] if len(joined) <= SHORT_LIST and not any(", " in i for i in items) else items
        )
    return [str(value)]


def flat(mapping: dict, prefix: str = "") -> list[tuple[str, str]]:
    """{"stems": {"vocals": "/x"}} -> [("stems.vocals", "/x")]."""
    out = []
    for k, v in mapping.items():
        if isinstance(v, dict) and v:
            out += flat(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v if isinstance(v, str) else json.dumps(v)))
    return out


def run_list(args: argparse.Namespace) -> int:
    params = {"limit": args.limit, **({"status": args.status} if args.status else {})}
    jobs = Api(args.url).call("GET", "/api/jobs", params=params).json()["jobs"]
    if args.json:
        print_json(jobs)
        return EXIT_OK
    table = Table("id", "status", "filename", "model", "created", "duration")
    for job in jobs:
        minutes, seconds = divmod(round(job["duration_s"] or 0), 60)
        status = job["status"] if job["status"] != "running" else f"running {job['stage']}"
        created = job["created_at"].replace("T", " ").rstrip("Z")
        table.add_row(
            job["id"], status, job["filename"], job["model"], created, f"{minutes}:{seconds:02d}"
        )
    table_console().print(table)
    return EXIT_OK


def run_delete(args: argparse.Namespace) -> int:
    api, failed = Api(args.url), 0
    for job_id in args.ids:
        try:
            api.call("DELETE", f"/api/jobs/{job_id}", 204)
            sys.stdout.write(f"deleted {job_id}\n")
        except Refused as e:
            sys.stderr.write(f"audiosplit: {no_job(job_id, e).message}\n")
            failed += 1
    return EXIT_FAILED if failed else EXIT_OK


def run_cancel(args: argparse.Namespace) -> int:
    api, failed = Api(args.url), 0
    for job_id in args.ids:
        try:
            api.cancel(job_id)
            sys.stdout.write(f"cancelled {job_id}\n")
        except Refused as e:  # 409: it had ended; the gateway's message says how
            sys.stderr.write(f"audiosplit: {no_job(job_id, e).message}\n")
            failed += 1
    return EXIT_FAILED if failed else EXIT_OK


# `audiosplit models`: where a model's weights stand, in a word (the compact table)
WEIGHTS_WORD = {"here": "here", "fetchable": "on use", "missing": "missing", "none": "built in"}
MODELS_WIDTH = 100  # columns: the compact table fits a terminal of this width
MODELS_KEY = (
    "weights: here = present; on use = downloaded on first use; missing: run "
    "./run.sh fetch-models NAME",
    "--long: also the published SDR, the licence and the reason",
)


def weights_word(model: dict) -> str:
    if model["family"] == "dsp":
        return WEIGHTS_WORD["none"]
    if model["available"]:
        return WEIGHTS_WORD["here"]
    return WEIGHTS_WORD["fetchable" if model.get("fetchable") else "missing"]


def run_models(args: argparse.Namespace) -> int:
    answer = Api(args.url).call("GET", "/api/models").json()
    models = answer["models"]
    if args.json:
        print_json(models)
        return EXIT_OK
    if args.long:
        table_console().print(long_models_table(models))
        return EXIT_OK
    console = Console(width=min(MODELS_WIDTH, table_console().width), no_color=True)
    with console.capture() as drawn:  # without the blank edges and trailing spaces
        console.print(models_table(models))
    lines = "\n".join(line.rstrip() for line in drawn.get().splitlines()).strip("\n")
    lines = lines.splitlines()
    recipes = [
        f"  {r['name']}: {r['label']} ({r['model']}, then {r['chain']})"
        for r in answer.get("recipes", [])
    ]
    if recipes:
        recipes.insert(0, "recipes (separate --recipe NAME; --chain STEM>MODEL for your own):")
    sys.stdout.write("".join(line + "\n" for line in (*lines, *MODELS_KEY, *recipes)))
    return EXIT_OK


def models_table(models: list[dict]) -> Table:
    """Name, stems, weights, size and speed: one short row a model, within 100 columns."""
    table = Table("name", "stems", "weights", "size", "RTF", box=box.SIMPLE_HEAD, pad_edge=False)
    for m in models:
        card = m.get("card") or {}
        size, rtf = card.get("weights_mb"), card.get("rtf_cpu")
        table.add_row(
            m["name"],
            ",".join(m["stems"]),
            weights_word(m),
            f"{size:.0f} MB" if size else "—",
            f"{rtf:.2f}" if rtf is not None else "—",
        )
    return table


def long_models_table(models: list[dict]) -> Table:
    """Everything the gateway says of each model (`--long`), as wide as it takes."""
    table = Table("name", "available", "stems", "published SDR", "licence", "RTF here", "reason")
    for m in models:
        card = m.get("card") or {}
        rtf = card.get("rtf_cpu")
        table.add_row(
            m["name"],
            "yes" if m["available"] else "no",
            ", ".join(m["stems"]),
            card.get("published_sdr") or "—",
            card.get("licence") or "—",
            f"{rtf:.3f}" if rtf is not None else "—",
            m["reason"],
        )
    return table
