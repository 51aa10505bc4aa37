"""Creating tasks on both databases: the row written, the caller's transaction, bulk, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from nightcrew import (
    InvalidProcessorConfig,
    MaintenanceTask,
    MaintenanceTaskProcessor,
    MaintenanceTaskStatus,
    Nightcrew,
    PayloadTooLarge,
    ProcessorNotAllowed,
    Settings,
    TaskNotFound,
    TaskOptions,
    acreate_maintenance_task,
    acreate_maintenance_tasks,
    create_maintenance_task,
    create_maintenance_tasks,
)
from nightcrew.errors import InvalidTaskOptions
from nightcrew.models import utcnow
from nightcrew.processors import loader_for
from nightcrew.store import Database, TaskStore, ops
from nightcrew.values import TaskFilter
from tests.conftest import ROOT, Backend
from tests.helpers import orm_task, task_count
from tests.processors import Echo, RecordRun, Retrying

S = MaintenanceTaskStatus


class Outsider(MaintenanceTaskProcessor):
    """A valid processor in a module the allowlist does not name."""

    async def __call__(self, task: MaintenanceTask) -> None:
        return None


def store_row(database: Database, processor_type: str, processor_json: str) -> int:
    """A row written behind the enqueue API's back, as an API caller or old code could."""
    with Session(database.sync_engine) as session, session.begin():
        task = MaintenanceTask(processor_type=processor_type, processor_json=processor_json)
        session.add(task)
        session.flush()
        return task.id


# ---------------------------------------------------------------- the row written


def test_a_created_task_is_pending_and_due_now(database: Database, settings: Settings) -> None:
    before = utcnow()
    task = create_maintenance_task(Echo(value=1), database=database, settings=settings)
    assert task.status is S.PENDING
    assert before <= task.start_at <= utcnow()
    assert (task.attempts, task.max_attempts, task.queue, task.priority) == (0, 1, "default", 0)


def test_the_returned_task_matches_the_stored_row(database: Database, settings: Settings) -> None:
    task = create_maintenance_task(Echo(value=2), database=database, settings=settings)
    stored = orm_task(database, task.id)
    columns = MaintenanceTask.__table__.columns.keys()
    assert {c: getattr(task, c) for c in columns} == {c: getattr(stored, c) for c in columns}


def test_processor_round_trips_through_the_database(database: Database, settings: Settings) -> None:
    original = RecordRun(path="/tmp/ünïcode ✓.txt", key="k-1", seconds=0.25)
    task_id = create_maintenance_task(original, database=database, settings=settings).id

    stored = orm_task(database, task_id)

    assert stored.processor_type == "tests.processors.RecordRun"
    assert stored.get_processor(loader_for(settings)) == original


def test_stored_datetimes_read_back_as_aware_utc(database: Database, settings: Settings) -> None:
    start_at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    task_id = create_maintenance_task(Echo(), start_at, database=database, settings=settings).id

    stored = orm_task(database, task_id)

    assert stored.start_at == start_at
    assert stored.start_at.tzinfo is UTC
    assert stored.created_at.tzinfo is UTC


def test_a_naive_start_at_is_read_as_utc(database: Database, settings: Settings) -> None:
    # The origin's columns meant UTC (its examples pass datetime.utcnow()).
    task_id = create_maintenance_task(
        Echo(), datetime(2030, 1, 2, 3, 4, 5), database=database, settings=settings
    ).id

    assert orm_task(database, task_id).start_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_start_in_makes_the_task_due_that_many_seconds_from_now(
    database: Database, settings: Settings
) -> None:
    before = utcnow()
    task = create_maintenance_task(Echo(), start_in=300, database=database, settings=settings)
    assert before + timedelta(seconds=300) <= task.start_at <= utcnow() + timedelta(seconds=300)


def test_delay_is_stored_and_does_not_postpone_the_start(
    database: Database, settings: Settings
) -> None:
    # The origin's delay: a pause after the task, before the next one with a delay.
    before = utcnow()
    task = create_maintenance_task(Echo(), delay=300, database=database, settings=settings)
    assert task.delay == 300
    assert before <= task.start_at <= utcnow()


def test_per_task_options_are_stored(database: Database, settings: Settings) -> None:
    task = create_maintenance_task(
        Echo(),
        priority=7,
        queue="reports",
        max_attempts=4,
        timeout=12.5,
        database=database,
        settings=settings,
    )
    stored = orm_task(database, task.id)
    assert (stored.priority, stored.queue, stored.max_attempts, stored.timeout) == (
        7,
        "reports",
        4,
        12.5,
    )


