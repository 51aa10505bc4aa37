"""Every SQL statement that touches ``maintenance_tasks``.

Statements are SQLAlchemy Core, built here once; sync callers (CLI, enqueue) and async
callers (workers) execute the same objects. Dialect differences are asked of
``nightcrew.store.postgres`` / ``nightcrew.store.sqlite`` through the ``dialect`` argument.
Every status change is a conditional ``UPDATE ... WHERE status = <expected>`` (plus the
lease token for in-flight rows), so two actors can never both win a transition.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Delete,
    Float,
    Insert,
    Integer,
    Select,
    String,
    Table,
    Text,
    Update,
    and_,
    any_,
    bindparam,
    case,
    column,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite as sq

from nightcrew.models import (
    OPEN_STATUSES,
    JSONType,
    MaintenanceTask,
    MaintenanceTaskStatus,
    UTCDateTime,
)
from nightcrew.store import postgres

T = cast(Table, MaintenanceTask.__table__)
S = MaintenanceTaskStatus
c = T.c


def _is(*statuses: MaintenanceTaskStatus) -> ColumnElement[bool]:
    """``status = 'X'`` written as SQL literals, not parameters.

    psycopg prepares a statement after a few runs and PostgreSQL may then plan it
    generically: with the status as a parameter the planner could no longer prove the
    partial indexes (claimable rows, open unique keys, leases) apply.
    """
    if len(statuses) == 1:
        return c.status == literal_column(f"'{statuses[0].value}'")
    return c.status.in_([literal_column(f"'{s.value}'") for s in statuses])


_NOT_WAITING = c.waiting_on == literal_column("0")
_OPEN = sorted(OPEN_STATUSES)

#: Columns a worker needs to run a claimed task; kept short so claims move little data.
CLAIM_COLUMNS = (
    c.id,
    c.processor_type,
    c.processor_json,
    c.queue,
    c.priority,
    c.attempts,
    c.max_attempts,
    c.timeout,
    c.delay,
    c.start_at,
    c.created_at,
    c.unique_key,
)


class ClaimedTask(NamedTuple):
    """A task row a worker holds a lease on; ``attempt`` is the lease's fencing number.

    A named tuple: made straight from a result row, thousands a second, at C speed.
    """

    id: int
    processor_type: str
    processor_json: str
    queue: str
    priority: int
    attempt: int
    max_attempts: int
    timeout: float | None
    delay: int
    start_at: datetime
    created_at: datetime
    unique_key: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one run ended, written back by `finish_statement` in a batch.

    ``status`` is COMPLETED, ERROR, CANCELLED, or PENDING for a retry (then ``start_at``
    says when). ``attempt_counted`` False hands the task back without spending an attempt
    (graceful shutdown, a pre-flight deferral).
    """

    task_id: int
    attempt: int
    status: MaintenanceTaskStatus
    info: dict[str, Any] | None
    error: dict[str, Any] | None = None
    start_at: datetime | None = None
    attempt_counted: bool = True
    #: The last progress the run reported, written with the outcome so a value reported
    #: just before the end is not lost between two progress flushes.
    progress: tuple[float, str | None] | None = None


# ---------------------------------------------------------------- creation


def insert_statement(dialect: str, *, with_unique_keys: bool) -> Insert:
    """A multi-row insert returning ids in parameter order.

    With unique keys it skips rows whose key is already held by an open task (the partial
    unique index arbitrates, so concurrent enqueuers from many processes cannot both win);
    the caller then reads the existing task for those keys.
    """
    ins: Any = pg.insert(T) if dialect == "postgresql" else sq.insert(T)
    if with_unique_keys:
        ins = ins.on_conflict_do_nothing(
            index_elements=[c.unique_key],
            index_where=and_(c.unique_key.is_not(None), _is(*_OPEN)),
        )
    stmt: Insert = ins.returning(c.id, c.unique_key, sort_by_parameter_order=True)
    return stmt


