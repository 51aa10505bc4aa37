"""Every SQL statement that touches ``nightcrew_schedules``, and the ticker's task insert.

The ticker's statements are written out per dialect as text, built once: they must walk
their indexes whatever the statistics (SQLite names them with ``INDEXED BY``; PostgreSQL's
partial indexes are matched by the literal predicates written here, the same text as the
indexes' own), and the batches travel as one JSON parameter so the text never changes.

- `earliest_due_statement`: the idle ticker's one query, the first entry of
  ``ix_nightcrew_schedules_due``;
- `claim_due_statement`: due, enabled schedules, locked ``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL (so tickers of many workers take disjoint rows), each with its open tasks
  counted through ``ix_maintenance_tasks_schedule_open`` (at most ``max_instances`` rows);
- `insert_ticks_statement`: the tasks of many ticks in one statement, ``ON CONFLICT DO
  NOTHING`` on the unique (schedule, tick) index, so a tick can never get a second task;
- `after_tick_statement`: every claimed schedule's ``next_run_at``, last run and skip
  counters in one statement.

Operator and sync statements (read, insert, update, delete by name) are SQLAlchemy Core.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Insert,
    Integer,
    Select,
    String,
    Table,
    Text,
    TextClause,
    TextualSelect,
    Update,
    bindparam,
    column,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite as sq

from nightcrew.models import (
    OPEN_STATUSES,
    MaintenanceTask,
    UTCDateTime,
)
from nightcrew.models import Schedule as ScheduleRow
from nightcrew.store import bulk, notices
from nightcrew.values import Dialect

SCHEDULES = cast(Table, ScheduleRow.__table__)
TASKS = cast(Table, MaintenanceTask.__table__)
s = SCHEDULES.c

#: The indexes the ticker walks (named on SQLite).
DUE_INDEX = "ix_nightcrew_schedules_due"
OPEN_INDEX = "ix_maintenance_tasks_schedule_open"
#: The open statuses exactly as ``ix_maintenance_tasks_schedule_open``'s predicate writes
#: them (sorted), so both databases prove the partial index applies.
OPEN_SQL = ", ".join(f"'{status.value}'" for status in sorted(OPEN_STATUSES))
#: Conflict target of the unique (schedule, tick) index.
TICK_CONFLICT = "(schedule_name, scheduled_for) WHERE schedule_name IS NOT NULL"


def _hint(dialect: Dialect, index: str) -> str:
    return f" INDEXED BY {index}" if dialect == "sqlite" else ""


# ---------------------------------------------------------------- the ticker


@functools.cache
def earliest_due_statement(dialect: Dialect) -> TextualSelect:
    """The earliest ``next_run_at`` of the enabled schedules: one index entry."""
    sql = (
        f"SELECT next_run_at FROM {SCHEDULES.name}{_hint(dialect, DUE_INDEX)} "
        "WHERE enabled AND next_run_at IS NOT NULL ORDER BY next_run_at LIMIT 1"
    )
    return text(sql).columns(column("next_run_at", UTCDateTime))


#: The columns a ticker needs of a claimed schedule, and their types.
CLAIM_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("id", BigInteger()),
    ("name", String()),
    ("trigger_kind", String()),
    ("cron", String()),
    ("timezone", String()),
    ("every_seconds", BigInteger()),
    ("run_at", UTCDateTime()),
    ("processor_type", String()),
    ("processor_json", Text()),
    ("queue", String()),
    ("priority", Integer()),
    ("max_attempts", Integer()),
    ("timeout", Float()),
    ("misfire_grace_seconds", Float()),
    ("coalesce", Boolean()),
    ("max_instances", Integer()),
    ("jitter_seconds", Float()),
    ("next_run_at", UTCDateTime()),
)


@functools.cache
def claim_due_statement(dialect: Dialect) -> TextualSelect:
    """Up to ``:limit`` enabled schedules due at ``:now``, earliest first, with
    ``open_tasks``: how many of their tasks are open, counted up to ``max_instances``.

    PostgreSQL locks them (``FOR UPDATE OF s SKIP LOCKED``): concurrent tickers take
    disjoint rows without waiting, and one whose row was advanced meanwhile re-checks the
    predicate on the new version and leaves it. SQLite runs the whole tick in one
    ``BEGIN IMMEDIATE`` transaction, where only one writer exists.
    """
    listed = ", ".join(f"s.{name}" for name, _ in CLAIM_COLUMNS)
    where = f"WHERE t.schedule_name = s.name AND t.status IN ({OPEN_SQL})"
    tasks = f"{TASKS.name} AS t{_hint(dialect, OPEN_INDEX)}"
    if dialect == "postgresql":  # counted up to max_instances: that is all the check needs
        open_tasks = (
            f"(SELECT count(*) FROM (SELECT 1 FROM {tasks} {where} LIMIT s.max_instances) AS o)"
        )
    else:  # SQLite cannot correlate a LIMIT; a schedule's open tasks are few anyway
        open_tasks = f"(SELECT count(*) FROM {tasks} {where})"
    lock = " FOR UPDATE OF s SKIP LOCKED" if dialect == "postgresql" else ""
    # PostgreSQL: the pass commits without waiting for its WAL flush, set here, once, by
    # an InitPlan, rather than by a statement and a round trip of its own. Safe: if the
    # server crashes before the flush, the tasks *and* the schedules' advance are lost
    # together, so the schedules are due again and the next pass enqueues those ticks (no
    # task of theirs can have run: its claim and finish would have flushed the WAL up to
    # this commit first). It takes the disk flush off the tick-to-enqueue lag.
    async_commit = (
        " AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"
        if dialect == "postgresql"
        else ""
    )
    sql = (
        f"SELECT {listed}, {open_tasks} AS open_tasks "
        f"FROM {SCHEDULES.name} AS s{_hint(dialect, DUE_INDEX)} "
        "WHERE s.enabled AND s.next_run_at IS NOT NULL AND s.next_run_at <= :now"
        f"{async_commit} ORDER BY s.next_run_at LIMIT :limit{lock}"
    )
    return (
        text(sql)
        .bindparams(bindparam("now", type_=UTCDateTime), bindparam("limit", type_=Integer))
        .columns(
            *(column(name, type_) for name, type_ in CLAIM_COLUMNS), column("open_tasks", Integer)
        )
    )


#: The task columns whose values differ from one tick's task to the next: each JSON row
#: carries them. Every other column the bulk insert writes is the same for all the tasks
#: of a pass (status, attempts, created_at...) and is bound once: half the database's work
#: of a 500-row insert is decoding and casting JSON.
TICK_ROW_COLUMNS = (
    "processor_type",
    "processor_json",
    "queue",
    "priority",
    "max_attempts",
    "timeout",
    "start_at",
    "schedule_name",
    "scheduled_for",
)


def tick_columns() -> tuple[str, ...]:
    """The task columns a tick writes: the bulk insert's, in its order."""
    return tuple(bulk.COLUMNS)


