"""`audiosplit keys create|list|revoke`: tenants and their API keys, made on a server host.

These commands open the job store itself (the gateway's settings: DATABASE_URL, or the SQLite
file under DATA_DIR), not the API: making keys needs no key, only access to the database. A
key revoked here is refused by every gateway sharing the database at its next request.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from common.config import get_settings
from common.errors import AudiosplitError
from gateway.cli.api import EXIT_OK, UsageError
from gateway.store import JobStore
from gateway.tenants import Tenant, create_tenant, list_tenants, revoke_tenant
from gateway.webhooks import new_secret


def open_store() -> JobStore:
    settings = get_settings()
    return JobStore(settings.store_url, retry_s=settings.db_retry_s)


def run_keys(args: argparse.Namespace) -> int:
    store = open_store()
    try:
        return {"create": create, "list": listing, "revoke": revoke}[args.keys_command](store, args)
    except AudiosplitError as e:
        raise UsageError(e.message) from e
    finally:
        store.close()


def create(store: JobStore, args: argparse.Namespace) -> int:
    """The key on its own line, then the webhook secret on another: each shown only now."""
    tenant, key = create_tenant(
        store,
        args.name,
        admin=args.admin,
        minutes_per_day=args.minutes_per_day,
        concurrent=args.concurrent,
        webhook_url=args.webhook,
        webhook_secret=new_secret(),
    )
    sys.stdout.write(f"{key}\n{tenant.webhook_secret}\n")
    sys.stderr.write(
        f"made tenant {tenant.name!r}: the first line is its API key (header X-API-Key), the "
        "second the secret that signs its webhooks; neither is shown again\n"
    )
    return EXIT_OK


def describe(tenant: Tenant) -> dict:
    return {
        "name": tenant.name,
        "key": tenant.key_prefix + "…",
        "admin": tenant.admin,
        "minutes_per_day": tenant.minutes_per_day,
        "concurrent": tenant.concurrent,
        "webhook": tenant.webhook_url,
        "created": datetime.fromtimestamp(tenant.created_at, UTC).strftime("%Y-%m-%d %H:%M"),
        "revoked": (
            datetime.fromtimestamp(tenant.revoked_at, UTC).strftime("%Y-%m-%d %H:%M")
            if tenant.revoked_at
            else None
        ),
    }


def listing(store: JobStore, args: argparse.Namespace) -> int:
    rows = [describe(t) for t in list_tenants(store, revoked=args.all)]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return EXIT_OK
    if not rows:
        sys.stdout.write("no keys (make one: audiosplit keys create NAME)\n")
        return EXIT_OK
    columns = ["name", "key", "admin", "minutes_per_day", "concurrent", "webhook", "created"]
    if args.all:
        columns.append("revoked")
    cells = [[("-" if r[c] is None else str(r[c])) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    for row in [columns, *cells]:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        sys.stdout.write("\n")
    return EXIT_OK


def revoke(store: JobStore, args: argparse.Namespace) -> int:
    tenant = revoke_tenant(store, args.name)
    sys.stdout.write(f"revoked the key of {tenant.name!r} ({tenant.key_prefix}…)\n")
    return EXIT_OK


def add_parser(commands) -> None:
    keys = commands.add_parser(
        "keys",
        help="make, list and revoke API keys (on a server host)",
        description="Tenants and their API keys, in the job store this host's gateway uses "
        "(its settings: DATABASE_URL, or the SQLite file under DATA_DIR). The gateway needs "
        "AUTH=keys for the keys to be asked for.",
    )
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    make = sub.add_parser(
        "create",
        help="a new tenant and its key",
        description="Prints the new key on its own line, then the tenant's webhook signing "
        "secret (whsec_…) on another: both shown once (the key is kept only as a hash).",
    )
    make.add_argument("name", metavar="NAME", help="the tenant's name (unique)")
    make.add_argument(
        "--admin", action="store_true", help="sees every tenant's jobs (default: its own only)"
    )
    make.add_argument(
        "--minutes-per-day",
        type=float,
        metavar="M",
        help="audio minutes it may submit in any 24 h (default: no limit)",
    )
    make.add_argument(
        "--concurrent",
        type=int,
        metavar="N",
        help="its jobs that run at once; more wait queued (default: no limit of its own)",
    )
    make.add_argument(
        "--webhook", metavar="URL", help="its default callback_url for jobs that give none"
    )
    listed = sub.add_parser("list", help="the tenants and their keys' first characters")
    listed.add_argument("--all", action="store_true", help="revoked keys too")
    listed.add_argument("--json", action="store_true", help="as JSON")
    gone = sub.add_parser("revoke", help="stop a tenant's key working, at every gateway")
    gone.add_argument("name", metavar="NAME", help="the tenant's name")
    keys.set_defaults(run=run_keys)
