"""The only code that talks to the database.

`TaskStore` is the interface (`nightcrew.store.base`), with one implementation per
database: `PostgresStore` and `SqliteStore`. `open_store` picks the one for a `Database`.
Statements live in `nightcrew.store.statements` (and `bulk` for many rows at once),
operations written once for sync and async callers in `nightcrew.store.ops`.
"""

from __future__ import annotations

from nightcrew.events import EventBus
from nightcrew.store.base import TaskStore, arun_in, run_in
from nightcrew.store.database import Database, dialect_of, normalize_url
from nightcrew.store.failures import classify, describe_database_error, driver_errors
from nightcrew.store.postgres import PostgresStore
from nightcrew.store.sqlite import SqliteStore
from nightcrew.store.statements import stored_timestamp


def open_store(database: Database, events: EventBus | None = None) -> TaskStore:
    """The store for ``database``'s dialect, announcing on ``events``."""
    if database.dialect == "postgresql":
        return PostgresStore(database, events)
    return SqliteStore(database, events)


__all__ = [
    "Database",
    "PostgresStore",
    "SqliteStore",
    "TaskStore",
    "arun_in",
    "classify",
    "describe_database_error",
    "dialect_of",
    "driver_errors",
    "normalize_url",
    "open_store",
    "run_in",
    "stored_timestamp",
]
