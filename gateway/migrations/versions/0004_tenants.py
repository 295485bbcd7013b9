"""Tenants, their keys and limits; jobs that belong to a tenant; what apps build on: the
webhook outbox, idempotency keys, usage for the daily quota, import from a URL.

- `tenants`: one row per API key made with `audiosplit keys create`. The key is kept only as
  its SHA-256 (`key_hash`; a key is 32 random bytes, so a plain hash is enough: no one guesses
  a preimage), with its first characters (`key_prefix`) to recognise it in a listing. The
  webhook signing secret is kept as given: the gateway needs it to sign.
- `jobs.tenant`: '' in open mode; the tenant's id otherwise. `callback_url`, `source_url`,
  `title`: a job's webhook receiver and, for an imported song, where it came from. `rank`:
  how many of its tenant's jobs were waiting or running when it came (fair claiming).
- `usage`: audio seconds accepted per tenant and when (database clock), for the rolling 24 h
  quota; kept apart from `jobs` so that deleting a job does not give its minutes back.
- `idempotency`: (tenant, Idempotency-Key) -> the job it made, with a hash of the request.
- `webhook_events`: the outbox. An event is written when a job ends and delivered by any
  gateway (a lease per attempt), retried with backoff; its id is the `webhook-id` header.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("key_hash", sa.Text, nullable=False, unique=True),
        sa.Column("key_prefix", sa.Text, nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("minutes_per_day", sa.Float),
        sa.Column("concurrent", sa.Integer),
        sa.Column("webhook_url", sa.Text),
        sa.Column("webhook_secret", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
    )
    op.add_column("jobs", sa.Column("tenant", sa.Text, nullable=False, server_default=""))
    op.add_column("jobs", sa.Column("callback_url", sa.Text))
    op.add_column("jobs", sa.Column("source_url", sa.Text))
    op.add_column("jobs", sa.Column("title", sa.Text))
    op.add_column("jobs", sa.Column("rank", sa.Integer, nullable=False, server_default="0"))
    op.create_index("jobs_tenant_created", "jobs", ["tenant", "created_at"])
    # an admin's listing of every job, newest first: without it, a sort of the whole table
    # (806 ms for a page of 1,000,000 jobs: bench_tenants)
    op.create_index("jobs_created", "jobs", ["created_at"])
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("usage_tenant_at", "usage", ["tenant", "at"])
    op.create_table(
        "idempotency",
        sa.Column("tenant", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("job_id", sa.Text),  # None while the first request is being processed
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("lease_until", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float),
    )
    op.create_index("webhook_events_due", "webhook_events", ["status", "next_at"])
    op.create_index("webhook_events_job", "webhook_events", ["job_id"])


def downgrade() -> None:
    op.drop_table("webhook_events")
    op.drop_table("idempotency")
    op.drop_index("usage_tenant_at", "usage")
    op.drop_table("usage")
    op.drop_index("jobs_created", "jobs")
    op.drop_index("jobs_tenant_created", "jobs")
    with op.batch_alter_table("jobs") as batch:  # SQLite drops a column by copying the table
        for column in ("rank", "title", "source_url", "callback_url", "tenant"):
            batch.drop_column(column)
    op.drop_table("tenants")
