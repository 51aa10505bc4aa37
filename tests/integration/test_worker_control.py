"""Controlling running work on both databases: cancellation, progress, graceful shutdown,
queues and concurrency, and leases (rescue, fencing of late finishes)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from nightcrew import MaintenanceTaskStatus, TaskOptions, create_maintenance_task
from nightcrew import create_maintenance_tasks as create_many
from nightcrew.models import Base, utcnow
from nightcrew.store import Database, TaskStore, open_store, ops
from nightcrew.store.statements import LEASE_EXPIRED
from nightcrew.values import TaskView
from nightcrew.worker import Worker
from tests.conftest import Backend, _drop_pg, _make_pg
from tests.helpers import (
    SOON,
    claim,
    claim_ids,
    finish,
    get_task,
    rescue,
    run_until_idle,
    running_worker,
    set_columns,
    set_status,
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


async def cancel(store: TaskStore, task_id: int) -> TaskView:
    """An operator's cancel, as ``tasks cancel`` makes it."""
    return await store.arun(ops.cancel, task_id)


# ---------------------------------------------------------------- cancellation


async def test_cancelling_a_pending_task_cancels_it_at_once_and_it_never_runs(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    record = tmp_path / "runs.txt"
    task = create_maintenance_task(
        RecordRun(path=str(record), key="x"), database=database, settings=backend.settings()
    )

    assert (await cancel(astore, task.id)).status is S.CANCELLED
    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.CANCELLED
    assert row.attempts == 0 and row.started_at is None
    assert not record.exists()


async def test_cancelling_a_working_task_stops_it_and_it_ends_cancelled(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    task = create_maintenance_task(
        WaitForFile(path=str(tmp_path / "never")), database=database, settings=backend.settings()
    )

    async with running_worker(backend) as (worker, running):
        await wait_for_status(astore, task.id, S.WORKING, worker=running)
        assert (await cancel(astore, task.id)).cancel_requested_at is not None
        row = await wait_for_status(astore, task.id, S.CANCELLED, S.ERROR, worker=running)
        await wait_until(lambda: worker.in_flight == 0, what="task stopped")

    assert row.status is S.CANCELLED
    assert row.info["cancelled"] is True
    assert row.attempts == 1
    assert row.finished_at is not None and row.lease_token is None


async def test_cancel_reaches_a_postgresql_worker_through_notify_before_any_heartbeat(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    if not backend.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL only; SQLite checks at each heartbeat")
    task = create_maintenance_task(
        WaitForFile(path=str(tmp_path / "never")), database=database, settings=backend.settings()
    )

    # A 300 s lease heartbeats every 100 s: only the NOTIFY can deliver the cancel in time.
    async with running_worker(backend, lease_seconds=300) as (worker, running):
        await wait_until(lambda: worker.listening, what="worker listening")
        await wait_for_status(astore, task.id, S.WORKING, worker=running)
        await cancel(astore, task.id)
        row = await wait_for_status(astore, task.id, S.CANCELLED, within=10, worker=running)

    assert row.info["cancelled"] is True


async def test_processor_sees_is_cancel_requested(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    marker = tmp_path / "cancel-seen"
    task = create_maintenance_task(
        SyncUntilCancelled(marker=str(marker)), database=database, settings=backend.settings()
    )

    async with running_worker(backend) as (_, running):
        await wait_for_status(astore, task.id, S.WORKING, worker=running)
        await cancel(astore, task.id)
        await wait_for_status(astore, task.id, S.CANCELLED, worker=running)
        await wait_until(lambda: marker.exists(), what="processor saw the request")


# ---------------------------------------------------------------- progress


async def test_progress_is_written_while_running_and_the_last_value_is_kept(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    task = create_maintenance_task(
        ReportsProgress(path=str(release), steps=50),
        database=database,
        settings=backend.settings(),
    )

    async def last_value_written() -> TaskView | None:
        row = await get_task(astore, task.id)
        return row if row.progress_message == "step 50" else None

    try:
        async with running_worker(backend) as (_, running):
            row = await wait_until(last_value_written, what="last progress written", worker=running)
            assert row.status is S.WORKING
            assert row.progress == pytest.approx(50 * 100 / 51)
            release.touch()
            done = await wait_for_status(astore, task.id, S.COMPLETED, worker=running)
    finally:
        release.touch()

    assert done.progress == 100.0


async def test_progress_reported_from_a_sync_processor_is_written(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    task = create_maintenance_task(
        SyncReportsProgress(path=str(release), percent=42, message="from a thread"),
        database=database,
        settings=backend.settings(),
    )

    async def written() -> TaskView | None:
        row = await get_task(astore, task.id)
        return row if row.progress is not None else None

    try:
        async with running_worker(backend) as (_, running):
            row = await wait_until(written, what="progress written", worker=running)
            release.touch()
            await wait_for_status(astore, task.id, S.COMPLETED, worker=running)
    finally:
        release.touch()

    assert row.progress == 42.0
    assert row.progress_message == "from a thread"


async def test_progress_reported_just_before_failing_is_kept(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        ProgressThenEnd(percent=80, message="last words", fail=True),
        database=database,
        settings=backend.settings(),
    )

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.ERROR
    assert (row.progress, row.progress_message) == (80.0, "last words")


async def test_progress_message_reported_just_before_completing_is_kept(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        ProgressThenEnd(percent=90, message="wrapping up"),
        database=database,
        settings=backend.settings(),
    )

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.COMPLETED
    assert (row.progress, row.progress_message) == (100.0, "wrapping up")


# ---------------------------------------------------------------- graceful shutdown


async def test_graceful_shutdown_hands_a_running_task_back_pending_without_spending_an_attempt(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    task = create_maintenance_task(
        WaitForFile(path=str(release)), database=database, settings=backend.settings()
    )
    worker = Worker(backend.settings(shutdown_grace_seconds=0.2), concurrency=2)
    running = asyncio.create_task(worker.run())
    await wait_for_status(astore, task.id, S.WORKING, worker=running)

    worker.request_stop()
    await asyncio.wait_for(running, SOON)

    row = await get_task(astore, task.id)
    assert row.status is S.PENDING
    assert row.attempts == 0
    assert row.lease_token is None and row.lease_expires_at is None
    assert row.finished_at is None
    assert row.start_at <= utcnow()  # due at once: another worker takes it now

    release.touch()
    await run_until_idle(backend)
    row = await get_task(astore, task.id)
    assert row.status is S.COMPLETED
    assert row.attempts == 1


async def test_graceful_shutdown_lets_in_flight_tasks_finish_within_the_grace_period(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    task = create_maintenance_task(
        WaitForFile(path=str(release)), database=database, settings=backend.settings()
    )
    worker = Worker(backend.settings(shutdown_grace_seconds=120), concurrency=2)
    running = asyncio.create_task(worker.run())
    await wait_for_status(astore, task.id, S.WORKING, worker=running)

    worker.request_stop()
    await asyncio.sleep(0.2)  # the worker is now waiting for the task (it cannot finish yet)
    assert not running.done()
    release.touch()
    await asyncio.wait_for(running, SOON)

    row = await get_task(astore, task.id)
    assert row.status is S.COMPLETED
    assert row.info == {"released": True}


async def test_a_stopping_worker_claims_no_new_task(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    settings = backend.settings(shutdown_grace_seconds=120)
    first = create_maintenance_task(
        WaitForFile(path=str(release)), database=database, settings=settings
    )
    worker = Worker(settings, concurrency=4)
    running = asyncio.create_task(worker.run())
    try:
        await wait_for_status(astore, first.id, S.WORKING, worker=running)
        worker.request_stop()
        later = await asyncio.to_thread(
            create_maintenance_task, Echo(), database=database, settings=settings
        )
        await asyncio.sleep(0.3)  # several poll intervals in which it could have claimed
    finally:
        release.touch()
    await asyncio.wait_for(running, SOON)

    assert (await get_task(astore, first.id)).status is S.COMPLETED
    row = await get_task(astore, later.id)
    assert row.status is S.PENDING and row.attempts == 0


# ---------------------------------------------------------------- queues and concurrency


async def test_total_concurrency_caps_tasks_running_at_once(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    group = uuid.uuid4().hex
    ids = create_many(
        [Tracked(group=group, seconds=0.2) for _ in range(8)],
        database=database,
        settings=backend.settings(),
    )

    await run_until_idle(backend, concurrency=3)

    assert TRACKED_MAX[group] == 3
    assert {(await get_task(astore, i)).status for i in ids} == {S.COMPLETED}


async def test_per_queue_limit_caps_tasks_of_that_queue_only(
    backend: Backend, database: Database, astore: TaskStore
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
    assert {(await get_task(astore, i)).status for i in ids} == {S.COMPLETED}


async def test_slots_a_limited_queue_leaves_unused_serve_the_other_queues(
    backend: Backend, database: Database, astore: TaskStore
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

    assert {(await get_task(astore, i)).status for i in ids} == {S.COMPLETED}
    assert TRACKED_MAX[group] == 4  # no reports task: all four slots are free for mail


async def test_a_worker_of_all_queues_with_a_queue_limit_still_runs_the_other_queues(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    settings = backend.settings()
    limited = create_maintenance_task(Echo(), queue="reports", database=database, settings=settings)
    other = create_maintenance_task(Echo(), queue="mail", database=database, settings=settings)
    worker = Worker(settings, concurrency=4, queue_limits={"reports": 1})  # queues: all

    await asyncio.wait_for(worker.run(until_idle=True), 120)

    assert (await get_task(astore, limited.id)).status is S.COMPLETED
    assert (await get_task(astore, other.id)).status is S.COMPLETED


async def test_a_cancel_requested_before_its_worker_died_ends_cancelled_on_rescue(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        Echo(), max_attempts=3, database=database, settings=backend.settings()
    )
    assert await claim_ids(astore, "dead-worker/1", lease_seconds=-1) == [task.id]
    await cancel(astore, task.id)

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.CANCELLED
    assert row.attempts == 1


async def test_a_worker_runs_only_tasks_of_its_queues(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    settings = backend.settings()
    mine = create_maintenance_task(Echo(), queue="mail", database=database, settings=settings)
    other = create_maintenance_task(Echo(), queue="reports", database=database, settings=settings)

    await asyncio.wait_for(Worker(settings, queues=["mail"]).run(until_idle=True), 120)

    assert (await get_task(astore, mine.id)).status is S.COMPLETED
    row = await get_task(astore, other.id)
    assert row.status is S.PENDING and row.attempts == 0


# ---------------------------------------------------------------- leases


async def test_an_expired_lease_hands_the_task_back_without_spending_an_attempt(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(Echo(), database=database, settings=backend.settings())
    assert await claim_ids(astore, "dead-worker/1", lease_seconds=-1) == [task.id]

    assert await rescue(astore) == [task.id]

    row = await get_task(astore, task.id)
    assert row.status is S.PENDING
    assert (row.attempts, row.rescues) == (0, 1)
    assert row.start_at <= utcnow()  # due at once
    assert row.lease_token is None and row.lease_expires_at is None
    assert row.finished_at is None
    assert row.info == {"error": LEASE_EXPIRED, "rescued": True}
    assert row.error["type"] == "LeaseExpired"


async def test_a_worker_rescues_and_runs_a_task_whose_lease_expired(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    # One attempt only: the crash of the worker that held it does not use it up.
    task = create_maintenance_task(Echo(value=9), database=database, settings=backend.settings())
    assert await claim_ids(astore, "dead-worker/1", lease_seconds=-1) == [task.id]

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.COMPLETED
    assert (row.attempts, row.rescues) == (1, 1)
    assert row.info["value"] == 9


async def test_a_task_rescued_more_than_max_rescues_times_ends_error_as_poison(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(Echo(), database=database, settings=backend.settings())
    for n in (1, 2):
        assert await claim_ids(astore, f"dead-worker/{n}", lease_seconds=-1) == [task.id]
        assert await rescue(astore, max_rescues=2) == [task.id]
        assert (await get_task(astore, task.id)).status is S.PENDING
    assert await claim_ids(astore, "dead-worker/3", lease_seconds=-1) == [task.id]

    assert await rescue(astore, max_rescues=2) == [task.id]

    row = await get_task(astore, task.id)
    assert row.status is S.ERROR
    assert (row.attempts, row.rescues) == (1, 3)
    assert row.info["rescued"] is True
    assert row.info["error"].startswith("rescued 3 times")
    assert row.error["type"] == "PoisonTask"
    assert row.lease_token is None and row.finished_at is not None


async def test_the_workers_rescue_budget_is_the_max_rescues_setting(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(Echo(), database=database, settings=backend.settings())
    assert await claim_ids(astore, "dead-worker/1", lease_seconds=-1) == [task.id]

    await run_until_idle(backend, max_rescues=0)

    row = await get_task(astore, task.id)
    assert (row.status, row.rescues) == (S.ERROR, 1)
    assert row.error["type"] == "PoisonTask"


async def test_an_operator_retry_gives_a_poison_task_a_fresh_rescue_budget(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(Echo(), database=database, settings=backend.settings())
    assert await claim_ids(astore, "dead-worker/1", lease_seconds=-1) == [task.id]
    assert await rescue(astore, max_rescues=0) == [task.id]

    retried = await astore.arun(ops.retry, task.id)

    assert (retried.status, retried.attempts, retried.rescues) == (S.PENDING, 0, 0)


@pytest.mark.parametrize(
    "aged",
    [
        pytest.param({"started_at": "2h"}, id="started-long-ago"),
        # Rows written by hand (or by the origin's code) may have no started_at at all.
        pytest.param({"started_at": None, "updated_at": "2h"}, id="no-start-updated-long-ago"),
    ],
)
async def test_a_working_row_without_a_lease_ends_error_once_older_than_the_stale_limit(
    backend: Backend, database: Database, astore: TaskStore, aged: dict[str, str | None]
) -> None:
    # The origin's runner leaves such rows (it holds no lease); so may a crash mid-deploy.
    task = create_maintenance_task(Echo(), database=database, settings=backend.settings())
    long_ago = utcnow() - timedelta(hours=2)
    times = {name: None if value is None else long_ago for name, value in aged.items()}
    set_status(database, task.id, S.WORKING, lease_token=None, lease_expires_at=None, **times)

    assert await rescue(astore, stale_after=3600) == [task.id]

    row = await get_task(astore, task.id)
    assert (row.status, row.rescues) == (S.ERROR, 0)
    assert row.error["type"] == "StaleWorking"
    assert row.finished_at is not None


async def test_a_working_row_without_a_lease_is_left_alone_within_the_stale_limit(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(Echo(), database=database, settings=backend.settings())
    set_status(database, task.id, S.WORKING, lease_token=None, lease_expires_at=None)

    assert await rescue(astore, stale_after=3600) == []
    assert (await get_task(astore, task.id)).status is S.WORKING


async def test_a_healthy_long_task_is_never_rescued(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    """Two workers with 2 s leases (each one rescuing) and a task running 5 s."""
    task = create_maintenance_task(
        Sleep(seconds=5), max_attempts=3, database=database, settings=backend.settings()
    )

    async with (
        running_worker(backend, lease_seconds=2, worker_id="a") as (_, a),
        running_worker(backend, lease_seconds=2, worker_id="b") as (_, b),
    ):
        row = await wait_for_status(astore, task.id, S.COMPLETED, S.ERROR, worker=a)
        assert not b.done()

    assert row.status is S.COMPLETED
    assert (row.attempts, row.rescues) == (1, 0)
    assert row.info == {"slept": 5}


async def test_a_worker_stops_running_a_task_whose_lease_was_rescued(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    settings = backend.settings()
    task = create_maintenance_task(
        WaitForFile(path=str(release)), queue="a", database=database, settings=settings
    )

    async def take_over() -> None:
        # As if worker A had hung past its lease. The task first moves where only worker B
        # looks, so A cannot claim it again once it is handed back; then its lease expires
        # and it is rescued (again if one of A's heartbeats extended it in between).
        set_columns(database, task.id, queue="b")
        for _ in range(10):
            set_columns(database, task.id, lease_expires_at=utcnow() - timedelta(seconds=1))
            if await rescue(astore) == [task.id]:
                return
        raise AssertionError("the task was never rescued")

    try:
        async with running_worker(backend, queues=["a"], worker_id="A") as (a, running_a):
            await wait_for_status(astore, task.id, S.WORKING, worker=running_a)
            await take_over()
            # A learns at its next heartbeat that it lost the lease, and stops the task.
            await wait_until(lambda: a.in_flight == 0, what="A stopped the task")
            release.touch()
            async with running_worker(backend, queues=["b"], worker_id="B") as (_, running_b):
                row = await wait_for_status(astore, task.id, S.COMPLETED, worker=running_b)
            assert a.processed == 0
    finally:
        release.touch()

    assert (row.attempts, row.rescues) == (1, 1)
    assert row.info == {"released": True}
    assert (await get_task(astore, task.id)).updated_at == row.updated_at


async def test_a_late_finish_from_a_rescued_lease_is_rejected(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(Echo(value=1), database=database, settings=backend.settings())
    (old_run,) = await claim(astore, "old-worker/1", lease_seconds=-1)

    await run_until_idle(backend)  # rescues it, runs it again and completes it
    new_run = await get_task(astore, task.id)
    assert (new_run.status, new_run.attempts, new_run.rescues) == (S.COMPLETED, 1, 1)

    assert await finish(astore, old_run, S.ERROR, {"error": "late"}, {"type": "X"}) == []

    row = await get_task(astore, task.id)
    assert row.status is S.COMPLETED
    assert row.info == new_run.info == {"value": 1, "label": "", "task_id": task.id}
    assert row.error is None
    assert row.attempts == 1
    assert row.finished_at == new_run.finished_at


async def test_a_late_finish_is_rejected_while_the_new_run_holds_the_task(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(Echo(), database=database, settings=backend.settings())
    (old_run,) = await claim(astore, "old-worker/1", lease_seconds=-1)
    assert await rescue(astore) == [task.id]
    (new_run,) = await claim(astore, "new-worker/1")

    assert await finish(astore, old_run, S.COMPLETED, {"from": "old"}) == []
    row = await get_task(astore, task.id)
    assert (row.status, row.lease_token, row.attempts) == (S.WORKING, "new-worker/1", 1)

    assert await finish(astore, new_run, S.COMPLETED, {"from": "new"}) == [task.id]
    row = await get_task(astore, task.id)
    assert (row.status, row.info) == (S.COMPLETED, {"from": "new"})


async def test_a_late_finish_of_an_earlier_claim_by_the_same_worker_is_rejected(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    """Tokens are per claim: a worker that stalled past its lease and claimed the task
    again must not have its first run's outcome taken for the second's."""
    task = create_maintenance_task(Echo(), database=database, settings=backend.settings())
    (first,) = await claim(astore, "host:1/1", lease_seconds=-1)
    assert await rescue(astore) == [task.id]
    (second,) = await claim(astore, "host:1/2")

    assert await finish(astore, first, S.ERROR, {"error": "late"}) == []
    row = await get_task(astore, task.id)
    assert (row.status, row.lease_token) == (S.WORKING, second.lease_token)


async def test_a_worker_restarted_under_the_same_id_is_not_mistaken_for_its_former_self(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    task = create_maintenance_task(
        WaitForFile(path=str(release)), database=database, settings=backend.settings()
    )
    try:
        # The former worker holds the task, then stops (handing it back).
        async with running_worker(backend, worker_id="host:1", shutdown_grace_seconds=0) as (
            former,
            running,
        ):
            await wait_for_status(astore, task.id, S.WORKING, worker=running)
            former_run = former.state.running[task.id].ctx.claimed
        async with running_worker(backend, worker_id="host:1") as (_, running):
            await wait_for_status(astore, task.id, S.WORKING, worker=running)

            # The former's outcome arriving late (it had hung, say) is refused.
            assert await finish(astore, former_run, S.ERROR, {"error": "late"}) == []
            assert (await get_task(astore, task.id)).status is S.WORKING
            release.touch()
            await wait_for_status(astore, task.id, S.COMPLETED, worker=running)
    finally:
        release.touch()


async def test_a_late_cancel_from_a_rescued_lease_is_rejected(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(Echo(), database=database, settings=backend.settings())
    (old_run,) = await claim(astore, "old-worker/1", lease_seconds=-1)
    assert await rescue(astore) == [task.id]

    assert await finish(astore, old_run, S.CANCELLED, {"cancelled": True}) == []
    row = await get_task(astore, task.id)
    assert (row.status, row.attempts, row.rescues) == (S.PENDING, 0, 1)


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
    astore: TaskStore,
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
    elsewhere = open_store(other_schema)

    try:
        async with running_worker(backend) as (worker, running):
            await wait_until(lambda: worker.listening, what="worker listening")
            await wait_for_status(astore, task.id, S.WORKING, worker=running)
            assert await claim_ids(elsewhere, "elsewhere/1") == [twin.id]
            await elsewhere.arun(ops.cancel, twin.id)
            await asyncio.sleep(0.5)  # a NOTIFY arrives in milliseconds
            release.touch()
            row = await wait_for_status(astore, task.id, S.COMPLETED, S.CANCELLED, worker=running)
    finally:
        release.touch()
        await elsewhere.aclose()

    assert row.status is S.COMPLETED
