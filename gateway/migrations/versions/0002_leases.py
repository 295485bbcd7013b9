"""Leases: the gateway running a job (lease_owner) and until when (lease_until, database clock
in Unix seconds). NULL: nobody runs it; a runnable job is then claimable at once.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("lease_owner", sa.Text))
    op.add_column("jobs", sa.Column("lease_until", sa.Float))
    # the claim looks for runnable jobs by status and lease, oldest first
    op.create_index("jobs_claim", "jobs", ["status", "lease_until", "created_at"])


def downgrade() -> None:
    op.drop_index("jobs_claim", "jobs")
    op.drop_column("jobs", "lease_until")
    op.drop_column("jobs", "lease_owner")
