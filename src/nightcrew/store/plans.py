"""Database logic written once for sync and async callers: plans.

An operation that needs several statements (insert, then look up a duplicate, then retry) is
a generator that yields ``(statement, params)`` and receives each statement's result: a
*plan*. `execute_plan` drives one on a sync connection, `aexecute_plan` on an async one;
results are buffered (``CursorResult``) on both sides, so a plan reads them the same way.

Every plan gets a `Tx` first: the dialect to pick statements by, the transaction's clock,
the actor on whose behalf it runs, and a buffer of the events it causes. The store emits
those events only after the transaction committed, so no subscriber ever hears of a change
that was rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, CursorResult, Executable
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from nightcrew.events import EventKind, TaskEvent
from nightcrew.models import MaintenanceTaskStatus, utcnow
from nightcrew.values import Dialect

R = TypeVar("R")
P = ParamSpec("P")

#: A plan yields ``(statement, params)`` and receives the statement's result.
Step = tuple[Executable, Any]
Plan = Generator[Step, CursorResult[Any], R]


@dataclass
class Tx:
    """What a plan knows about the transaction it runs in."""

    dialect: Dialect
    actor: str | None = None
    events: list[TaskEvent] = field(default_factory=list)
    _now: datetime | None = None

    @property
    def now(self) -> datetime:
        """The transaction's clock, read on first use: inside the transaction, so on SQLite
        after the write lock was taken (a wait for another process is not in the times)."""
        if self._now is None:
            self._now = utcnow()
        return self._now

    def emit(
        self,
        kind: EventKind,
        task_id: int,
        *,
        status: MaintenanceTaskStatus | None = None,
        queue: str | None = None,
        processor: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record an event, to be emitted once the transaction has committed."""
        self.events.append(
            TaskEvent(
                kind,
                task_id,
                self.now,
                status=status,
                queue=queue,
                processor=processor,
                actor=self.actor,
                detail=detail,
            )
        )


#: An operation: a plan function taking a `Tx` first, then its own arguments.
Op = Callable[Concatenate[Tx, P], Plan[R]]


F = TypeVar("F", bound=Callable[..., Any])


def reads(op: F) -> F:
    """Mark an operation as only reading: on SQLite it then runs in a plain (deferred)
    transaction, which in WAL mode neither waits for nor holds up the workers' writes."""
    setattr(op, "read_only", True)  # noqa: B010 - a marker on a function object
    return op


def is_read_only(op: Callable[..., Any]) -> bool:
    return bool(getattr(op, "read_only", False))


def one_statement(op: F) -> F:
    """Mark an operation that sends exactly one statement: PostgreSQL makes a single
    statement atomic by itself, so the store runs it in autocommit, saving the BEGIN and
    COMMIT round trips (a third of a one-task enqueue)."""
    setattr(op, "one_statement", True)  # noqa: B010 - a marker on a function object
    return op


def is_one_statement(op: Callable[..., Any]) -> bool:
    return bool(getattr(op, "one_statement", False))


class StaleConnection(Exception):
    """A plan's first statement failed because its pooled connection had died (the
    server restarted while it sat idle): nothing ran, so the plan may run again."""


def tuples(result: CursorResult[Any]) -> list[tuple[Any, ...]]:
    """A result's rows as plain tuples (for unpacking, which typed rows make awkward)."""
    return [tuple(row) for row in result.all()]


def execute_plan(conn: Connection, plan: Plan[R]) -> R:
    try:
        stmt, params = next(plan)
        try:
            result = conn.execute(stmt, params)
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StaleConnection() from exc
            raise
        while True:
            stmt, params = plan.send(result)
            result = conn.execute(stmt, params)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def aexecute_plan(conn: AsyncConnection, plan: Plan[R]) -> R:
    try:
        stmt, params = next(plan)
        try:
            result = await conn.execute(stmt, params)
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StaleConnection() from exc
            raise
        while True:
            stmt, params = plan.send(result)
            result = await conn.execute(stmt, params)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
