"""The task table: maintenance_tasks with its check constraints and indexes.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written by hand against ``nightcrew.models`` (not imported: a migration must keep
meaning what it meant when it shipped). Types are the plain database types behind the
models' decorators: ``StatusType`` is VARCHAR(16), ``UTCDateTime`` is TIMESTAMP WITH TIME
ZONE (DATETIME on SQLite), JSON is JSONB on PostgreSQL, and the id is BIGINT (BIGSERIAL)
on PostgreSQL but INTEGER on SQLite, where only ``INTEGER PRIMARY KEY`` aliases the rowid.
Constraint and index names follow the models' naming convention, spelled out in full.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "maintenance_tasks"

# Copied from the models when this revision was written; later status changes belong in
# a new revision that replaces the check constraint (and the partial unique index).
ALL_STATUSES = "'INACTIVE', 'PENDING', 'WORKING', 'COMPLETED', 'ERROR', 'CANCELLED'"
OPEN_STATUSES = "'INACTIVE', 'PENDING', 'WORKING'"

CLAIMABLE = "status = 'PENDING' AND waiting_on = 0"
IN_FLIGHT = "status = 'WORKING'"
OPEN_UNIQUE_KEY = f"unique_key IS NOT NULL AND status IN ({OPEN_STATUSES})"


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("processor_type", sa.String(255), nullable=False),
        sa.Column("processor_json", sa.Text(), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("delay", sa.Integer(), nullable=False),
        sa.Column("start_at", _when(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=True),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", _when(), nullable=True),
        sa.Column("cancel_requested_at", _when(), nullable=True),
        sa.Column("unique_key", sa.String(255), nullable=True),
        sa.Column("waiting_on", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("progress_message", sa.Text(), nullable=True),
        sa.Column("info", _json(), nullable=True),
        sa.Column("error", _json(), nullable=True),
        sa.Column("started_at", _when(), nullable=True),
        sa.Column("finished_at", _when(), nullable=True),
        sa.Column("created_at", _when(), nullable=False),
        sa.Column("updated_at", _when(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maintenance_tasks")),
        sa.CheckConstraint(f"status IN ({ALL_STATUSES})", name=op.f("ck_maintenance_tasks_status")),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_maintenance_tasks_max_attempts")),
        sa.CheckConstraint("waiting_on >= 0", name=op.f("ck_maintenance_tasks_waiting_on")),
    )
    # The claim query's index: only claimable rows, in claim order within a queue.
    op.create_index(
        "ix_maintenance_tasks_claimable",
        TABLE,
        ["queue", sa.text("priority DESC"), "id"],
        postgresql_where=sa.text(CLAIMABLE),
        sqlite_where=sa.text(CLAIMABLE),
    )
    # The same for workers of all queues: claim order without a leading queue column.
    op.create_index(
        "ix_maintenance_tasks_claimable_any",
        TABLE,
        [sa.text("priority DESC"), "id"],
        postgresql_where=sa.text(CLAIMABLE),
        sqlite_where=sa.text(CLAIMABLE),
    )
    # Listing by status and recency.
    op.create_index("ix_maintenance_tasks_status_updated", TABLE, ["status", "updated_at"])
    # Lease rescue: only in-flight rows.
    op.create_index(
        "ix_maintenance_tasks_lease",
        TABLE,
        ["lease_expires_at"],
        postgresql_where=sa.text(IN_FLIGHT),
        sqlite_where=sa.text(IN_FLIGHT),
    )
    # At most one open task per unique key.
    op.create_index(
        "uq_maintenance_tasks_unique_key_open",
        TABLE,
        ["unique_key"],
        unique=True,
        postgresql_where=sa.text(OPEN_UNIQUE_KEY),
        sqlite_where=sa.text(OPEN_UNIQUE_KEY),
    )


def downgrade() -> None:
    op.drop_index("uq_maintenance_tasks_unique_key_open", table_name=TABLE)
    op.drop_index("ix_maintenance_tasks_lease", table_name=TABLE)
    op.drop_index("ix_maintenance_tasks_status_updated", table_name=TABLE)
    op.drop_index("ix_maintenance_tasks_claimable_any", table_name=TABLE)
    op.drop_index("ix_maintenance_tasks_claimable", table_name=TABLE)
    op.drop_table(TABLE)
