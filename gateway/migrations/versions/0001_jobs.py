"""The jobs table as the store kept it before migrations; adopts a file made by that store.

A SQLite file written before this revision has the table (perhaps without the columns added
later: notes, peak, ready_s) and no alembic_version: this revision adds what it lacks and
leaves its rows alone. An empty database gets the whole table.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def added_columns() -> list[sa.Column]:
    """Columns added after the first release, as the pre-migration store added them on open
    (new objects each call: a Column belongs to one table)."""
    return [
        sa.Column("notes", sa.Text, nullable=False, server_default="[]"),
        sa.Column("peak", sa.Float),
        sa.Column("ready_s", sa.Float, nullable=False, server_default=sa.text("0")),
    ]


INDEXES = {"jobs_status": ["status"], "jobs_hash": ["content_hash"]}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    indexes: set[str] = set()
    if not inspector.has_table("jobs"):
        op.create_table(
            "jobs",
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("status", sa.Text, nullable=False),
            sa.Column("progress", sa.Float, nullable=False, server_default=sa.text("0")),
            sa.Column("stage", sa.Text, nullable=False, server_default=""),
            sa.Column("model", sa.Text, nullable=False, server_default=""),
            sa.Column("model_reason", sa.Text, nullable=False, server_default=""),
            sa.Column("stems", sa.Text, nullable=False, server_default="[]"),
            sa.Column("error", sa.Text),
            sa.Column("warnings", sa.Text, nullable=False, server_default="[]"),
            *added_columns(),
            sa.Column("options", sa.Text, nullable=False, server_default="{}"),
            sa.Column("filename", sa.Text, nullable=False, server_default=""),
            sa.Column("content_hash", sa.Text, nullable=False, server_default=""),
            sa.Column("n_frames", sa.Integer, nullable=False, server_default=sa.text("0")),
            sa.Column("duration_s", sa.Float, nullable=False, server_default=sa.text("0")),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        )
    else:
        indexes = {i["name"] for i in inspector.get_indexes("jobs")}
        have = {c["name"] for c in inspector.get_columns("jobs")}
        for column in added_columns():
            if column.name not in have:
                op.add_column("jobs", column)
    for name, columns in INDEXES.items():
        if name not in indexes:
            op.create_index(name, "jobs", columns)


def downgrade() -> None:
    op.drop_table("jobs")
