"""``nightcrew db upgrade`` adopts the origin's own table in place; downgrade hands it back.

Each test builds the origin's schema from the DDL in ``tests/origin_schema.py`` (never
from nightcrew's models), with rows in every origin status as the origin's code writes
them, then adopts it, on PostgreSQL and SQLite. PostgreSQL migrations run in a session
whose time zone is not UTC, so a conversion that read the naive timestamps as local time
would show.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nightcrew import migrate
from nightcrew.models import Base, MaintenanceTask
from tests.conftest import Backend
from tests.migration_helpers import (
    TABLE,
    catalog,
    claim,
    column_names,
    connect,
    in_time_zone,
    index_ddl,
    run_all,
    scratch_database,
    sql,
)
from tests.origin_schema import (
    DELETED_ID,
    ORIGIN_ROWS,
    ORIGIN_TABLE_SQLITE,
    PROCESSOR,
    OriginRow,
    OriginStatus,
    OriginTask,
    origin_ddl,
    origin_row_inserts,
)

HEAD = "0003"
TOKYO = "Asia/Tokyo"
T = cast(Table, MaintenanceTask.__table__)
RAN = {"WORKING", "COMPLETED", "ERROR"}
ENDED = {"COMPLETED", "ERROR"}


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def make_origin(url: str, *, check_constraint: bool = False) -> str:
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    run_all(url, origin_ddl(dialect, check_constraint=check_constraint))
    run_all(url, origin_row_inserts(dialect))
    return in_time_zone(url, TOKYO)


@pytest.fixture
def origin(empty_backend: Backend) -> str:
    """The origin's table with its rows; the URL's sessions run in Tokyo's time zone."""
    return make_origin(empty_backend.url)


@pytest.fixture
def adopted(origin: str) -> str:
    migrate.upgrade(origin)
    return origin


@pytest.fixture
def origin_reference(empty_backend: Backend, tmp_path: Path) -> Iterator[str]:
    """A second database holding only the origin's table, made from its DDL."""
    with scratch_database(empty_backend.url, tmp_path, "origin") as url:
        run_all(url, origin_ddl("sqlite" if url.startswith("sqlite") else "postgresql"))
        yield url


@pytest.fixture
def reference(empty_backend: Backend, tmp_path: Path) -> Iterator[str]:
    """A second database made by ``Base.metadata.create_all``."""
    with scratch_database(empty_backend.url, tmp_path, "reference") as url:
        engine = migrate.open_engine(url)
        Base.metadata.create_all(engine)
        engine.dispose()
        yield url


def nightcrew_rows(url: str) -> dict[int, dict[str, Any]]:
    """Every task row as nightcrew's models read it (aware UTC datetimes)."""
    with connect(url) as conn:
        return {row.id: row._asdict() for row in conn.execute(select(T).order_by(T.c.id))}


