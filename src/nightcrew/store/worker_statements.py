"""Statements of the worker registry (``nightcrew_workers``) and of the metrics' gauges.

The registry has one row per running worker, written when it starts, refreshed by its
registry service, deleted when it stops cleanly; rows whose heartbeat is older than the
dead-after age are the workers that died, pruned by upkeep.

`gauges_statement` is the one query behind every database-wide gauge of a scrape: the
open tasks per queue and status (read through the status index: finished rows are
counted by the workers' own counters, so a scrape never scans the history), the oldest
due PENDING task per queue, pipelines per status, live workers and their runs in flight,
and the schedules' skipped ticks. One statement, one round trip, whatever the labels.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Delete,
    Float,
    Insert,
    Integer,
    Select,
    String,
    Table,
    Update,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.sql.dml import ReturningDelete
from sqlalchemy.sql.expression import CompoundSelect

from nightcrew.models import (
    MaintenanceTask,
    MaintenanceTaskStatus,
    Pipeline,
    Schedule,
    WorkerRecord,
)
from nightcrew.values import Dialect

T = cast(Table, MaintenanceTask.__table__)
W = cast(Table, WorkerRecord.__table__)
P = cast(Table, Pipeline.__table__)
SCH = cast(Table, Schedule.__table__)
S = MaintenanceTaskStatus

#: The statuses whose rows the queue-depth gauge counts (the ones a queue still holds).
OPEN_STATUSES = (S.INACTIVE, S.PENDING, S.WORKING)


# ---------------------------------------------------------------- the registry


def insert_worker_statement() -> Insert:
    return insert(W)


def beat_worker_statement() -> Update:
    """A worker's heartbeat (``:worker_id``, ``:in_flight``, ``:now``): 0 rows means its row
    is gone (pruned while the worker stalled), and the service writes it again."""
    return (
        update(W)
        .where(W.c.id == bindparam("worker_id", type_=String(64)))
        .values(
            in_flight=bindparam("in_flight", type_=Integer),
            last_heartbeat_at=bindparam("now", type_=W.c.last_heartbeat_at.type),
        )
    )


def delete_worker_statement(worker_id: str) -> Delete:
    return delete(W).where(W.c.id == worker_id)


def list_workers_statement(since: datetime | None) -> Select[Any]:
    """Registered workers, newest first; only those that beat since ``since`` if given."""
    stmt = select(W).order_by(W.c.started_at.desc(), W.c.id)
    if since is not None:
        stmt = stmt.where(W.c.last_heartbeat_at >= since)
    return stmt


def prune_dead_statement(before: datetime) -> ReturningDelete[Any]:
    """Rows of workers whose last heartbeat is older than ``before`` (they died)."""
    return delete(W).where(W.c.last_heartbeat_at < before).returning(W.c.id)


def count_alive_statement(since: datetime) -> Select[Any]:
    return select(func.count()).select_from(W).where(W.c.last_heartbeat_at >= since)


# ---------------------------------------------------------------- gauges


def _seconds_since(dialect: Dialect, when: Any, now: Any) -> Any:
    if dialect == "postgresql":
        return func.extract("epoch", now - when)
    return (func.julianday(now) - func.julianday(when)) * 86400.0


def gauges_statement(dialect: Dialect, now: datetime, alive_since: datetime) -> CompoundSelect[Any]:
    """Rows ``(gauge, label_a, label_b, value)`` for every database-wide gauge."""
    c = T.c
    text = String(200)
    depth = (
        select(
            literal("depth", text),
            sql_cast(c.queue, text),
            sql_cast(c.status, text),
            sql_cast(func.count(), Float),
        )
        .where(c.status.in_([literal_column(f"'{s.value}'") for s in OPEN_STATUSES]))
        .group_by(c.queue, c.status)
    )
    bound_now = literal(now, c.start_at.type)
    oldest = (
        select(
            literal("oldest", text),
            sql_cast(c.queue, text),
            sql_cast(null(), text),
            sql_cast(_seconds_since(dialect, func.min(c.start_at), bound_now), Float),
        )
        .where(c.status == literal_column(f"'{S.PENDING.value}'"), c.start_at <= now)
        .group_by(c.queue)
    )
    pipelines = select(
        literal("pipelines", text),
        sql_cast(P.c.status, text),
        sql_cast(null(), text),
        sql_cast(func.count(), Float),
    ).group_by(P.c.status)
    alive = W.c.last_heartbeat_at >= alive_since
    workers = select(
        literal("workers", text),
        sql_cast(null(), text),
        sql_cast(null(), text),
        sql_cast(func.count(), Float),
    ).where(alive)
    in_flight = select(
        literal("in_flight", text),
        sql_cast(null(), text),
        sql_cast(null(), text),
        sql_cast(func.coalesce(func.sum(W.c.in_flight), 0), Float),
    ).where(alive)
    misfires = select(
        literal("misfires", text),
        sql_cast(SCH.c.name, text),
        sql_cast(null(), text),
        sql_cast(SCH.c.misfires, Float),
    ).where(SCH.c.misfires > 0)
    skipped = select(
        literal("skipped", text),
        sql_cast(SCH.c.name, text),
        sql_cast(null(), text),
        sql_cast(SCH.c.skipped_instances, Float),
    ).where(SCH.c.skipped_instances > 0)
    return union_all(depth, oldest, pipelines, workers, in_flight, misfires, skipped)
