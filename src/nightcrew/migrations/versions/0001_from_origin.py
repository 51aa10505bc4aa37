"""The origin's table converted in place into nightcrew 0.1's task table.

Revision ID: 0001
Revises: origin
Create Date: 2025-01-01

The end schema is nightcrew 0.1's, unchanged: 0.1 shipped this revision as the creation of
the table from nothing (recorded, then, in the default ``alembic_version``), and databases
stamped ``0001`` by it keep meaning the same schema. It now starts from the origin's table
(revision ``origin``), so a fresh install and the adoption of an origin database run the
same statements. Types are the plain database types behind the models' decorators:
``StatusType`` is VARCHAR(16) with a check constraint, ``UTCDateTime`` is TIMESTAMP WITH
TIME ZONE (DATETIME on SQLite), JSON is JSONB on PostgreSQL, the id is BIGINT on PostgreSQL
(INTEGER on SQLite, where only ``INTEGER PRIMARY KEY`` aliases the rowid). Constraint and
index names follow the models' naming convention, spelled out in full. Hand-written, never
importing ``nightcrew.models``: a migration keeps meaning what it meant.

Upgrade, on every row: ids, statuses, processor type and JSON, ``delay``, ``info`` and
timestamps are kept. The origin's naive timestamps are UTC (its code writes
``datetime.utcnow()``): PostgreSQL converts them with ``AT TIME ZONE 'UTC'`` whatever the
session's time zone; SQLite stores naive UTC text either way, and values the origin's
``CURRENT_TIMESTAMP`` default wrote without a fraction get ``.000000``, so all stored text
has one format and compares as time. The enum becomes VARCHAR(16) with nightcrew's check
constraint, and the enum type is dropped unless something else uses it; ``info`` becomes
JSONB; the id becomes BIGINT and keeps its sequence and the sequence's position (SQLite: the
rowid goes on from the largest id). The engine's columns are added: ``start_at`` is the
row's ``created_at`` (the origin ran a PENDING task as soon as its runner saw it),
``attempts`` 1 for rows the origin ran (WORKING, COMPLETED, ERROR), 0 otherwise,
``finished_at`` the ``updated_at`` of COMPLETED and ERROR rows, queue ``default``, priority
0, ``max_attempts`` 1, the rest empty.

Downgrade hands back the origin's table (enum, naive UTC timestamps, JSON, integer id,
``maintenance_tasks_pkey``, ``ix_maintenance_tasks_status``) with every row; the engine's
columns are dropped, and with them what only nightcrew knew (queue, priority, a delayed
``start_at``: a PENDING task runs at the origin's next run; leases: a WORKING row is left to
the origin's rule for stale WORKING rows). CANCELLED, a status the origin's enum lacks,
becomes ERROR: the origin shows it as failed and never runs it, which is what cancelled
means to it. Its ``info`` says so: an object ``info`` keeps its keys and gets ``error``
("cancelled in nightcrew") if it had none, and ``nightcrew_status`` = ``"CANCELLED"``; any
other ``info`` value is kept under the key ``info``. On SQLite the origin's table comes
back as revision ``origin`` makes it (VARCHAR(9), no check constraint).

SQLite cannot alter columns: the table is rebuilt (rows copied out to a temporary table,
the table dropped and created again under its own name, rows copied back), with foreign
keys deferred to the commit so tables referring to task ids keep their references.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = "origin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "maintenance_tasks"
ENUM = "maintenancetaskstatus"
ORIGIN_STATUSES = ("INACTIVE", "PENDING", "WORKING", "COMPLETED", "ERROR")
ORIGIN_LABELS = ", ".join(f"'{s}'" for s in ORIGIN_STATUSES)
ORIGIN_PKEY = "maintenance_tasks_pkey"
SCRATCH = "_nightcrew_rebuild"

# Copied from the models when this revision was written; later status changes belong in
# a new revision that replaces the check constraint (and the partial unique index).
ALL_STATUSES = "'INACTIVE', 'PENDING', 'WORKING', 'COMPLETED', 'ERROR', 'CANCELLED'"
OPEN_STATUSES = "'INACTIVE', 'PENDING', 'WORKING'"
RAN = "'WORKING', 'COMPLETED', 'ERROR'"
ENDED = "'COMPLETED', 'ERROR'"

CLAIMABLE = "status = 'PENDING' AND waiting_on = 0"
IN_FLIGHT = "status = 'WORKING'"
OPEN_UNIQUE_KEY = f"unique_key IS NOT NULL AND status IN ({OPEN_STATUSES})"

CANCELLED_NOTE = "cancelled in nightcrew"


def _dialect() -> str:
    return op.get_context().dialect.name


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def create_table_0001() -> None:
    """nightcrew 0.1's table, exactly as 0.1's revision 0001 created it."""
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


def create_indexes_0001() -> None:
    """nightcrew 0.1's indexes."""
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