def test_processor_class_defaults_apply_when_options_are_not_given(
    database: Database, settings: Settings
) -> None:
    task = create_maintenance_task(Retrying(), database=database, settings=settings)
    assert orm_task(database, task.id).max_attempts == Retrying.max_attempts == 3


def test_bulk_enqueue_of_mixed_processors_keeps_each_class_defaults_and_order(
    database: Database, settings: Settings
) -> None:
    processors = [Echo(value=1), Retrying(), Echo(value=2), Retrying(), Echo(label='é\\"x')]
    ids = create_maintenance_tasks(processors, database=database, settings=settings)

    rows = [orm_task(database, i) for i in ids]
    loader = loader_for(settings)
    assert [loader.load(r.processor_type, r.processor_json) for r in rows] == processors
    assert [r.max_attempts for r in rows] == [1, 3, 1, 3, 1]


async def test_the_async_twin_creates_a_task(adatabase: Database, settings: Settings) -> None:
    task = await acreate_maintenance_task(Echo(value=3), database=adatabase, settings=settings)
    assert task.status is S.PENDING
    assert orm_task(adatabase, task.id).get_processor(loader_for(settings)) == Echo(value=3)


# ---------------------------------------------------------------- the caller's transaction


def test_enqueue_in_a_session_that_rolls_back_leaves_no_task(
    database: Database, store: TaskStore, settings: Settings
) -> None:
    with Session(database.sync_engine) as session:
        task = create_maintenance_task(Echo(), session=session, settings=settings)
        session.rollback()
    with pytest.raises(TaskNotFound):
        store.run(ops.get_task, task.id)
    assert task_count(store) == 0


def test_enqueue_in_a_session_that_commits_keeps_the_task(
    database: Database, store: TaskStore, settings: Settings
) -> None:
    with Session(database.sync_engine) as session:
        task = create_maintenance_task(Echo(value=4), session=session, settings=settings)
        session.commit()
    assert store.run(ops.get_task, task.id).processor_json == Echo(value=4).model_dump_json()


def test_enqueue_commits_and_rolls_back_with_the_callers_own_rows(
    database: Database, store: TaskStore, settings: Settings
) -> None:
    # The caller's row and the task share one transaction: both or neither.
    with Session(database.sync_engine) as session:
        create_maintenance_task(Echo(value=1), session=session, settings=settings)
        session.add(MaintenanceTask(processor_type="tests.processors.Echo", processor_json="{}"))
        session.rollback()
    with Session(database.sync_engine) as session:
        create_maintenance_task(Echo(value=2), session=session, settings=settings)
        session.add(MaintenanceTask(processor_type="tests.processors.Echo", processor_json="{}"))
        session.commit()
    stored = sorted(row.processor_json for row in store.run(ops.list_tasks, TaskFilter()).tasks)
    assert stored == sorted([Echo(value=2).model_dump_json(), "{}"])


def test_enqueue_on_a_connection_that_rolls_back_leaves_no_task(
    database: Database, store: TaskStore, settings: Settings
) -> None:
    with database.sync_engine.connect() as conn:
        create_maintenance_task(Echo(), session=conn, settings=settings)
        conn.rollback()
    assert task_count(store) == 0


def test_bulk_enqueue_in_a_session_that_rolls_back_leaves_no_task(
    database: Database, store: TaskStore, settings: Settings
) -> None:
    with Session(database.sync_engine) as session:
        ids = create_maintenance_tasks(
            [Echo(value=i) for i in range(50)], session=session, settings=settings
        )
        session.rollback()
    assert len(ids) == 50
    assert task_count(store) == 0


async def test_async_enqueue_in_a_session_that_rolls_back_leaves_no_task(
    adatabase: Database, store: TaskStore, settings: Settings
) -> None:
    async with AsyncSession(adatabase.async_engine) as session:
        await acreate_maintenance_task(Echo(), session=session, settings=settings)
        await session.rollback()
    assert task_count(store) == 0


async def test_async_enqueue_in_a_session_that_commits_keeps_the_task(
    adatabase: Database, settings: Settings
) -> None:
    async with AsyncSession(adatabase.async_engine) as session:
        task = await acreate_maintenance_task(Echo(value=5), session=session, settings=settings)
        await session.commit()
    assert orm_task(adatabase, task.id).get_processor(loader_for(settings)) == Echo(value=5)


