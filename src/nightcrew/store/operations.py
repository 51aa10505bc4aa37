"""Multi-statement operations on tasks, written once as plans (see `nightcrew.store.plans`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from nightcrew.errors import InvalidTransition, TaskNotFound
from nightcrew.models import MaintenanceTaskStatus
from nightcrew.store import bulk
from nightcrew.store import tasks as st
from nightcrew.store.plans import Plan

S = MaintenanceTaskStatus


def _notify(dialect: str, due: dict[str, datetime]) -> Plan[None]:
    """Wake workers of each queue; the payload says when its earliest new task is due."""
    if dialect == "postgresql":
        for queue, start_at in sorted(due.items()):
            yield st.notify_task_statement(queue, start_at), None


def _earliest(rows: Sequence[Any]) -> dict[str, datetime]:
    due: dict[str, datetime] = {}
    for row in rows:
        queue, start_at = row["queue"], row["start_at"]
        if queue not in due or start_at < due[queue]:
            due[queue] = start_at
    return due


def insert_tasks(dialect: str, rows: Sequence[dict[str, Any]]) -> Plan[list[int]]:
    """Insert rows, returning their ids in order.

    Rows without a unique key go in one multi-row statement. A row with a unique key held
    by an open task gets that task's id instead of a new row; if the holder finished
    between the conflict and the look-up, the insert is tried again.
    """
    ids: list[int | None] = [None] * len(rows)
    plain = [i for i, r in enumerate(rows) if r.get("unique_key") is None]
    if plain:
        stmt, params = bulk.bulk_insert(dialect, [rows[i] for i in plain])
        result = yield stmt, params
        for i, new_id in zip(plain, sorted(result.scalars()), strict=True):
            ids[i] = new_id
    for i, keyed in enumerate(rows):
        key = keyed.get("unique_key")
        if key is None:
            continue
        for _ in range(10):
            result = yield st.insert_statement(dialect, with_unique_keys=True), [keyed]
            new = result.all()
            if new:
                ids[i] = new[0].id
                break
            result = yield st.open_by_unique_keys([key]), None
            existing = result.all()
            if existing:
                ids[i] = existing[0].id
                break
        else:  # pragma: no cover - needs ten lost races in a row
            raise InvalidTransition(f"unique key {key!r} kept changing hands")
    yield from _notify(dialect, _earliest([r for r in rows if r["status"] == S.PENDING]))
    return [i for i in ids if i is not None]


def insert_one(dialect: str, row: dict[str, Any]) -> Plan[Any]:
    """Insert one task and return its row: one statement unless it has a unique key."""
    if row.get("unique_key") is not None:
        (task_id,) = yield from insert_tasks(dialect, [row])
        return (yield from get_task(task_id))
    result = yield st.insert_one_statement(dialect), row
    return result.one()


def get_task(task_id: int) -> Plan[Any]:
    result = yield st.get_statement(task_id), None
    row = result.first()
    if row is None:
        raise TaskNotFound(f"no task with id {task_id}")
    return row


def activate(dialect: str, task_id: int, now: datetime) -> Plan[Any]:
    """INACTIVE -> PENDING with ``start_at = now + delay``."""
    row = yield from get_task(task_id)
    if row.status != S.INACTIVE:
        raise InvalidTransition(f"task {task_id} is {row.status}, only INACTIVE can be activated")
    result = yield st.activate_statement(task_id, now, row.delay), None
    activated = result.first()
    if activated is None:
        raise InvalidTransition(f"task {task_id} changed status while being activated")
    yield from _notify(dialect, {activated.queue: activated.start_at})
    return (yield from get_task(task_id))


def cancel(dialect: str, task_id: int, now: datetime) -> Plan[Any]:
    """Cancel at once if not running; ask the worker to stop it if WORKING."""
    result = yield st.cancel_open_statement(task_id, now), None
    if result.first() is None:
        row = yield from get_task(task_id)
        if row.status != S.WORKING:
            raise InvalidTransition(f"task {task_id} is already {row.status}")
        result = yield st.request_cancel_statement(task_id, now), None
        if result.first() is not None and dialect == "postgresql":
            yield st.notify_cancel_statement(task_id), None
    return (yield from get_task(task_id))


def retry(dialect: str, task_id: int, now: datetime) -> Plan[Any]:
    """ERROR or CANCELLED -> PENDING, due now, with its attempts reset.

    Refused while another open task holds the same unique key (the partial unique index
    would refuse the update anyway, with a driver error instead of a reason).
    """
    current = yield from get_task(task_id)
    if current.unique_key is not None and current.status in (S.ERROR, S.CANCELLED):
        result = yield st.open_by_unique_keys([current.unique_key]), None
        holder = result.first()
        if holder is not None:
            raise InvalidTransition(
                f"task {task_id} cannot be retried: its unique key {current.unique_key!r} "
                f"is held by open task {holder.id}"
            )
    result = yield st.retry_statement(task_id, now), None
    row = result.first()
    if row is None:
        current = yield from get_task(task_id)
        raise InvalidTransition(
            f"task {task_id} is {current.status}, only ERROR or CANCELLED can be retried"
        )
    yield from _notify(dialect, {row.queue: now})
    return (yield from get_task(task_id))


def list_tasks(**filters: Any) -> Plan[list[Any]]:
    result = yield st.list_statement(**filters), None
    return list(result.all())


def count_by_status() -> Plan[dict[MaintenanceTaskStatus, int]]:
    result = yield st.count_by_status_statement(), None
    counts = dict.fromkeys(MaintenanceTaskStatus, 0)
    rows: list[Any] = list(result.all())
    for status, n in rows:
        counts[MaintenanceTaskStatus(status)] = n
    return counts
