"""What the store conformance suite needs besides the store: tasks to work on.

Tasks are made through the store's own operations (so their events reach the store's bus),
and statuses only a worker writes are forced through the ORM.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from nightcrew import MaintenanceTask, MaintenanceTaskStatus, TaskOptions
from nightcrew.enqueue import build_rows
from nightcrew.models import utcnow
from nightcrew.processors import ProcessorLoader
from nightcrew.store import TaskStore, ops
from nightcrew.values import ClaimedTask, ClaimRequest, TaskView
from tests.conftest import TEST_MODULES
from tests.processors import Echo

LOADER = ProcessorLoader(TEST_MODULES)


def add_task(store: TaskStore, value: int = 0, **options: Any) -> TaskView:
    (row,) = build_rows([Echo(value=value)], TaskOptions(**options), LOADER, utcnow())
    return store.run(ops.insert_one if row["unique_key"] is None else ops.insert_keyed, row)


def add_tasks(store: TaskStore, n: int, **options: Any) -> list[int]:
    processors = [Echo(value=i) for i in range(n)]
    rows = build_rows(processors, TaskOptions(**options), LOADER, utcnow())
    return store.run(ops.insert_tasks, rows)


def force_status(
    store: TaskStore, task_id: int, status: MaintenanceTaskStatus, **values: Any
) -> None:
    """Write a status (and columns) as the engine would have, through the ORM."""
    with Session(store.database.sync_engine) as session, session.begin():
        task = session.get_one(MaintenanceTask, task_id)
        task.status = status
        for name, value in values.items():
            setattr(task, name, value)


async def claim(
    store: TaskStore,
    limit: int = 100,
    *,
    token: str = "w/1",
    lease_seconds: float = 30.0,
    **kw: Any,
) -> list[ClaimedTask]:
    return await store.claim(ClaimRequest(token, limit, lease_seconds, **kw))


async def claim_ids(store: TaskStore, limit: int = 100, **kw: Any) -> list[int]:
    return [t.id for t in await claim(store, limit, **kw)]