async def test_async_bulk_enqueue_in_a_session_that_rolls_back_leaves_no_task(
    adatabase: Database, store: TaskStore, settings: Settings
) -> None:
    async with AsyncSession(adatabase.async_engine) as session:
        await acreate_maintenance_tasks(
            [Echo(value=i) for i in range(50)], session=session, settings=settings
        )
        await session.rollback()
    assert task_count(store) == 0


# ---------------------------------------------------------------- bulk


def test_bulk_enqueue_of_ten_thousand_returns_their_ids_in_order(
    database: Database, settings: Settings
) -> None:
    processors = [Echo(value=i, label=f"task {i}") for i in range(10_000)]

    ids = create_maintenance_tasks(processors, database=database, settings=settings)

    assert len(ids) == len(set(ids)) == 10_000
    with database.sync_engine.connect() as conn:
        table = MaintenanceTask.__table__
        rows = conn.execute(select(table.c.id, table.c.processor_json, table.c.status)).all()
    stored = {row.id: row.processor_json for row in rows}
    assert len(rows) == 10_000
    assert {row.status for row in rows} == {S.PENDING}
    assert [json.loads(stored[task_id])["value"] for task_id in ids] == list(range(10_000))


def test_bulk_options_apply_to_every_task(database: Database, settings: Settings) -> None:
    options = TaskOptions(queue="bulk", priority=3, inactive=True, max_attempts=2)
    ids = create_maintenance_tasks(
        [Echo(value=i) for i in range(3)], options, database=database, settings=settings
    )
    tasks = [orm_task(database, task_id) for task_id in ids]
    assert {(t.queue, t.priority, t.status, t.max_attempts) for t in tasks} == {
        ("bulk", 3, S.INACTIVE, 2)
    }


def test_an_app_passed_as_the_database_writes_through_its_store_and_stays_open(
    app: Nightcrew,
) -> None:
    first = create_maintenance_task(Echo(value=5), database=app)
    (second,) = create_maintenance_tasks([Echo(value=6)], database=app)

    assert app.store.run(ops.get_task, first.id).processor_json == Echo(value=5).model_dump_json()
    assert app.store.run(ops.get_task, second).processor_json == Echo(value=6).model_dump_json()


def test_without_a_database_the_settings_database_url_is_used(
    database: Database, settings: Settings
) -> None:
    task = create_maintenance_task(Echo(value=5), settings=settings)
    (bulk_id,) = create_maintenance_tasks([Echo(value=6)], settings=settings)

    assert orm_task(database, task.id).processor_json == Echo(value=5).model_dump_json()
    assert orm_task(database, bulk_id).processor_json == Echo(value=6).model_dump_json()


async def test_without_a_database_the_async_twins_use_the_settings_database_url(
    database: Database, settings: Settings
) -> None:
    task = await acreate_maintenance_task(Echo(value=7), settings=settings)
    (bulk_id,) = await acreate_maintenance_tasks([Echo(value=8)], settings=settings)

    assert orm_task(database, task.id).processor_json == Echo(value=7).model_dump_json()
    assert orm_task(database, bulk_id).processor_json == Echo(value=8).model_dump_json()


def test_a_database_failure_is_raised_as_a_nightcrew_database_error(
    tmp_path: Any, settings: Settings
) -> None:
    from nightcrew import DatabaseError

    no_tables = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(DatabaseError, match="maintenance_tasks"):
        create_maintenance_task(Echo(value=9), database=no_tables, settings=settings)


def test_bulk_enqueue_of_nothing_returns_no_ids(database: Database, settings: Settings) -> None:
    assert create_maintenance_tasks([], database=database, settings=settings) == []


def test_bulk_enqueue_with_one_refused_processor_writes_nothing(
    database: Database, store: TaskStore, settings: Settings
) -> None:
    processors: list[MaintenanceTaskProcessor] = [Echo(value=i) for i in range(10)]
    processors.append(Outsider())
    with pytest.raises(ProcessorNotAllowed):
        create_maintenance_tasks(processors, database=database, settings=settings)
    assert task_count(store) == 0


async def test_async_bulk_enqueue_returns_ids_in_order(
    adatabase: Database, settings: Settings
) -> None:
    ids = await acreate_maintenance_tasks(
        [Echo(value=i) for i in range(100)], database=adatabase, settings=settings
    )
    loader = loader_for(settings)
    assert [orm_task(adatabase, i).get_processor(loader) for i in ids[::33]] == [
        Echo(value=v) for v in range(0, 100, 33)
    ]


# ---------------------------------------------------------------- the allowlist


