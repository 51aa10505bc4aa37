"""The store's upkeep operations: one bounded batch each, in a transaction of its own.

`nightcrew.upkeep.pruning` loops over them with pauses; keeping each batch its own short
transaction (one statement: autocommit on PostgreSQL) is what lets a prune of a million
rows run beside busy workers without holding their rows or the SQLite write lock for long.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from nightcrew.events import EventKind, TaskEvent
from nightcrew.models import MaintenanceTaskStatus
from nightcrew.store import pipeline_ops
from nightcrew.store import statements as st
from nightcrew.store import upkeep_statements as ust
from nightcrew.store.plans import Plan, Tx, one_statement, reads
from nightcrew.values import Written

S = MaintenanceTaskStatus


def rescue_ending_steps(tx: Tx, max_rescues: int, stale_after: float) -> Plan[list[Written]]:
    """End the abandoned pipeline steps the rescue gives up on (ERROR as poison tasks, or
    CANCELLED as asked) and, in the same transaction, settle their dependents and
    pipelines: a crash between the two can leave no dependent waiting on a step that has
    already ended. The other abandoned rows are the store's fast path
    (`TaskStore.rescue`). Each is announced as RESCUED."""
    params = {
        "now": tx.now,
        "stale_before": tx.now - timedelta(seconds=stale_after),
        "max_rescues": max_rescues,
    }
    result = yield st.rescue_statement(tx.dialect, ending_steps=True), params
    rows = [tuple(row) for row in result.all()]
    ended = [
        (int(r[0]), S(r[1]), int(r[6]), bool(r[7]))
        for r in rows
        if r[6] is not None and S(r[1]).is_final
    ]
    if ended:
        yield from pipeline_ops.settle(tx, ended)
    tx.events.extend(rescued_event(r, tx.now) for r in rows)
    return [Written(int(r[0]), S(r[1]), str(r[2])) for r in rows]


def rescued_event(row: Sequence[Any], now: datetime) -> TaskEvent:
    """The RESCUED event of one row the rescue statement returned (either half of it)."""
    return TaskEvent(
        EventKind.RESCUED,
        int(row[0]),
        now,
        status=S(row[1]),
        queue=str(row[2]),
        processor=str(row[3]),
        attempt=int(row[4]),
        detail={"rescues": int(row[5])},
        pipeline_id=None if row[6] is None else int(row[6]),
    )


@one_statement
def prune_batch(tx: Tx, status: MaintenanceTaskStatus, cutoff: datetime, limit: int) -> Plan[int]:
    """Delete up to ``limit`` tasks of a final ``status`` last changed before ``cutoff``;
    how many were deleted (fewer than ``limit``: that status is done)."""
    result = yield ust.prune_statement(tx.dialect, status), {"cutoff": cutoff, "limit": limit}
    return max(0, int(result.rowcount))


@one_statement
def prune_pipelines_batch(tx: Tx, limit: int) -> Plan[int]:
    """Delete up to ``limit`` finished pipelines whose steps have all been pruned."""
    result = yield ust.prune_pipelines_statement(tx.dialect), {"limit": limit}
    return max(0, int(result.rowcount))


@one_statement
def prune_audit_batch(tx: Tx, cutoff: datetime, limit: int) -> Plan[int]:
    """Delete up to ``limit`` audit rows written before ``cutoff``; how many were deleted."""
    result = yield ust.prune_audit_statement(tx.dialect), {"cutoff": cutoff, "limit": limit}
    return max(0, int(result.rowcount))


@reads
def count_prunable(tx: Tx, status: MaintenanceTaskStatus, cutoff: datetime) -> Plan[int]:
    """How many tasks of ``status`` a prune with ``cutoff`` would delete (at most)."""
    result = yield ust.count_prunable_statement(tx.dialect, status), {"cutoff": cutoff}
    return int(result.scalar_one())


@one_statement
def cancel_stale_batch(tx: Tx, cutoff: datetime, limit: int, minutes: float) -> Plan[list[int]]:
    """Cancel up to ``limit`` PENDING tasks due (and unchanged) since before ``cutoff``;
    their ids. Each is announced as CANCELLED."""
    params = {
        "cutoff": cutoff,
        "now": tx.now,
        "limit": limit,
        "reason": ust.STALE_REASON.format(minutes=minutes),
    }
    result = yield ust.cancel_stale_statement(tx.dialect), params
    ids = []
    steps = []
    for row in result.all():
        task_id, queue, processor_type, pipeline_id, critical = tuple(row)
        ids.append(int(task_id))
        if pipeline_id is not None:
            steps.append((int(task_id), S.CANCELLED, int(pipeline_id), bool(critical)))
        tx.emit(
            EventKind.CANCELLED,
            int(task_id),
            status=S.CANCELLED,
            queue=str(queue),
            processor=str(processor_type),
            detail={"reason": "stale pending"},
        )
    if steps:  # in the same transaction: no dependent is left waiting on a cancelled step
        yield from pipeline_ops.settle(tx, steps)
    return ids
