"""The origin's runner behaviour, run by the in-process `Worker` on both databases.

Which tasks run and in what order, what a finished task's row holds, sync processors, and
the allowlist applied at run time to rows that bypassed enqueue's checks.

The helpers at the top (running a worker in the background, waiting on the database with
a deadline) are shared with the other worker test modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from nightcrew import (
    MaintenanceTaskStatus,
    TaskOptions,
    acreate_maintenance_task,
    create_maintenance_task,
    create_maintenance_tasks,
)
from nightcrew.models import utcnow
from nightcrew.store import Database, Store, operations
from nightcrew.store import tasks as st
from nightcrew.worker import Worker
from tests.conftest import Backend
from tests.processors import Boom, Echo, RecordRun, SyncEcho, SyncWaitForFile

S = MaintenanceTaskStatus

#: Deadline for anything a worker should do "soon" (generous: a loaded 2-core machine).
SOON = 30.0


# ---------------------------------------------------------------- shared helpers


def start_ids_at(database: Database, last_id: int) -> None:
    """PostgreSQL: the next task created gets ``last_id + 1``."""
    stmt = text("SELECT setval(pg_get_serial_sequence('maintenance_tasks', 'id'), :n, false)")
    with database.sync_engine.begin() as conn:
        conn.execute(stmt, {"n": last_id + 1})


async def get_task(database: Database, task_id: int) -> Any:
    return await Store(database).arun(operations.get_task(task_id))


async def statuses(database: Database, task_ids: list[int]) -> list[MaintenanceTaskStatus]:
    return [(await get_task(database, i)).status for i in task_ids]


async def wait_until(
    check: Callable[[], Awaitable[Any] | Any],
    *,
    what: str,
    within: float = SOON,
    worker: asyncio.Task[None] | None = None,
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail after
    ``within`` seconds.

    With ``worker`` (the task running `Worker.run`), a worker that died is reported at
    once with its exception instead of as a timeout.
    """
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if worker is not None and worker.done():
            worker.result()  # raises the worker's exception, if any
            raise AssertionError(f"worker stopped while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g}s: {what}")
        await asyncio.sleep(0.05)


async def wait_for_status(
    database: Database,
    task_id: int,
    *expected: MaintenanceTaskStatus,
    within: float = SOON,
    worker: asyncio.Task[None] | None = None,
) -> Any:
    last: list[Any] = []

    async def check() -> Any:
        row = await get_task(database, task_id)
        last[:] = [row]
        return row if row.status in expected else None

    what = f"task {task_id} in {[s.value for s in expected]}"
    try:
        return await wait_until(check, what=what, within=within, worker=worker)
    except AssertionError as exc:
        if not last:
            raise
        row = last[0]
        raise AssertionError(
            f"{exc}; last seen {row.status.value}, attempts {row.attempts}, info {row.info}"
        ) from None


@contextlib.asynccontextmanager
async def running_worker(
    backend: Backend,
    *,
    concurrency: int = 4,
    queues: list[str] | None = None,
    queue_limits: dict[str, int] | None = None,
    worker_id: str | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[Worker, asyncio.Task[None]]]:
    """A `Worker` running in the background of the test's loop; stopped on exit."""
    worker = Worker(
        backend.settings(**settings),
        queues=queues,
        concurrency=concurrency,
        queue_limits=queue_limits,
        worker_id=worker_id,
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker, task
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)


async def run_until_idle(backend: Backend, *, concurrency: int = 4, **settings: Any) -> Worker:
    """Run a worker until nothing is due (the deploy-time runner's loop)."""
    worker = Worker(backend.settings(**settings), concurrency=concurrency)
    await asyncio.wait_for(worker.run(until_idle=True), 120)
    return worker


def insert_raw(database: Database, processor_type: str, processor_json: str) -> int:
    """A PENDING row written with a plain Core insert, bypassing enqueue's checks."""
    now = utcnow()
    stmt = (
        st.T.insert()
        .values(
            status=S.PENDING,
            processor_type=processor_type,
            processor_json=processor_json,
            queue="default",
            priority=0,
            delay=0,
            start_at=now,
            attempts=0,
            max_attempts=1,
            waiting_on=0,
            created_at=now,
            updated_at=now,
        )
        .returning(st.T.c.id)
    )
    with database.sync_engine.begin() as conn:
        task_id: int = conn.execute(stmt).scalar_one()
    return task_id


# ---------------------------------------------------------------- order


async def test_tasks_run_by_priority_then_oldest_first(
    backend: Backend, database: Database, tmp_path: Path
) -> None:
    record = tmp_path / "runs.txt"
    settings = backend.settings()
    priorities = {"a": 0, "b": 5, "c": 0, "d": 10, "e": 5, "f": -1, "g": 10}
    ids = {}
    for key, priority in priorities.items():
        task = create_maintenance_task(
            RecordRun(path=str(record), key=key),
            priority=priority,
            database=database,
            settings=settings,
        )
        ids[key] = task.id

    await run_until_idle(backend, concurrency=1)

    ran = [line.split()[0] for line in record.read_text().splitlines()]
    expected = sorted(priorities, key=lambda k: (-priorities[k], ids[k]))
    assert ran == expected == ["d", "g", "b", "e", "a", "c", "f"]