def drop_indexes_0001() -> None:
    for name in (
        "uq_maintenance_tasks_unique_key_open",
        "ix_maintenance_tasks_lease",
        "ix_maintenance_tasks_status_updated",
        "ix_maintenance_tasks_claimable_any",
        "ix_maintenance_tasks_claimable",
    ):
        op.drop_index(name, table_name=TABLE)


#: The origin's table on SQLite, as revision ``origin`` creates it (written out: Alembic
#: would name the primary key by nightcrew's naming convention).
ORIGIN_TABLE_SQLITE = (
    f"CREATE TABLE {TABLE} (\n"
    "\tid INTEGER NOT NULL, \n"
    "\tstatus VARCHAR(9) NOT NULL, \n"
    "\tprocessor_type VARCHAR NOT NULL, \n"
    "\tprocessor_json TEXT NOT NULL, \n"
    "\tdelay INTEGER NOT NULL, \n"
    "\tstarted_at DATETIME, \n"
    "\tinfo JSON, \n"
    "\tcreated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, \n"
    "\tupdated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, \n"
    "\tPRIMARY KEY (id)\n"
    ")"
)


def create_origin_table_sqlite() -> None:
    op.execute(ORIGIN_TABLE_SQLITE)


def rebuild_sqlite(create: Callable[[], None], columns: dict[str, str]) -> None:
    """SQLite: replace the table by the one ``create()`` makes, rows copied through.

    ``columns`` maps each column of the new table that gets a value to the SQL computing
    it from the old row. The table is dropped and created again under its own name
    (rather than renamed), so its stored ``CREATE TABLE`` is exactly the one written here
    and other tables' references to it are never rewritten; foreign keys are checked at
    commit, when every row is back. Indexes go with the old table: the caller makes the
    new ones.
    """
    op.execute("PRAGMA defer_foreign_keys = ON")
    op.execute(f"CREATE TEMP TABLE {SCRATCH} AS SELECT * FROM {TABLE}")
    op.execute(f"DROP TABLE {TABLE}")
    create()
    op.execute(
        f"INSERT INTO {TABLE} ({', '.join(columns)}) "
        f"SELECT {', '.join(columns.values())} FROM temp.{SCRATCH}"
    )
    op.execute(f"DROP TABLE temp.{SCRATCH}")


def _sqlite_text_time(column: str) -> str:
    """A naive UTC text timestamp in SQLAlchemy's format (``CURRENT_TIMESTAMP`` gives
    none of the fraction)."""
    return f"CASE WHEN length({column}) = 19 THEN {column} || '.000000' ELSE {column} END"


def upgrade() -> None:
    if _dialect() == "postgresql":
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()
    create_indexes_0001()


