"""Store operations of observability: the worker registry and the metrics' gauges.

Plans like those of `nightcrew.store.ops` (``store.run(observe_ops.list_workers, 60.0)``).
A worker's registry writes are one short statement each (autocommit on PostgreSQL), a few
per minute per worker; the gauges are one read per scrape.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from nightcrew.store import worker_statements as wst
from nightcrew.store.plans import Plan, Tx, one_statement, reads, tuples
from nightcrew.values import Gauges, WorkerView


def _queues(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite's JSON as text, on some drivers
        value = json.loads(value)
    return [str(q) for q in value]


def register_worker(
    tx: Tx,
    worker_id: str,
    *,
    host: str,
    pid: int,
    version: str,
    queues: Sequence[str] | None,
    concurrency: int,
    in_flight: int = 0,
) -> Plan[None]:
    """Write a worker's row, replacing one of the same id (a restart under that id)."""
    yield wst.delete_worker_statement(worker_id), None
    row = {
        "id": worker_id,
        "host": host[:255],
        "pid": pid,
        "version": version[:32],
        "queues": None if queues is None else list(queues),
        "concurrency": concurrency,
        "in_flight": in_flight,
        "started_at": tx.now,
        "last_heartbeat_at": tx.now,
    }
    yield wst.insert_worker_statement(), row


@one_statement
def beat_worker(tx: Tx, worker_id: str, in_flight: int) -> Plan[bool]:
    """Refresh a worker's row; False when it is gone (write it again)."""
    params = {"worker_id": worker_id, "in_flight": in_flight, "now": tx.now}
    result = yield wst.beat_worker_statement(), params
    return bool(result.rowcount)


@one_statement
def remove_worker(tx: Tx, worker_id: str) -> Plan[None]:
    yield wst.delete_worker_statement(worker_id), None


@reads
def list_workers(tx: Tx, dead_after: float, *, alive_only: bool = False) -> Plan[list[WorkerView]]:
    """Registered workers, newest first, each marked alive if it beat within
    ``dead_after`` seconds; ``alive_only`` leaves the others out."""
    since = tx.now - timedelta(seconds=dead_after)
    result = yield wst.list_workers_statement(since if alive_only else None), None
    return [
        WorkerView(
            id=row.id,
            host=row.host,
            pid=int(row.pid),
            version=row.version,
            queues=_queues(row.queues),
            concurrency=int(row.concurrency),
            in_flight=int(row.in_flight),
            started_at=row.started_at,
            last_heartbeat_at=row.last_heartbeat_at,
            alive=row.last_heartbeat_at >= since,
        )
        for row in result.all()
    ]


@one_statement
def prune_dead_workers(tx: Tx, dead_after: float) -> Plan[list[str]]:
    """Delete the rows of workers silent for more than ``dead_after`` seconds; their ids."""
    result = yield wst.prune_dead_statement(tx.now - timedelta(seconds=dead_after)), None
    return sorted(str(row[0]) for row in result.all())


@reads
def count_alive_workers(tx: Tx, dead_after: float) -> Plan[int]:
    result = yield wst.count_alive_statement(tx.now - timedelta(seconds=dead_after)), None
    return int(result.scalar_one())


@reads
def gauges(tx: Tx, dead_after: float, now: datetime | None = None) -> Plan[Gauges]:
    """Every database-wide gauge, read by one statement."""
    at = now or tx.now
    stmt = wst.gauges_statement(tx.dialect, at, at - timedelta(seconds=dead_after))
    result = yield stmt, None
    depth: dict[tuple[str, str], float] = {}
    oldest: dict[str, float] = {}
    pipelines: dict[str, float] = {}
    misfires: dict[str, float] = {}
    skipped: dict[str, float] = {}
    totals = {"workers": 0.0, "in_flight": 0.0}
    for name, a, b, value in tuples(result):
        number = float(value or 0.0)
        if name == "depth":
            depth[(str(a), str(b))] = number
        elif name == "oldest":
            oldest[str(a)] = max(0.0, number)
        elif name == "pipelines":
            pipelines[str(a)] = number
        elif name == "misfires":
            misfires[str(a)] = number
        elif name == "skipped":
            skipped[str(a)] = number
        elif name in totals:
            totals[name] = number
    return Gauges(
        depth, oldest, pipelines, totals["workers"], totals["in_flight"], misfires, skipped
    )