def origin_rows(url: str) -> dict[int, OriginTask]:
    """Every row as the origin's code reads it (its enum, naive datetimes)."""
    engine = migrate.open_engine(url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            return {task.id: task for task in session.scalars(select(OriginTask))}
    finally:
        engine.dispose()


def as_written(row: OriginRow) -> dict[str, Any]:
    return {
        "status": row.status,
        "processor_json": row.processor_json,
        "delay": row.delay,
        "started_at": row.started_at,
        "info": row.info,
    }


# -- adoption ------------------------------------------------------------------------------


def test_upgrade_adopts_the_origin_table_at_head(origin: str) -> None:
    assert migrate.current(origin) is None

    done = migrate.upgrade(origin)

    assert done.notes == ("adopted the origin's table 'maintenance_tasks' (stamped origin)",)
    assert (done.before, done.after) == ("origin", HEAD)
    assert migrate.current(origin) == HEAD
    assert migrate.check(origin) == []


def test_adopted_schema_equals_a_fresh_one(adopted: str, reference: str) -> None:
    # Types, defaults, constraints, index definitions, the id's sequence (now BIGINT), and
    # no enum type left behind.
    assert catalog(adopted) == catalog(reference)


def test_adoption_keeps_every_row_with_its_status_and_data(adopted: str) -> None:
    rows = nightcrew_rows(adopted)

    assert sorted(rows) == [row.id for row in ORIGIN_ROWS]
    for written in ORIGIN_ROWS:
        row = rows[written.id]
        assert row["status"] == written.status
        assert row["processor_type"] == PROCESSOR
        assert row["processor_json"] == written.processor_json  # extra fields and all
        assert row["delay"] == written.delay
        assert row["info"] == written.info
        # The origin's naive times are UTC, whatever the session's time zone.
        assert row["started_at"] == _utc(written.started_at)
        if written.created_at is not None:
            assert row["created_at"] == _utc(written.created_at)
            assert row["updated_at"] == _utc(written.updated_at)


def test_adoption_fills_the_engine_columns(adopted: str) -> None:
    for row in nightcrew_rows(adopted).values():
        assert row["start_at"] == row["created_at"]  # due since it was made
        assert row["attempts"] == (1 if row["status"] in RAN else 0)
        assert row["finished_at"] == (row["updated_at"] if row["status"] in ENDED else None)
        assert (row["queue"], row["priority"], row["max_attempts"]) == ("default", 0, 1)
        assert (row["waiting_on"], row["rescues"]) == (0, 0)
        assert row["lease_token"] is row["error"] is row["unique_key"] is None


def test_adoption_keeps_the_id_sequence(adopted: str) -> None:
    with connect(adopted) as conn:
        new_id = conn.execute(
            T.insert().values(processor_type=PROCESSOR).returning(T.c.id)
        ).scalar_one()
    if adopted.startswith("sqlite"):
        assert new_id == ORIGIN_ROWS[-1].id + 1  # SQLite's rowid: after the largest id
    else:
        assert new_id == DELETED_ID + 1  # the sequence goes on where it was


def test_adoption_stores_sqlite_times_in_one_format(adopted: str) -> None:
    if not adopted.startswith("sqlite"):
        pytest.skip("PostgreSQL stores timestamps, not text")
    rows = sql(adopted, f"SELECT start_at, created_at, updated_at FROM {TABLE}")
    # The origin's CURRENT_TIMESTAMP wrote 'YYYY-MM-DD HH:MM:SS' (row 7): padded.
    assert {len(value) for row in rows for value in row} == {26}


def test_adopted_tasks_are_claimed_by_priority_then_oldest_first(adopted: str) -> None:
    pending = sorted(
        (r.created_at or datetime.max, r.id) for r in ORIGIN_ROWS if r.status == "PENDING"
    )

    claimed = [claim(adopted, limit=1) for _ in pending]

    assert claimed == [[task_id] for _, task_id in pending] == [[6], [2], [7]]
    assert claim(adopted) == []  # INACTIVE and the rest are not claimable


def test_adoption_keeps_an_enum_type_something_else_uses(empty_backend: Backend) -> None:
    if not empty_backend.is_postgres:
        pytest.skip("SQLite has no enum types")
    url = make_origin(empty_backend.url)
    sql(url, "CREATE TABLE audit (id integer PRIMARY KEY, status maintenancetaskstatus)")

    migrate.upgrade(url)

    assert catalog(url)["enums"] == [
        ("maintenancetaskstatus", "{INACTIVE,PENDING,WORKING,COMPLETED,ERROR}")
    ]
    assert migrate.check(url) == []


def test_the_sqlite_origin_table_with_a_check_constraint_is_adopted(
    empty_backend: Backend,
) -> None:
    if empty_backend.is_postgres:
        pytest.skip("the CHECK variant is SQLAlchemy's Enum on SQLite")
    url = make_origin(empty_backend.url, check_constraint=True)

    migrate.upgrade(url)

    assert migrate.check(url) == []
    assert sorted(nightcrew_rows(url)) == [row.id for row in ORIGIN_ROWS]


def test_concurrent_upgrades_adopt_the_origin_once(origin: str) -> None:
    with ThreadPoolExecutor(3) as pool:
        results = [f.result() for f in [pool.submit(migrate.upgrade, origin) for _ in range(3)]]

    assert sorted(len(r.notes) for r in results) == [0, 0, 1]
    assert migrate.check(origin) == []
    assert sorted(nightcrew_rows(origin)) == [row.id for row in ORIGIN_ROWS]


def test_adoption_keeps_other_tables_references_to_task_ids(origin: str) -> None:
    sql(
        origin,
        "CREATE TABLE app_task_notes (id INTEGER PRIMARY KEY, "
        f"task_id INTEGER NOT NULL REFERENCES {TABLE} (id))",
    )
    sql(origin, "INSERT INTO app_task_notes (id, task_id) VALUES (1, 2)")

    migrate.upgrade(origin)
    migrate.downgrade(origin, "origin")
    migrate.upgrade(origin)

    joined = f"SELECT t.id FROM app_task_notes n JOIN {TABLE} t ON t.id = n.task_id"
    assert sql(origin, joined) == [(2,)]
    with pytest.raises(IntegrityError):  # still a foreign key, to the task table
        sql(origin, "INSERT INTO app_task_notes (id, task_id) VALUES (2, 999)")


def test_adoption_refuses_a_table_like_nothing_it_knows(empty_backend: Backend) -> None:
    url = empty_backend.url
    sql(url, f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, status VARCHAR(9) NOT NULL)")

    with pytest.raises(migrate.MigrationError, match="is not the origin's"):
        migrate.upgrade(url)
    assert migrate.current(url) is None


# -- downgrade -----------------------------------------------------------------------------


def test_downgrade_to_origin_restores_the_origin_table(adopted: str, origin_reference: str) -> None:
    done = migrate.downgrade(adopted, "origin")

    assert (done.before, done.after) == (HEAD, "origin")
    assert column_names(adopted) == column_names(origin_reference)
    if adopted.startswith("sqlite"):
        stored = sql(adopted, "SELECT sql FROM sqlite_master WHERE name = :t", t=TABLE)
        assert stored[0][0].split() == ORIGIN_TABLE_SQLITE.format(check="").split()
        assert index_ddl(adopted) == index_ddl(origin_reference)
    else:
        assert catalog(adopted) == catalog(origin_reference)


def test_downgrade_to_origin_keeps_every_row(adopted: str) -> None:
    migrate.downgrade(adopted, "origin")

    rows = origin_rows(adopted)
    assert sorted(rows) == [row.id for row in ORIGIN_ROWS]
    for written in ORIGIN_ROWS:
        task = rows[written.id]
        assert {
            "status": task.status.value,
            "processor_json": task.processor_json,
            "delay": task.delay,
            "started_at": task.started_at,
            "info": task.info,
        } == as_written(written)
        if written.created_at is not None:  # naive UTC again, as the origin wrote them
            assert (task.created_at, task.updated_at) == (written.created_at, written.updated_at)


def test_downgrade_turns_cancelled_into_error_with_a_note(adopted: str) -> None:
    infos: list[Any] = [None, {"cancelled": True, "error": "cancelled while running"}, [1, 2]]
    with connect(adopted) as conn:
        ids = [
            conn.execute(
                T.insert()
                .values(processor_type=PROCESSOR, status="CANCELLED", info=info)
                .returning(T.c.id)
            ).scalar_one()
            for info in infos
        ]

    migrate.downgrade(adopted, "origin")

    rows = origin_rows(adopted)
    assert [rows[i].status for i in ids] == [OriginStatus.ERROR] * 3
    assert [rows[i].info for i in ids] == [
        {"error": "cancelled in nightcrew", "nightcrew_status": "CANCELLED"},
        {"cancelled": True, "error": "cancelled while running", "nightcrew_status": "CANCELLED"},
        {"error": "cancelled in nightcrew", "info": [1, 2], "nightcrew_status": "CANCELLED"},
    ]


def test_the_origin_code_runs_after_downgrade(adopted: str) -> None:
    migrate.downgrade(adopted, "origin")
    engine = migrate.open_engine(adopted)
    try:
        with Session(engine) as session:
            # The origin's way: no status (INACTIVE by its Python default), naive UTC times.
            task = OriginTask(processor_type=PROCESSOR, processor_json=json.dumps({}))
            session.add(task)
            session.commit()
            assert task.status is OriginStatus.INACTIVE
            pending = session.scalars(
                select(OriginTask)
                .where(OriginTask.status == OriginStatus.PENDING)
                .order_by(OriginTask.created_at)
            ).all()
            assert [t.id for t in pending] == [6, 2, 7]
            pending[0].status = OriginStatus.WORKING
            pending[0].started_at = datetime.now(UTC).replace(tzinfo=None)
            session.commit()
    finally:
        engine.dispose()


def test_downgrade_then_upgrade_again_keeps_the_rows(adopted: str) -> None:
    before = nightcrew_rows(adopted)

    migrate.downgrade(adopted, "origin")
    migrate.upgrade(adopted)

    assert migrate.check(adopted) == []
    assert nightcrew_rows(adopted) == before