def _upgrade_postgresql() -> None:
    op.execute("DROP INDEX IF EXISTS ix_maintenance_tasks_status")
    # The primary key gets nightcrew's name, whatever the origin's database called it.
    op.execute(
        "DO $$ DECLARE pk name; BEGIN "
        f"SELECT conname INTO pk FROM pg_constraint WHERE conrelid = '{TABLE}'::regclass "
        "AND contype = 'p'; "
        "IF pk <> 'pk_maintenance_tasks' THEN "
        f"EXECUTE 'ALTER TABLE {TABLE} RENAME CONSTRAINT ' || quote_ident(pk) "
        "|| ' TO pk_maintenance_tasks'; END IF; END $$"
    )
    # One statement, so a big table is rewritten once.
    op.execute(
        f"ALTER TABLE {TABLE} "
        "ALTER COLUMN id TYPE bigint, "
        "ALTER COLUMN status TYPE varchar(16) USING status::text, "
        "ALTER COLUMN processor_type TYPE varchar(255), "
        "ALTER COLUMN started_at TYPE timestamptz USING started_at AT TIME ZONE 'UTC', "
        "ALTER COLUMN info TYPE jsonb USING info::jsonb, "
        "ALTER COLUMN created_at DROP DEFAULT, "
        "ALTER COLUMN created_at TYPE timestamptz USING created_at AT TIME ZONE 'UTC', "
        "ALTER COLUMN updated_at DROP DEFAULT, "
        "ALTER COLUMN updated_at TYPE timestamptz USING updated_at AT TIME ZONE 'UTC', "
        "ADD COLUMN queue varchar(64) NOT NULL DEFAULT 'default', "
        "ADD COLUMN priority integer NOT NULL DEFAULT 0, "
        "ADD COLUMN start_at timestamptz, "
        "ADD COLUMN attempts integer NOT NULL DEFAULT 0, "
        "ADD COLUMN max_attempts integer NOT NULL DEFAULT 1, "
        "ADD COLUMN timeout double precision, "
        "ADD COLUMN lease_token varchar(64), "
        "ADD COLUMN lease_expires_at timestamptz, "
        "ADD COLUMN cancel_requested_at timestamptz, "
        "ADD COLUMN unique_key varchar(255), "
        "ADD COLUMN waiting_on integer NOT NULL DEFAULT 0, "
        "ADD COLUMN progress double precision, "
        "ADD COLUMN progress_message text, "
        "ADD COLUMN error jsonb, "
        "ADD COLUMN finished_at timestamptz"
    )
    op.execute(
        f"UPDATE {TABLE} SET start_at = created_at, "
        f"attempts = CASE WHEN status IN ({RAN}) THEN 1 ELSE 0 END, "
        f"finished_at = CASE WHEN status IN ({ENDED}) THEN updated_at END"
    )
    # 0.1's columns had no server defaults: the ones above were only to fill the rows.
    op.execute(
        f"ALTER TABLE {TABLE} "
        "ALTER COLUMN start_at SET NOT NULL, "
        "ALTER COLUMN queue DROP DEFAULT, "
        "ALTER COLUMN priority DROP DEFAULT, "
        "ALTER COLUMN attempts DROP DEFAULT, "
        "ALTER COLUMN max_attempts DROP DEFAULT, "
        "ALTER COLUMN waiting_on DROP DEFAULT, "
        f"ADD CONSTRAINT ck_maintenance_tasks_status CHECK (status IN ({ALL_STATUSES})), "
        "ADD CONSTRAINT ck_maintenance_tasks_max_attempts CHECK (max_attempts >= 1), "
        "ADD CONSTRAINT ck_maintenance_tasks_waiting_on CHECK (waiting_on >= 0)"
    )
    _sequence_as("bigint")
    op.execute(
        f"DO $$ BEGIN DROP TYPE {ENUM}; "
        "EXCEPTION WHEN dependent_objects_still_exist OR undefined_object THEN NULL; END $$"
    )


def _sequence_as(sql_type: str) -> None:
    """The id's sequence (SERIAL's, whatever its name) takes the id's type, keeping its
    position: a BIGINT id on an INTEGER sequence would stop at 2**31 all the same."""
    op.execute(
        "DO $$ DECLARE seq text; BEGIN "
        f"seq := pg_get_serial_sequence('{TABLE}', 'id'); "
        f"IF seq IS NOT NULL THEN EXECUTE 'ALTER SEQUENCE ' || seq || ' AS {sql_type}'; "
        "END IF; END $$"
    )


def _upgrade_sqlite() -> None:
    rebuild_sqlite(
        create_table_0001,
        {
            "id": "id",
            "status": "status",
            "processor_type": "processor_type",
            "processor_json": "processor_json",
            "queue": "'default'",
            "priority": "0",
            "delay": "delay",
            "start_at": _sqlite_text_time("created_at"),
            "attempts": f"CASE WHEN status IN ({RAN}) THEN 1 ELSE 0 END",
            "max_attempts": "1",
            "waiting_on": "0",
            "info": "info",
            "started_at": _sqlite_text_time("started_at"),
            "finished_at": (
                f"CASE WHEN status IN ({ENDED}) THEN {_sqlite_text_time('updated_at')} END"
            ),
            "created_at": _sqlite_text_time("created_at"),
            "updated_at": _sqlite_text_time("updated_at"),
        },
    )


