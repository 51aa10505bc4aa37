"""Driver failures turned into nightcrew's own errors, sorted into what can heal and what not.

A worker retries what can heal (a server restarting, a dropped connection, too many
clients) with backoff and one log line per retry; it stops at once, with one clear line,
on what cannot (no schema, a wrong password, an unknown database), so a deploy notices.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from nightcrew.errors import DatabaseError, DatabaseUnavailable, SchemaMissing

#: Words in a driver message that mean retrying cannot help.
_FATAL_WORDS = (
    "authentication failed",
    "password",
    "does not exist",  # database, role (a missing table is SchemaMissing, found first)
    "permission denied",
    "no pg_hba.conf entry",
    "unable to open database file",
    "not a database",
    "readonly database",
    "malformed",
)
#: PostgreSQL SQLSTATE classes that heal: connection exceptions, insufficient resources,
#: operator intervention (admin shutdown, cannot connect now), system errors.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58")


def _detail(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(cause).__name__


def _schema_missing(text: str) -> bool:
    lowered = text.lower()
    return "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered)


def describe_database_error(exc: BaseException) -> str:
    """One line saying what the driver reported, with the fix when it is a known one."""
    message = f"database error: {_detail(exc)}"
    if _schema_missing(message):
        message += " (run 'nightcrew db upgrade' to create the schema)"
    return message


def classify(exc: BaseException) -> DatabaseError:
    """The nightcrew error for a driver (or SQLAlchemy) exception, keeping it as the cause."""
    if isinstance(exc, DatabaseError):
        return exc
    message = describe_database_error(exc)
    if _schema_missing(message):
        return SchemaMissing(message)
    driver = getattr(exc, "orig", None) or exc
    sqlstate = getattr(driver, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES):
            return DatabaseUnavailable(message)
        return DatabaseError(message)
    lowered = message.lower()
    if any(word in lowered for word in _FATAL_WORDS):
        return DatabaseError(message)
    if isinstance(driver, sqlite3.Error) and "locked" not in lowered and "busy" not in lowered:
        return DatabaseError(message)
    if isinstance(exc, DBAPIError) and not exc.connection_invalidated and sqlstate is None:
        # psycopg reports a refused or dropped connection as OperationalError without SQLSTATE
        return DatabaseUnavailable(message)
    if type(driver).__name__ in ("OperationalError", "InterfaceError", "ConnectionTimeout"):
        return DatabaseUnavailable(message)
    return DatabaseError(message, transient=isinstance(exc, OSError))


@contextmanager
def driver_errors() -> Iterator[None]:
    """Turn a driver failure into `DatabaseError` (the original stays as ``__cause__``),
    so callers of the public API need to catch only nightcrew's own exceptions."""
    try:
        yield
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        raise classify(exc) from exc
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            raise classify(exc) from exc
        raise
