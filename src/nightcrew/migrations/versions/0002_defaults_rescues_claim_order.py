"""Server defaults on the engine's columns, ``rescues``, claim order by ``created_at``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

- Every column the engine added (and ``delay``, ``created_at``, ``updated_at``) gets a
  server default: plain SQL naming only the origin's columns, as the origin's data
  migrations write it (``INSERT INTO maintenance_tasks (status, processor_type,
  processor_json, delay, created_at, updated_at) VALUES (...)``), makes a runnable task:
  queue ``default``, priority 0, due at once, attempts 0, ``max_attempts`` 1, not waiting,
  no rescues. The current time is ``CURRENT_TIMESTAMP`` on PostgreSQL and, on SQLite,
  ``strftime('%Y-%m-%d %H:%M:%f000', 'now')``: UTC text in the format SQLAlchemy writes
  there (SQLite's own ``CURRENT_TIMESTAMP`` has no fraction), so stored times compare as
  text. ``status`` keeps no server default, as in the origin.
- ``rescues INTEGER NOT NULL DEFAULT 0``: how often a task was handed back after its
  worker died, counted apart from ``attempts``.
- The claimable indexes (same names) become ``(priority DESC, created_at, id)`` and
  ``(queue, priority DESC, created_at, id)``: equal priorities run oldest first, as the
  origin's runner ran them. They now hold only tasks without a ``delay``; tasks with one
  (the origin's spacing: a worker waits ``delay`` seconds after such a task before the
  next) get a partial index of their own, ``ix_maintenance_tasks_spaced``, so neither
  kind of claim walks past the other kind.

Downgrade drops ``rescues`` (the counts are lost) and the defaults, and restores 0.1's
claim indexes. On SQLite the table is rebuilt as in revision 0001 (rows copied out, the
table created again under its own name, rows copied back, foreign keys checked at commit).
Hand-written, never importing ``nightcrew.models``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "maintenance_tasks"
SCRATCH = "_nightcrew_rebuild"

ALL_STATUSES = "'INACTIVE', 'PENDING', 'WORKING', 'COMPLETED', 'ERROR', 'CANCELLED'"
OPEN_STATUSES = "'INACTIVE', 'PENDING', 'WORKING'"
CLAIMABLE_01 = "status = 'PENDING' AND waiting_on = 0"
CLAIMABLE = "status = 'PENDING' AND waiting_on = 0 AND delay = 0"
SPACED = "status = 'PENDING' AND waiting_on = 0 AND delay > 0"
IN_FLIGHT = "status = 'WORKING'"
OPEN_UNIQUE_KEY = f"unique_key IS NOT NULL AND status IN ({OPEN_STATUSES})"

#: The current UTC time as each database stores it (see the docstring).
NOW = {
    "postgresql": "CURRENT_TIMESTAMP",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f000', 'now')",
}

#: Column -> server default added by this revision (the time: see `NOW`).
DEFAULTS = {
    "queue": "'default'",
    "priority": "0",
    "delay": "0",
    "start_at": None,
    "attempts": "0",
    "max_attempts": "1",
    "waiting_on": "0",
    "created_at": None,
    "updated_at": None,
}

#: The columns of 0.1's table, which both tables of this revision share.
COLUMNS_0001 = (
    "id",
    "status",
    "processor_type",
    "processor_json",
    "queue",
    "priority",
    "delay",
    "start_at",
    "attempts",
    "max_attempts",
    "timeout",
    "lease_token",
    "lease_expires_at",
    "cancel_requested_at",
    "unique_key",
    "waiting_on",
    "progress",
    "progress_message",
    "info",
    "error",
    "started_at",
    "finished_at",
    "created_at",
    "updated_at",
)


def _dialect() -> str:
    return op.get_context().dialect.name


def _now() -> sa.TextClause:
    return sa.text(NOW[_dialect()])


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _checks() -> list[sa.CheckConstraint]:
    return [
        sa.CheckConstraint(f"status IN ({ALL_STATUSES})", name=op.f("ck_maintenance_tasks_status")),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_maintenance_tasks_max_attempts")),
        sa.CheckConstraint("waiting_on >= 0", name=op.f("ck_maintenance_tasks_waiting_on")),
    ]


def create_table_0002() -> None:
    """The table as this revision leaves it (SQLite's rebuild; PostgreSQL alters)."""
    now = _now()
    op.create_table(
        TABLE,
        sa.Column("id", _id(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("processor_type", sa.String(255), nullable=False),
        sa.Column("processor_json", sa.Text(), nullable=False),
        sa.Column("queue", sa.String(64), server_default="default", nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("delay", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("start_at", _when(), server_default=now, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("rescues", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=True),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", _when(), nullable=True),
        sa.Column("cancel_requested_at", _when(), nullable=True),
        sa.Column("unique_key", sa.String(255), nullable=True),
        sa.Column("waiting_on", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("progress_message", sa.Text(), nullable=True),
        sa.Column("info", _json(), nullable=True),
        sa.Column("error", _json(), nullable=True),
        sa.Column("started_at", _when(), nullable=True),
        sa.Column("finished_at", _when(), nullable=True),
        sa.Column("created_at", _when(), server_default=now, nullable=False),
        sa.Column("updated_at", _when(), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maintenance_tasks")),
        *_checks(),
    )


def create_table_0001() -> None:
    """0.1's table, as revision 0001 leaves it (SQLite's downgrade rebuild)."""
    op.create_table(
        TABLE,
        sa.Column("id", _id(), nullable=False),
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
        *_checks(),
    )


def create_claim_indexes(with_created_at: bool) -> None:
    """The claimable indexes: this revision's order, or (downgrade) 0.1's."""
    order: list[Any] = [sa.text("priority DESC"), "created_at", "id"]
    claimable = CLAIMABLE if with_created_at else CLAIMABLE_01
    if not with_created_at:
        order.remove("created_at")
    # Workers of named queues walk the first, workers of all queues the second.
    op.create_index(
        "ix_maintenance_tasks_claimable",
        TABLE,
        ["queue", *order],
        postgresql_where=sa.text(claimable),
        sqlite_where=sa.text(claimable),
    )
    op.create_index(
        "ix_maintenance_tasks_claimable_any",
        TABLE,
        order,
        postgresql_where=sa.text(claimable),
        sqlite_where=sa.text(claimable),
    )
    if with_created_at:
        op.create_index(
            "ix_maintenance_tasks_spaced",
            TABLE,
            order,
            postgresql_where=sa.text(SPACED),
            sqlite_where=sa.text(SPACED),
        )


def create_other_indexes() -> None:
    """The indexes this revision does not change (SQLite's rebuild drops them)."""
    op.create_index("ix_maintenance_tasks_status_updated", TABLE, ["status", "updated_at"])
    op.create_index(
        "ix_maintenance_tasks_lease",
        TABLE,
        ["lease_expires_at"],
        postgresql_where=sa.text(IN_FLIGHT),
        sqlite_where=sa.text(IN_FLIGHT),
    )
    op.create_index(
        "uq_maintenance_tasks_unique_key_open",
        TABLE,
        ["unique_key"],
        unique=True,
        postgresql_where=sa.text(OPEN_UNIQUE_KEY),
        sqlite_where=sa.text(OPEN_UNIQUE_KEY),
    )


def rebuild_sqlite(create: Callable[[], None], columns: Sequence[str]) -> None:
    """SQLite: replace the table by the one ``create()`` makes, copying ``columns``.

    Dropped and created again under its own name rather than renamed, so its stored
    ``CREATE TABLE`` is exactly the one written here and other tables' references to it
    are never rewritten; foreign keys are checked at commit, when every row is back.
    Indexes go with the old table: the caller makes the new ones.
    """
    listed = ", ".join(columns)
    op.execute("PRAGMA defer_foreign_keys = ON")
    op.execute(f"CREATE TEMP TABLE {SCRATCH} AS SELECT * FROM {TABLE}")
    op.execute(f"DROP TABLE {TABLE}")
    create()
    op.execute(f"INSERT INTO {TABLE} ({listed}) SELECT {listed} FROM temp.{SCRATCH}")
    op.execute(f"DROP TABLE temp.{SCRATCH}")


def upgrade() -> None:
    if _dialect() == "sqlite":
        rebuild_sqlite(create_table_0002, COLUMNS_0001)
        create_claim_indexes(with_created_at=True)
        create_other_indexes()
        return
    now = NOW["postgresql"]
    defaults = ", ".join(
        f"ALTER COLUMN {column} SET DEFAULT {now if value is None else value}"
        for column, value in DEFAULTS.items()
    )
    op.execute(f"ALTER TABLE {TABLE} ADD COLUMN rescues integer NOT NULL DEFAULT 0, {defaults}")
    op.drop_index("ix_maintenance_tasks_claimable_any", table_name=TABLE)
    op.drop_index("ix_maintenance_tasks_claimable", table_name=TABLE)
    create_claim_indexes(with_created_at=True)


def downgrade() -> None:
    if _dialect() == "sqlite":
        rebuild_sqlite(create_table_0001, COLUMNS_0001)
        create_claim_indexes(with_created_at=False)
        create_other_indexes()
        return
    defaults = ", ".join(f"ALTER COLUMN {column} DROP DEFAULT" for column in DEFAULTS)
    op.execute(f"ALTER TABLE {TABLE} DROP COLUMN rescues, {defaults}")
    op.drop_index("ix_maintenance_tasks_spaced", table_name=TABLE)
    op.drop_index("ix_maintenance_tasks_claimable_any", table_name=TABLE)
    op.drop_index("ix_maintenance_tasks_claimable", table_name=TABLE)
    create_claim_indexes(with_created_at=False)