async def test_a_busy_worker_still_takes_higher_priority_tasks_first(
    backend: Backend, database: Database, tmp_path: Path
) -> None:
    record = tmp_path / "runs.txt"
    settings = backend.settings()
    low = [RecordRun(path=str(record), key=f"low{i}") for i in range(20)]
    high = [RecordRun(path=str(record), key=f"high{i}") for i in range(20)]
    create_maintenance_tasks(low, TaskOptions(priority=1), database=database, settings=settings)
    create_maintenance_tasks(high, TaskOptions(priority=2), database=database, settings=settings)

    await run_until_idle(backend, concurrency=1)

    ran = [line.split()[0] for line in record.read_text().splitlines()]
    assert ran == [f"high{i}" for i in range(20)] + [f"low{i}" for i in range(20)]


# ---------------------------------------------------------------- outcomes


async def test_returned_dict_is_stored_in_info_and_task_completes(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    task = create_maintenance_task(
        Echo(value=7, label="seven"), database=database, settings=backend.settings()
    )

    await run_until_idle(backend)

    row = await get_task(adatabase, task.id)
    assert row.status is S.COMPLETED
    assert row.info == {"value": 7, "label": "seven", "task_id": task.id}
    assert row.error is None
    assert row.attempts == 1
    assert row.started_at is not None and row.finished_at is not None
    assert row.started_at <= row.finished_at
    assert row.lease_token is None and row.lease_expires_at is None


async def test_exception_ends_error_with_message_in_info_and_traceback_in_error(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    task = create_maintenance_task(
        Boom(message="disk on fire"), database=database, settings=backend.settings()
    )

    await run_until_idle(backend)

    row = await get_task(adatabase, task.id)
    assert row.status is S.ERROR
    assert row.info["error"] == str(RuntimeError("disk on fire"))
    assert row.error["type"] == "RuntimeError"
    assert row.error["message"] == "disk on fire"
    assert "Traceback" in row.error["traceback"]
    assert "RuntimeError: disk on fire" in row.error["traceback"]
    assert row.attempts == 1
    assert row.finished_at is not None
    assert row.lease_token is None


async def test_a_failing_task_does_not_stop_the_worker(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    settings = backend.settings()
    boom = create_maintenance_task(Boom(), database=database, settings=settings)

    async with running_worker(backend, concurrency=1) as (_, worker):
        await wait_for_status(adatabase, boom.id, S.ERROR, worker=worker)
        echo = await acreate_maintenance_task(Echo(value=1), database=adatabase, settings=settings)
        row = await wait_for_status(adatabase, echo.id, S.COMPLETED, worker=worker)

    assert row.info["value"] == 1


# ---------------------------------------------------------------- what is not run


async def test_inactive_tasks_are_not_run(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    settings = backend.settings()
    inactive = create_maintenance_task(Echo(), inactive=True, database=database, settings=settings)
    due = create_maintenance_task(Echo(), database=database, settings=settings)

    await run_until_idle(backend)

    assert (await get_task(adatabase, due.id)).status is S.COMPLETED
    row = await get_task(adatabase, inactive.id)
    assert row.status is S.INACTIVE
    assert row.attempts == 0
    assert row.started_at is None and row.info is None


async def test_future_tasks_are_not_run_before_they_are_due(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    settings = backend.settings()
    later = create_maintenance_task(Echo(), delay=3600, database=database, settings=settings)
    at = create_maintenance_task(
        Echo(), utcnow() + timedelta(hours=1), database=database, settings=settings
    )
    due = create_maintenance_task(Echo(), database=database, settings=settings)

    await run_until_idle(backend)

    assert (await get_task(adatabase, due.id)).status is S.COMPLETED
    for task in (later, at):
        row = await get_task(adatabase, task.id)
        assert row.status is S.PENDING
        assert row.attempts == 0
        assert row.started_at is None and row.info is None
        assert row.start_at == task.start_at


async def test_a_future_task_runs_once_it_is_due(backend: Backend, adatabase: Database) -> None:
    settings = backend.settings()
    async with running_worker(backend) as (_, worker):
        task = await acreate_maintenance_task(
            Echo(value=3), utcnow() + timedelta(seconds=1), database=adatabase, settings=settings
        )
        row = await wait_for_status(adatabase, task.id, S.COMPLETED, worker=worker)

    assert row.started_at >= task.start_at


# ---------------------------------------------------------------- sync processors


async def test_sync_processor_runs_in_a_thread_and_its_dict_is_stored(
    backend: Backend, database: Database, adatabase: Database, tmp_path: Path
) -> None:
    settings = backend.settings()
    release = tmp_path / "release"
    release.touch()
    waiting = create_maintenance_task(
        SyncWaitForFile(path=str(release)), database=database, settings=settings
    )
    echo = create_maintenance_task(SyncEcho(value=5), database=database, settings=settings)

    await run_until_idle(backend)

    assert (await get_task(adatabase, waiting.id)).info == {
        "released": True,
        "in_main_thread": False,
    }
    row = await get_task(adatabase, echo.id)
    assert row.status is S.COMPLETED
    assert row.info == {"value": 5, "sync": True}


async def test_sync_processor_does_not_block_the_event_loop(
    backend: Backend, database: Database, adatabase: Database, tmp_path: Path
) -> None:
    """An async task completes while a sync one is still blocked in its thread."""
    settings = backend.settings()
    release = tmp_path / "release"
    blocked = create_maintenance_task(
        SyncWaitForFile(path=str(release)), priority=1, database=database, settings=settings
    )
    echo = create_maintenance_task(Echo(value=2), database=database, settings=settings)

    try:
        async with running_worker(backend, concurrency=2) as (_, worker):
            await wait_for_status(adatabase, echo.id, S.COMPLETED, worker=worker)
            assert (await get_task(adatabase, blocked.id)).status is S.WORKING
            release.touch()
            row = await wait_for_status(adatabase, blocked.id, S.COMPLETED, worker=worker)
    finally:
        release.touch()  # never leave the thread blocked

    assert row.info["released"] is True


# ---------------------------------------------------------------- allowlist at run time


async def test_row_with_processor_outside_the_allowlist_ends_error_with_the_reason(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    task_id = insert_raw(database, "os.system", '{"command": "true"}')

    await run_until_idle(backend)

    row = await get_task(adatabase, task_id)
    assert row.status is S.ERROR
    assert row.info["error_type"] == "ProcessorNotAllowed"
    assert "os.system" in row.info["error"]
    assert row.error["type"] == "ProcessorNotAllowed"
    assert row.attempts == 1


async def test_row_naming_a_class_that_is_not_a_processor_ends_error(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    task_id = insert_raw(database, "tests.processors.NotAProcessor", "{}")

    await run_until_idle(backend)

    row = await get_task(adatabase, task_id)
    assert row.status is S.ERROR
    assert row.info["error_type"] == "ProcessorNotAllowed"
    assert "tests.processors.NotAProcessor" in row.info["error"]


@pytest.mark.parametrize(
    ("processor_json", "mentions"),
    [
        ('{"value": "not a number"}', "value"),
        ('{"value": 1, "removed_field": 2}', "removed_field"),
        ("{this is not json", "tests.processors.Echo"),
    ],
    ids=["wrong-type", "unknown-field", "not-json"],
)
async def test_row_whose_json_no_longer_validates_ends_error_with_the_reason(
    backend: Backend,
    database: Database,
    adatabase: Database,
    processor_json: str,
    mentions: str,
) -> None:
    task_id = insert_raw(database, "tests.processors.Echo", processor_json)

    await run_until_idle(backend)

    row = await get_task(adatabase, task_id)
    assert row.status is S.ERROR
    assert row.info["error_type"] == "InvalidProcessorConfig"
    assert mentions in row.info["error"]
    json.dumps(row.info)  # the reason is stored as plain JSON


async def test_worker_keeps_running_tasks_after_rows_it_refuses(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    settings = backend.settings()
    first = create_maintenance_task(Echo(value=1), database=database, settings=settings)
    bad = [
        insert_raw(database, "os.system", "{}"),
        insert_raw(database, "tests.processors.Echo", '{"value": []}'),
    ]

    async with running_worker(backend, concurrency=1) as (_, worker):
        for task_id in bad:
            await wait_for_status(adatabase, task_id, S.ERROR, worker=worker)
        later = await acreate_maintenance_task(Echo(value=2), database=adatabase, settings=settings)
        await wait_for_status(adatabase, later.id, S.COMPLETED, worker=worker)

    assert (await get_task(adatabase, first.id)).status is S.COMPLETED


# ---------------------------------------------------------------- PostgreSQL wake-ups


@pytest.mark.parametrize(
    "queue",
    [
        "default",
        "jobs:eu",
    ],
)
async def test_an_idle_postgresql_worker_is_woken_by_an_enqueue_without_polling(
    backend: Backend, adatabase: Database, queue: str
) -> None:
    if not backend.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL only")
    settings = backend.settings(poll_interval=30)  # longer than every deadline below
    async with running_worker(backend, queues=[queue], poll_interval=30) as (worker, running):
        await wait_until(lambda: worker.listening, what="worker listening", worker=running)
        pid = worker.listener_pid
        task = await acreate_maintenance_task(
            Echo(), queue=queue, database=adatabase, settings=settings
        )
        await wait_for_status(adatabase, task.id, S.COMPLETED, within=10, worker=running)
        assert worker.listener_pid == pid  # the same LISTEN connection heard it