def tick_constant_columns() -> tuple[str, ...]:
    """The columns bound once per pass (parameters ``k_<column>``)."""
    return tuple(name for name in bulk.COLUMNS if name not in TICK_ROW_COLUMNS)


@functools.cache
def _insert_ticks_statement(dialect: Dialect, columns: tuple[str, ...]) -> TextualSelect:
    exprs = []
    for name in columns:
        sql_type = bulk.COLUMNS[name]
        if name in TICK_ROW_COLUMNS:
            i = TICK_ROW_COLUMNS.index(name)
            if dialect == "postgresql":
                exprs.append(f"CAST(e.v->>{i} AS {sql_type})")
            else:
                exprs.append(f"json_extract(e.value, '$[{i}]')")
        else:
            exprs.append(
                f"CAST(:k_{name} AS {sql_type})" if dialect == "postgresql" else f":k_{name}"
            )
    if dialect == "postgresql":
        source = (
            "FROM json_array_elements(CAST(:rows AS json)) WITH ORDINALITY AS e(v, n) ORDER BY e.n"
        )
    else:
        # ``WHERE true``: SQLite's grammar needs it before an upsert clause on INSERT ... SELECT.
        source = "FROM json_each(:rows) AS e WHERE true ORDER BY e.key"
    sql = (
        f"INSERT INTO {TASKS.name} ({', '.join(columns)}) SELECT {', '.join(exprs)} {source} "
        f"ON CONFLICT {TICK_CONFLICT} DO NOTHING RETURNING id, schedule_name, scheduled_for"
    )
    return text(sql).columns(
        column("id", BigInteger),
        column("schedule_name", String),
        column("scheduled_for", UTCDateTime),
    )


