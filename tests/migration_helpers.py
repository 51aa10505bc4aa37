"""Reading a database's schema back in its own words, for the migration tests.

Shared by ``tests/integration/test_migrations.py`` and ``test_origin_adoption.py``: a
connection through nightcrew's own engine setup, plain SQL, and the catalog of the task
table as the database prints it (SQLite: the stored ``CREATE`` statements; PostgreSQL:
``information_schema`` columns, ``pg_get_constraintdef``, ``pg_indexes``, the id's
sequence and enum types), so two databases can be compared as a whole.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from sqlalchemy import Connection, bindparam, text

from nightcrew import migrate
from nightcrew.models import UTCDateTime
from tests.conftest import PG_ADMIN_URL

TABLE = "maintenance_tasks"


@contextmanager
def connect(url: str) -> Iterator[Connection]:
    engine = migrate.open_engine(url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def sql(url: str, statement: str, **params: Any) -> list[Any]:
    with connect(url) as conn:
        result = conn.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []


def run_all(url: str, statements: Iterable[str]) -> None:
    """Statements in one transaction."""
    with connect(url) as conn:
        for statement in statements:
            conn.execute(text(statement))


def in_time_zone(url: str, zone: str) -> str:
    """A PostgreSQL URL whose sessions run in ``zone`` (SQLite has no session time zone)."""
    if url.startswith("sqlite"):
        return url
    return f"{url}{quote(f' -ctimezone={zone}', safe='')}"


def version_rows(url: str, table: str = migrate.VERSION_TABLE) -> list[Any]:
    return sql(url, f"SELECT version_num FROM {table}")


def has_table(url: str, name: str) -> bool:
    if url.startswith("sqlite"):
        found = sql(url, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :n", n=name)
    else:
        found = sql(url, "SELECT 1 WHERE to_regclass(:n) IS NOT NULL", n=name)
    return bool(found)


def column_names(url: str) -> list[str]:
    """The task table's columns in their order."""
    if url.startswith("sqlite"):
        return [row[1] for row in sql(url, f"PRAGMA table_info({TABLE})")]
    rows = sql(
        url,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = :t ORDER BY ordinal_position",
        t=TABLE,
    )
    return [name for (name,) in rows]


def catalog(url: str) -> dict[str, list[Any]]:
    """What the database says about the task table, in its own words, minus the schema.

    PostgreSQL's columns are listed by name: ``ALTER TABLE`` appends the columns a
    migration adds, so a converted table and one created whole hold the same columns in
    different orders, which no statement can tell apart (SQLite rebuilds the table, and
    its stored ``CREATE TABLE`` text, column order included, must match exactly).
    """
    with connect(url) as conn:
        if conn.dialect.name == "sqlite":
            objects = conn.execute(
                text(
                    "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = :t "
                    "ORDER BY type, name"
                ),
                {"t": TABLE},
            ).all()
            return {"objects": [tuple(r) for r in objects]}
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        columns = conn.execute(
            text(
                "SELECT column_name, data_type, character_maximum_length, is_nullable, "
                "column_default, is_identity FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = :t "
                "ORDER BY column_name"
            ),
            {"t": TABLE},
        ).all()
        constraints = conn.execute(
            text(
                "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = to_regclass(:t) ORDER BY conname"
            ),
            {"t": TABLE},
        ).all()
        indexes = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = current_schema() AND tablename = :t ORDER BY indexname"
            ),
            {"t": TABLE},
        ).all()
        sequences = conn.execute(
            text(
                "SELECT sequencename, data_type::text, min_value, max_value, increment_by "
                "FROM pg_sequences WHERE schemaname = current_schema() ORDER BY sequencename"
            )
        ).all()
        enums = conn.execute(
            text(
                "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)::text "
                "FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
                "WHERE t.typnamespace = current_schema()::regnamespace GROUP BY t.typname"
            )
        ).all()
        return {
            "columns": [tuple(r) for r in columns],
            "constraints": [tuple(r) for r in constraints],
            "indexes": [(name, ddl.replace(f"{schema}.", "")) for name, ddl in indexes],
            "sequences": [tuple(r) for r in sequences],
            "enums": [tuple(r) for r in enums],
        }


def index_ddl(url: str) -> dict[str, str]:
    """Index name -> its definition as stored by the database."""
    if url.startswith("sqlite"):
        rows = sql(
            url,
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t",
            t=TABLE,
        )
    else:
        rows = sql(
            url,
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename = :t",
            t=TABLE,
        )
    return {name: ddl for name, ddl in rows if ddl is not None}


def check_ddl(url: str) -> dict[str, str]:
    """Check constraint name -> its definition as stored by the database."""
    if url.startswith("sqlite"):
        (table_sql,) = sql(
            url, "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t", t=TABLE
        )[0]
        return {
            line.split()[1]: line.split(" ", 2)[2].rstrip(", ")
            for line in (raw.strip() for raw in table_sql.splitlines())
            if line.startswith("CONSTRAINT ck_")
        }
    rows = sql(
        url,
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = to_regclass(:t) AND contype = 'c'",
        t=TABLE,
    )
    return dict(rows)


@contextmanager
def scratch_database(like_url: str, directory: Path, name: str) -> Iterator[str]:
    """Another empty database of the same kind as ``like_url``: a schema of its own on
    PostgreSQL (dropped afterwards), a file in ``directory`` on SQLite."""
    if like_url.startswith("sqlite"):
        yield f"sqlite:///{directory / f'{name}.db'}"
        return
    schema = f"{name[:8]}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


#: The claim as the brief of issue 8 writes it: due PENDING rows, by priority, then oldest.
CLAIM_SQL = (
    "UPDATE maintenance_tasks SET status='WORKING' WHERE id IN (SELECT id FROM "
    "maintenance_tasks WHERE status='PENDING' AND waiting_on=0 AND start_at <= :now "
    "ORDER BY priority DESC, created_at, id LIMIT {limit}) RETURNING id"
)


def claim(url: str, limit: int = 10) -> list[int]:
    """Claim due tasks with plain SQL, ``:now`` bound as the models bind a time."""
    statement = text(CLAIM_SQL.format(limit=int(limit))).bindparams(
        bindparam("now", type_=UTCDateTime())
    )
    with connect(url) as conn:
        return sorted(conn.execute(statement, {"now": datetime.now(UTC)}).scalars())
