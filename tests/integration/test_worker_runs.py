"""The origin's runner behaviour, run by the in-process `Worker` on both databases.

Which tasks run and in what order, what a finished task's row holds, sync processors, and
the allowlist applied at run time to rows that bypassed enqueue's checks.
"""

from __future__ import annotations

import gc
import json
from datetime import timedelta
from pathlib import Path

import pytest

from nightcrew import (
    MaintenanceTaskStatus,
    TaskOptions,
    acreate_maintenance_task,
    create_maintenance_task,
    create_maintenance_tasks,
)
from nightcrew.models import utcnow
from nightcrew.store import Database, TaskStore
from tests.conftest import Backend
from tests.helpers import (
    get_task,
    insert_raw,
    run_until_idle,
    running_worker,
    wait_for_status,
    wait_until,
)
from tests.processors import Boom, Echo, RecordGcThreshold, RecordRun, SyncEcho, SyncWaitForFile

S = MaintenanceTaskStatus


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
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        Echo(value=7, label="seven"), database=database, settings=backend.settings()
    )

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.COMPLETED
    assert row.info == {"value": 7, "label": "seven", "task_id": task.id}
    assert row.error is None
    assert row.attempts == 1
    assert row.started_at is not None and row.finished_at is not None
    assert row.started_at <= row.finished_at
    assert row.lease_token is None and row.lease_expires_at is None


async def test_exception_ends_error_with_message_in_info_and_traceback_in_error(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        Boom(message="disk on fire"), database=database, settings=backend.settings()
    )

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
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
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    settings = backend.settings()
    boom = create_maintenance_task(Boom(), database=database, settings=settings)

    async with running_worker(backend, concurrency=1) as (_, worker):
        await wait_for_status(astore, boom.id, S.ERROR, worker=worker)
        echo = await acreate_maintenance_task(
            Echo(value=1), database=astore.database, settings=settings
        )
        row = await wait_for_status(astore, echo.id, S.COMPLETED, worker=worker)

    assert row.info["value"] == 1


# ---------------------------------------------------------------- what is not run