def test_a_processor_outside_the_allowlist_is_refused_and_nothing_written(
    database: Database, store: TaskStore, settings: Settings
) -> None:
    with pytest.raises(ProcessorNotAllowed):
        create_maintenance_task(Outsider(), database=database, settings=settings)
    assert task_count(store) == 0


def test_a_stored_row_naming_a_non_processor_is_refused(
    database: Database, settings: Settings
) -> None:
    task_id = store_row(database, "tests.processors.NotAProcessor", "{}")
    with pytest.raises(ProcessorNotAllowed):
        orm_task(database, task_id).get_processor(loader_for(settings))


@pytest.mark.parametrize("class_path", ["tests.processorsX.Foo", "tests.processors_evil.Evil"])
def test_a_stored_row_with_a_prefix_trick_is_refused(database: Database, class_path: str) -> None:
    task_id = store_row(database, class_path, "{}")
    loader = loader_for(Settings(processor_modules=["tests.processors"]))
    with pytest.raises(ProcessorNotAllowed, match="not in the allowed modules"):
        orm_task(database, task_id).get_processor(loader)


def test_a_stored_row_with_an_invalid_configuration_names_the_field(
    database: Database, settings: Settings
) -> None:
    task_id = store_row(database, "tests.processors.Echo", '{"value": "many"}')
    with pytest.raises(InvalidProcessorConfig, match=r"\bvalue\b"):
        orm_task(database, task_id).get_processor(loader_for(settings))


_READ_STORED_ROW = """
import json, os, sys
from sqlalchemy.orm import Session
from nightcrew import MaintenanceTask, ProcessorNotAllowed
from nightcrew.store import Database

with Session(Database(os.environ["NIGHTCREW_DATABASE_URL"]).sync_engine) as session:
    task = session.get_one(MaintenanceTask, int(sys.argv[1]))
    try:
        task.get_processor()
        outcome = "loaded"
    except ProcessorNotAllowed:
        outcome = "refused"
print(json.dumps({
    "outcome": outcome,
    "marker": os.environ.get("NIGHTCREW_EVIL_IMPORTED"),
    "in_sys_modules": "tests.evil_processor" in sys.modules,
}))
"""


def test_a_stored_row_naming_a_module_outside_the_allowlist_never_imports_it(
    backend: Backend, database: Database
) -> None:
    task_id = store_row(database, "tests.evil_processor.Evil", "{}")
    env = backend.env()  # NIGHTCREW_PROCESSOR_MODULES=tests.processors,nightcrew.processors
    env.pop("NIGHTCREW_EVIL_IMPORTED", None)
    done = subprocess.run(
        [sys.executable, "-c", _READ_STORED_ROW, str(task_id)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == {
        "outcome": "refused",
        "marker": None,
        "in_sys_modules": False,
    }
    assert "NIGHTCREW_EVIL_IMPORTED" not in os.environ


# ---------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": -1}, "delay"),
        ({"start_in": -1}, "start_in"),
        ({"start_in": float("inf")}, "start_in"),
        ({"start_in": 10, "start_at": datetime(2030, 1, 1, tzinfo=UTC)}, "not both"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2**31}, "max_attempts"),
        ({"delay": 2**31}, "delay"),
        ({"priority": 2**31}, "priority"),
        ({"priority": -(2**31) - 1}, "priority"),
        ({"timeout": 0}, "timeout"),
        ({"queue": ""}, "queue"),
        ({"queue": "q" * 65}, "queue"),
        ({"unique_key": ""}, "unique_key"),
        ({"unique_key": "k" * 256}, "unique_key"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_invalid_options_are_refused_and_nothing_written(
    database: Database, store: TaskStore, settings: Settings, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidTaskOptions, match=message):
        create_maintenance_task(Echo(), database=database, settings=settings, **options)
    assert task_count(store) == 0


def test_processor_json_over_the_size_limit_is_refused_and_nothing_written(
    backend: Backend, database: Database, store: TaskStore
) -> None:
    settings = backend.settings(max_processor_json_bytes=64)
    with pytest.raises(PayloadTooLarge):
        create_maintenance_task(Echo(label="x" * 64), database=database, settings=settings)
    assert task_count(store) == 0


def test_something_that_is_not_a_processor_is_refused(
    database: Database, store: TaskStore, settings: Settings
) -> None:
    with pytest.raises(InvalidTaskOptions, match="MaintenanceTaskProcessor"):
        create_maintenance_task(
            {"value": 1},  # type: ignore[arg-type]
            database=database,
            settings=settings,
        )
    assert task_count(store) == 0
