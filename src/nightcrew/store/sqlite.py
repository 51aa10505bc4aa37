"""What differs on SQLite: connection pragmas and immediate transactions."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event

BUSY_TIMEOUT_MS = 30_000


def _enable_wal(cursor: Any) -> None:
    """Switch a file to WAL; SQLite does not always wait on the busy timeout for this."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
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


def configure_engine(engine: Engine) -> None:
    """WAL, a busy timeout, and ``BEGIN IMMEDIATE`` for every transaction.

    Taking the write lock at ``BEGIN`` means two processes never both read, then both try
    to upgrade to writing and fail; they queue on the busy timeout instead. That is what
    makes the claim's ``UPDATE ... RETURNING`` safe across processes on one host.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
