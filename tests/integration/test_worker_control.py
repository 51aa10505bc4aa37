"""Controlling running work on both databases: cancellation, progress, graceful shutdown,
queues and concurrency, and leases (rescue, fencing of late finishes)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from nightcrew import MaintenanceTaskStatus, TaskOptions, create_maintenance_task
from nightcrew import create_maintenance_tasks as create_many
from nightcrew.models import Base, utcnow
from nightcrew.store import Database, Store, operations
from nightcrew.store import tasks as st
from nightcrew.store.tasks import Outcome
from nightcrew.worker import Worker
from tests.conftest import Backend, _drop_pg, _make_pg
from tests.integration.test_worker_runs import (
    SOON,
    get_task,
    run_until_idle,
    running_worker,
    start_ids_at,
    wait_for_status,
    wait_until,
)
from tests.processors import (
    TRACKED_MAX,
    Echo,
    ProgressThenEnd,
    RecordRun,
    ReportsProgress,
    Sleep,
    SyncReportsProgress,
    SyncUntilCancelled,
    Tracked,
    WaitForFile,
)

S = MaintenanceTaskStatus


async def cancel(database: Database, task_id: int) -> Any:
    return await Store(database).arun(operations.cancel(database.dialect, task_id, utcnow()))


def claim(database: Database, token: str, *, lease_seconds: float = 30) -> list[int]:
    stmt, params = st.claim(
        database.dialect,
        queues=None,
        limit=100,
        token=token,
        now=utcnow(),
        lease_seconds=lease_seconds,
    )
    with database.sync_engine.begin() as conn:
        return [t.id for t in st.claimed_from_rows(conn.execute(stmt, params).all())]


def rescue(database: Database) -> list[int]:
    with database.sync_engine.begin() as conn:
        return [row.id for row in conn.execute(st.rescue_statement(utcnow())).all()]


def finish(database: Database, token: str, outcome: Outcome) -> list[int]:
    """Write one outcome the way a worker's finish loop does; return the ids accepted."""
    dialect = database.dialect
    params = st.finish_params(dialect, token, [outcome], utcnow())
    with database.sync_engine.begin() as conn:
        return [row.id for row in conn.execute(st.finish_statement(dialect), params).all()]


# ---------------------------------------------------------------- cancellation


async def test_cancelling_a_pending_task_cancels_it_at_once_and_it_never_runs(
    backend: Backend, database: Database, adatabase: Database, tmp_path: Path
) -> None:
    record = tmp_path / "runs.txt"
    task = create_maintenance_task(
        RecordRun(path=str(record), key="x"), database=database, settings=backend.settings()
    )

    assert (await cancel(adatabase, task.id)).status is S.CANCELLED
    await run_until_idle(backend)

    row = await get_task(adatabase, task.id)
    assert row.status is S.CANCELLED
    assert row.attempts == 0 and row.started_at is None
    assert not record.exists()


async def test_cancelling_a_working_task_stops_it_and_it_ends_cancelled(
    backend: Backend, database: Database, adatabase: Database, tmp_path: Path
) -> None:
    task = create_maintenance_task(
        WaitForFile(path=str(tmp_path / "never")), database=database, settings=backend.settings()
    )

    async with running_worker(backend) as (worker, running):
        await wait_for_status(adatabase, task.id, S.WORKING, worker=running)
        assert (await cancel(adatabase, task.id)).cancel_requested_at is not None
        row = await wait_for_status(adatabase, task.id, S.CANCELLED, S.ERROR, worker=running)
        await wait_until(lambda: worker.in_flight == 0, what="task stopped")

    assert row.status is S.CANCELLED
    assert row.info["cancelled"] is True
    assert row.attempts == 1
    assert row.finished_at is not None and row.lease_token is None


async def test_cancel_reaches_a_postgresql_worker_through_notify_before_any_heartbeat(
    backend: Backend, database: Database, adatabase: Database, tmp_path: Path
) -> None:
    if not backend.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL only; SQLite checks at each heartbeat")
    task = create_maintenance_task(
        WaitForFile(path=str(tmp_path / "never")), database=database, settings=backend.settings()
    )

    # A 300 s lease heartbeats every 100 s: only the NOTIFY can deliver the cancel in time.
    async with running_worker(backend, lease_seconds=300) as (worker, running):
        await wait_until(lambda: worker.listening, what="worker listening")
        await wait_for_status(adatabase, task.id, S.WORKING, worker=running)
        await cancel(adatabase, task.id)
        row = await wait_for_status(adatabase, task.id, S.CANCELLED, within=10, worker=running)

    assert row.info["cancelled"] is True


