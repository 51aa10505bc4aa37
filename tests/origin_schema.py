"""The schemas nightcrew must adopt, written out by hand: never derived from nightcrew.models.

- The origin's ``maintenance_tasks`` as its Alembic migration 059 makes it (described from
  the origin's public repository: an integer id, the ``maintenancetaskstatus`` enum,
  naive timestamps, JSON), with rows in every origin status written as the origin's code
  writes them (naive UTC datetimes; on SQLite SQLAlchemy's text format) and one row left
  to the table's ``CURRENT_TIMESTAMP`` defaults.
- nightcrew 0.1's table, as 0.1's only revision ``0001`` created it, recorded in the
  default ``alembic_version``.
- `OriginTask`: the origin's table as the origin's code maps it (an ORM model of its own
  metadata), to show that code still runs on a table nightcrew hands back.

The DDL strings are what SQLAlchemy's compiler prints for those tables, so the table a
migration makes can be compared with them as text on SQLite.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Enum, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ORIGIN_STATUSES = ("INACTIVE", "PENDING", "WORKING", "COMPLETED", "ERROR")
ENUM_TYPE = "maintenancetaskstatus"
PROCESSOR = "app.maintenance.UserVersionUpgradeProcessor"

_LABELS = ", ".join(f"'{s}'" for s in ORIGIN_STATUSES)

ORIGIN_TABLE_SQLITE = (
    "CREATE TABLE maintenance_tasks (\n"
    "\tid INTEGER NOT NULL, \n"
    "\tstatus VARCHAR(9) NOT NULL, \n"
    "\tprocessor_type VARCHAR NOT NULL, \n"
    "\tprocessor_json TEXT NOT NULL, \n"
    "\tdelay INTEGER NOT NULL, \n"
    "\tstarted_at DATETIME, \n"
    "\tinfo JSON, \n"
    "\tcreated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, \n"
    "\tupdated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, \n"
    "\tPRIMARY KEY (id){check}\n"
    ")"
)
ORIGIN_CHECK_SQLITE = f", \n\tCONSTRAINT {ENUM_TYPE} CHECK (status IN ({_LABELS}))"
ORIGIN_INDEX = "CREATE INDEX ix_maintenance_tasks_status ON maintenance_tasks (status)"


def origin_ddl(dialect: str, *, check_constraint: bool = False) -> list[str]:
    """The origin's migration 059, as statements. ``check_constraint``: SQLite only, the
    variant SQLAlchemy's Enum makes with ``create_constraint=True``."""
    if dialect == "sqlite":
        check = ORIGIN_CHECK_SQLITE if check_constraint else ""
        return [ORIGIN_TABLE_SQLITE.format(check=check), ORIGIN_INDEX]
    return [
        f"CREATE TYPE {ENUM_TYPE} AS ENUM ({_LABELS})",
        "CREATE TABLE maintenance_tasks (\n"
        "\tid SERIAL NOT NULL, \n"
        f"\tstatus {ENUM_TYPE} NOT NULL, \n"
        "\tprocessor_type VARCHAR NOT NULL, \n"
        "\tprocessor_json TEXT NOT NULL, \n"
        "\tdelay INTEGER NOT NULL, \n"
        "\tstarted_at TIMESTAMP WITHOUT TIME ZONE, \n"
        "\tinfo JSON, \n"
        "\tcreated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, \n"
        "\tupdated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, \n"
        "\tPRIMARY KEY (id)\n"
        ")",
        ORIGIN_INDEX,
    ]


def app_alembic_ddl(*revisions: str) -> list[str]:
    """The default version table as an application's own Alembic leaves it."""
    return [
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
        *(f"INSERT INTO alembic_version (version_num) VALUES ('{r}')" for r in revisions),
    ]


_ALL = "'INACTIVE', 'PENDING', 'WORKING', 'COMPLETED', 'ERROR', 'CANCELLED'"
_OPEN = "'INACTIVE', 'PENDING', 'WORKING'"
_CLAIMABLE = "status = 'PENDING' AND waiting_on = 0"

