"""`audiosplit status | list | delete | models`: the gateway's jobs and separators.

Each prints text (a table when there are rows) or, with --json, the JSON the gateway sent.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from gateway.cli.api import EXIT_FAILED, EXIT_OK, Api, Refused, no_job


def table_console() -> Console:
    # Without a terminal rich assumes 80 columns and would wrap every table row.
    return Console(width=None if sys.stdout.isatty() else 200)


def print_json(value) -> None:
    sys.stdout.write(json.dumps(value, indent=1) + "\n")


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
        if not isinstance(value, str | int | float):
            value = json.dumps(value) if value not in (None, [], {}) else "-"
        sys.stdout.write(f"{key:<{width}}  {value}\n")
    return EXIT_OK if job["status"] != "failed" else EXIT_FAILED


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


def run_models(args: argparse.Namespace) -> int:
    models = Api(args.url).call("GET", "/api/models").json()["models"]
    if args.json:
        print_json(models)
        return EXIT_OK
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
    table_console().print(table)
    return EXIT_OK
