"""Defaults as the origin's users meet them: plain SQL, the ORM, naive datetimes.

The origin's migration 060 enqueues with plain SQL naming only the origin's columns; its
code commits tasks without a status (INACTIVE) and writes naive UTC datetimes. Each test
runs on a database made by ``nightcrew db upgrade``, on PostgreSQL (in a session whose time
zone is not UTC) and SQLite.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from nightcrew import migrate
from nightcrew.models import MaintenanceTask, MaintenanceTaskStatus
from tests.conftest import Backend
from tests.migration_helpers import TABLE, claim, connect, in_time_zone, sql
from tests.origin_schema import PROCESSOR

T = cast(Table, MaintenanceTask.__table__)
SQLITE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


@pytest.fixture
def url(empty_backend: Backend) -> str:
    migrate.upgrade(empty_backend.url)
    return in_time_zone(empty_backend.url, "Asia/Tokyo")


def insert_as_060(url: str, batches: int = 3) -> list[int]:
    """The origin's migration 060: one PENDING row per 100 users, ``delay = 10``, in SQL
    naming only the origin's columns (``now()`` there; SQLite spells it CURRENT_TIMESTAMP)."""
    now = "CURRENT_TIMESTAMP" if url.startswith("sqlite") else "now()"
    ids = []
    for batch in range(batches):
        users = ", ".join(f'"u{batch * 100 + i}"' for i in range(3))
        ids += sql(
            url,
            "INSERT INTO maintenance_tasks (status, processor_type, processor_json, delay, "
            f"created_at, updated_at) VALUES ('PENDING', '{PROCESSOR}', "
            f"'{{\"user_ids\": [{users}]}}', 10, {now}, {now}) RETURNING id",
        )
    return [task_id for (task_id,) in ids]


def test_the_060_insert_defaults_every_engine_column(url: str) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    (task_id,) = insert_as_060(url, batches=1)

    with connect(url) as conn:
        row = conn.execute(select(T).where(T.c.id == task_id)).one()._asdict()

    assert row["status"] is MaintenanceTaskStatus.PENDING
    assert row["delay"] == 10
    assert (row["queue"], row["priority"], row["attempts"], row["max_attempts"]) == (
        "default",
        0,
        0,
        1,
    )
    assert (row["waiting_on"], row["rescues"]) == (0, 0)
    assert before <= row["start_at"] <= datetime.now(UTC)
    for empty in ("timeout", "lease_token", "unique_key", "info", "error", "finished_at"):
        assert row[empty] is None


def test_the_060_insert_is_claimable_at_once(url: str) -> None:
    ids = insert_as_060(url)

    assert claim(url) == ids


def test_server_default_times_have_the_models_text_format_on_sqlite(url: str) -> None:
    if not url.startswith("sqlite"):
        pytest.skip("PostgreSQL stores timestamps, not text")
    sql(
        url,
        f"INSERT INTO {TABLE} (status, processor_type, processor_json) "
        f"VALUES ('PENDING', '{PROCESSOR}', '{{}}')",
    )

    (row,) = sql(url, f"SELECT start_at, created_at, updated_at FROM {TABLE}")

    assert all(SQLITE_TIME.match(value) for value in row), row


def test_server_default_times_are_the_current_utc_time(url: str) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    sql(
        url,
        f"INSERT INTO {TABLE} (status, processor_type, processor_json) "
        f"VALUES ('PENDING', '{PROCESSOR}', '{{}}')",
    )

    with connect(url) as conn:
        row = conn.execute(select(T.c.start_at, T.c.created_at, T.c.updated_at)).one()

    assert all(before <= value <= datetime.now(UTC) for value in row), row


def test_a_task_committed_without_a_status_is_inactive(url: str) -> None:
    engine = migrate.open_engine(url)
    try:
        with Session(engine) as session:
            task = MaintenanceTask(processor_type=PROCESSOR, processor_json="{}")
            session.add(task)
            session.commit()
            assert task.status is MaintenanceTaskStatus.INACTIVE
    finally:
        engine.dispose()

    assert sql(url, f"SELECT status FROM {TABLE}") == [("INACTIVE",)]
    assert claim(url) == []  # it never runs until activated


def test_a_naive_datetime_is_bound_as_utc(url: str) -> None:
    naive = datetime(2030, 1, 1, 12, 0)
    with connect(url) as conn:
        conn.execute(T.insert().values(processor_type=PROCESSOR, start_at=naive))

    if url.startswith("sqlite"):
        stored = sql(url, f"SELECT start_at FROM {TABLE}")
        assert stored == [("2030-01-01 12:00:00.000000",)]
    else:  # not read in the session's time zone (Tokyo), 9 hours off
        stored = sql(url, f"SELECT start_at AT TIME ZONE 'UTC' FROM {TABLE}")
        assert stored == [(naive,)]
    with connect(url) as conn:
        assert conn.execute(select(T.c.start_at)).scalar_one() == naive.replace(tzinfo=UTC)


def test_an_aware_datetime_is_stored_as_utc(url: str) -> None:
    aware = datetime(2030, 1, 1, 21, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    with connect(url) as conn:
        conn.execute(T.insert().values(processor_type=PROCESSOR, start_at=aware))

    with connect(url) as conn:
        stored = conn.execute(select(T.c.start_at)).scalar_one()

    assert stored == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert stored.tzinfo is UTC