NIGHTCREW_01_TABLE_SQLITE = (
    "CREATE TABLE maintenance_tasks (\n"
    "\tid INTEGER NOT NULL, \n"
    "\tstatus VARCHAR(16) NOT NULL, \n"
    "\tprocessor_type VARCHAR(255) NOT NULL, \n"
    "\tprocessor_json TEXT NOT NULL, \n"
    "\tqueue VARCHAR(64) NOT NULL, \n"
    "\tpriority INTEGER NOT NULL, \n"
    "\tdelay INTEGER NOT NULL, \n"
    "\tstart_at DATETIME NOT NULL, \n"
    "\tattempts INTEGER NOT NULL, \n"
    "\tmax_attempts INTEGER NOT NULL, \n"
    "\ttimeout FLOAT, \n"
    "\tlease_token VARCHAR(64), \n"
    "\tlease_expires_at DATETIME, \n"
    "\tcancel_requested_at DATETIME, \n"
    "\tunique_key VARCHAR(255), \n"
    "\twaiting_on INTEGER NOT NULL, \n"
    "\tprogress FLOAT, \n"
    "\tprogress_message TEXT, \n"
    "\tinfo JSON, \n"
    "\terror JSON, \n"
    "\tstarted_at DATETIME, \n"
    "\tfinished_at DATETIME, \n"
    "\tcreated_at DATETIME NOT NULL, \n"
    "\tupdated_at DATETIME NOT NULL, \n"
    "\tCONSTRAINT pk_maintenance_tasks PRIMARY KEY (id), \n"
    f"\tCONSTRAINT ck_maintenance_tasks_status CHECK (status IN ({_ALL})), \n"
    "\tCONSTRAINT ck_maintenance_tasks_max_attempts CHECK (max_attempts >= 1), \n"
    "\tCONSTRAINT ck_maintenance_tasks_waiting_on CHECK (waiting_on >= 0)\n"
    ")"
)

NIGHTCREW_01_TABLE_POSTGRESQL = (
    "CREATE TABLE maintenance_tasks (\n"
    "\tid BIGSERIAL NOT NULL, \n"
    "\tstatus VARCHAR(16) NOT NULL, \n"
    "\tprocessor_type VARCHAR(255) NOT NULL, \n"
    "\tprocessor_json TEXT NOT NULL, \n"
    "\tqueue VARCHAR(64) NOT NULL, \n"
    "\tpriority INTEGER NOT NULL, \n"
    "\tdelay INTEGER NOT NULL, \n"
    "\tstart_at TIMESTAMP WITH TIME ZONE NOT NULL, \n"
    "\tattempts INTEGER NOT NULL, \n"
    "\tmax_attempts INTEGER NOT NULL, \n"
    "\ttimeout FLOAT, \n"
    "\tlease_token VARCHAR(64), \n"
    "\tlease_expires_at TIMESTAMP WITH TIME ZONE, \n"
    "\tcancel_requested_at TIMESTAMP WITH TIME ZONE, \n"
    "\tunique_key VARCHAR(255), \n"
    "\twaiting_on INTEGER NOT NULL, \n"
    "\tprogress FLOAT, \n"
    "\tprogress_message TEXT, \n"
    "\tinfo JSONB, \n"
    "\terror JSONB, \n"
    "\tstarted_at TIMESTAMP WITH TIME ZONE, \n"
    "\tfinished_at TIMESTAMP WITH TIME ZONE, \n"
    "\tcreated_at TIMESTAMP WITH TIME ZONE NOT NULL, \n"
    "\tupdated_at TIMESTAMP WITH TIME ZONE NOT NULL, \n"
    "\tCONSTRAINT pk_maintenance_tasks PRIMARY KEY (id), \n"
    f"\tCONSTRAINT ck_maintenance_tasks_status CHECK (status IN ({_ALL})), \n"
    "\tCONSTRAINT ck_maintenance_tasks_max_attempts CHECK (max_attempts >= 1), \n"
    "\tCONSTRAINT ck_maintenance_tasks_waiting_on CHECK (waiting_on >= 0)\n"
    ")"
)

NIGHTCREW_01_INDEXES = [
    "CREATE INDEX ix_maintenance_tasks_claimable ON maintenance_tasks "
    f"(queue, priority DESC, id) WHERE {_CLAIMABLE}",
    "CREATE INDEX ix_maintenance_tasks_claimable_any ON maintenance_tasks "
    f"(priority DESC, id) WHERE {_CLAIMABLE}",
    "CREATE INDEX ix_maintenance_tasks_status_updated ON maintenance_tasks (status, updated_at)",
    "CREATE INDEX ix_maintenance_tasks_lease ON maintenance_tasks (lease_expires_at) "
    "WHERE status = 'WORKING'",
    "CREATE UNIQUE INDEX uq_maintenance_tasks_unique_key_open ON maintenance_tasks "
    f"(unique_key) WHERE unique_key IS NOT NULL AND status IN ({_OPEN})",
]


def nightcrew_01_ddl(dialect: str, *, version_row: bool = True) -> list[str]:
    """nightcrew 0.1's schema, with its revision in the default ``alembic_version``."""
    table = NIGHTCREW_01_TABLE_SQLITE if dialect == "sqlite" else NIGHTCREW_01_TABLE_POSTGRESQL
    return [table, *NIGHTCREW_01_INDEXES, *(app_alembic_ddl("0001") if version_row else [])]