def downgrade() -> None:
    drop_indexes_0001()
    if _dialect() == "postgresql":
        _downgrade_postgresql()
    else:
        _downgrade_sqlite()
    op.execute(f"CREATE INDEX ix_maintenance_tasks_status ON {TABLE} (status)")


def _downgrade_postgresql() -> None:
    info = (
        "CASE WHEN info IS NULL THEN '{}'::jsonb WHEN jsonb_typeof(info) = 'object' "
        "THEN info ELSE jsonb_build_object('info', info) END"
    )
    op.execute(
        f"UPDATE {TABLE} SET status = 'ERROR', "
        f"info = jsonb_build_object('error', '{CANCELLED_NOTE}') || {info} "
        "|| jsonb_build_object('nightcrew_status', 'CANCELLED') "
        "WHERE status = 'CANCELLED'"
    )
    op.execute(
        f"ALTER TABLE {TABLE} "
        "DROP CONSTRAINT ck_maintenance_tasks_status, "
        "DROP CONSTRAINT ck_maintenance_tasks_max_attempts, "
        "DROP CONSTRAINT ck_maintenance_tasks_waiting_on"
    )
    op.execute(
        f"DO $$ BEGIN CREATE TYPE {ENUM} AS ENUM ({ORIGIN_LABELS}); "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    op.execute(
        f"ALTER TABLE {TABLE} "
        "DROP COLUMN queue, "
        "DROP COLUMN priority, "
        "DROP COLUMN start_at, "
        "DROP COLUMN attempts, "
        "DROP COLUMN max_attempts, "
        "DROP COLUMN timeout, "
        "DROP COLUMN lease_token, "
        "DROP COLUMN lease_expires_at, "
        "DROP COLUMN cancel_requested_at, "
        "DROP COLUMN unique_key, "
        "DROP COLUMN waiting_on, "
        "DROP COLUMN progress, "
        "DROP COLUMN progress_message, "
        "DROP COLUMN error, "
        "DROP COLUMN finished_at, "
        "ALTER COLUMN id TYPE integer, "
        f"ALTER COLUMN status TYPE {ENUM} USING status::{ENUM}, "
        "ALTER COLUMN processor_type TYPE varchar, "
        "ALTER COLUMN started_at TYPE timestamp USING started_at AT TIME ZONE 'UTC', "
        "ALTER COLUMN info TYPE json USING info::json, "
        "ALTER COLUMN created_at TYPE timestamp USING created_at AT TIME ZONE 'UTC', "
        "ALTER COLUMN created_at SET DEFAULT CURRENT_TIMESTAMP, "
        "ALTER COLUMN updated_at TYPE timestamp USING updated_at AT TIME ZONE 'UTC', "
        "ALTER COLUMN updated_at SET DEFAULT CURRENT_TIMESTAMP"
    )
    _sequence_as("integer")
    op.execute(f"ALTER TABLE {TABLE} RENAME CONSTRAINT pk_maintenance_tasks TO {ORIGIN_PKEY}")


def _downgrade_sqlite() -> None:
    obj = (
        "CASE WHEN info IS NULL THEN '{}' WHEN json_type(info) = 'object' THEN info "
        "ELSE json_object('info', json(info)) END"
    )
    with_error = (
        f"CASE WHEN json_type({obj}, '$.error') IS NULL "
        f"THEN json_set({obj}, '$.error', '{CANCELLED_NOTE}') ELSE {obj} END"
    )
    rebuild_sqlite(
        create_origin_table_sqlite,
        {
            "id": "id",
            "status": "CASE WHEN status = 'CANCELLED' THEN 'ERROR' ELSE status END",
            "processor_type": "processor_type",
            "processor_json": "processor_json",
            "delay": "delay",
            "started_at": "started_at",
            "info": (
                "CASE WHEN status = 'CANCELLED' "
                f"THEN json_set({with_error}, '$.nightcrew_status', 'CANCELLED') "
                "ELSE info END"
            ),
            "created_at": "created_at",
            "updated_at": "updated_at",
        },
    )
