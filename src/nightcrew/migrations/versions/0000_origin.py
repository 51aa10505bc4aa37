"""The origin's own table, exactly as the origin system's migration 059 makes it.

Revision ID: origin
Revises:
Create Date: 2025-07-19

The root of nightcrew's chain. A fresh install creates this table and the next revision
(0001) converts it, so every install runs the same conversion that adopts an existing
origin database in place; a database that already holds this table (made by the origin's
own Alembic, recorded in its ``alembic_version``) is stamped ``origin`` by
`nightcrew.migrate.upgrade` instead of running this.

The table, described from the origin's migration: ``id`` an integer primary key (SERIAL,
constraint named by the database: ``maintenance_tasks_pkey`` on PostgreSQL); ``status`` the
PostgreSQL enum type ``maintenancetaskstatus`` (INACTIVE, PENDING, WORKING, COMPLETED,
ERROR), NOT NULL, indexed by ``ix_maintenance_tasks_status``, no server default (on SQLite:
VARCHAR(9), no check constraint, as SQLAlchemy's Enum makes it); ``processor_type`` VARCHAR
and ``processor_json`` TEXT, NOT NULL; ``delay`` INTEGER NOT NULL, no server default;
``started_at`` a naive TIMESTAMP; ``info`` JSON (not JSONB); ``created_at`` and
``updated_at`` naive TIMESTAMP NOT NULL with ``DEFAULT CURRENT_TIMESTAMP``.

Downgrade drops the table, and the enum type unless something else still uses it.
Hand-written, never importing ``nightcrew.models``: a migration keeps meaning what it meant.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "origin"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "maintenance_tasks"
ENUM = "maintenancetaskstatus"
STATUSES = ("INACTIVE", "PENDING", "WORKING", "COMPLETED", "ERROR")
LABELS = ", ".join(f"'{s}'" for s in STATUSES)

# Written out rather than built with op.create_table: Alembic would apply the naming
# convention of nightcrew's metadata to the primary key, and this is the origin's table,
# named as the origin's database names it. The text is what SQLAlchemy prints for 059.
CREATE_TABLE = {
    "postgresql": (
        f"CREATE TABLE {TABLE} (\n"
        "\tid SERIAL NOT NULL, \n"
        f"\tstatus {ENUM} NOT NULL, \n"
        "\tprocessor_type VARCHAR NOT NULL, \n"
        "\tprocessor_json TEXT NOT NULL, \n"
        "\tdelay INTEGER NOT NULL, \n"
        "\tstarted_at TIMESTAMP WITHOUT TIME ZONE, \n"
        "\tinfo JSON, \n"
        "\tcreated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, \n"
        "\tupdated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, \n"
        "\tPRIMARY KEY (id)\n"
        ")"
    ),
    "sqlite": (
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
    ),
}
CREATE_INDEX = f"CREATE INDEX ix_maintenance_tasks_status ON {TABLE} (status)"


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        # An existing type (another table of the application uses it) is reused instead
        # of failing the install.
        op.execute(
            f"DO $$ BEGIN CREATE TYPE {ENUM} AS ENUM ({LABELS}); "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
    op.execute(CREATE_TABLE[dialect])
    op.execute(CREATE_INDEX)


def downgrade() -> None:
    op.execute("DROP INDEX ix_maintenance_tasks_status")
    op.execute(f"DROP TABLE {TABLE}")
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            f"DO $$ BEGIN DROP TYPE {ENUM}; "
            "EXCEPTION WHEN dependent_objects_still_exist OR undefined_object THEN NULL; END $$"
        )
