"""Schema migrations for nightcrew's tables, shipped inside the package.

Alembic is configured in code (no ``alembic.ini``): `upgrade` brings a database to a
revision, `current` reports where it is, `check` lists what differs from the models (empty
means the schema equals ``nightcrew.models.Base.metadata``). Plain ``postgresql://`` and
``sqlite:///`` URLs work; on PostgreSQL everything, the version table included, goes to the
first schema of the URL's ``search_path``.

Writing a new revision (developers)::

    from alembic import command
    from nightcrew.migrate import make_config
    command.revision(make_config(URL_AT_HEAD), "what changed", autogenerate=True,
                     rev_id="0002")

then check the generated file by hand (partial indexes need their ``*_where`` for both
dialects) and make ``tests/integration/test_migrations.py`` pass on both databases.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.schema import CreateIndex

from nightcrew.errors import DatabaseError, NightcrewError
from nightcrew.models import Base, MaintenanceTask
from nightcrew.store.database import Database, normalize_url

__all__ = [
    "MIGRATIONS_DIR",
    "MigrationError",
    "check",
    "context_options",
    "current",
    "head",
    "make_config",
    "open_engine",
    "upgrade",
]

#: Alembic's script directory: ``env.py``, ``script.py.mako``, ``versions/``.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: A PostgreSQL server that does not answer fails the command instead of hanging it.
CONNECT_TIMEOUT_SECONDS = 10

_TABLE: str = MaintenanceTask.__tablename__


class MigrationError(DatabaseError):
    """The schema cannot be brought to the requested revision (unknown revision, a
    database newer than this nightcrew, tables that were not made by its migrations)."""


def context_options(dialect_name: str) -> dict[str, Any]:
    """Options for Alembic's migration context, shared by ``env.py`` and `check`."""
    return {
        # SQLite cannot ALTER most things: later revisions rewrite the table in batches.
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        "compare_server_default": True,
    }


def make_config(
    database_url: str | URL | None = None, *, connection: Connection | None = None
) -> Config:
    """An Alembic `Config` for the shipped migrations, built in code.

    With ``connection`` the migration runs on it (inside the caller's transaction);
    with only ``database_url`` (``alembic`` commands such as ``revision``) ``env.py``
    opens an engine for it itself.
    """
    config = Config()
    config.set_main_option("script_location", _escape(str(MIGRATIONS_DIR)))
    config.set_main_option("path_separator", "os")
    if database_url is not None:
        url = normalize_url(database_url, is_async=False)
        config.set_main_option("sqlalchemy.url", _escape(url.render_as_string(hide_password=False)))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def open_engine(database_url: str | URL) -> Engine:
    """A sync engine for the URL, configured as nightcrew's own (SQLite: WAL, busy timeout,
    ``BEGIN IMMEDIATE``, so concurrent upgrades queue instead of failing)."""
    url = normalize_url(database_url, is_async=False)
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    return Database(url, **kwargs).sync_engine


def head() -> str:
    """The newest revision shipped with this version of nightcrew."""
    revision = ScriptDirectory.from_config(make_config()).get_current_head()
    if revision is None:  # pragma: no cover - the package always ships 0001
        raise MigrationError("nightcrew ships no migrations")
    return revision


def upgrade(database_url: str | URL, revision: str = "head") -> None:
    """Create or upgrade nightcrew's schema; running it again at the target is a no-op.

    Runs in one transaction (on PostgreSQL DDL is transactional, so a failed upgrade
    leaves nothing behind) and under a lock, so several processes starting at once
    migrate once. A ``maintenance_tasks`` table made without the migrations (for instance
    by ``Base.metadata.create_all``) is adopted, stamped at head, when it has no diff
    against the models; otherwise `MigrationError` says what differs.
    """
    with _transaction(database_url, "upgrade") as conn:
        _lock(conn)
        config = make_config(connection=conn)
        if _revision(conn) is None and inspect(conn).has_table(_TABLE):
            _adopt(conn, config)
        command.upgrade(config, revision)