async def test_inactive_tasks_are_not_run(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    settings = backend.settings()
    inactive = create_maintenance_task(Echo(), inactive=True, database=database, settings=settings)
    due = create_maintenance_task(Echo(), database=database, settings=settings)

    await run_until_idle(backend)

    assert (await get_task(astore, due.id)).status is S.COMPLETED
    row = await get_task(astore, inactive.id)
    assert row.status is S.INACTIVE
    assert row.attempts == 0
    assert row.started_at is None and row.info is None


async def test_future_tasks_are_not_run_before_they_are_due(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    settings = backend.settings()
    later = create_maintenance_task(Echo(), start_in=3600, database=database, settings=settings)
    at = create_maintenance_task(
        Echo(), utcnow() + timedelta(hours=1), database=database, settings=settings
    )
    due = create_maintenance_task(Echo(), database=database, settings=settings)

    await run_until_idle(backend)

    assert (await get_task(astore, due.id)).status is S.COMPLETED
    for task in (later, at):
        row = await get_task(astore, task.id)
        assert row.status is S.PENDING
        assert row.attempts == 0
        assert row.started_at is None and row.info is None
        assert row.start_at == task.start_at


async def test_a_future_task_runs_once_it_is_due(backend: Backend, astore: TaskStore) -> None:
    settings = backend.settings()
    async with running_worker(backend) as (_, worker):
        task = await acreate_maintenance_task(
            Echo(value=3),
            utcnow() + timedelta(seconds=1),
            database=astore.database,
            settings=settings,
        )
        row = await wait_for_status(astore, task.id, S.COMPLETED, worker=worker)

    assert row.started_at >= task.start_at


# ---------------------------------------------------------------- sync processors


async def test_sync_processor_runs_in_a_thread_and_its_dict_is_stored(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    settings = backend.settings()
    release = tmp_path / "release"
    release.touch()
    waiting = create_maintenance_task(
        SyncWaitForFile(path=str(release)), database=database, settings=settings
    )
    echo = create_maintenance_task(SyncEcho(value=5), database=database, settings=settings)

    await run_until_idle(backend)

    assert (await get_task(astore, waiting.id)).info == {
        "released": True,
        "in_main_thread": False,
    }
    row = await get_task(astore, echo.id)
    assert row.status is S.COMPLETED
    assert row.info == {"value": 5, "sync": True}


async def test_sync_processor_does_not_block_the_event_loop(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
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
            await wait_for_status(astore, echo.id, S.COMPLETED, worker=worker)
            assert (await get_task(astore, blocked.id)).status is S.WORKING
            release.touch()
            row = await wait_for_status(astore, blocked.id, S.COMPLETED, worker=worker)
    finally:
        release.touch()  # never leave the thread blocked

    assert row.info["released"] is True


# ---------------------------------------------------------------- allowlist at run time


async def test_row_with_processor_outside_the_allowlist_ends_error_with_the_reason(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task_id = insert_raw(database, "os.system", '{"command": "true"}')

    await run_until_idle(backend)

    row = await get_task(astore, task_id)
    assert row.status is S.ERROR
    assert row.info["error_type"] == "ProcessorNotAllowed"
    assert "os.system" in row.info["error"]
    assert row.error["type"] == "ProcessorNotAllowed"
    assert row.attempts == 1


async def test_row_naming_a_class_that_is_not_a_processor_ends_error(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task_id = insert_raw(database, "tests.processors.NotAProcessor", "{}")

    await run_until_idle(backend)

    row = await get_task(astore, task_id)
    assert row.status is S.ERROR
    assert row.info["error_type"] == "ProcessorNotAllowed"
    assert "tests.processors.NotAProcessor" in row.info["error"]


@pytest.mark.parametrize(
    ("processor_type", "processor_json", "mentions"),
    [
        ("tests.processors.Echo", '{"value": "not a number"}', "value"),
        ("tests.processors.StrictEcho", '{"value": 1, "removed_field": 2}', "removed_field"),
        ("tests.processors.Echo", "{this is not json", "tests.processors.Echo"),
    ],
    ids=["wrong-type", "unknown-field-of-a-strict-processor", "not-json"],
)
async def test_row_whose_json_no_longer_validates_ends_error_with_the_reason(
    backend: Backend,
    database: Database,
    astore: TaskStore,
    processor_type: str,
    processor_json: str,
    mentions: str,
) -> None:
    task_id = insert_raw(database, processor_type, processor_json)

    await run_until_idle(backend)

    row = await get_task(astore, task_id)
    assert row.status is S.ERROR
    assert row.info["error_type"] == "InvalidProcessorConfig"
    assert mentions in row.info["error"]
    json.dumps(row.info)  # the reason is stored as plain JSON


async def test_row_with_a_field_the_processor_no_longer_declares_runs_and_ignores_it(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    # Unknown keys in stored JSON are kept and ignored, as under the origin.
    task_id = insert_raw(database, "tests.processors.Echo", '{"value": 1, "removed_field": 2}')

    await run_until_idle(backend)

    row = await get_task(astore, task_id)
    assert row.status is S.COMPLETED
    assert row.info == {"value": 1, "label": "", "task_id": task_id}


async def test_worker_keeps_running_tasks_after_rows_it_refuses(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    settings = backend.settings()
    first = create_maintenance_task(Echo(value=1), database=database, settings=settings)
    bad = [
        insert_raw(database, "os.system", "{}"),
        insert_raw(database, "tests.processors.Echo", '{"value": []}'),
    ]

    async with running_worker(backend, concurrency=1) as (_, worker):
        for task_id in bad:
            await wait_for_status(astore, task_id, S.ERROR, worker=worker)
        later = await acreate_maintenance_task(
            Echo(value=2), database=astore.database, settings=settings
        )
        await wait_for_status(astore, later.id, S.COMPLETED, worker=worker)

    assert (await get_task(astore, first.id)).status is S.COMPLETED


# ---------------------------------------------------------------- PostgreSQL wake-ups


@pytest.mark.parametrize(
    "queue",
    [
        "default",
        "jobs:eu",
    ],
)
async def test_an_idle_postgresql_worker_is_woken_by_an_enqueue_without_polling(
    backend: Backend, astore: TaskStore, queue: str
) -> None:
    if not backend.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL only")
    settings = backend.settings(poll_interval=30)  # longer than every deadline below
    async with running_worker(backend, queues=[queue], poll_interval=30) as (worker, running):
        await wait_until(lambda: worker.listening, what="worker listening", worker=running)
        pid = worker.waker.listener_pid
        task = await acreate_maintenance_task(
            Echo(), queue=queue, database=astore.database, settings=settings
        )
        await wait_for_status(astore, task.id, S.COMPLETED, within=10, worker=running)
        assert worker.waker.listener_pid == pid  # the same LISTEN connection heard it


# ---------------------------------------------------------------- the garbage collector


async def _threshold_during_a_run(
    backend: Backend, database: Database, tmp_path: Path, gc_threshold: int
) -> int:
    """The young-generation threshold a task saw while a worker with ``gc_threshold`` ran it."""
    seen = tmp_path / "threshold.txt"
    create_maintenance_task(
        RecordGcThreshold(path=str(seen)), database=database, settings=backend.settings()
    )
    await run_until_idle(backend, gc_threshold=gc_threshold)
    return int(seen.read_text())


async def test_a_worker_raises_the_young_collection_threshold_while_it_runs_then_restores_it(
    backend: Backend, database: Database, tmp_path: Path
) -> None:
    before = gc.get_threshold()

    assert await _threshold_during_a_run(backend, database, tmp_path, 12_345) == 12_345
    assert gc.get_threshold() == before


async def test_a_gc_threshold_of_zero_leaves_the_collector_as_it_was(
    backend: Backend, database: Database, tmp_path: Path
) -> None:
    before = gc.get_threshold()

    assert await _threshold_during_a_run(backend, database, tmp_path, 0) == before[0]
