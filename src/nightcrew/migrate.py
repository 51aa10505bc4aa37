"""Schema migrations for nightcrew's tables, shipped inside the package.

Alembic is configured in code (no ``alembic.ini``): `upgrade` brings a database to a
revision, `downgrade` takes it back, `current` reports where it is, `check` lists what
differs from the models (empty means the schema equals ``nightcrew.models.Base.metadata``).
Plain ``postgresql://`` and ``sqlite:///`` URLs work; on PostgreSQL everything, the version
table included, goes to the first schema of the URL's ``search_path``.

nightcrew lives in the application's own database, next to the application's own Alembic
history, so it keeps to itself:

- its revisions are recorded in ``nightcrew_alembic_version``, never in the default
  ``alembic_version`` that the application's Alembic owns. nightcrew 0.1 did use the
  default table; a database it upgraded is moved over on the next `upgrade` (its row
  ``0001`` moves, and ``alembic_version`` is dropped if that row was all it held);
- comparisons (`check`, and the adoption of a table made without the migrations) look
  only at nightcrew's own tables, whatever else the database holds;
- the revision chain starts at ``origin``, the origin system's own ``maintenance_tasks``
  table (its migration 059). A fresh install creates that table and converts it, so every
  install runs the conversion; a database that already holds the origin's table, and no
  nightcrew revision, is recognised by its columns, stamped ``origin`` and converted in
  place. ``downgrade(url, "origin")`` hands a table back that the origin's code runs on.

Writing a new revision (developers)::

    from alembic import command
    from nightcrew.migrate import make_config
    command.revision(make_config(URL_AT_HEAD), "what changed", autogenerate=True,
                     rev_id="0003")

then rewrite the generated file by hand: it must not import ``nightcrew.models``, partial
indexes need their ``*_where`` for both dialects, and on SQLite a change to a column is a
rebuild of the table as ``versions/0002_*.py`` does it (dropped and created again under its
own name, so its stored ``CREATE TABLE`` equals ``create_all``'s). Then make the tests in
``tests/integration/test_migrations.py`` pass on both databases.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Column, Connection, Engine, Index, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.schema import CreateIndex

from nightcrew.errors import DatabaseError, NightcrewError
from nightcrew.models import Base, MaintenanceTask
from nightcrew.store.database import Database, normalize_url

__all__ = [
    "LEGACY_VERSION_TABLE",
    "MIGRATIONS_DIR",
    "ORIGIN_REVISION",
    "VERSION_TABLE",
    "Migration",
    "MigrationError",
    "check",
    "context_options",
    "current",
    "downgrade",
    "head",
    "include_name",
    "make_config",
    "open_engine",
    "upgrade",
]

#: Alembic's script directory: ``env.py``, ``script.py.mako``, ``versions/``.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: A PostgreSQL server that does not answer fails the command instead of hanging it.
CONNECT_TIMEOUT_SECONDS = 10

#: nightcrew's own Alembic version table: the application's Alembic keeps the default one.
VERSION_TABLE = "nightcrew_alembic_version"
#: Alembic's default version table, where nightcrew 0.1 recorded its revision.
LEGACY_VERSION_TABLE = "alembic_version"
#: The root revision: the origin's own table, as its migration 059 makes it.
ORIGIN_REVISION = "origin"

_TABLE: str = MaintenanceTask.__tablename__
#: The columns of the origin's table: a table with exactly these is the origin's.
_ORIGIN_COLUMNS = frozenset(
    {
        "id",
        "status",
        "processor_type",
        "processor_json",
        "delay",
        "started_at",
        "info",
        "created_at",
        "updated_at",
    }
)
#: The columns of nightcrew 0.1's table (revision 0001): with 0.1's row in the default
#: version table they tell nightcrew's history apart from an application's own ``0001``.
_COLUMNS_0001 = _ORIGIN_COLUMNS | {
    "queue",
    "priority",
    "start_at",
    "attempts",
    "max_attempts",
    "timeout",
    "lease_token",
    "lease_expires_at",
    "cancel_requested_at",
    "unique_key",
    "waiting_on",
    "progress",
    "progress_message",
    "error",
    "finished_at",
}
#: The revisions nightcrew 0.1 could have written to the default version table.
_LEGACY_REVISIONS = frozenset({"0001"})


class MigrationError(DatabaseError):
    """The schema cannot be brought to the requested revision (unknown revision, a
    database newer than this nightcrew, tables that were not made by its migrations)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """What an `upgrade` or `downgrade` did: the revision before and after (``None``: no
    nightcrew revision), and anything done on the way, in words (``notes``)."""

    before: str | None
    after: str | None
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.before != self.after


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic name filter: of the database's tables, only nightcrew's own are compared.

    The application's tables (and its ``alembic_version``) are not nightcrew's to report
    or to drop; without this, autogenerate and `check` list every one of them.
    """
    if type_ == "table":
        return name in Base.metadata.tables
    return True


def context_options(dialect_name: str) -> dict[str, Any]:
    """Options for Alembic's migration context, shared by ``env.py``, `check` and the rest."""
    return {
        # For autogenerate's drafts: SQLite cannot ALTER most things. The shipped
        # revisions rebuild the table by hand there (see versions/0001_from_origin.py).
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        "compare_server_default": True,
        "version_table": VERSION_TABLE,
        "include_name": include_name,
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


def upgrade(database_url: str | URL, revision: str = "head") -> Migration:
    """Create or upgrade nightcrew's schema; running it again at the target is a no-op.

    Runs in one transaction (DDL is transactional on both databases, so a failed upgrade
    leaves nothing behind) and under a lock (PostgreSQL: an advisory lock per schema;
    SQLite: ``BEGIN IMMEDIATE``), so several processes starting at once migrate once.

    Before upgrading: nightcrew 0.1's row in ``alembic_version`` is moved to
    ``nightcrew_alembic_version``; a ``maintenance_tasks`` table without a nightcrew
    revision is adopted: the origin's table (recognised by its columns) is stamped
    ``origin`` and converted by the migrations, one made by ``Base.metadata.create_all``
    is stamped at head when it has no diff against the models. Anything else is refused
    with a `MigrationError` saying what differs. Upgrading to a revision older than the
    current one changes nothing (`downgrade` does that); the result says so.
    """
    with _transaction(database_url, "upgrade") as conn:
        _lock(conn)
        config = make_config(connection=conn)
        notes = _move_legacy_version(conn, config)
        if _revision(conn) is None and inspect(conn).has_table(_TABLE):
            notes += _adopt(conn, config)
        before = _revision(conn)
        command.upgrade(config, revision)
        return Migration(before, _revision(conn), notes)


def downgrade(database_url: str | URL, revision: str) -> Migration:
    """Take nightcrew's schema back to ``revision``, in one transaction, under the lock.

    ``"origin"`` leaves the origin's own table (its enum, naive UTC timestamps, no engine
    columns) with every row, for the origin's code to run on again; see the docstring of
    ``versions/0001_from_origin.py`` for what happens to CANCELLED tasks. ``"base"`` drops
    the table, also one that was adopted from the origin rather than created.
    """
    with _transaction(database_url, "downgrade") as conn:
        _lock(conn)
        config = make_config(connection=conn)
        notes = _move_legacy_version(conn, config)
        before = _revision(conn)
        if before is None:
            raise MigrationError(
                "nothing to downgrade: nightcrew's migrations never ran on this database"
            )
        command.downgrade(config, revision)
        return Migration(before, _revision(conn), notes)


def current(database_url: str | URL) -> str | None:
    """The database's revision, or ``None`` if nightcrew's migrations never ran on it.

    A database upgraded by nightcrew 0.1, not yet moved to nightcrew's own version table,
    reports the revision 0.1 recorded.
    """
    url = normalize_url(database_url, is_async=False)
    on_disk = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if on_disk and not Path(str(url.database)).exists():
        return None  # do not create a file just to look at it
    with _transaction(url, "read the revision of") as conn:
        return _revision(conn) or _legacy_revision(conn)


def check(database_url: str | URL) -> list[Any]:
    """Alembic's autogenerate diff between the database and ``Base.metadata``.

    An empty list means the tables, columns, types, nullability, server defaults, primary
    key and indexes (names, columns, uniqueness) match. Alembic does not compare check
    constraints or partial-index predicates; ``tests/integration/test_migrations.py``
    reads those back from the database catalog. On SQLite an index whose sort order
    Alembic cannot see is compared by its stored ``CREATE INDEX`` text instead. Only
    nightcrew's own tables are compared: whatever else the database holds is not a
    difference.
    """
    with _transaction(database_url, "compare the schema of") as conn:
        return _diff(conn)


def _diff(conn: Connection) -> list[Any]:
    context = _context(conn)
    if conn.dialect.name != "sqlite":
        return list(compare_metadata(context, Base.metadata))
    with warnings.catch_warnings():
        # Alembic warns that it cannot compare the sort-ordered indexes: they are
        # compared by their stored text below instead.
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified")
        diff = list(compare_metadata(context, Base.metadata))
    return _sqlite_indexes_by_text(conn, diff)


def _sqlite_indexes_by_text(conn: Connection, diff: list[Any]) -> list[Any]:
    """Compare the indexes Alembic cannot read on SQLite by their stored text.

    SQLAlchemy does not reflect a column's sort order on SQLite, so Alembic reports an
    index such as ``(queue, priority DESC, created_at, id)`` as removed and added again
    when it exists, and skips it, silently, when it is missing. SQLite keeps each index's
    ``CREATE INDEX`` text verbatim: when it is exactly what the models compile to
    (columns, order, ``WHERE`` and all), the two are the same index; when there is none,
    the index is missing and reported as to be added.
    """
    removed = {op[1].name for op in diff if isinstance(op, tuple) and op[0] == "remove_index"}
    added = {op[1].name: op[1] for op in diff if isinstance(op, tuple) and op[0] == "add_index"}
    same: set[str] = set()
    for name in removed & added.keys():
        if _stored_index_is(conn, added[name]):
            same.add(name)
    kept = [
        op
        for op in diff
        if not (
            isinstance(op, tuple) and op[0] in ("remove_index", "add_index") and op[1].name in same
        )
    ]
    for table in Base.metadata.tables.values():
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            sorted_by_expression = any(not isinstance(e, Column) for e in index.expressions)
            if (
                sorted_by_expression
                and index.name not in added
                and _stored_index(conn, index) is None
            ):
                kept.append(("add_index", index))
    return kept


def _stored_index(conn: Connection, index: Index) -> str | None:
    stored = conn.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"),
        {"name": index.name},
    ).scalar()
    return stored if isinstance(stored, str) else None


