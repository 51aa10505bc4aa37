"""The PostgreSQL store: the worker's statements straight on psycopg, and LISTEN/NOTIFY.

Operations go through SQLAlchemy like on every database. The worker's hot statements are
compiled to SQL text once and sent on psycopg connections of the store's own, one per role
(``claim``, ``finish``, ``upkeep`` for heartbeats, rescue and progress), so a claim never
waits behind a finish: SQLAlchemy's async layer and result processing cost about as much as
the round trip itself when a worker is idle and woken by a NOTIFY.

Those connections plan with sequential scans disabled. Every hot statement is meant to
find its rows through an index (the primary key, or a partial index of claimable or
in-flight rows); without statistics — a table just filled by a burst, or statistics taken
before it — the planner had chosen a scan of the whole table per finish (measured: 45 ms
for 500 outcomes over 20,000 rows, against 3 ms by primary key). Disabling the scan on
these connections only makes the intended plan the only cheap one, whatever the statistics.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine.interfaces import Dialect as SADialect

from nightcrew.models import utcnow
from nightcrew.store.base import TaskStore
from nightcrew.store.failures import driver_errors
from nightcrew.store.notices import CHANNEL, Notice, parse_payload
from nightcrew.values import ClaimedTask, Dialect

#: What every connection of a worker's own store is called in ``pg_stat_activity``
#: (the LISTEN one too), so an operator can find, or terminate, a worker's connections.
APPLICATION_NAME = "nightcrew worker"
#: Run on each of the worker's own connections when it is opened.
HOT_SESSION_SETUP = (
    "SET TIME ZONE 'UTC'",
    "SET enable_seqscan = off",
    f"SET application_name = '{APPLICATION_NAME}'",
)
#: A server that does not answer fails a connection attempt instead of hanging it.
CONNECT_TIMEOUT_SECONDS = 10


def conninfo(url: Any) -> str:
    """A libpq URI for a raw psycopg connection, from a SQLAlchemy URL."""
    return str(url.set(drivername="postgresql").render_as_string(hide_password=False))


def _nul_free(value: Any) -> Any:
    """``value`` with NUL characters in its strings replaced by U+FFFD.

    PostgreSQL's text and jsonb cannot hold U+0000; one such character in a processor's
    result would otherwise fail the whole batch it is written with, again and again.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_nul_free(k): _nul_free(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nul_free(v) for v in value]
    return value


class PostgresStore(TaskStore):
    dialect: ClassVar[Dialect] = "postgresql"
    supports_listen: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._conns: dict[str, Any] = {}
        self._sa = PGDialect_psycopg()  # type: ignore[no-untyped-call]

    def _sa_dialect(self) -> SADialect:
        return self._sa

    def _bind(self, params: dict[str, Any]) -> dict[str, Any]:
        return params  # psycopg adapts aware datetimes, lists (arrays) and numbers itself

    def _json(self, value: Any) -> str:
        text = json.dumps(value)
        if "\\u0000" in text:  # rare: pay for the walk only when a NUL is there
            text = json.dumps(_nul_free(value))
        return text

    def _claimed(self, rows: list[Any]) -> list[ClaimedTask]:
        return list(map(ClaimedTask._make, rows))

    async def _connection(self, role: str) -> Any:
        conn = self._conns.get(role)
        if conn is None or conn.closed:
            import psycopg

            conn = await psycopg.AsyncConnection.connect(
                conninfo(self.database.url),
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
            )
            for statement in HOT_SESSION_SETUP:
                await conn.execute(statement)
            self._conns[role] = conn
        return conn

    async def _fetch(
        self, role: str, sql: str, params: Callable[[datetime], dict[str, Any]]
    ) -> tuple[list[Any], datetime]:
        conn = await self._connection(role)
        now = utcnow()
        try:
            cur = await conn.execute(sql, params(now))
            rows: list[Any] = await cur.fetchall() if cur.description else []
        except BaseException:
            # Lost, or interrupted mid-statement (cancelled): its state is unknown.
            self._conns.pop(role, None)
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        return rows, now

    @property
    def backend_pids(self) -> dict[str, int]:
        """The server process of each open connection, by role (for operators and tests)."""
        return {role: c.info.backend_pid for role, c in self._conns.items() if not c.closed}

    async def listen(
        self, on_notice: Callable[[Notice], None], on_connected: Callable[[int], None]
    ) -> None:
        """Hold a ``LISTEN`` connection and hand each notice for our schema to ``on_notice``.

        Returns (rather than raising) only by raising `DatabaseError` (the driver's error
        as its cause, described in one line like every store error) when the connection is
        lost, so the caller decides how to reconnect; ``on_connected`` runs after each
        successful ``LISTEN`` so the caller can catch up on anything missed.
        """
        import psycopg

        with driver_errors():
            conn = await psycopg.AsyncConnection.connect(
                conninfo(self.database.url),
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name=APPLICATION_NAME,
            )
        self._conns["listen"] = conn
        try:
            with driver_errors():
                cur = await conn.execute("SELECT current_schema()")
                row = await cur.fetchone()
                schema = row[0] if row else ""
                await conn.execute(f"LISTEN {CHANNEL}")
                on_connected(conn.info.backend_pid)
                async for notify in conn.notifies():
                    notice = parse_payload(notify.payload, schema or "")
                    if notice is not None:
                        on_notice(notice)
        finally:
            self._conns.pop("listen", None)
            with contextlib.suppress(Exception):
                await conn.close()

    async def aclose(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close()
