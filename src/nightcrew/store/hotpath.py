"""The worker's two hot statements, claim and finish, with as little between them and the wire.

The statements themselves are built in `nightcrew.store.tasks` like every other one; this
module only decides how they are sent. On PostgreSQL they go straight through psycopg on
two connections of their own (one claims while the other finishes), compiled to SQL text
once: SQLAlchemy's async layer and result processing cost about as much as the round trip
itself when the worker is idle and woken by a NOTIFY (measured: 0.75 ms against 1.5 ms
for an empty claim after 20 ms of sleep), and a tenth of a no-op task's cost when
draining. SQLite goes through `Store` as everything else does.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Executable
from sqlalchemy.engine.interfaces import Dialect as SADialect
from sqlalchemy.sql.expression import ClauseElement

from nightcrew.store import Store
from nightcrew.store.database import Database
from nightcrew.store.postgres import conninfo
from nightcrew.store.tasks import ClaimedTask, claimed_from_rows


class HotPath(Protocol):
    async def claim(self, stmt: Executable, params: dict[str, Any]) -> list[ClaimedTask]: ...

    async def finish(self, stmt: Executable, params: dict[str, Any]) -> list[tuple[int, str]]:
        """The ``(id, status)`` of each row written; a rejected outcome is missing."""
        ...

    async def aclose(self) -> None: ...


def hot_path_for(database: Database) -> HotPath:
    if database.is_postgres:
        return PsycopgHotPath(database)
    return StoreHotPath(Store(database))


@dataclass
class StoreHotPath:
    """SQLite: each statement in its own ``BEGIN IMMEDIATE`` transaction via `Store`."""

    store: Store

    async def claim(self, stmt: Executable, params: dict[str, Any]) -> list[ClaimedTask]:
        return claimed_from_rows((await self.store.aexecute(stmt, params)).all())

    async def finish(self, stmt: Executable, params: dict[str, Any]) -> list[tuple[int, str]]:
        rows: Sequence[Any] = (await self.store.aexecute(stmt, params)).all()
        return [(row[0], row[1]) for row in rows]

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    constants: dict[str, Any]


def _compile(stmt: Executable, dialect: SADialect) -> _Compiled:
    """SQL text for psycopg, and the values SQLAlchemy bound itself (literals in the tree).

    Our statements bind only types psycopg adapts as they are (str, int, float, aware
    datetimes, text arrays), so no SQLAlchemy bind processing is needed; enum members
    among the constants are turned into their values here, once.
    """
    if not isinstance(stmt, ClauseElement):
        raise TypeError(f"cannot compile {stmt!r}")
    compiled = stmt.compile(dialect=dialect)
    constants = {
        name: value.value if isinstance(value, enum.Enum) else value
        for name, value in compiled.params.items()
    }
    return _Compiled(str(compiled), constants)


@dataclass
class PsycopgHotPath:
    """PostgreSQL: claims and finishes on two dedicated autocommit psycopg connections.

    A connection that fails or whose statement is interrupted is dropped and made again
    on the next call; the caller's error handling (retry after the poll interval, keep
    the outcomes for the next flush) is unchanged.
    """

    database: Database
    _compiled: dict[int, tuple[Executable, _Compiled]] = field(default_factory=dict)
    _conns: dict[str, Any] = field(default_factory=dict)

    def _sql(self, stmt: Executable) -> _Compiled:
        # The statements are built once and cached by `tasks`, so their identity is a
        # stable key; the statement is kept alongside so the id cannot be reused.
        entry = self._compiled.get(id(stmt))
        if entry is None:
            entry = (stmt, _compile(stmt, self.database.sync_engine.dialect))
            self._compiled[id(stmt)] = entry
        return entry[1]

    async def _conn(self, role: str) -> Any:
        conn = self._conns.get(role)
        if conn is None or conn.closed:
            import psycopg

            conn = await psycopg.AsyncConnection.connect(
                conninfo(self.database.url), autocommit=True
            )
            await conn.execute("SET TIME ZONE 'UTC'")
            self._conns[role] = conn
        return conn

    async def _fetch(self, role: str, stmt: Executable, params: dict[str, Any]) -> list[Any]:
        compiled = self._sql(stmt)
        conn = await self._conn(role)
        try:
            cur = await conn.execute(compiled.sql, {**compiled.constants, **params})
            rows: list[Any] = await cur.fetchall()
        except BaseException:
            # Lost, or interrupted mid-statement (cancelled): its state is unknown.
            self._conns.pop(role, None)
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        return rows

    async def claim(self, stmt: Executable, params: dict[str, Any]) -> list[ClaimedTask]:
        return claimed_from_rows(await self._fetch("claim", stmt, params))

    async def finish(self, stmt: Executable, params: dict[str, Any]) -> list[tuple[int, str]]:
        rows: Sequence[tuple[int, str]] = await self._fetch("finish", stmt, params)
        return [(row[0], row[1]) for row in rows]

    @property
    def backend_pids(self) -> dict[str, int]:
        """The server process of each open connection, by role (for operators and tests)."""
        return {role: c.info.backend_pid for role, c in self._conns.items() if not c.closed}

    async def aclose(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.close()