def insert_ticks_statement(dialect: Dialect) -> TextualSelect:
    """Insert tick tasks: ``:rows``, a JSON array of lists in `TICK_ROW_COLUMNS` order, and
    one ``:k_<column>`` for each of `tick_constant_columns`; returns ``id, schedule_name,
    scheduled_for`` of the rows inserted. A tick that already has a task is skipped by the
    unique index, so it is simply missing from the result."""
    return _insert_ticks_statement(dialect, tick_columns())


#: Fields of the JSON rows `after_tick_statement` reads, with their PostgreSQL types.
AFTER_TICK_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "bigint"),
    ("next_run_at", "timestamptz"),
    ("last_run_at", "timestamptz"),
    ("last_task_id", "bigint"),
    ("misfires", "integer"),
    ("skipped", "integer"),
    ("skip_at", "timestamptz"),
    ("skip_reason", "text"),
)


@functools.cache
def after_tick_statement(dialect: Dialect) -> TextClause:
    """Advance many schedules at once (``:rows``, a JSON array of `AFTER_TICK_FIELDS`
    objects): ``next_run_at`` always; the last run and skip fields when given (null keeps
    them); the counters by the amounts given."""
    assignments = (
        "next_run_at = v.next_run_at, "
        "last_run_at = COALESCE(v.last_run_at, s.last_run_at), "
        "last_task_id = COALESCE(v.last_task_id, s.last_task_id), "
        "misfires = s.misfires + v.misfires, "
        "skipped_instances = s.skipped_instances + v.skipped, "
        "last_skip_at = COALESCE(v.skip_at, s.last_skip_at), "
        "last_skip_reason = COALESCE(v.skip_reason, s.last_skip_reason), "
        "updated_at = :now"
    )
    if dialect == "postgresql":
        typed = ", ".join(f"{name} {sql_type}" for name, sql_type in AFTER_TICK_FIELDS)
        source = f"jsonb_to_recordset(CAST(:rows AS jsonb)) AS v({typed})"
    else:
        listed = ", ".join(
            f"json_extract(e.value, '$.{name}') AS {name}" for name, _ in AFTER_TICK_FIELDS
        )
        source = f"(SELECT {listed} FROM json_each(:rows) AS e) AS v"
    sql = f"UPDATE {SCHEDULES.name} AS s SET {assignments} FROM {source} WHERE s.id = v.id"
    return text(sql).bindparams(bindparam("now", type_=UTCDateTime))


def notify_schedule_statement(due: datetime | None) -> Any:
    """PostgreSQL only: wake the tickers, a schedule changed (due at ``due``, if known).

    Delivered at commit, so a sync or an ``add`` that rolled back wakes nobody.
    """
    epoch = None if due is None else due.timestamp()
    payload = notices.payload("schedule", d=sql_cast(literal(epoch, Float), Float))
    return select(func.pg_notify(notices.CHANNEL, payload))


# ---------------------------------------------------------------- reading


def _view_columns() -> list[Any]:
    return [*SCHEDULES.c, TASKS.c.status.label("last_task_status")]


