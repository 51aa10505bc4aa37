"""Engines for one database URL: a sync one for the CLI and enqueue, an async one for workers."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from nightcrew.errors import ConfigurationError
from nightcrew.values import Dialect

#: SQLite: how long a writer waits for another process's write lock (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Execution options of a connection that only reads (SQLite: a deferred transaction).
READ_ONLY = {"nightcrew_read_only": True}

_DRIVERS: dict[tuple[str, bool], str] = {
    ("postgresql", False): "postgresql+psycopg",
    ("postgresql", True): "postgresql+psycopg",
    ("sqlite", False): "sqlite+pysqlite",
    ("sqlite", True): "sqlite+aiosqlite",
}


def normalize_url(url: str | URL, *, is_async: bool) -> URL:
    """Pick the driver nightcrew uses for a plain ``postgresql://`` or ``sqlite:///`` URL."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigurationError(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    driver = _DRIVERS.get((backend, is_async))
    if driver is None:
        raise ConfigurationError(
            f"unsupported database {backend!r}: nightcrew runs on postgresql and sqlite"
        )
    return parsed.set(drivername=driver)


def dialect_of(url: str | URL) -> Dialect:
    name = normalize_url(url, is_async=False).get_backend_name()
    return "postgresql" if name == "postgresql" else "sqlite"


class Database:
    """The engines for one URL, made on first use and disposed together.

    Both engines point at the same database; statements are built once in
    ``nightcrew.store`` and executed by whichever side is calling.
    """

    def __init__(self, url: str | URL, **engine_kwargs: Any) -> None:
        self.url = normalize_url(url, is_async=False)
        self.async_url = normalize_url(url, is_async=True)
        self.dialect: Dialect = dialect_of(url)
        self._engine_kwargs = engine_kwargs
        # Keyed by "autocommit": the ordinary engines, and on PostgreSQL the autocommit ones.
        self._sync: dict[bool, Engine] = {}
        self._async: dict[bool, AsyncEngine] = {}

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def _options(self, autocommit: bool) -> dict[str, Any]:
        if autocommit:
            return {**self._engine_kwargs, "isolation_level": "AUTOCOMMIT"}
        return self._engine_kwargs

    def _sync_for(self, autocommit: bool) -> Engine:
        engine = self._sync.get(autocommit)
        if engine is None:
            engine = create_engine(self.url, **self._options(autocommit))
            if not self.is_postgres:
                _configure_sqlite_engine(engine)
            self._sync[autocommit] = engine
        return engine

    def _async_for(self, autocommit: bool) -> AsyncEngine:
        engine = self._async.get(autocommit)
        if engine is None:
            engine = create_async_engine(self.async_url, **self._options(autocommit))
            if not self.is_postgres:
                _configure_sqlite_engine(engine.sync_engine)
            self._async[autocommit] = engine
        return engine

    @property
    def sync_engine(self) -> Engine:
        return self._sync_for(False)

    @property
    def async_engine(self) -> AsyncEngine:
        return self._async_for(False)

    @property
    def sync_autocommit_engine(self) -> Engine:
        """PostgreSQL: an engine whose connections stay in autocommit, for one-statement work.

        A single statement is atomic by itself; running it without BEGIN/COMMIT saves two
        round trips, and a pool of its own saves switching each borrowed connection into
        autocommit and back (measured: a third of the cost of a one-task enqueue).
        SQLite has no such mode to gain from: this is the ordinary engine there.
        """
        return self._sync_for(self.is_postgres)

    @property
    def async_autocommit_engine(self) -> AsyncEngine:
        """The async twin of `sync_autocommit_engine` (the worker's claims and finishes)."""
        return self._async_for(self.is_postgres)

    def dispose(self) -> None:
        engines, self._sync = list(self._sync.values()), {}
        for engine in engines:
            engine.dispose()

    async def adispose(self) -> None:
        engines, self._async = list(self._async.values()), {}
        for engine in engines:
            await engine.dispose()
        self.dispose()


def _enable_wal(cursor: Any) -> None:
    """Switch a file to WAL; SQLite does not always wait on the busy timeout for this."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")
            (mode,) = cursor.fetchone()
            if str(mode).lower() in ("wal", "memory"):
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:  # sqlite3's, or the async adapter's copy of it
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def configure_sqlite_connection(dbapi_connection: Any) -> None:
    """WAL, a busy timeout, ``synchronous=NORMAL`` and foreign keys on one connection.

    Also used by the SQLite store's own worker connection, so every connection to a
    nightcrew file behaves the same.
    """
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _configure_sqlite_engine(engine: Engine) -> None:
    """Every connection configured, and ``BEGIN IMMEDIATE`` for every transaction.

    Taking the write lock at ``BEGIN`` means two processes never both read, then both try
    to upgrade to writing and fail; they queue on the busy timeout instead. That is what
    makes the claim's ``UPDATE ... RETURNING`` safe across processes on one host.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        configure_sqlite_connection(dbapi_connection)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        reading = conn.get_execution_options().get("nightcrew_read_only")
        conn.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")
