"""The only code that talks SQL to the database.

``Store`` opens a transaction and runs a plan (`nightcrew.store.operations`) in it, from
sync or async code alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import CursorResult, Executable
from sqlalchemy.exc import DBAPIError

from nightcrew.errors import DatabaseError
from nightcrew.store.database import Database, dialect_of, normalize_url
from nightcrew.store.plans import Plan, arun, run

R = TypeVar("R")


def describe_database_error(exc: BaseException) -> str:
    """One line saying what the driver reported, with the fix when it is a known one."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    message = f"database error: {detail[0] if detail else type(exc).__name__}"
    lowered = message.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        message += " (run 'nightcrew db upgrade' to create the schema)"
    return message


@contextmanager
def _driver_errors() -> Iterator[None]:
    """Turn a driver failure into `DatabaseError` (the original stays as ``__cause__``),
    so callers of the public API need to catch only nightcrew's own exceptions."""
    try:
        yield
    except DBAPIError as exc:
        raise DatabaseError(describe_database_error(exc)) from exc


class Store:
    """Runs plans against one `Database`, each in its own transaction."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def dialect(self) -> str:
        return self.database.dialect

    def run(self, plan: Plan[R], *, single_statement: bool = False) -> R:
        """Run a plan in a transaction of its own.

        ``single_statement`` declares that the plan may send just one statement, which
        PostgreSQL makes atomic by itself: it then runs in autocommit, saving the
        BEGIN and COMMIT round trips.
        """
        with _driver_errors():
            if single_statement and self.database.is_postgres:
                with self.database.sync_autocommit_engine.connect() as conn:
                    return run(conn, plan)
            with self.database.sync_engine.begin() as conn:
                return run(conn, plan)

    async def arun(self, plan: Plan[R], *, single_statement: bool = False) -> R:
        with _driver_errors():
            if single_statement and self.database.is_postgres:
                async with self.database.async_autocommit_engine.connect() as conn:
                    return await arun(conn, plan)
            async with self.database.async_engine.begin() as conn:
                return await arun(conn, plan)

    async def aexecute(self, stmt: Executable, params: Any = None) -> CursorResult[Any]:
        """One statement in its own transaction, with as few round trips as the dialect allows.

        On PostgreSQL a single statement is atomic by itself, so it runs in autocommit
        (no BEGIN/COMMIT round trips on the worker's hot path). SQLite needs ``BEGIN
        IMMEDIATE`` so a statement that reads then writes never loses its snapshot.
        """
        if self.database.is_postgres:
            async with self.database.async_autocommit_engine.connect() as conn:
                return await conn.execute(stmt, params)
        async with self.database.async_engine.begin() as conn:
            return await conn.execute(stmt, params)

    async def aexecute_all(self, steps: Sequence[tuple[Executable, Any]]) -> None:
        """Several statements in one transaction (e.g. a batch of progress updates)."""
        async with self.database.async_engine.begin() as conn:
            for stmt, params in steps:
                await conn.execute(stmt, params)


__all__ = [
    "Database",
    "Store",
    "arun",
    "describe_database_error",
    "dialect_of",
    "normalize_url",
    "run",
]