def current(database_url: str | URL) -> str | None:
    """The database's revision, or ``None`` if nightcrew's migrations never ran on it."""
    url = normalize_url(database_url, is_async=False)
    on_disk = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if on_disk and not Path(str(url.database)).exists():
        return None  # do not create a file just to look at it
    with _transaction(url, "read the revision of") as conn:
        return _revision(conn)


def check(database_url: str | URL) -> list[Any]:
    """Alembic's autogenerate diff between the database and ``Base.metadata``.

    An empty list means the tables, columns, types, nullability, server defaults, primary
    key and indexes (names, columns, uniqueness) match. Alembic does not compare check
    constraints or partial-index predicates; ``tests/integration/test_migrations.py``
    reads those back from the database catalog. On SQLite an index whose sort order
    Alembic cannot see is compared by its stored ``CREATE INDEX`` text instead.
    """
    with _transaction(database_url, "compare the schema of") as conn:
        return _diff(conn)


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts=context_options(conn.dialect.name))
    diff = list(compare_metadata(context, Base.metadata))
    if conn.dialect.name == "sqlite":
        diff = _without_sqlite_sort_order_noise(conn, diff)
    return diff


def _without_sqlite_sort_order_noise(conn: Connection, diff: list[Any]) -> list[Any]:
    """Drop the remove/add pair Alembic reports for an index it cannot read on SQLite.

    SQLAlchemy does not reflect a column's sort order on SQLite, so an index such as
    ``(queue, priority DESC, id)`` always looks different from the models. SQLite keeps
    each index's ``CREATE INDEX`` text verbatim: when it is exactly what the models
    compile to (columns, order, ``WHERE`` and all), the two are the same index.
    """
    removed = {op[1].name for op in diff if isinstance(op, tuple) and op[0] == "remove_index"}
    added = {op[1].name: op[1] for op in diff if isinstance(op, tuple) and op[0] == "add_index"}
    same: set[str] = set()
    for name in removed & added.keys():
        stored = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"),
            {"name": name},
        ).scalar()
        wanted = str(CreateIndex(added[name]).compile(dialect=conn.dialect))
        if isinstance(stored, str) and stored.split() == wanted.split():
            same.add(name)
    return [
        op
        for op in diff
        if not (
            isinstance(op, tuple) and op[0] in ("remove_index", "add_index") and op[1].name in same
        )
    ]


def _revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _adopt(conn: Connection, config: Config) -> None:
    diff = _diff(conn)
    if diff:
        raise MigrationError(
            f"table {_TABLE!r} exists but was not created by nightcrew's migrations and "
            f"differs from the models ({len(diff)} difference(s), first: {diff[0]!r}); "
            "migrate or drop it by hand"
        )
    command.stamp(config, "head")


def _lock(conn: Connection) -> None:
    """Serialize concurrent migrations of one schema (SQLite: ``BEGIN IMMEDIATE`` does)."""
    if conn.dialect.name != "postgresql":
        return
    schema = conn.execute(text("SELECT current_schema()")).scalar()
    if schema is None:
        raise MigrationError(
            "the search_path names no existing schema: create it first, or fix the URL's "
            "options=-csearch_path=..."
        )
    conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
        {"key": f"nightcrew.migrate:{schema}"},
    )


@contextmanager
def _transaction(database_url: str | URL, doing: str) -> Iterator[Connection]:
    """A connection in a transaction, with connection and database failures turned into
    `DatabaseError` (the driver's error is the ``__cause__``)."""
    engine = open_engine(database_url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot connect to {shown}: {_reason(exc)}") from exc
        with conn:
            try:
                with conn.begin():
                    yield conn
            except NightcrewError:
                raise
            except CommandError as exc:
                raise MigrationError(f"cannot {doing} {shown}: {exc}") from exc
            except SQLAlchemyError as exc:
                raise DatabaseError(f"cannot {doing} {shown}: {_reason(exc)}") from exc
    finally:
        engine.dispose()


def _reason(exc: SQLAlchemyError) -> str:
    cause: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        cause = exc.orig
    return " ".join(str(cause).split()) or type(cause).__name__


def _escape(value: str) -> str:
    """Config values go through configparser interpolation: ``%`` must be doubled."""
    return value.replace("%", "%%")