async def test_processor_sees_is_cancel_requested(
    backend: Backend, database: Database, adatabase: Database, tmp_path: Path
) -> None:
    marker = tmp_path / "cancel-seen"
    task = create_maintenance_task(
        SyncUntilCancelled(marker=str(marker)), database=database, settings=backend.settings()
    )

    async with running_worker(backend) as (_, running):
        await wait_for_status(adatabase, task.id, S.WORKING, worker=running)
        await cancel(adatabase, task.id)
        await wait_for_status(adatabase, task.id, S.CANCELLED, worker=running)
        await wait_until(lambda: marker.exists(), what="processor saw the request")


# ---------------------------------------------------------------- progress


async def test_progress_is_written_while_running_and_the_last_value_is_kept(
    backend: Backend, database: Database, adatabase: Database, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    task = create_maintenance_task(
        ReportsProgress(path=str(release), steps=50),
        database=database,
        settings=backend.settings(),
    )

    async def last_value_written() -> Any:
        row = await get_task(adatabase, task.id)
        return row if row.progress_message == "step 50" else None

    try:
        async with running_worker(backend) as (_, running):
            row = await wait_until(last_value_written, what="last progress written", worker=running)
            assert row.status is S.WORKING
            assert row.progress == pytest.approx(50 * 100 / 51)
            release.touch()
            done = await wait_for_status(adatabase, task.id, S.COMPLETED, worker=running)
    finally:
        release.touch()

    assert done.progress == 100.0


async def test_progress_reported_from_a_sync_processor_is_written(
    backend: Backend, database: Database, adatabase: Database, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    task = create_maintenance_task(
        SyncReportsProgress(path=str(release), percent=42, message="from a thread"),
        database=database,
        settings=backend.settings(),
    )

    async def written() -> Any:
        row = await get_task(adatabase, task.id)
        return row if row.progress is not None else None

    try:
        async with running_worker(backend) as (_, running):
            row = await wait_until(written, what="progress written", worker=running)
            release.touch()
            await wait_for_status(adatabase, task.id, S.COMPLETED, worker=running)
    finally:
        release.touch()

    assert row.progress == 42.0
    assert row.progress_message == "from a thread"


async def test_progress_reported_just_before_failing_is_kept(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    task = create_maintenance_task(
        ProgressThenEnd(percent=80, message="last words", fail=True),
        database=database,
        settings=backend.settings(),
    )

    await run_until_idle(backend)

    row = await get_task(adatabase, task.id)
    assert row.status is S.ERROR
    assert (row.progress, row.progress_message) == (80.0, "last words")


async def test_progress_message_reported_just_before_completing_is_kept(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    task = create_maintenance_task(
        ProgressThenEnd(percent=90, message="wrapping up"),
        database=database,
        settings=backend.settings(),
    )

    await run_until_idle(backend)

    row = await get_task(adatabase, task.id)
    assert row.status is S.COMPLETED
    assert (row.progress, row.progress_message) == (100.0, "wrapping up")


# ---------------------------------------------------------------- graceful shutdown


async def test_graceful_shutdown_hands_a_running_task_back_pending_without_spending_an_attempt(
    backend: Backend, database: Database, adatabase: Database, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    task = create_maintenance_task(
        WaitForFile(path=str(release)), database=database, settings=backend.settings()
    )
    worker = Worker(backend.settings(shutdown_grace_seconds=0.2), concurrency=2)
    running = asyncio.create_task(worker.run())
    await wait_for_status(adatabase, task.id, S.WORKING, worker=running)

    worker.request_stop()
    await asyncio.wait_for(running, SOON)

    row = await get_task(adatabase, task.id)
    assert row.status is S.PENDING
    assert row.attempts == 0
    assert row.lease_token is None and row.lease_expires_at is None
    assert row.finished_at is None
    assert row.start_at <= utcnow()  # due at once: another worker takes it now

    release.touch()
    await run_until_idle(backend)
    row = await get_task(adatabase, task.id)
    assert row.status is S.COMPLETED
    assert row.attempts == 1


async def test_graceful_shutdown_lets_in_flight_tasks_finish_within_the_grace_period(
    backend: Backend, database: Database, adatabase: Database, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    task = create_maintenance_task(
        WaitForFile(path=str(release)), database=database, settings=backend.settings()
    )
    worker = Worker(backend.settings(shutdown_grace_seconds=120), concurrency=2)
    running = asyncio.create_task(worker.run())
    await wait_for_status(adatabase, task.id, S.WORKING, worker=running)

    worker.request_stop()
    await asyncio.sleep(0.2)  # the worker is now waiting for the task (it cannot finish yet)
    assert not running.done()
    release.touch()
    await asyncio.wait_for(running, SOON)

    row = await get_task(adatabase, task.id)
    assert row.status is S.COMPLETED
    assert row.info == {"released": True}


async def test_a_stopping_worker_claims_no_new_task(
    backend: Backend, database: Database, adatabase: Database, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    settings = backend.settings(shutdown_grace_seconds=120)
    first = create_maintenance_task(
        WaitForFile(path=str(release)), database=database, settings=settings
    )
    worker = Worker(settings, concurrency=4)
    running = asyncio.create_task(worker.run())
    try:
        await wait_for_status(adatabase, first.id, S.WORKING, worker=running)
        worker.request_stop()
        later = await asyncio.to_thread(
            create_maintenance_task, Echo(), database=database, settings=settings
        )
        await asyncio.sleep(0.3)  # several poll intervals in which it could have claimed
    finally:
        release.touch()
    await asyncio.wait_for(running, SOON)

    assert (await get_task(adatabase, first.id)).status is S.COMPLETED
    row = await get_task(adatabase, later.id)
    assert row.status is S.PENDING and row.attempts == 0


# ---------------------------------------------------------------- queues and concurrency


async def test_total_concurrency_caps_tasks_running_at_once(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    group = uuid.uuid4().hex
    ids = create_many(
        [Tracked(group=group, seconds=0.2) for _ in range(8)],
        database=database,
        settings=backend.settings(),
    )

    await run_until_idle(backend, concurrency=3)

    assert TRACKED_MAX[group] == 3
    assert {(await get_task(adatabase, i)).status for i in ids} == {S.COMPLETED}


async def test_per_queue_limit_caps_tasks_of_that_queue_only(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    limited, free = uuid.uuid4().hex, uuid.uuid4().hex
    settings = backend.settings()
    ids = create_many(
        [Tracked(group=limited, seconds=0.2) for _ in range(4)],
        TaskOptions(queue="reports"),
        database=database,
        settings=settings,
    ) + create_many(
        [Tracked(group=free, seconds=0.2) for _ in range(4)],
        TaskOptions(queue="mail"),
        database=database,
        settings=settings,
    )
    worker = Worker(
        settings, queues=["reports", "mail"], concurrency=6, queue_limits={"reports": 1}
    )

    await asyncio.wait_for(worker.run(until_idle=True), 120)

    assert TRACKED_MAX[limited] == 1
    assert TRACKED_MAX[free] == 4
    assert {(await get_task(adatabase, i)).status for i in ids} == {S.COMPLETED}


async def test_slots_a_limited_queue_leaves_unused_serve_the_other_queues(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    group = uuid.uuid4().hex
    settings = backend.settings()
    ids = create_many(
        [Tracked(group=group, seconds=0.3) for _ in range(4)],
        TaskOptions(queue="mail"),
        database=database,
        settings=settings,
    )
    worker = Worker(
        settings, queues=["reports", "mail"], concurrency=4, queue_limits={"reports": 3}
    )

    await asyncio.wait_for(worker.run(until_idle=True), 120)

    assert {(await get_task(adatabase, i)).status for i in ids} == {S.COMPLETED}
    assert TRACKED_MAX[group] == 4  # no reports task: all four slots are free for mail


async def test_a_worker_of_all_queues_with_a_queue_limit_still_runs_the_other_queues(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    settings = backend.settings()
    limited = create_maintenance_task(Echo(), queue="reports", database=database, settings=settings)
    other = create_maintenance_task(Echo(), queue="mail", database=database, settings=settings)
    worker = Worker(settings, concurrency=4, queue_limits={"reports": 1})  # queues: all

    await asyncio.wait_for(worker.run(until_idle=True), 120)

    assert (await get_task(adatabase, limited.id)).status is S.COMPLETED
    assert (await get_task(adatabase, other.id)).status is S.COMPLETED


async def test_a_cancel_requested_before_its_worker_died_ends_cancelled_on_rescue(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    task = create_maintenance_task(
        Echo(), max_attempts=3, database=database, settings=backend.settings()
    )
    assert claim(database, "dead-worker", lease_seconds=-1) == [task.id]
    await cancel(adatabase, task.id)

    await run_until_idle(backend)

    row = await get_task(adatabase, task.id)
    assert row.status is S.CANCELLED
    assert row.attempts == 1


async def test_a_worker_runs_only_tasks_of_its_queues(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    settings = backend.settings()
    mine = create_maintenance_task(Echo(), queue="mail", database=database, settings=settings)
    other = create_maintenance_task(Echo(), queue="reports", database=database, settings=settings)

    await asyncio.wait_for(Worker(settings, queues=["mail"]).run(until_idle=True), 120)

    assert (await get_task(adatabase, mine.id)).status is S.COMPLETED
    row = await get_task(adatabase, other.id)
    assert row.status is S.PENDING and row.attempts == 0


# ---------------------------------------------------------------- leases


async def test_a_worker_rescues_and_runs_a_task_whose_lease_expired(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    task = create_maintenance_task(
        Echo(value=9), max_attempts=2, database=database, settings=backend.settings()
    )
    assert claim(database, "dead-worker", lease_seconds=-1) == [task.id]  # already expired

    await run_until_idle(backend)

    row = await get_task(adatabase, task.id)
    assert row.status is S.COMPLETED
    assert row.attempts == 2
    assert row.info["value"] == 9


async def test_an_expired_lease_with_no_attempt_left_ends_error_with_the_reason(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    task = create_maintenance_task(Echo(), database=database, settings=backend.settings())
    assert claim(database, "dead-worker", lease_seconds=-1) == [task.id]

    await run_until_idle(backend)

    row = await get_task(adatabase, task.id)
    assert row.status is S.ERROR
    assert row.attempts == 1
    assert row.info["rescued"] is True
    assert row.info["error"]
    assert row.error["type"] == "LeaseExpired"
    assert row.lease_token is None and row.finished_at is not None


async def test_a_healthy_long_task_is_never_rescued(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    """Two workers with 2 s leases (each one rescuing) and a task running 5 s."""
    task = create_maintenance_task(
        Sleep(seconds=5), max_attempts=3, database=database, settings=backend.settings()
    )

    async with (
        running_worker(backend, lease_seconds=2, worker_id="a") as (_, a),
        running_worker(backend, lease_seconds=2, worker_id="b") as (_, b),
    ):
        row = await wait_for_status(adatabase, task.id, S.COMPLETED, S.ERROR, worker=a)
        assert not b.done()

    assert row.status is S.COMPLETED
    assert row.attempts == 1
    assert row.info == {"slept": 5}


async def test_a_worker_stops_running_a_task_whose_lease_was_rescued(
    backend: Backend, database: Database, adatabase: Database, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    settings = backend.settings()
    task = create_maintenance_task(
        WaitForFile(path=str(release)),
        max_attempts=2,
        queue="a",
        database=database,
        settings=settings,
    )

    def take_over() -> None:
        # As if worker A had hung past its lease: expire it and rescue the task, then move
        # it where only worker B looks so A cannot claim it again, all in one transaction.
        with database.sync_engine.begin() as conn:
            expired = utcnow() - timedelta(seconds=1)
            conn.execute(update(st.T).where(st.T.c.id == task.id).values(lease_expires_at=expired))
            rows = conn.execute(st.rescue_statement(utcnow())).all()
            assert [r.id for r in rows] == [task.id]
            conn.execute(update(st.T).where(st.T.c.id == task.id).values(queue="b"))

    try:
        async with running_worker(backend, queues=["a"], worker_id="A") as (a, running_a):
            await wait_for_status(adatabase, task.id, S.WORKING, worker=running_a)
            await asyncio.to_thread(take_over)
            # A learns at its next heartbeat that it lost the lease, and stops the task.
            await wait_until(lambda: a.in_flight == 0, what="A stopped the task")
            release.touch()
            async with running_worker(backend, queues=["b"], worker_id="B") as (_, running_b):
                row = await wait_for_status(adatabase, task.id, S.COMPLETED, worker=running_b)
            assert a.processed == 0
    finally:
        release.touch()

    assert row.attempts == 2
    assert row.info == {"released": True}
    assert (await get_task(adatabase, task.id)).updated_at == row.updated_at


async def test_a_late_finish_from_a_rescued_lease_is_rejected(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    task = create_maintenance_task(
        Echo(value=1), max_attempts=2, database=database, settings=backend.settings()
    )
    assert claim(database, "old-worker", lease_seconds=-1) == [task.id]

    await run_until_idle(backend)  # rescues it, runs it again and completes it
    new_run = await get_task(adatabase, task.id)
    assert (new_run.status, new_run.attempts) == (S.COMPLETED, 2)

    late = Outcome(task.id, 1, S.ERROR, {"error": "late"}, {"type": "X"})
    assert finish(database, "old-worker", late) == []

    row = await get_task(adatabase, task.id)
    assert row.status is S.COMPLETED
    assert row.info == new_run.info == {"value": 1, "label": "", "task_id": task.id}
    assert row.error is None
    assert row.attempts == 2
    assert row.finished_at == new_run.finished_at


async def test_a_late_finish_is_rejected_while_the_new_run_holds_the_task(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    task = create_maintenance_task(
        Echo(), max_attempts=3, database=database, settings=backend.settings()
    )
    assert claim(database, "old-worker", lease_seconds=-1) == [task.id]
    assert rescue(database) == [task.id]
    assert claim(database, "new-worker") == [task.id]

    late = Outcome(task.id, 1, S.COMPLETED, {"from": "old"})
    assert finish(database, "old-worker", late) == []
    row = await get_task(adatabase, task.id)
    assert (row.status, row.lease_token, row.attempts) == (S.WORKING, "new-worker", 2)

    assert finish(database, "new-worker", Outcome(task.id, 2, S.COMPLETED, {"from": "new"})) == [
        task.id
    ]
    row = await get_task(adatabase, task.id)
    assert (row.status, row.info) == (S.COMPLETED, {"from": "new"})


async def test_a_late_finish_with_the_same_token_is_fenced_by_the_attempt(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    """A worker restarted under the same id must not be mistaken for its former self."""
    task = create_maintenance_task(
        Echo(), max_attempts=3, database=database, settings=backend.settings()
    )
    assert claim(database, "host:1", lease_seconds=-1) == [task.id]
    assert rescue(database) == [task.id]
    assert claim(database, "host:1") == [task.id]

    late = Outcome(task.id, 1, S.ERROR, {"error": "late"})
    assert finish(database, "host:1", late) == []
    row = await get_task(adatabase, task.id)
    assert (row.status, row.attempts) == (S.WORKING, 2)


async def test_a_late_cancel_from_a_rescued_lease_is_rejected(
    backend: Backend, database: Database, adatabase: Database
) -> None:
    task = create_maintenance_task(
        Echo(), max_attempts=3, database=database, settings=backend.settings()
    )
    assert claim(database, "old-worker", lease_seconds=-1) == [task.id]
    assert rescue(database) == [task.id]

    late = Outcome(task.id, 1, S.CANCELLED, {"cancelled": True})
    assert finish(database, "old-worker", late) == []
    row = await get_task(adatabase, task.id)
    assert (row.status, row.attempts) == (S.PENDING, 1)


@pytest.fixture
def other_schema(backend: Backend) -> Iterator[Database]:
    """PostgreSQL only: a second nightcrew install in another schema of the same database."""
    if not backend.is_postgres:
        pytest.skip("schemas sharing one database (and its NOTIFY channels) are PostgreSQL only")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    other = _make_pg(schema)
    db = Database(other.url)
    Base.metadata.create_all(db.sync_engine)
    yield db
    db.dispose()
    _drop_pg(schema)


async def test_a_cancel_in_another_schema_does_not_stop_a_task_with_the_same_id(
    backend: Backend,
    database: Database,
    adatabase: Database,
    other_schema: Database,
    tmp_path: Path,
) -> None:
    release = tmp_path / "release"
    settings = backend.settings()
    task = create_maintenance_task(
        WaitForFile(path=str(release)), database=database, settings=settings
    )
    start_ids_at(other_schema, task.id - 1)
    twin = create_maintenance_task(Echo(), database=other_schema, settings=settings)
    assert twin.id == task.id

    try:
        async with running_worker(backend) as (worker, running):
            await wait_until(lambda: worker.listening, what="worker listening")
            await wait_for_status(adatabase, task.id, S.WORKING, worker=running)
            assert claim(other_schema, "elsewhere") == [twin.id]
            await asyncio.to_thread(
                Store(other_schema).run,
                operations.cancel(other_schema.dialect, twin.id, utcnow()),
            )
            await asyncio.sleep(0.5)  # a NOTIFY arrives in milliseconds
            release.touch()
            row = await wait_for_status(
                adatabase, task.id, S.COMPLETED, S.CANCELLED, worker=running
            )
    finally:
        release.touch()

    assert row.status is S.COMPLETED
