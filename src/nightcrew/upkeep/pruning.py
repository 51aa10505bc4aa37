"""Pruning finished tasks (and, when asked, old audit rows) and cancelling stale PENDING
ones, in bounded batches.

The functions take a `TaskStore` (so a benchmark, a test or a host application can run
them on its own store) and loop over the store's one-batch operations with a pause between
batches: each batch is one short statement, so the table is never locked for long and
workers keep claiming and finishing in between.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nightcrew.errors import NightcrewError
from nightcrew.execution import current_task_id, report_progress
from nightcrew.models import MaintenanceTaskStatus, utcnow
from nightcrew.store import TaskStore, upkeep_ops

S = MaintenanceTaskStatus


@dataclass(frozen=True, slots=True)
class Retention:
    """Days a finished task is kept after its last change, per status, and days an audit
    row is kept (0: forever; the audit log is kept forever unless told otherwise)."""

    completed_days: float = 30.0
    error_days: float = 90.0
    cancelled_days: float = 90.0
    audit_days: float = 0.0

    def by_status(self) -> dict[MaintenanceTaskStatus, float]:
        return {
            S.COMPLETED: self.completed_days,
            S.ERROR: self.error_days,
            S.CANCELLED: self.cancelled_days,
        }


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What a prune deleted, per status, in how many batches and seconds."""

    deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    seconds: float = 0.0
    #: Finished pipelines deleted because their last step was (not counted in `total`).
    pipelines: int = 0
    #: Audit rows deleted (not counted in `total` either).
    audit: int = 0

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    def as_info(self) -> dict[str, object]:
        return {
            "deleted": dict(self.deleted),
            "total": self.total,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "pipelines": self.pipelines,
            "audit": self.audit,
        }


#: A prune rests at least this many times as long as its last batch took (and at least
#: ``pause``): on an idle database a batch takes ~20 ms and the pause decides the pace; on
#: a busy one batches slow down, and the prune backs off with them instead of taking the
#: same share of the database from the workers.
REST_FACTOR = 2.0


def rest_seconds(pause: float, took: float) -> float:
    """How long to wait before the next batch, after one that took ``took`` seconds."""
    return max(pause, REST_FACTOR * took) if pause > 0 else 0.0


async def _rest(pause: float, took: float) -> None:
    wait = rest_seconds(pause, took)
    if wait > 0:
        await asyncio.sleep(wait)


def _in_task() -> bool:
    """Whether we run inside a nightcrew task (progress can be reported)."""
    try:
        current_task_id()
    except NightcrewError:
        return False
    return True


async def _all_batches(
    store: TaskStore, pause: float, batch_size: int, op: Any, *args: Any
) -> tuple[int, int]:
    """Run the one-batch delete ``op`` until a batch deletes fewer than ``batch_size``
    rows, resting between batches; how many rows, in how many batches."""
    deleted = batches = 0
    while True:
        began = time.monotonic()
        n = await store.arun(op, *args)
        took = time.monotonic() - began
        batches += 1
        deleted += n
        if n < batch_size:
            return deleted, batches
        await _rest(pause, took)


async def prune_finished(
    store: TaskStore,
    retention: Retention,
    *,
    batch_size: int = 1000,
    pause: float = 0.05,
    now: datetime | None = None,
) -> PruneReport:
    """Delete finished tasks older than ``retention``, ``batch_size`` rows per transaction,
    at least ``pause`` seconds (and twice the last batch's time) between transactions;
    ``pause=0`` runs them back to back. Progress is reported when run as a task.

    The cutoffs are fixed when it starts, so tasks finishing meanwhile are left for the
    next run, and the loop ends.
    """
    started = time.monotonic()
    clock = utcnow() if now is None else now
    cutoffs = {
        status: clock - timedelta(days=days)
        for status, days in retention.by_status().items()
        if days > 0
    }
    progress = _in_task()
    total = 0
    if progress:
        for status, cutoff in cutoffs.items():
            total += await store.arun(upkeep_ops.count_prunable, status, cutoff)
    deleted: dict[str, int] = {}
    batches = done = 0
    for status, cutoff in cutoffs.items():
        count = 0
        while True:
            began = time.monotonic()
            n = await store.arun(upkeep_ops.prune_batch, status, cutoff, batch_size)
            took = time.monotonic() - began
            batches += 1
            count += n
            done += n
            if progress and total:
                await report_progress(min(100.0, 100.0 * done / total), f"{done} deleted")
            if n < batch_size:
                break
            await _rest(pause, took)
        deleted[status.value] = count
    # Then the pipelines whose steps are all gone now, and the audit rows past their days.
    pipelines, more = await _all_batches(
        store, pause, batch_size, upkeep_ops.prune_pipelines_batch, batch_size
    )
    batches += more
    audit = 0
    if retention.audit_days > 0:
        cutoff = clock - timedelta(days=retention.audit_days)
        audit, more = await _all_batches(
            store, pause, batch_size, upkeep_ops.prune_audit_batch, cutoff, batch_size
        )
        batches += more
    return PruneReport(deleted, batches, time.monotonic() - started, pipelines, audit)


async def cancel_stale_pending(
    store: TaskStore,
    minutes: float,
    *,
    batch_size: int = 1000,
    pause: float = 0.05,
    now: datetime | None = None,
) -> list[int]:
    """Cancel PENDING tasks due (and unchanged) for longer than ``minutes``; their ids."""
    if minutes <= 0:
        return []
    cutoff = (utcnow() if now is None else now) - timedelta(minutes=minutes)
    cancelled: list[int] = []
    while True:
        ids = await store.arun(upkeep_ops.cancel_stale_batch, cutoff, batch_size, minutes)
        cancelled += ids
        if len(ids) < batch_size:
            return cancelled
        if pause > 0:
            await asyncio.sleep(pause)