@functools.cache
def insert_one_statement(dialect: str) -> Insert:
    """Insert one task and return the whole row; on PostgreSQL it also wakes the workers.

    ``pg_notify`` in ``RETURNING`` saves the round trip of a separate notify; it is
    delivered at commit, and only for a task that is PENDING. Built once per dialect:
    building it is most of the Python cost of a one-task enqueue.
    """
    stmt = insert(T).returning(*T.c)
    if dialect == "postgresql":
        payload = postgres.payload("task", q=c.queue, d=func.extract("epoch", c.start_at))
        stmt = stmt.returning(
            case((_is(S.PENDING), func.pg_notify(postgres.CHANNEL, payload))).label("notified")
        )
    return stmt


def notify_task_statement(queue: str, due: datetime) -> Any:
    """PostgreSQL only: wake the workers of ``queue`` for a task due at ``due``.

    Delivered at commit, so a rolled back enqueue wakes nobody.
    """
    payload = postgres.payload(
        "task", q=sql_cast(literal(queue), Text), d=sql_cast(literal(due.timestamp()), Float)
    )
    return select(func.pg_notify(postgres.CHANNEL, payload))


def notify_cancel_statement(task_id: int) -> Any:
    """PostgreSQL only: tell the worker running ``task_id`` to stop it now."""
    payload = postgres.payload("cancel", id=sql_cast(literal(task_id), BigInteger))
    return select(func.pg_notify(postgres.CHANNEL, payload))


def open_by_unique_keys(keys: Sequence[str]) -> Select[Any]:
    return select(c.unique_key, c.id).where(c.unique_key.in_(keys), _is(*_OPEN))


# ---------------------------------------------------------------- reading


def get_statement(task_id: int) -> Select[Any]:
    return select(T).where(c.id == task_id)