# -- the origin's rows ---------------------------------------------------------------------


@dataclass(frozen=True)
class OriginRow:
    """A row as the origin wrote it; naive datetimes are UTC, ``None`` times: the default."""

    id: int
    status: str
    processor_json: str
    delay: int
    started_at: datetime | None
    info: Any
    created_at: datetime | None
    updated_at: datetime | None


def _at(hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 7, 20, hour, minute, 0, 250000)


#: One row per origin status; id 6 is older than id 2 (claim order is by created_at), id 7
#: has the table's CURRENT_TIMESTAMP defaults, id 8 is deleted after insertion (so the
#: PostgreSQL sequence is ahead of the largest id).
ORIGIN_ROWS = (
    OriginRow(1, "INACTIVE", '{"user_ids": ["u1"]}', 0, None, None, _at(10), _at(10)),
    # The origin's processors allow extra fields: its own fixture stores two undeclared ones.
    OriginRow(
        2,
        "PENDING",
        '{"user_ids": ["u2", "u3"], "batch": 7, "note": "extra"}',
        10,
        None,
        None,
        _at(12),
        _at(12),
    ),
    OriginRow(3, "WORKING", '{"user_ids": ["u4"]}', 10, _at(9, 30), None, _at(9), _at(9, 30)),
    OriginRow(
        4, "COMPLETED", '{"user_ids": ["u5"]}', 10, _at(8, 1), {"upgraded": 1}, _at(8), _at(8, 2)
    ),
    OriginRow(
        5, "ERROR", '{"user_ids": ["u6"]}', 10, _at(7, 1), {"error": "boom"}, _at(7), _at(7, 2)
    ),
    OriginRow(6, "PENDING", '{"user_ids": ["u7"]}', 10, None, None, _at(11), _at(11)),
    OriginRow(7, "PENDING", '{"user_ids": ["u8"]}', 0, None, None, None, None),
)
DELETED_ID = 8


def _literal(dialect: str, value: datetime | None) -> str:
    if value is None:
        return "NULL"
    if dialect == "sqlite":  # SQLAlchemy's SQLite DateTime text, as the origin's ORM writes it
        return f"'{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"
    return f"TIMESTAMP '{value.isoformat(sep=' ')}'"


def origin_row_inserts(dialect: str) -> list[str]:
    """INSERTs of `ORIGIN_ROWS` (and of the row then deleted), as plain SQL."""
    statements = []
    for row in ORIGIN_ROWS:
        info = "NULL" if row.info is None else f"'{json.dumps(row.info)}'"
        columns = "id, status, processor_type, processor_json, delay, started_at, info"
        values = (
            f"{row.id}, '{row.status}', '{PROCESSOR}', '{row.processor_json}', {row.delay}, "
            f"{_literal(dialect, row.started_at)}, {info}"
        )
        if row.created_at is not None:
            columns += ", created_at, updated_at"
            values += f", {_literal(dialect, row.created_at)}, {_literal(dialect, row.updated_at)}"
        # With explicit ids the sequence does not move; the origin's inserts let it hand
        # the ids out, so it is brought to where they would have left it.
        statements.append(f"INSERT INTO maintenance_tasks ({columns}) VALUES ({values})")
    statements.append(
        "INSERT INTO maintenance_tasks (id, status, processor_type, processor_json, delay) "
        f"VALUES ({DELETED_ID}, 'COMPLETED', '{PROCESSOR}', '{{}}', 0)"
    )
    if dialect == "postgresql":
        statements.append(
            f"SELECT setval(pg_get_serial_sequence('maintenance_tasks', 'id'), {DELETED_ID})"
        )
    statements.append(f"DELETE FROM maintenance_tasks WHERE id = {DELETED_ID}")
    return statements


# -- the origin's code, as far as a test needs it ------------------------------------------


class OriginStatus(enum.Enum):
    INACTIVE = "INACTIVE"
    PENDING = "PENDING"
    WORKING = "WORKING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"


class OriginBase(DeclarativeBase):
    """Metadata of its own: the origin's model knows nothing of nightcrew's."""


class OriginTask(OriginBase):
    """The origin's table as its code maps it: a native enum, naive datetimes, JSON."""

    __tablename__ = "maintenance_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[OriginStatus] = mapped_column(
        Enum(OriginStatus, name=ENUM_TYPE), default=OriginStatus.INACTIVE
    )
    processor_type: Mapped[str] = mapped_column(String)
    processor_json: Mapped[str] = mapped_column(Text)
    delay: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    info: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=text("CURRENT_TIMESTAMP"))
    updated_at: Mapped[datetime] = mapped_column(DateTime, server_default=text("CURRENT_TIMESTAMP"))
