"""Run one piece of database logic from sync or async code.

An operation that needs several statements (insert, then look up a duplicate, then retry)
is written once as a generator that yields statements and receives their results; `run`
drives it on a sync connection and `arun` on an async one. Results are buffered
(``CursorResult``) on both sides, so a plan reads them the same way.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

from sqlalchemy import Connection, CursorResult, Executable
from sqlalchemy.ext.asyncio import AsyncConnection

R = TypeVar("R")

#: A plan yields ``(statement, params)`` and receives the statement's result.
Step = tuple[Executable, Any]
Plan = Generator[Step, CursorResult[Any], R]


def run(conn: Connection, plan: Plan[R]) -> R:
    try:
        stmt, params = next(plan)
        while True:
            stmt, params = plan.send(conn.execute(stmt, params))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def arun(conn: AsyncConnection, plan: Plan[R]) -> R:
    try:
        stmt, params = next(plan)
        while True:
            stmt, params = plan.send(await conn.execute(stmt, params))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