def get_statement(name: str, *, lock: bool = False) -> Select[Any]:
    """One schedule with its last task's status; ``lock`` takes its row lock (PostgreSQL;
    a no-op on SQLite, whose write transactions are exclusive anyway)."""
    stmt = (
        select(*_view_columns())
        .select_from(SCHEDULES.outerjoin(TASKS, TASKS.c.id == s.last_task_id))
        .where(s.name == name)
    )
    if lock:
        stmt = stmt.with_for_update(of=SCHEDULES)
    return stmt


def list_statement(
    *, after: str | None, limit: int, enabled: bool | None = None, source: str | None = None
) -> Select[Any]:
    """Schedules by name (keyset: names after ``after``), each with its last task's status;
    ``enabled`` and ``source`` (None: any) narrow the rows."""
    stmt = (
        select(*_view_columns())
        .select_from(SCHEDULES.outerjoin(TASKS, TASKS.c.id == s.last_task_id))
        .order_by(s.name)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(s.name > after)
    if enabled is not None:
        stmt = stmt.where(s.enabled == enabled)
    if source is not None:
        stmt = stmt.where(s.source == source)
    return stmt


def for_sync_statement(dialect: Dialect, names: Sequence[str]) -> Select[Any]:
    """The rows a sync may change: every code row, and any row with a declared name;
    locked on PostgreSQL, so a ticker's pass on them finishes first (and is seen)."""
    stmt = select(*SCHEDULES.c).where(or_(s.source == "code", s.name.in_(list(names))))
    if dialect == "postgresql":
        stmt = stmt.with_for_update()
    return stmt


def sync_lock_statement() -> TextClause:
    """PostgreSQL: one sync at a time per schema (many workers may start at once)."""
    return text("SELECT pg_advisory_xact_lock(1852011378, hashtext(current_schema()))")


# ---------------------------------------------------------------- writing


def insert_statement(dialect: Dialect) -> Insert:
    """Insert schedules (executemany), skipping names that exist; returns ids and names."""
    ins: Any = pg.insert(SCHEDULES) if dialect == "postgresql" else sq.insert(SCHEDULES)
    stmt: Insert = ins.on_conflict_do_nothing(index_elements=[s.name]).returning(
        s.id, s.name, sort_by_parameter_order=True
    )
    return stmt


#: Columns a sync rewrites on an existing row (executemany, one full set per row).
SYNC_UPDATE_COLUMNS = (
    "trigger_kind",
    "cron",
    "timezone",
    "every_seconds",
    "run_at",
    "processor_type",
    "processor_json",
    "queue",
    "priority",
    "max_attempts",
    "timeout",
    "misfire_grace_seconds",
    "coalesce",
    "max_instances",
    "jitter_seconds",
    "enabled",
    "source",
    "declared_hash",
    "next_run_at",
    "anchor_at",
    "updated_at",
)


def sync_update_statement() -> Update:
    """Rewrite one row's definition by id (``_id``), every `SYNC_UPDATE_COLUMNS` bound."""
    return (
        update(SCHEDULES)
        .where(s.id == bindparam("_id", type_=BigInteger))
        .values({name: bindparam(name, type_=s[name].type) for name in SYNC_UPDATE_COLUMNS})
    )


def retire_statement(ids: Sequence[int], now: datetime) -> Update:
    """Disable code rows no longer declared (kept, with their history); their declaration
    fingerprint is cleared, which is what marks them retired rather than paused."""
    return (
        update(SCHEDULES)
        .where(s.id.in_(list(ids)))
        .values(enabled=False, declared_hash=None, updated_at=now)
    )


def set_enabled_statement(
    name: str, enabled: bool, now: datetime, next_run_at: datetime | None = None
) -> Update:
    """Pause (``enabled`` False) or resume one schedule; a resume also sets its next tick."""
    values: dict[str, Any] = {"enabled": enabled, "updated_at": now}
    if enabled:
        values["next_run_at"] = next_run_at
    return update(SCHEDULES).where(s.name == name).values(values).returning(s.id)


def delete_statement(name: str) -> Any:
    """Delete one schedule (its tasks stay, with their ``schedule_name``)."""
    return delete(SCHEDULES).where(s.name == name).returning(s.id)
