"""Every SQL statement that touches ``maintenance_tasks``.

Statements are SQLAlchemy Core, built here once per dialect; the stores execute the same
objects from sync and async code. Every status change is a conditional ``UPDATE ... WHERE
status = <expected>`` (plus the claim's lease token for in-flight rows), so two actors can
never both win a transition: a reader finds where a status changes by reading this file.

The worker's statements (claim, finish, heartbeat, cancel check, rescue, progress) have
constant text whatever their input: lists travel as one array (PostgreSQL) or one JSON text
(SQLite) parameter, so each is compiled and prepared once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
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
    func,
    insert,
    literal,
    literal_column,
    not_,
    or_,
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
from nightcrew.store import notices
from nightcrew.values import Dialect, Outcome, TaskFilter

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


def _word(word: str) -> Any:
    """One of our own fixed words inline (a status, say): never user data."""
    return literal_column(f"'{word}'")


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
    c.rescues,
    c.lease_token,
    c.pipeline_id,
    c.critical,
    c.schedule_name,
)

#: The partial indexes over claimable rows, in claim order (with a leading queue, and not).
CLAIMABLE_BY_QUEUE = "ix_maintenance_tasks_claimable"
CLAIMABLE_ANY = "ix_maintenance_tasks_claimable_any"
SPACED = "ix_maintenance_tasks_spaced"
IN_FLIGHT = "ix_maintenance_tasks_lease"

#: Column positions in a claim row that hold timestamps (SQLite returns them as text).
CLAIM_TIME_COLUMNS = (9, 10)


def in_list(
    col: ColumnElement[Any], name: str, dialect: Dialect, element: Any
) -> ColumnElement[bool]:
    """``col IN (the list bound as parameter name)`` with constant SQL text.

    PostgreSQL takes the list as one array parameter (``col = ANY(:name)``); SQLite, which
    has no arrays, as one JSON text expanded by ``json_each``. The transports encode the
    value accordingly (`nightcrew.store.base.TaskStore` turns lists into JSON on SQLite).
    """
    if dialect == "postgresql":
        return col == any_(bindparam(name, type_=pg.ARRAY(element)))
    each = func.json_each(bindparam(name, type_=String)).table_valued("value")
    return col.in_(select(each.c.value).scalar_subquery())


def stored_timestamp(dialect: Dialect, when: datetime | None) -> str | None:
    """A datetime as a JSON payload carries it: as each database stores it."""
    if when is None:
        return None
    if dialect == "postgresql":
        return when.isoformat()
    # SQLAlchemy's SQLite format, naive UTC, so stored text compares correctly.
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# ---------------------------------------------------------------- creation


def insert_statement(dialect: Dialect, *, with_unique_keys: bool) -> Insert:
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
def insert_one_statement(dialect: Dialect) -> Insert:
    """Insert one task and return its id; on PostgreSQL it also wakes the workers.

    Only the id comes back: the caller knows every other value it wrote, and decoding a
    whole row was most of the Python cost of a one-task enqueue. ``pg_notify`` in
    ``RETURNING`` saves the round trip of a separate notify; it is delivered at commit,
    and only for a task that is PENDING. Built once per dialect.
    """
    stmt = insert(T).returning(c.id)
    if dialect == "postgresql":
        payload = notices.payload("task", q=c.queue, d=func.extract("epoch", c.start_at))
        stmt = stmt.returning(
            case((_is(S.PENDING), func.pg_notify(notices.CHANNEL, payload))).label("notified")
        )
    return stmt


def notify_task_statement(queue: str, due: datetime) -> Any:
    """PostgreSQL only: wake the workers of ``queue`` for a task due at ``due``.

    Delivered at commit, so a rolled back enqueue wakes nobody.
    """
    payload = notices.payload(
        "task", q=sql_cast(literal(queue), Text), d=sql_cast(literal(due.timestamp()), Float)
    )
    return select(func.pg_notify(notices.CHANNEL, payload))


def notify_cancel_statement(task_id: int) -> Any:
    """PostgreSQL only: tell the worker running ``task_id`` to stop it now."""
    payload = notices.payload("cancel", id=sql_cast(literal(task_id), BigInteger))
    return select(func.pg_notify(notices.CHANNEL, payload))


def open_by_unique_keys(keys: list[str]) -> Select[Any]:
    return select(c.unique_key, c.id).where(c.unique_key.in_(keys), _is(*_OPEN))


# ---------------------------------------------------------------- reading


def get_statement(task_id: int) -> Select[Any]:
    return select(T).where(c.id == task_id)


def list_statement(task_filter: TaskFilter, *, limit: int) -> Select[Any]:
    """Newest first with keyset pagination on id (stable under concurrent inserts)."""
    f = task_filter
    stmt = select(T).order_by(c.id.desc()).limit(limit)
    if f.statuses:
        stmt = stmt.where(c.status.in_([s.value for s in f.statuses]))
    if f.processor:
        if "." in f.processor:
            stmt = stmt.where(c.processor_type == f.processor)
        else:  # the short name `tasks ls` shows: any module
            stmt = stmt.where(
                or_(
                    c.processor_type == f.processor,
                    # autoescape: a % or _ in the name is that character, not a wildcard
                    # (a bulk action by processor must not widen to every task).
                    c.processor_type.endswith("." + f.processor, autoescape=True),
                )
            )
    if f.queue:
        stmt = stmt.where(c.queue == f.queue)
    if f.schedule_name is not None:
        stmt = stmt.where(c.schedule_name == f.schedule_name)
    if f.pipeline_id is not None:
        stmt = stmt.where(c.pipeline_id == f.pipeline_id)
    if f.created_after is not None:
        stmt = stmt.where(c.created_at >= f.created_after)
    if f.created_before is not None:
        stmt = stmt.where(c.created_at < f.created_before)
    if f.before_id is not None:
        stmt = stmt.where(c.id < f.before_id)
    return stmt


def probe_statement() -> Select[Any]:
    return select(c.id).limit(1)


def count_by_status_statement() -> Select[Any]:
    return select(c.status, func.count()).group_by(c.status)


# ---------------------------------------------------------------- operator transitions


def activate_statement(task_id: int, now: datetime, start_at: datetime) -> Update:
    return (
        update(T)
        .where(c.id == task_id, _is(S.INACTIVE))
        .values(status=S.PENDING, start_at=start_at, updated_at=now)
        .returning(c.id, c.queue, c.start_at, c.processor_type)
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
        .returning(c.id, c.queue, c.processor_type, c.pipeline_id, c.critical)
    )


def request_cancel_statement(task_id: int, now: datetime) -> Update:
    """Mark a running task; its worker sees the mark on the next heartbeat (or NOTIFY)."""
    return (
        update(T)
        .where(c.id == task_id, _is(S.WORKING), c.cancel_requested_at.is_(None))
        .values(cancel_requested_at=now, updated_at=now)
        .returning(c.id, c.queue, c.processor_type)
    )


def retry_statement(task_id: int, now: datetime) -> Update:
    """Operator retry of a finished-unsuccessfully task: fresh attempts and rescues."""
    return (
        update(T)
        .where(c.id == task_id, _is(S.ERROR, S.CANCELLED))
        .values(
            status=S.PENDING,
            attempts=0,
            rescues=0,
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
        .returning(c.id, c.queue, c.processor_type, c.pipeline_id)
    )


# ---------------------------------------------------------------- worker hot path


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
def claim_statement(
    dialect: Dialect, queue_count: int, exclude: bool, spaced: bool = False
) -> Update:
    """The claim for one shape of queue filter: everything else is a parameter.

    ``queue_count`` is 0 (all queues), 1 (``queue = :only_queue``) or 2 (a list,
    ``:only_queues``); ``exclude`` adds ``queue NOT IN :except_queues``. Order: priority
    (higher first), then oldest ``created_at``, then id, as the origin's runner orders
    its work; a partial index over claimable rows serves exactly that order. ``spaced``
    claims tasks with a ``delay`` (the origin's pause after a task) instead of those
    without; they have a partial index of their own.

    PostgreSQL locks the picked rows with ``FOR UPDATE SKIP LOCKED`` so concurrent
    claimers take disjoint sets without waiting; SQLite runs it inside ``BEGIN
    IMMEDIATE``, where only one writer exists at a time.
    """
    now = bindparam("now", type_=UTCDateTime)
    order: tuple[Any, ...] = (c.priority.desc(), c.created_at, c.id)
    if queue_count == 1:
        # Leading with the (one, constant) queue changes nothing in the order, but only the
        # per-queue index serves it: a rare queue is never looked for by walking them all.
        order = (c.queue, *order)
    delay = c.delay > literal_column("0") if spaced else c.delay == literal_column("0")
    pick = (
        select(c.id)
        .where(_is(S.PENDING), _NOT_WAITING, delay, c.start_at <= now)
        .order_by(*order)
        .limit(bindparam("limit", type_=Integer))
    )
    if queue_count == 1:
        pick = pick.where(c.queue == bindparam("only_queue", type_=String))
    elif queue_count > 1:
        pick = pick.where(in_list(c.queue, "only_queues", dialect, String))
    if exclude:
        pick = pick.where(~in_list(c.queue, "except_queues", dialect, String))
    # SQLite, without statistics, prefers the (status, updated_at) index and sorts every
    # PENDING row for each claim; naming the partial index keeps the walk in claim order.
    index = SPACED if spaced else CLAIMABLE_BY_QUEUE if queue_count == 1 else CLAIMABLE_ANY
    pick = pick.with_hint(T, f"INDEXED BY {index}", "sqlite")
    where: list[ColumnElement[bool]] = [c.id.in_(pick.scalar_subquery())]
    if dialect == "postgresql":
        # ``id = ANY(ARRAY(...))``: the picked ids become one array (an InitPlan) and the
        # update finds each row through the primary key. ``IN (subquery)`` lets the planner
        # choose a hash semi-join over a scan of the whole table instead.
        pick = pick.with_for_update(skip_locked=True)
        where = [c.id == any_(func.array(pick.scalar_subquery())), _ASYNC_COMMIT]
    return (
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


_OUTCOME_FIELDS: tuple[tuple[str, Any], ...] = (
    ("id", BigInteger),
    ("token", String),
    ("status", String),
    ("info", pg.JSONB),
    ("error", pg.JSONB),
    ("start_at", DateTime(timezone=True)),
    ("finished_at", DateTime(timezone=True)),
    ("refund", Integer),
    ("progress", Float),
    ("message", String),
)


def json_rows(dialect: Dialect, name: str, names: tuple[tuple[str, Any], ...]) -> Any:
    """Rows decoded from one JSON array parameter, as a FROM item named ``name``.

    One parameter keeps the statement's text constant whatever the batch size, so it is
    compiled once and prepared once, instead of binding several parameters per row.
    """
    payload = bindparam(name, type_=String)
    if dialect == "postgresql":
        return (
            func.jsonb_to_recordset(sql_cast(payload, pg.JSONB))
            .table_valued(*(column(n, t) for n, t in names))
            .render_derived(name=name, with_types=True)
        )
    each = func.json_each(payload).table_valued("value").alias(f"{name}_each")
    return select(*(func.json_extract(each.c.value, f"$.{n}").label(n) for n, _ in names)).subquery(
        name
    )


def _working() -> ColumnElement[bool]:
    """``status = 'WORKING'`` that no index can serve.

    Written ``status || '' = 'WORKING'`` so the planner finds each row by its primary key
    from the batch, never by walking every WORKING row of every worker through an index.
    """
    working: ColumnElement[bool] = (c.status + literal_column("''")) == _word(S.WORKING.value)
    return working


@functools.cache
def finish_statement(dialect: Dialect) -> Update:
    """Write many outcomes in one statement, each fenced by status and its claim's token.

    A row whose lease was rescued (token changed, or status no longer WORKING) does not
    match and is not returned: the caller learns which finishes were rejected. The
    ``outcome`` parameter is a JSON array of objects with `_OUTCOME_FIELDS`.
    """
    v = json_rows(dialect, "outcome", _OUTCOME_FIELDS)
    completed = v.c.status == _word(S.COMPLETED.value)
    return (
        update(T)
        .where(c.id == v.c.id, _working(), c.lease_token == v.c.token)
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
                (completed, literal(100.0, Float)), else_=func.coalesce(v.c.progress, c.progress)
            ),
            progress_message=case(
                (v.c.progress.is_not(None), v.c.message), else_=c.progress_message
            ),
            cancel_requested_at=case(
                (v.c.status == _word(S.PENDING.value), None), else_=c.cancel_requested_at
            ),
            updated_at=bindparam("now", type_=UTCDateTime),
        )
        .returning(c.id)
    )


def outcome_rows(dialect: Dialect, outcomes: Sequence[Outcome], now: datetime) -> list[Any]:
    """The ``outcome`` rows of `finish_statement`, one per outcome (the caller encodes them)."""
    finished = stored_timestamp(dialect, now)
    return [
        {
            "id": o.task_id,
            "token": o.claimed.lease_token,
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


_LEASE_FIELDS: tuple[tuple[str, Any], ...] = (("id", BigInteger), ("token", String))


@functools.cache
def heartbeat_statement(dialect: Dialect) -> Update:
    """Extend every lease a worker holds in one statement.

    ``leases`` is a JSON array of ``{id, token}``. Returns the rows still held, with
    whether a cancel was requested; an id missing from the result has been taken away
    (rescued, or finished by an operator).
    """
    v = json_rows(dialect, "lease", _LEASE_FIELDS)
    return (
        update(T)
        .where(c.id == v.c.id, _working(), c.lease_token == v.c.token)
        # ``updated_at`` kept as it is: a lease extension changes nothing a reader cares
        # about, and it would move the row in the (status, updated_at) index every beat.
        .values(
            lease_expires_at=bindparam("lease_until", type_=UTCDateTime), updated_at=c.updated_at
        )
        # The column itself, not ``IS NOT NULL``: SQLite 3.40 evaluates that expression in
        # the RETURNING of an UPDATE ... FROM wrongly (true for every row).
        .returning(c.id, c.cancel_requested_at)
    )


@functools.cache
def cancel_requested_statement(dialect: Dialect) -> Select[Any]:
    """Which of a worker's leases carry a cancel request (SQLite has no NOTIFY to say so)."""
    v = json_rows(dialect, "lease", _LEASE_FIELDS)
    return (
        select(c.id)
        .select_from(T)
        .join(v, c.id == v.c.id)
        .where(_working(), c.lease_token == v.c.token, c.cancel_requested_at.is_not(None))
    )


LEASE_EXPIRED = "lease expired: the worker running this task stopped heartbeating (crashed or hung)"
POISON = "rescued {n} times: the task kills or hangs its worker every time it runs"
STALE_WORKING = (
    "left WORKING without a lease (by the origin's runner, or a crash during a deploy) "
    "for longer than the stale limit"
)


@functools.cache
def rescue_statement(dialect: Dialect, ending_steps: bool | None = None) -> Update:
    """Hand back WORKING tasks whose worker is gone or stuck.

    ``ending_steps`` splits the rows in two: False leaves out the pipeline steps the rescue
    would end (ERROR or CANCELLED), True takes only those (they are settled in the same
    transaction, see `upkeep_ops.rescue_ending_steps`); None takes every row.

    Two kinds of abandoned rows: an expired lease (``lease_expires_at < :now``), and a
    WORKING row without any lease whose ``started_at`` (or, where the origin left none, its
    last update) is older than ``:stale_before`` (rows the origin's runner left; it marks
    those ERROR after an hour, and so do we).

    An expired lease goes back to PENDING at once *without spending an attempt* (the claim
    counted one; a crash is not the task's failure) and counts a rescue; once a task has
    used up ``:max_rescues`` it ends ERROR as a poison task. A cancel requested before the
    worker died ends CANCELLED. The reason goes in ``info`` and ``error``. Safe when many
    workers run it at once: each row can only match while it is still WORKING and
    abandoned. Served by the partial index on leases of WORKING rows.
    """
    now = bindparam("now", type_=UTCDateTime)
    # A lease-less row the origin left may lack started_at; its last write stands in.
    stale = and_(
        c.lease_expires_at.is_(None),
        func.coalesce(c.started_at, c.updated_at, c.created_at)
        < bindparam("stale_before", UTCDateTime),
    )
    poisoned = c.rescues + 1 > bindparam("max_rescues", type_=Integer)
    new_status = case(
        (c.cancel_requested_at.is_not(None), _word(S.CANCELLED.value)),
        (stale, _word(S.ERROR.value)),
        (poisoned, _word(S.ERROR.value)),
        else_=_word(S.PENDING.value),
    )
    poison_text = func.replace(
        literal(POISON, Text), literal("{n}", Text), sql_cast(c.rescues + 1, Text)
    )
    reason = case(
        (stale, literal(STALE_WORKING, Text)),
        (poisoned, poison_text),
        else_=literal(LEASE_EXPIRED, Text),
    )
    kind = case(
        (stale, _word("StaleWorking")), (poisoned, _word("PoisonTask")), else_=_word("LeaseExpired")
    )
    if dialect == "postgresql":
        info = func.jsonb_build_object(_word("error"), reason, _word("rescued"), literal(True))
        error = func.jsonb_build_object(
            _word("type"), kind, _word("message"), reason, _word("traceback"), None
        )
    else:
        info = func.json_object(_word("error"), reason, _word("rescued"), func.json("true"))
        error = func.json_object(
            _word("type"), kind, _word("message"), reason, _word("traceback"), None
        )
    handed_back = new_status == _word(S.PENDING.value)
    # The abandoned rows, looked for in the partial index of in-flight rows only (named on
    # SQLite, whose planner would otherwise scan the table once it has statistics).
    pick = (
        select(c.id)
        .where(_is(S.WORKING), or_(c.lease_expires_at < now, stale))
        .with_hint(T, f"INDEXED BY {IN_FLIGHT}", "sqlite")
    )
    abandoned = (
        c.id == any_(func.array(pick.scalar_subquery()))
        if dialect == "postgresql"
        else c.id.in_(pick.scalar_subquery())
    )
    conditions = [abandoned, _is(S.WORKING), or_(c.lease_expires_at < now, stale)]
    if ending_steps is not None:
        ending = and_(c.pipeline_id.is_not(None), new_status != _word(S.PENDING.value))
        conditions.append(ending if ending_steps else not_(ending))
    return (
        update(T)
        .where(*conditions)
        .values(
            status=new_status,
            info=info,
            error=error,
            attempts=case((handed_back, c.attempts - 1), else_=c.attempts),
            rescues=case((stale, c.rescues), else_=c.rescues + 1),
            finished_at=case((handed_back, None), else_=now),
            start_at=now,
            lease_token=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(
            c.id,
            c.status,
            c.queue,
            c.processor_type,
            c.attempts,
            c.rescues,
            c.pipeline_id,
            c.critical,
        )
    )


_PROGRESS_FIELDS: tuple[tuple[str, Any], ...] = (
    ("id", BigInteger),
    ("token", String),
    ("progress", Float),
    ("message", String),
)


@functools.cache
def progress_statement(dialect: Dialect) -> Update:
    """Write the latest progress of many running tasks at once (a JSON array parameter)."""
    v = json_rows(dialect, "report", _PROGRESS_FIELDS)
    return (
        update(T)
        .where(c.id == v.c.id, _working(), c.lease_token == v.c.token)
        .values(
            progress=v.c.progress,
            progress_message=v.c.message,
            updated_at=bindparam("now", type_=UTCDateTime),
        )
    )