def _stored_index_is(conn: Connection, index: Index) -> bool:
    stored = _stored_index(conn, index)
    wanted = str(CreateIndex(index).compile(dialect=conn.dialect))
    return stored is not None and stored.split() == wanted.split()


def _context(conn: Connection) -> MigrationContext:
    return MigrationContext.configure(conn, opts=context_options(conn.dialect.name))


def _revision(conn: Connection) -> str | None:
    return _context(conn).get_current_revision()


def _columns(conn: Connection) -> frozenset[str]:
    return frozenset(column["name"] for column in inspect(conn).get_columns(_TABLE))


def _legacy_revision(conn: Connection) -> str | None:
    """nightcrew 0.1's revision in the default version table, if that is what it holds.

    Only a row 0.1 could have written counts, and only next to a table with exactly 0.1's
    columns: an application's own revision that happens to be called ``0001`` is left
    alone. ``None`` too once nightcrew's own version table holds a revision.
    """
    inspector = inspect(conn)
    if not inspector.has_table(LEGACY_VERSION_TABLE) or not inspector.has_table(_TABLE):
        return None
    if _revision(conn) is not None or _columns(conn) != _COLUMNS_0001:
        return None
    rows = conn.execute(text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}")).scalars()
    ours = sorted(set(rows) & _LEGACY_REVISIONS)
    return ours[0] if len(ours) == 1 else None