def list_statement(
    *,
    statuses: Sequence[MaintenanceTaskStatus] = (),
    processor: str | None = None,
    queue: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> Select[Any]:
    """Newest first with keyset pagination on id (stable under concurrent inserts)."""
    stmt = select(T).order_by(c.id.desc()).limit(limit)
    if statuses:
        stmt = stmt.where(c.status.in_([s.value for s in statuses]))
    if processor:
        stmt = stmt.where(c.processor_type == processor)
    if queue:
        stmt = stmt.where(c.queue == queue)
    if before_id is not None:
        stmt = stmt.where(c.id < before_id)
    return stmt


def count_by_status_statement() -> Select[Any]:
    return select(c.status, func.count()).group_by(c.status)


def next_due_statement(queues: Sequence[str] | None) -> Select[Any]:
    """When the earliest not-yet-due claimable task becomes due (for an idle worker's sleep)."""
    stmt = select(func.min(c.start_at)).where(_is(S.PENDING), _NOT_WAITING)
    if queues:
        stmt = stmt.where(c.queue.in_(queues))
    return stmt


# ---------------------------------------------------------------- operator transitions


def activate_statement(task_id: int, now: datetime, delay: int) -> Update:
    return (
        update(T)
        .where(c.id == task_id, _is(S.INACTIVE))
        .values(status=S.PENDING, start_at=now + timedelta(seconds=delay), updated_at=now)
        .returning(c.id, c.queue, c.start_at)
    )


def cancel_open_statement(task_id: int, now: datetime) -> Update:
    """Cancel a task that is not running: INACTIVE or PENDING become CANCELLED at once."""
    return (
        update(T)
        .where(c.id == task_id, _is(S.INACTIVE, S.PENDING))
        .values(
            status=S.CANCELLED,
            finished_at=now,
            updated_at=now,
            cancel_requested_at=now,
            info=func.coalesce(c.info, literal({"cancelled": True}, JSONType)),
        )
        .returning(c.id)
    )


def request_cancel_statement(task_id: int, now: datetime) -> Update:
    """Mark a running task; its worker sees the mark on the next heartbeat (or NOTIFY)."""
    return (
        update(T)
        .where(c.id == task_id, _is(S.WORKING), c.cancel_requested_at.is_(None))
        .values(cancel_requested_at=now, updated_at=now)
        .returning(c.id)
    )


def retry_statement(task_id: int, now: datetime) -> Update:
    """Operator retry of a finished-unsuccessfully task: a fresh set of attempts."""
    return (
        update(T)
        .where(c.id == task_id, _is(S.ERROR, S.CANCELLED))
        .values(
            status=S.PENDING,
            attempts=0,
            start_at=now,
            finished_at=None,
            cancel_requested_at=None,
            lease_token=None,
            lease_expires_at=None,
            error=None,
            progress=None,
            progress_message=None,
            updated_at=now,
        )
        .returning(c.id, c.queue)
    )


# ---------------------------------------------------------------- worker hot path


def _queue_in(name: str, dialect: str) -> ColumnElement[bool]:
    """``queue IN (...)`` with the list as a parameter: one array on PostgreSQL (the SQL
    text stays the same whatever the list, so it is compiled and prepared once), an
    expanding parameter on SQLite, which has no arrays."""
    if dialect == "postgresql":
        return c.queue == any_(bindparam(name, type_=pg.ARRAY(String)))
    return c.queue.in_(bindparam(name, expanding=True, type_=String))


#: PostgreSQL: this statement's transaction commits without waiting for its WAL flush.
#: Run once (an InitPlan) in the implicit transaction of an autocommit statement. Safe
#: for a claim: if the server crashes before the flush, the claim is undone and the task
#: is simply PENDING again (no worker can have finished it: a finish commits
#: synchronously, which flushes the WAL up to and including the claim). It takes the
#: disk flush, most of a claim's time when the server is idle, off the pickup latency.
_ASYNC_COMMIT = (
    select(func.set_config("synchronous_commit", literal_column("'off'"), literal_column("true")))
    .scalar_subquery()
    .is_not(None)
)


@functools.cache
def _claim_statement(dialect: str, queue_count: int, exclude: bool) -> Update:
    """The claim for one shape of queue filter, built once: everything else is a parameter.

    ``queue_count`` is 0 (all queues), 1 (``queue = :only_queue``) or 2 (``IN :only_queues``).
    """
    now = bindparam("now", type_=UTCDateTime)
    pick = (
        select(c.id)
        .where(_is(S.PENDING), _NOT_WAITING, c.start_at <= now)
        .order_by(c.priority.desc(), c.id)
        .limit(bindparam("limit", type_=Integer))
    )
    if queue_count == 1:
        pick = pick.where(c.queue == bindparam("only_queue", type_=String))
    elif queue_count > 1:
        pick = pick.where(_queue_in("only_queues", dialect))
    if exclude:
        pick = pick.where(~_queue_in("except_queues", dialect))
    where: list[ColumnElement[bool]] = [c.id.in_(pick.scalar_subquery())]
    if dialect == "postgresql":
        # ``id = ANY(ARRAY(...))``: the picked ids become one array (an InitPlan) and the
        # update finds each row through the primary key. ``IN (subquery)`` lets the planner
        # choose a hash semi-join over a scan of the whole table instead (seen: 2 ms of a
        # 500-row claim on a 20,000-row table, growing with the table).
        pick = pick.with_for_update(skip_locked=True)
        where = [c.id == any_(func.array(pick.scalar_subquery())), _ASYNC_COMMIT]
    stmt = (
        update(T)
        .where(*where)
        .values(
            status=S.WORKING,
            attempts=c.attempts + 1,
            lease_token=bindparam("token", type_=String),
            lease_expires_at=bindparam("lease_until", type_=UTCDateTime),
            started_at=now,
            updated_at=now,
            progress=None,
            progress_message=None,
        )
        .returning(*CLAIM_COLUMNS)
    )
    return stmt


def claim(
    dialect: str,
    *,
    queues: Sequence[str] | None,
    exclude_queues: Sequence[str] = (),
    limit: int,
    token: str,
    now: datetime,
    lease_seconds: float,
) -> tuple[Update, dict[str, Any]]:
    """Claim up to ``limit`` due tasks in one statement: the statement and its parameters.

    PostgreSQL locks the picked rows with ``FOR UPDATE SKIP LOCKED`` so concurrent
    claimers take disjoint sets without waiting; SQLite runs it inside ``BEGIN
    IMMEDIATE``, where only one writer exists at a time. The statement is one of a few
    built once, so a claim costs no SQL construction on the worker's hot path.
    """
    params: dict[str, Any] = {
        "now": now,
        "limit": limit,
        "token": token,
        "lease_until": now + timedelta(seconds=lease_seconds),
    }
    queue_count = min(len(queues), 2) if queues else 0
    if queue_count == 1:
        params["only_queue"] = queues[0]  # type: ignore[index]
    elif queue_count == 2:
        params["only_queues"] = list(queues)  # type: ignore[arg-type]
    if exclude_queues:
        params["except_queues"] = list(exclude_queues)
    return _claim_statement(dialect, queue_count, bool(exclude_queues)), params


def claimed_from_rows(rows: Sequence[Any]) -> list[ClaimedTask]:
    """Rows in claim order (RETURNING order is not guaranteed on either database)."""
    tasks = list(map(ClaimedTask._make, rows))
    tasks.sort(key=lambda t: (-t.priority, t.id))
    return tasks


def _outcomes_source(dialect: str) -> Any:
    """The outcomes of a batch as rows, decoded from one JSON parameter.

    One parameter keeps the statement's text constant whatever the batch size, so it is
    compiled once and prepared once, instead of binding eight parameters per row.
    """
    payload = bindparam("outcomes", type_=String)
    if dialect == "postgresql":
        return (
            func.jsonb_to_recordset(sql_cast(payload, pg.JSONB))
            .table_valued(
                column("id", BigInteger),
                column("attempt", Integer),
                column("status", String),
                column("info", pg.JSONB),
                column("error", pg.JSONB),
                column("start_at", DateTime(timezone=True)),
                column("finished_at", DateTime(timezone=True)),
                column("refund", Integer),
                column("progress", Float),
                column("message", String),
            )
            .render_derived(name="outcome", with_types=True)
        )
    each = func.json_each(payload).table_valued("value").alias("j")
    fields = (
        "id",
        "attempt",
        "status",
        "info",
        "error",
        "start_at",
        "finished_at",
        "refund",
        "progress",
        "message",
    )
    return select(
        *(func.json_extract(each.c.value, f"$.{name}").label(name) for name in fields)
    ).subquery("outcome")


def stored_timestamp(dialect: str, when: datetime | None) -> str | None:
    """A datetime as the JSON payload carries it: as each database stores it."""
    if when is None:
        return None
    if dialect == "postgresql":
        return when.isoformat()
    # SQLAlchemy's SQLite format, naive UTC, so stored text compares correctly.
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@functools.cache
def finish_statement(dialect: str) -> Update:
    """Write many outcomes in one statement, each fenced by status, token and attempt.

    A row whose lease was rescued (token or attempt changed, or status no longer WORKING)
    does not match and is not returned: the caller learns which finishes were rejected.
    Parameters come from `finish_params`.

    The status test is written ``status || '' = 'WORKING'`` on purpose: it means the same,
    but no index can serve it, so the planner finds each row by its primary key from the
    outcomes (a nested loop of one lookup per outcome). Written plainly, PostgreSQL hashed
    every WORKING row of every worker, found through the status index, for each batch: a
    cost that grows with the tasks in flight across the whole system, not with the batch.
    """
    v = _outcomes_source(dialect)
    working = (c.status + literal_column("''")) == literal_column(f"'{S.WORKING.value}'")
    stmt = (
        update(T)
        .where(
            c.id == v.c.id,
            working,
            c.lease_token == bindparam("token", type_=String),
            c.attempts == v.c.attempt,
        )
        .values(
            status=v.c.status,
            info=v.c.info,
            error=v.c.error,
            start_at=func.coalesce(v.c.start_at, c.start_at),
            finished_at=v.c.finished_at,
            attempts=c.attempts - v.c.refund,
            lease_token=None,
            lease_expires_at=None,
            progress=case(
                (v.c.status == literal_column(f"'{S.COMPLETED.value}'"), literal(100.0, Float)),
                else_=func.coalesce(v.c.progress, c.progress),
            ),
            progress_message=case(
                (v.c.progress.is_not(None), v.c.message), else_=c.progress_message
            ),
            cancel_requested_at=case(
                (v.c.status == literal_column(f"'{S.PENDING.value}'"), None),
                else_=c.cancel_requested_at,
            ),
            updated_at=bindparam("now", type_=UTCDateTime),
        )
        .returning(c.id, c.status, c.queue)
    )
    return stmt


def finish_params(
    dialect: str, token: str, outcomes: Sequence[Outcome], now: datetime
) -> dict[str, Any]:
    finished = stored_timestamp(dialect, now)
    rows = [
        {
            "id": o.task_id,
            "attempt": o.attempt,
            "status": o.status.value,
            "info": o.info,
            "error": o.error,
            "start_at": stored_timestamp(dialect, o.start_at),
            "finished_at": None if o.status == S.PENDING else finished,
            "refund": 0 if o.attempt_counted else 1,
            "progress": o.progress[0] if o.progress else None,
            "message": o.progress[1] if o.progress else None,
        }
        for o in outcomes
    ]
    return {"outcomes": json.dumps(rows), "token": token, "now": now}


def heartbeat_statement(
    token: str, task_ids: Sequence[int], now: datetime, lease_seconds: float
) -> Update:
    """Extend every lease this worker holds in one statement.

    Returns the rows still held, with whether a cancel was requested; an id missing from
    the result has been taken away (rescued or finished by an operator).
    """
    return (
        update(T)
        .where(c.id.in_(list(task_ids)), _is(S.WORKING), c.lease_token == token)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .returning(c.id, c.cancel_requested_at)
    )


def cancel_requested_statement(token: str, task_ids: Sequence[int]) -> Select[Any]:
    return select(c.id).where(
        c.id.in_(list(task_ids)),
        _is(S.WORKING),
        c.lease_token == token,
        c.cancel_requested_at.is_not(None),
    )


def rescue_statement(now: datetime) -> Update:
    """Hand back WORKING tasks whose lease expired: their worker is gone or stuck.

    Attempts left: PENDING again at once. None left: ERROR. A cancel requested before the
    worker died: CANCELLED. The reason goes in ``info`` and ``error``. Safe when many
    workers run it at once: each row can only match while it is still WORKING and expired.
    """
    reason = "lease expired: the worker running this task stopped heartbeating (crashed or hung)"
    new_status = case(
        (c.cancel_requested_at.is_not(None), S.CANCELLED.value),
        (c.attempts < c.max_attempts, S.PENDING.value),
        else_=S.ERROR.value,
    )
    return (
        update(T)
        .where(_is(S.WORKING), c.lease_expires_at < now)
        .values(
            status=new_status,
            info=literal({"error": reason, "rescued": True}, JSONType),
            error=literal({"type": "LeaseExpired", "message": reason, "traceback": None}, JSONType),
            finished_at=case((new_status == S.PENDING.value, None), else_=now),
            start_at=now,
            lease_token=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(c.id, c.status, c.queue)
    )


def progress_statement(
    token: str, task_id: int, attempt: int, percent: float, message: str | None, now: datetime
) -> Update:
    return (
        update(T)
        .where(c.id == task_id, _is(S.WORKING), c.lease_token == token, c.attempts == attempt)
        .values(progress=percent, progress_message=message, updated_at=now)
    )


def delete_statement(task_ids: Sequence[int]) -> Delete:
    return delete(T).where(c.id.in_(list(task_ids)))
