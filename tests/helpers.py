"""What the engine tests share: reading tasks, waiting for them, running workers, and
reaching the worker's hot path through the `TaskStore` (never by rebuilding its glue).

Reads go through the store's operations (`nightcrew.store.ops`) and return `TaskView`s;
statuses only a worker writes are forced through the ORM (`set_status`), with the columns
the engine writes alongside them. Claims, finishes and rescues are `TaskStore` methods,
the only way to the hot path: async tests call them on a store of their own (the
``astore`` fixture), sync tests through `on_own_store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from nightcrew import MaintenanceTask, MaintenanceTaskStatus
from nightcrew.models import utcnow
from nightcrew.store import Database, TaskStore, open_store, ops
from nightcrew.store import statements as st
from nightcrew.values import ClaimedTask, ClaimRequest, Outcome, TaskView
from nightcrew.worker import Worker
from tests.conftest import Backend

S = MaintenanceTaskStatus
R = TypeVar("R")
P = ParamSpec("P")

#: Deadline for anything a worker should do "soon" (generous: a loaded 2-core machine).
SOON = 30.0

# ---------------------------------------------------------------- reading tasks


def read_task(store: TaskStore, task_id: int) -> TaskView:
    """The task as the store reads it (sync)."""
    return store.run(ops.get_task, task_id)


async def get_task(store: TaskStore, task_id: int) -> TaskView:
    """The task as the store reads it (async)."""
    return await store.arun(ops.get_task, task_id)


def counts_by_status(store: TaskStore) -> dict[MaintenanceTaskStatus, int]:
    """How many tasks are in each status (every status present)."""
    return store.run(ops.count_by_status)


def task_count(store: TaskStore) -> int:
    """How many tasks there are, in any status."""
    return sum(counts_by_status(store).values())


def orm_task(database: Database, task_id: int) -> MaintenanceTask:
    """The row as the ORM loads it, through a session of its own (detached after)."""
    with Session(database.sync_engine, expire_on_commit=False) as session:
        return session.get_one(MaintenanceTask, task_id)


def orm_tasks_with_key(database: Database, key: str) -> list[MaintenanceTask]:
    """Every row holding ``unique_key``, oldest first, as the ORM loads them."""
    with Session(database.sync_engine) as session:
        query = select(MaintenanceTask).where(MaintenanceTask.unique_key == key)
        return list(session.scalars(query.order_by(MaintenanceTask.id)))


# ---------------------------------------------------------------- writing behind the API


#: Lease token of WORKING rows that `set_status` writes (no worker holds it).
FORCED_TOKEN = "tests.helpers/1"


def set_status(
    database: Database, task_id: int, status: MaintenanceTaskStatus, **values: Any
) -> None:
    """Write ``status`` through the ORM with the columns the engine writes alongside it.

    WORKING gets a claim's columns (an attempt, a 60 s lease, ``started_at``); a finished
    status gets ``finished_at`` and loses the lease; INACTIVE and PENDING lose both.
    ``values`` set further columns (or override these).
    """
    now = utcnow()
    with Session(database.sync_engine) as session, session.begin():
        task = session.get_one(MaintenanceTask, task_id)
        task.status = status
        if status is S.WORKING:
            task.attempts += 1
            task.started_at = now
            task.lease_token = FORCED_TOKEN
            task.lease_expires_at = now + timedelta(seconds=60)
        else:
            task.lease_token = None
            task.lease_expires_at = None
            task.finished_at = now if status in (S.COMPLETED, S.ERROR, S.CANCELLED) else None
        for name, value in values.items():
            setattr(task, name, value)


def set_columns(database: Database, task_id: int, **values: Any) -> None:
    """Change columns of one row through the ORM (``start_at``, ``queue``, a lease...)."""
    with Session(database.sync_engine) as session, session.begin():
        task = session.get_one(MaintenanceTask, task_id)
        for name, value in values.items():
            setattr(task, name, value)


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


def start_ids_at(database: Database, last_id: int) -> None:
    """PostgreSQL: the next task created gets ``last_id + 1``."""
    stmt = text("SELECT setval(pg_get_serial_sequence('maintenance_tasks', 'id'), :n, false)")
    with database.sync_engine.begin() as conn:
        conn.execute(stmt, {"n": last_id + 1})


# ---------------------------------------------------------------- the hot path, through the store


async def claim(
    store: TaskStore,
    token: str = "tests/1",
    *,
    limit: int = 100,
    lease_seconds: float = 30.0,
    queues: tuple[str, ...] | None = None,
) -> list[ClaimedTask]:
    """Claim due tasks as a worker would; a negative ``lease_seconds`` leases them already
    expired (a worker that died right after its claim)."""
    return await store.claim(ClaimRequest(token, limit, lease_seconds, queues=queues))


async def claim_ids(store: TaskStore, token: str = "tests/1", **options: Any) -> list[int]:
    return [t.id for t in await claim(store, token, **options)]


async def finish(
    store: TaskStore,
    claimed: ClaimedTask,
    status: MaintenanceTaskStatus,
    info: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> list[int]:
    """Write one run's outcome, fenced by its claim's token; the ids written ([] if the
    lease was lost)."""
    return await store.finish([Outcome(claimed, status, info, error)])


async def rescue(
    store: TaskStore, *, max_rescues: int = 3, stale_after: float = 3600.0
) -> list[int]:
    """Hand back abandoned tasks as a worker's rescuer does; the ids it changed."""
    return [w.id for w in await store.rescue(max_rescues=max_rescues, stale_after=stale_after)]


def on_own_store(
    database: Database,
    call: Callable[Concatenate[TaskStore, P], Awaitable[R]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """From sync code: ``await call(store, ...)`` on a store of its own, closed after."""

    async def main() -> R:
        store = open_store(database)
        try:
            return await call(store, *args, **kwargs)
        finally:
            await store.aclose()

    return asyncio.run(main())


# ---------------------------------------------------------------- waiting


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


def poll_until(
    check: Callable[[], Any],
    *,
    what: str,
    within: float = SOON,
    explain: Callable[[], str] | None = None,
) -> Any:
    """`wait_until` for sync code (tests driving worker processes): poll ``check`` until
    truthy; on timeout the failure adds what ``explain`` returns (say, the workers' logs)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain else ""
            raise AssertionError(f"not within {within:g}s: {what}{detail}")
        time.sleep(0.1)


async def wait_for_status(
    store: TaskStore,
    task_id: int,
    *expected: MaintenanceTaskStatus,
    within: float = SOON,
    worker: asyncio.Task[None] | None = None,
) -> TaskView:
    """The task once it is in one of ``expected``; on timeout, says what it was last."""
    last: list[TaskView] = []

    async def check() -> TaskView | None:
        row = await get_task(store, task_id)
        last[:] = [row]
        return row if row.status in expected else None

    what = f"task {task_id} in {[s.value for s in expected]}"
    try:
        found: TaskView = await wait_until(check, what=what, within=within, worker=worker)
    except AssertionError as exc:
        if not last:
            raise
        row = last[0]
        raise AssertionError(
            f"{exc}; last seen {row.status.value}, attempts {row.attempts}, "
            f"rescues {row.rescues}, info {row.info}"
        ) from None
    return found


# ---------------------------------------------------------------- workers


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