def _move_legacy_version(conn: Connection, config: Config) -> tuple[str, ...]:
    """Move 0.1's row from ``alembic_version`` to nightcrew's table; drop the old table
    if nothing else was in it (nightcrew created it), keep it if it holds anyone else's."""
    revision = _legacy_revision(conn)
    if revision is None:
        return ()
    command.stamp(config, revision)
    conn.execute(
        text(f"DELETE FROM {LEGACY_VERSION_TABLE} WHERE version_num = :revision"),
        {"revision": revision},
    )
    left = conn.execute(text(f"SELECT count(*) FROM {LEGACY_VERSION_TABLE}")).scalar_one()
    if left == 0:
        conn.execute(text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))
    kept = "dropped it: nothing else was in it" if left == 0 else "kept it: it holds other rows"
    return (f"moved revision {revision} from {LEGACY_VERSION_TABLE} to {VERSION_TABLE} ({kept})",)


def _adopt(conn: Connection, config: Config) -> tuple[str, ...]:
    """Stamp a ``maintenance_tasks`` table that has no nightcrew revision, or refuse it."""
    if _columns(conn) == _ORIGIN_COLUMNS:
        command.stamp(config, ORIGIN_REVISION)
        return (f"adopted the origin's table {_TABLE!r} (stamped {ORIGIN_REVISION})",)
    diff = _diff(conn)
    if diff:
        raise MigrationError(
            f"table {_TABLE!r} exists but was not created by nightcrew's migrations, is not "
            f"the origin's (columns {', '.join(sorted(_ORIGIN_COLUMNS))}) and differs from "
            f"the models ({len(diff)} difference(s), first: {diff[0]!r}); migrate or drop "
            "it by hand"
        )
    command.stamp(config, "head")
    return (f"adopted table {_TABLE!r}, equal to the models (stamped at head)",)


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
