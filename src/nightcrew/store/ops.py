"""The store's operations on tasks, each a plan returning typed values.

Run one with ``store.run(ops.cancel, task_id)`` (its own transaction, sync),
``await store.arun(...)`` (async), or `nightcrew.store.run_in` inside a caller's
transaction. Each operation records the events of the transitions it makes on its `Tx`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nightcrew.errors import InvalidTransition, TaskNotFound
from nightcrew.events import EventKind
from nightcrew.models import MaintenanceTaskStatus
from nightcrew.store import bulk, pipeline_ops
from nightcrew.store import statements as st
from nightcrew.store.plans import Plan, Tx, one_statement, reads
from nightcrew.store.wakeups import earliest, notify_due
from nightcrew.values import TaskFilter, TaskPage, TaskView

S = MaintenanceTaskStatus

#: The most rows one listing may return (the API and CLI bound page sizes by it).
MAX_PAGE = 1000


def insert_tasks(tx: Tx, rows: Sequence[dict[str, Any]]) -> Plan[list[int]]:
    """Insert rows, returning their ids in order.

    Rows without a unique key go in one multi-row statement. A row with a unique key held
    by an open task gets that task's id instead of a new row; if the holder finished
    between the conflict and the look-up, the insert is tried again.
    """
    ids: list[int | None] = [None] * len(rows)
    created: list[int] = []
    plain = [i for i, r in enumerate(rows) if r.get("unique_key") is None]
    if plain:
        stmt, params = bulk.bulk_insert(tx.dialect, [rows[i] for i in plain])
        result = yield stmt, params
        for i, new_id in zip(plain, sorted(result.scalars()), strict=True):
            ids[i] = new_id
            created.append(i)
    for i, keyed in enumerate(rows):
        key = keyed.get("unique_key")
        if key is None:
            continue
        for _ in range(10):
            result = yield st.insert_statement(tx.dialect, with_unique_keys=True), [keyed]
            new = result.all()
            if new:
                ids[i] = new[0].id
                created.append(i)
                break
            result = yield st.open_by_unique_keys([key]), None
            existing = result.all()
            if existing:
                ids[i] = existing[0].id
                break
        else:  # pragma: no cover - needs ten lost races in a row
            raise InvalidTransition(f"unique key {key!r} kept changing hands")
    yield from notify_due(tx, earliest([r for r in rows if r["status"] == S.PENDING]))
    for i in created:
        row = rows[i]
        tx.emit(
            EventKind.CREATED,
            ids[i],  # type: ignore[arg-type]
            status=row["status"],
            queue=row["queue"],
            processor=row["processor_type"],
        )
    return [i for i in ids if i is not None]


def insert_keyed(tx: Tx, row: dict[str, Any]) -> Plan[TaskView]:
    """Insert one task with a unique key and return it, or the open task holding the key."""
    (task_id,) = yield from insert_tasks(tx, [row])
    return (yield from get_task(tx, task_id))


@one_statement
def insert_one(tx: Tx, row: dict[str, Any]) -> Plan[TaskView]:
    """Insert one task without a unique key and return it (one statement)."""
    if row.get("unique_key") is not None:
        raise ValueError("a task with a unique key is inserted by insert_keyed")
    result = yield st.insert_one_statement(tx.dialect), row
    task = TaskView.created(result.one()[0], row)
    tx.emit(
        EventKind.CREATED,
        task.id,
        status=task.status,
        queue=task.queue,
        processor=task.processor_type,
    )
    return task


@reads
def get_task(tx: Tx, task_id: int) -> Plan[TaskView]:
    result = yield st.get_statement(task_id), None
    row = result.first()
    if row is None:
        raise TaskNotFound(f"no task with id {task_id}")
    return TaskView.from_mapping(row._mapping)


@reads
def list_tasks(tx: Tx, task_filter: TaskFilter) -> Plan[TaskPage]:
    """One page, newest first; ``next_before_id`` is set only when another page exists."""
    limit = max(1, min(task_filter.limit, MAX_PAGE))
    result = yield st.list_statement(task_filter, limit=limit + 1), None
    tasks = [TaskView.from_mapping(row._mapping) for row in result.all()]
    more = len(tasks) > limit
    tasks = tasks[:limit]
    return TaskPage(tasks, tasks[-1].id if more else None)


@reads
def probe(tx: Tx) -> Plan[None]:
    """Read one row: the database answers and nightcrew's table is there (else the
    store raises `DatabaseError`, `SchemaMissing` when the table is missing)."""
    yield st.probe_statement(), None


@reads
def count_by_status(tx: Tx) -> Plan[dict[MaintenanceTaskStatus, int]]:
    result = yield st.count_by_status_statement(), None
    counts = dict.fromkeys(MaintenanceTaskStatus, 0)
    for row in result.all():
        status, n = tuple(row)
        counts[MaintenanceTaskStatus(status)] = int(n)
    return counts


def activate(tx: Tx, task_id: int) -> Plan[TaskView]:
    """INACTIVE -> PENDING, due now (or at its ``start_at``, if that is later)."""
    current = yield from get_task(tx, task_id)
    if current.status != S.INACTIVE:
        raise InvalidTransition(
            f"task {task_id} is {current.status}, only INACTIVE can be activated"
        )
    start_at = max(current.start_at, tx.now)
    result = yield st.activate_statement(task_id, tx.now, start_at), None
    row = result.first()
    if row is None:
        raise InvalidTransition(f"task {task_id} changed status while being activated")
    yield from notify_due(tx, {row.queue: start_at})
    tx.emit(
        EventKind.ACTIVATED,
        task_id,
        status=S.PENDING,
        queue=row.queue,
        processor=row.processor_type,
    )
    return (yield from get_task(tx, task_id))


def cancel(tx: Tx, task_id: int) -> Plan[TaskView]:
    """Cancel at once if not running; ask the worker to stop it if WORKING."""
    result = yield st.cancel_open_statement(task_id, tx.now), None
    row = result.first()
    if row is not None:
        tx.emit(
            EventKind.CANCELLED,
            task_id,
            status=S.CANCELLED,
            queue=row.queue,
            processor=row.processor_type,
        )
        if row.pipeline_id is not None:  # its dependents and pipeline move with it
            finished = [(task_id, S.CANCELLED, int(row.pipeline_id), bool(row.critical))]
            yield from pipeline_ops.settle(tx, finished)
        return (yield from get_task(tx, task_id))
    current = yield from get_task(tx, task_id)
    if current.status != S.WORKING:
        raise InvalidTransition(f"task {task_id} is already {current.status}")
    result = yield st.request_cancel_statement(task_id, tx.now), None
    row = result.first()
    if row is not None:
        if tx.dialect == "postgresql":
            yield st.notify_cancel_statement(task_id), None
        tx.emit(
            EventKind.CANCEL_REQUESTED,
            task_id,
            status=S.WORKING,
            queue=row.queue,
            processor=row.processor_type,
        )
    return (yield from get_task(tx, task_id))


def retry(tx: Tx, task_id: int) -> Plan[TaskView]:
    """ERROR or CANCELLED -> PENDING, due now, with its attempts and rescues reset.

    Refused while another open task holds the same unique key (the partial unique index
    would refuse the update anyway, with a driver error instead of a reason).
    """
    current = yield from get_task(tx, task_id)
    if current.unique_key is not None and current.status in (S.ERROR, S.CANCELLED):
        result = yield st.open_by_unique_keys([current.unique_key]), None
        holder = result.first()
        if holder is not None:
            raise InvalidTransition(
                f"task {task_id} cannot be retried: its unique key {current.unique_key!r} "
                f"is held by open task {holder.id}"
            )
    result = yield st.retry_statement(task_id, tx.now), None
    row = result.first()
    if row is None:
        current = yield from get_task(tx, task_id)
        raise InvalidTransition(
            f"task {task_id} is {current.status}, only ERROR or CANCELLED can be retried"
        )
    if row.pipeline_id is not None:  # re-arm what its failure cancelled; reopen the pipeline
        was_cancelled = current.status is S.CANCELLED
        yield from pipeline_ops.reopen(
            tx, int(row.pipeline_id), task_id, current.critical, was_cancelled
        )
    yield from notify_due(tx, {row.queue: tx.now})
    tx.emit(
        EventKind.RESET, task_id, status=S.PENDING, queue=row.queue, processor=row.processor_type
    )
    return (yield from get_task(tx, task_id))
