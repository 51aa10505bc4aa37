"""`TaskStore`: the one storage interface, and what both of its implementations share.

Everything that reads or writes tasks goes through a store:

- **operations** (`nightcrew.store.ops`): insert, get, list, count, activate, cancel,
  retry — plans run by `TaskStore.run` (sync) or `TaskStore.arun` (async), each in a
  transaction of its own, or by `run_in` / `arun_in` inside a caller's transaction;
- **the worker's hot path**: `claim`, `finish`, `heartbeat`, `cancel_requests`, `rescue`,
  `save_progress` — one constant statement each, sent by the dialect's own transport
  (`PostgresStore`: psycopg connections of its own; `SqliteStore`: a thread with a
  connection of its own), never through SQLAlchemy's execution layer;
- **wake-ups**: `listen` (PostgreSQL's LISTEN/NOTIFY; SQLite has none, and says so).

Each transition the store makes is announced on the `EventBus` after it committed.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, Executable
from sqlalchemy import event as sa_event
from sqlalchemy.engine.interfaces import Dialect as SADialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ClauseElement

from nightcrew.errors import DatabaseError
from nightcrew.events import FINISH_KINDS, EventBatch, EventBus, EventKind, TaskEvent
from nightcrew.models import MaintenanceTaskStatus, utcnow
from nightcrew.store import pipeline_ops, upkeep_ops
from nightcrew.store import statements as st
from nightcrew.store.database import READ_ONLY, Database
from nightcrew.store.failures import classify, driver_errors
from nightcrew.store.notices import Notice
from nightcrew.store.plans import (
    Plan,
    StaleConnection,
    Tx,
    aexecute_plan,
    execute_plan,
    is_one_statement,
    is_read_only,
)
from nightcrew.values import (
    ClaimedTask,
    ClaimRequest,
    Dialect,
    Held,
    Outcome,
    ProgressUpdate,
    TaskView,
    Written,
)

log = logging.getLogger("nightcrew.store")

R = TypeVar("R")
P = ParamSpec("P")
S = MaintenanceTaskStatus

SyncTarget = Session | Connection
AsyncTarget = AsyncSession | AsyncConnection


#: Builds a `TaskEvent` from a tuple of all its fields, without the named tuple's
#: Python-level ``__new__`` (for the few events not emitted as an `EventBatch`).
_new_event = tuple.__new__


def _finish_batch(
    kind: EventKind, status: S, outcomes: Sequence[Outcome], now: datetime
) -> EventBatch:
    """The events of finishes of one status, as columns (a drain's: ids and durations)."""
    columns = list(zip(*[o.claimed for o in outcomes], strict=True))
    infos = [o.info for o in outcomes]
    progress = [o.progress for o in outcomes]
    return EventBatch(
        kind,
        now,
        status,
        columns[0],
        columns[3],
        columns[1],
        columns[5],
        durations=[o.duration for o in outcomes],
        progress=[p[0] if p else None for p in progress] if any(progress) else None,
        details=[_finish_detail(info) for info in infos] if any(infos) else None,
        pipeline_ids=columns[14],
        schedules=columns[16],
    )


def _finish_detail(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a finish's event says of its outcome (an error, a retry time)."""
    if not info:  # a no-op's None or {} skips the look-ups (the common case on a drain)
        return None
    return {k: info[k] for k in ("error", "error_type", "retry_at") if k in info} or None


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement as SQL text for a raw driver, and the values SQLAlchemy bound itself."""

    sql: str
    constants: dict[str, Any]


def compile_statement(stmt: Executable, dialect: SADialect) -> Compiled:
    if not isinstance(stmt, ClauseElement):
        raise TypeError(f"cannot compile {stmt!r}")
    compiled = stmt.compile(dialect=dialect)
    constants = {
        name: getattr(value, "value", value)  # enum members as their values
        for name, value in compiled.params.items()
    }
    return Compiled(str(compiled), constants)


class TaskStore(ABC):
    """The storage interface; `open_store` picks the implementation for a database."""

    dialect: ClassVar[Dialect]
    #: Whether `listen` delivers notices (PostgreSQL) or returns at once (SQLite).
    supports_listen: ClassVar[bool] = False

    def __init__(self, database: Database, events: EventBus | None = None) -> None:
        self.database = database
        self.events = events if events is not None else EventBus()
        self._compiled: dict[int, tuple[Executable, Compiled]] = {}
        #: `enqueue_one`'s statement, compiled per set of columns a row names.
        self._enqueue_shapes: dict[tuple[str, ...], Compiled] = {}
        #: Pipelines this store already marked WORKING (one statement per pipeline, not
        #: per claim of its steps); bounded, and only ever an optimization.
        self._working_pipelines: set[int] = set()

    # ------------------------------------------------------------ operations

    def run(
        self,
        op: Callable[Concatenate[Tx, P], Plan[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run an operation in a transaction of its own; emit its events after commit."""
        return self.run_as(None, op, *args, **kwargs)

    def run_as(
        self,
        actor: str | None,
        op: Callable[Concatenate[Tx, P], Plan[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """`run`, with the events naming ``actor`` (operator actions).

        A pooled connection that died while idle (the server restarted) is replaced and
        the operation run again, once: its first statement failed, so nothing had run.
        """
        for again in (True, False):
            tx = Tx(self.dialect, actor=actor)
            try:
                with driver_errors(), self._sync_engine(op).connect() as conn:
                    if is_read_only(op):
                        conn = conn.execution_options(**READ_ONLY)
                    with conn.begin():
                        result = execute_plan(conn, op(tx, *args, **kwargs))
            except StaleConnection as exc:
                if not again:
                    raise classify(exc.__cause__ or exc) from exc.__cause__
                continue
            self.events.emit_all(tx.events)
            return result
        raise AssertionError("unreachable")

    def enqueue_one(self, row: dict[str, Any]) -> TaskView:
        """Insert one task without a unique key, the common enqueue, as cheaply as it goes:
        one statement compiled once per shape of row, sent on a pooled connection of the
        autocommit engine without SQLAlchemy's execution layer (on PostgreSQL it is then one
        round trip and one commit). Same statement, same result as ``run(ops.insert_one,
        row)``; a pooled connection that died while idle is replaced and tried again once.
        """
        compiled = self._enqueue_compiled(tuple(row))
        params = self._bind({**compiled.constants, **row})
        engine = self.database.sync_autocommit_engine
        for again in (True, False):
            with driver_errors():
                raw = engine.raw_connection()
                cursor = raw.cursor()
                try:
                    cursor.execute(compiled.sql, params)
                    inserted = cursor.fetchone()
                except engine.dialect.loaded_dbapi.Error as exc:
                    gone = engine.dialect.is_disconnect(exc, raw.dbapi_connection, cursor)
                    if again and gone:
                        raw.invalidate()
                        continue
                    raise
                finally:
                    cursor.close()
                    raw.close()
            if inserted is None:  # pragma: no cover - an INSERT ... RETURNING returns its row
                raise DatabaseError("the insert returned no id")
            task_id = int(inserted[0])
            task = TaskView.created(task_id, row)
            if self.events.wants(EventKind.CREATED):
                self.events.emit(
                    TaskEvent(
                        EventKind.CREATED,
                        task.id,
                        task.created_at,
                        status=task.status,
                        queue=task.queue,
                        processor=task.processor_type,
                    )
                )
            return task
        raise AssertionError("unreachable")

    def _enqueue_compiled(self, keys: tuple[str, ...]) -> Compiled:
        found = self._enqueue_shapes.get(keys)
        if found is None:
            stmt = st.insert_one_statement(self.dialect)
            compiled = stmt.compile(dialect=self._sa_dialect(), column_keys=list(keys))
            # Columns the row does not name but the model gives a Python default (rescues'
            # 0, say) are in the compiled statement too: bind those defaults here, as
            # SQLAlchemy's execution would.
            columns = st.T.c
            constants = {}
            for name, value in compiled.params.items():
                if name in keys:
                    continue
                default = columns[name].default if name in columns else None
                if default is not None and getattr(default, "is_scalar", False):
                    value = default.arg
                constants[name] = getattr(value, "value", value)
            found = self._enqueue_shapes[keys] = Compiled(str(compiled), constants)
        return found

    async def arun(
        self,
        op: Callable[Concatenate[Tx, P], Plan[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        for again in (True, False):
            tx = Tx(self.dialect)
            try:
                with driver_errors():
                    async with self._async_engine(op).connect() as conn:
                        if is_read_only(op):
                            conn = await conn.execution_options(**READ_ONLY)
                        async with conn.begin():
                            result = await aexecute_plan(conn, op(tx, *args, **kwargs))
            except StaleConnection as exc:
                if not again:
                    raise classify(exc.__cause__ or exc) from exc.__cause__
                continue
            self.events.emit_all(tx.events)
            return result
        raise AssertionError("unreachable")

    def _sync_engine(self, op: Callable[..., Any]) -> Engine:
        return (
            self.database.sync_autocommit_engine
            if is_one_statement(op)
            else self.database.sync_engine
        )

    def _async_engine(self, op: Callable[..., Any]) -> AsyncEngine:
        return (
            self.database.async_autocommit_engine
            if is_one_statement(op)
            else self.database.async_engine
        )

    # ------------------------------------------------------------ the worker's hot path

    def compiled(self, stmt: Executable) -> Compiled:
        """A hot statement as this store sends it (SQL text for the raw driver)."""
        # Hot statements are built once and cached by `statements`, so their identity is
        # a stable key; the statement is kept alongside so the id cannot be reused.
        entry = self._compiled.get(id(stmt))
        if entry is None:
            entry = (stmt, compile_statement(stmt, self._sa_dialect()))
            self._compiled[id(stmt)] = entry
        return entry[1]

    async def _rows(
        self, role: str, stmt: Executable, make: Callable[[datetime], dict[str, Any]]
    ) -> tuple[list[Any], datetime]:
        """Run a hot statement; its parameters are made by ``make(now)`` at the moment it
        runs (on SQLite once the write lock is taken: a claim that waited for another
        process records when it really started, and leases are as long as meant)."""
        compiled = self.compiled(stmt)

        def params(now: datetime) -> dict[str, Any]:
            return {**compiled.constants, **self._bind(make(now))}

        with driver_errors():
            return await self._fetch(role, compiled.sql, params)

    async def claim(self, request: ClaimRequest) -> list[ClaimedTask]:
        """Lease up to ``request.limit`` due tasks to ``request.token``, in claim order."""
        queues = request.queues
        queue_count = 0 if not queues else min(len(queues), 2)
        fixed: dict[str, Any] = {"limit": request.limit, "token": request.token}
        if queue_count == 1:
            fixed["only_queue"] = queues[0]  # type: ignore[index]
        elif queue_count == 2:
            fixed["only_queues"] = list(queues)  # type: ignore[arg-type]
        if request.exclude:
            fixed["except_queues"] = list(request.exclude)
        lease = timedelta(seconds=request.lease_seconds)

        def params(now: datetime) -> dict[str, Any]:
            return {**fixed, "now": now, "lease_until": now + lease}

        stmt = st.claim_statement(self.dialect, queue_count, bool(request.exclude), request.spaced)
        rows, now = await self._rows("claim", stmt, params)
        tasks = self._claimed(rows)
        tasks.sort(key=lambda t: (-t.priority, t.created_at, t.id))
        pipelines = {t.pipeline_id for t in tasks if t.pipeline_id is not None}
        pipelines -= self._working_pipelines
        if pipelines:  # right after the claim: a pipeline with a step started is WORKING
            await self.arun(pipeline_ops.mark_working, sorted(pipelines))
            if len(self._working_pipelines) > 10_000:
                self._working_pipelines.clear()
            self._working_pipelines |= pipelines
        if tasks and self.events.wants(EventKind.STARTED):
            # As columns, in one emission: this runs for every claimed task.
            columns = list(zip(*tasks, strict=True))
            self.events.emit_all(
                EventBatch(
                    EventKind.STARTED,
                    now,
                    S.WORKING,
                    columns[0],
                    columns[3],
                    columns[1],
                    columns[5],
                    pipeline_ids=columns[14],
                    schedules=columns[16],
                    # How long each waited since it was due: the pickup latency.
                    waited=[
                        (now - (due if due > created else created)).total_seconds()
                        for due, created in zip(columns[9], columns[10], strict=True)
                    ],
                )
            )
        return tasks

    async def finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Write outcomes in one statement; returns the ids written (rejected ones are
        missing: their lease was lost) and announces each written one.

        Outcomes of pipeline steps are written in a transaction of their own that also
        moves the steps' dependents and pipelines (`pipeline_ops.finish_steps`).
        """
        d = self.dialect
        plain = [o for o in outcomes if o.claimed.pipeline_id is None]
        steps = [o for o in outcomes if o.claimed.pipeline_id is not None]
        written: list[int] = []
        now = utcnow()
        if plain:

            def params(at: datetime) -> dict[str, Any]:
                return {"outcome": self._json(st.outcome_rows(d, plain, at)), "now": at}

            rows, now = await self._rows("finish", st.finish_statement(d), params)
            written += [row[0] for row in rows]
        if steps:
            with driver_errors():
                written += await self.arun(pipeline_ops.finish_steps, steps, self._json)
        self._announce_finishes(outcomes, written, now)
        return written

    def _announce_finishes(
        self, outcomes: Sequence[Outcome], written: Sequence[int], now: datetime
    ) -> None:
        """One emission per kind of finish written (a drain's batch is one), the refused
        ones first."""
        bus = self.events
        announced = list(outcomes)
        if len(written) < len(outcomes):
            done = set(written)
            announced = [o for o in outcomes if o.task_id in done]
            if bus.wants(EventKind.FINISH_REJECTED):
                bus.emit_all(
                    [
                        self._event(EventKind.FINISH_REJECTED, o, now)
                        for o in outcomes
                        if o.task_id not in done
                    ]
                )
        if not announced:
            return
        status = announced[0].status
        if any(o.status is not status for o in announced):
            by_status: dict[S, list[Outcome]] = {}
            for o in announced:
                by_status.setdefault(o.status, []).append(o)
            groups = list(by_status.items())
        else:
            groups = [(status, announced)]
        for status, group in groups:
            kind = FINISH_KINDS[status]
            if bus.wants(kind):
                bus.emit_all(_finish_batch(kind, status, group, now))

    @staticmethod
    def _event(kind: EventKind, o: Outcome, now: datetime) -> TaskEvent:
        claimed = o.claimed
        info = o.info
        detail = _finish_detail(info)
        progress = o.progress
        return _new_event(
            TaskEvent,
            (
                kind,
                claimed.id,
                now,
                o.status,
                claimed.queue,
                claimed.processor_type,
                claimed.attempt,
                progress[0] if progress else None,
                None,
                o.duration,
                None,
                detail,
                claimed.pipeline_id,
                claimed.schedule_name,
                None,
            ),
        )

    async def heartbeat(
        self, leases: Sequence[tuple[int, str]], lease_seconds: float
    ) -> list[Held]:
        """Extend the given leases (task id, claim token); returns the ones still held."""
        if not leases:
            return []
        lease = self._json([{"id": i, "token": t} for i, t in leases])
        extra = timedelta(seconds=lease_seconds)

        def params(now: datetime) -> dict[str, Any]:
            return {"lease": lease, "lease_until": now + extra}

        rows, _ = await self._rows("upkeep", st.heartbeat_statement(self.dialect), params)
        return [Held(int(row[0]), row[1] is not None) for row in rows]

    async def cancel_requests(self, leases: Sequence[tuple[int, str]]) -> list[int]:
        """The ids among these leases an operator asked to cancel."""
        if not leases:
            return []
        lease = self._json([{"id": i, "token": t} for i, t in leases])
        stmt = st.cancel_requested_statement(self.dialect)
        rows, _ = await self._rows("upkeep", stmt, lambda _now: {"lease": lease})
        return [int(row[0]) for row in rows]

    async def rescue(self, *, max_rescues: int, stale_after: float) -> list[Written]:
        """Hand back abandoned WORKING tasks (see `statements.rescue_statement`).

        Two statements: every row but the pipeline steps it ends, in one statement on the
        upkeep connection; then those steps, in a transaction that also settles their
        dependents and pipelines (`upkeep_ops.rescue_ending_steps`).
        """
        stale = timedelta(seconds=stale_after)

        def params(now: datetime) -> dict[str, Any]:
            return {"now": now, "stale_before": now - stale, "max_rescues": max_rescues}

        stmt = st.rescue_statement(self.dialect, ending_steps=False)
        rows, now = await self._rows("upkeep", stmt, params)
        if rows and self.events.wants(EventKind.RESCUED):
            self.events.emit_all([upkeep_ops.rescued_event(r, now) for r in rows])
        rescued = [Written(int(r[0]), S(r[1]), str(r[2])) for r in rows]
        return rescued + await self.arun(upkeep_ops.rescue_ending_steps, max_rescues, stale_after)

    async def save_progress(self, updates: Sequence[ProgressUpdate]) -> None:
        """Write the latest progress of running tasks, fenced by each claim's token."""
        if not updates:
            return
        report = self._json(
            [
                {"id": u.task_id, "token": u.token, "progress": u.percent, "message": u.message}
                for u in updates
            ]
        )
        stmt = st.progress_statement(self.dialect)
        _, now = await self._rows("upkeep", stmt, lambda at: {"report": report, "now": at})
        if self.events.wants(EventKind.PROGRESS):
            self.events.emit_all([self._progress_event(u, now) for u in updates])

    @staticmethod
    def _progress_event(u: ProgressUpdate, now: datetime) -> TaskEvent:
        c = u.claimed
        return TaskEvent(
            EventKind.PROGRESS,
            u.task_id,
            now,
            status=S.WORKING,
            queue=None if c is None else c.queue,
            processor=None if c is None else c.processor_type,
            attempt=u.attempt,
            progress=u.percent,
            message=u.message,
            pipeline_id=None if c is None else c.pipeline_id,
            schedule=None if c is None else c.schedule_name,
        )

    # ------------------------------------------------------------ wake-ups

    async def listen(
        self, on_notice: Callable[[Notice], None], on_connected: Callable[[int], None]
    ) -> None:
        """Deliver notices until the connection is lost (then return). Only PostgreSQL has
        notifications; elsewhere this returns at once and workers poll."""
        return None

    # ------------------------------------------------------------ what each dialect provides

    @abstractmethod
    def _sa_dialect(self) -> SADialect:
        """The SQLAlchemy dialect the hot statements are compiled for."""

    @abstractmethod
    async def _fetch(
        self, role: str, sql: str, params: Callable[[datetime], dict[str, Any]]
    ) -> tuple[list[Any], datetime]:
        """Run one statement on the transport's connection for ``role``, with the
        parameters ``params(now)`` makes just before it runs; its rows, and that now."""

    @abstractmethod
    def _bind(self, params: dict[str, Any]) -> dict[str, Any]:
        """Parameters as the raw driver takes them."""

    @abstractmethod
    def _claimed(self, rows: list[Any]) -> list[ClaimedTask]:
        """Claimed tasks from raw claim rows."""

    def _json(self, value: Any) -> str:
        return json.dumps(value)

    # ------------------------------------------------------------ lifecycle

    @abstractmethod
    async def aclose(self) -> None:
        """Close the transport's connections (the engines belong to the `Database`)."""


def run_in(
    target: SyncTarget,
    events: EventBus | None,
    op: Callable[Concatenate[Tx, P], Plan[R]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """Run an operation inside the caller's transaction (a ``Session`` or ``Connection``).

    Its changes exist if and only if the caller commits, and its events reach ``events``
    only when that commit happens.
    """
    conn = target.connection() if isinstance(target, Session) else target
    tx = Tx(_dialect_name(conn.dialect.name))
    result = execute_plan(conn, op(tx, *args, **kwargs))
    _emit_on_commit(target if isinstance(target, Session) else conn, events, tx)
    return result


async def arun_in(
    target: AsyncTarget,
    events: EventBus | None,
    op: Callable[Concatenate[Tx, P], Plan[R]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    conn = await target.connection() if isinstance(target, AsyncSession) else target
    tx = Tx(_dialect_name(conn.dialect.name))
    result = await aexecute_plan(conn, op(tx, *args, **kwargs))
    owner = target.sync_session if isinstance(target, AsyncSession) else conn.sync_connection
    if owner is not None:
        _emit_on_commit(owner, events, tx)
    return result


def _emit_on_commit(owner: Session | Connection, events: EventBus | None, tx: Tx) -> None:
    if events is None or not any(events.wants(e.kind) for e in tx.events):
        return
    name = "after_commit" if isinstance(owner, Session) else "commit"
    sa_event.listen(owner, name, lambda *_: events.emit_all(tx.events), once=True)


def _dialect_name(name: str) -> Dialect:
    return "postgresql" if name == "postgresql" else "sqlite"
