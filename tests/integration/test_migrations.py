"""The shipped Alembic migrations create exactly the schema of ``nightcrew.models``.

Every test runs on PostgreSQL (a schema of its own) and on SQLite (a file of its own).
"Exactly" is proved three ways: Alembic's autogenerate finds no difference; the catalog
of the migrated database (columns, constraints, index definitions with their ``WHERE``
clauses, as the database itself prints them) is identical to that of a database made by
``Base.metadata.create_all``; and the partial indexes and check constraints are read back
and asserted one by one, then shown to act.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy import insert as sa_insert
from sqlalchemy.exc import IntegrityError

from nightcrew import MaintenanceTaskStatus, create_maintenance_task, migrate
from nightcrew.errors import DatabaseError, NightcrewError
from nightcrew.models import OPEN_STATUSES, Base, MaintenanceTask
from nightcrew.processors import loader_for
from nightcrew.store import Database, Store, operations
from tests.conftest import PG_ADMIN_URL, Backend
from tests.processors import Echo

TABLE = "maintenance_tasks"

ALL = [s.value for s in MaintenanceTaskStatus]
OPEN = sorted(s.value for s in OPEN_STATUSES)
FINAL = sorted(set(ALL) - set(OPEN))


# -- helpers -------------------------------------------------------------------------------


@contextmanager
def connect(url: str) -> Iterator[Connection]:
    engine = migrate.open_engine(url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def sql(url: str, statement: str, **params: Any) -> list[Any]:
    with connect(url) as conn:
        result = conn.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []


def catalog(url: str) -> dict[str, list[Any]]:
    """What the database says about the task table, in its own words, minus the schema."""
    with connect(url) as conn:
        if conn.dialect.name == "sqlite":
            objects = conn.execute(
                text(
                    "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = :t "
                    "ORDER BY type, name"
                ),
                {"t": TABLE},
            ).all()
            return {"objects": [tuple(r) for r in objects]}
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        columns = conn.execute(
            text(
                "SELECT column_name, data_type, character_maximum_length, is_nullable, "
                "column_default, is_identity FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = :t "
                "ORDER BY ordinal_position"
            ),
            {"t": TABLE},
        ).all()
        constraints = conn.execute(
            text(
                "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = to_regclass(:t) ORDER BY conname"
            ),
            {"t": TABLE},
        ).all()
        indexes = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = current_schema() AND tablename = :t ORDER BY indexname"
            ),
            {"t": TABLE},
        ).all()
        return {
            "columns": [tuple(r) for r in columns],
            "constraints": [tuple(r) for r in constraints],
            "indexes": [(name, ddl.replace(f"{schema}.", "")) for name, ddl in indexes],
        }


def index_ddl(url: str) -> dict[str, str]:
    """Index name -> its definition as stored by the database."""
    if url.startswith("sqlite"):
        rows = sql(
            url,
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t",
            t=TABLE,
        )
    else:
        rows = sql(
            url,
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename = :t",
            t=TABLE,
        )
    return {name: ddl for name, ddl in rows if ddl is not None}


def check_ddl(url: str) -> dict[str, str]:
    """Check constraint name -> its definition as stored by the database."""
    if url.startswith("sqlite"):
        (table_sql,) = sql(
            url, "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t", t=TABLE
        )[0]
        return {
            line.split()[1]: line.split(" ", 2)[2].rstrip(", ")
            for line in (raw.strip() for raw in table_sql.splitlines())
            if line.startswith("CONSTRAINT ck_")
        }
    rows = sql(
        url,
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = to_regclass(:t) AND contype = 'c'",
        t=TABLE,
    )
    return dict(rows)


def version_rows(url: str) -> list[Any]:
    return sql(url, "SELECT version_num FROM alembic_version")


def insert(url: str, **values: Any) -> None:
    row = {"processor_type": "tests.processors.Echo", **values}
    with connect(url) as conn:
        conn.execute(sa_insert(MaintenanceTask).values(**row))


@pytest.fixture
def reference(empty_backend: Backend, tmp_path: Path) -> Iterator[str]:
    """A second database of the same kind, made by ``Base.metadata.create_all``."""
    if empty_backend.is_postgres:
        schema = f"r_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tmp_path / 'reference.db'}"
    engine = migrate.open_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    yield url
    if empty_backend.is_postgres:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- upgrade -------------------------------------------------------------------------------


def test_upgrade_creates_the_schema_at_head(empty_backend: Backend) -> None:
    url = empty_backend.url
    assert migrate.current(url) is None

    migrate.upgrade(url)

    assert migrate.current(url) == migrate.head() == "0001"
    assert version_rows(url) == [("0001",)]
    with connect(url) as conn:
        assert {TABLE, "alembic_version"} <= set(inspect(conn).get_table_names())
        if empty_backend.is_postgres:
            # Both tables live in the URL's search_path schema, nowhere else.
            schema = url.rsplit("%3D", 1)[1]
            homes = conn.execute(
                text(
                    "SELECT DISTINCT table_schema FROM information_schema.tables "
                    "WHERE table_name IN ('alembic_version', :t) AND table_schema = :s"
                ),
                {"t": TABLE, "s": schema},
            ).all()
            assert homes == [(schema,)]
            assert conn.execute(text("SELECT to_regclass('alembic_version')")).scalar_one()


def test_upgrade_twice_is_a_no_op(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    insert(url, unique_key="kept")
    before = catalog(url)

    migrate.upgrade(url)
    migrate.upgrade(url, "0001")

    assert catalog(url) == before
    assert version_rows(url) == [("0001",)]
    assert sql(url, f"SELECT unique_key FROM {TABLE}") == [("kept",)]


def test_concurrent_upgrades_migrate_once(empty_backend: Backend) -> None:
    url = empty_backend.url
    if not empty_backend.is_postgres:
        # Open the file once first: several connections racing to switch a brand-new
        # file to WAL can get "database is locked" past the busy timeout (a SQLite
        # limitation nightcrew.store.sqlite's connect hook does not retry yet). This test
        # is about concurrent migrations, which BEGIN IMMEDIATE serializes.
        with connect(url):
            pass
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(migrate.upgrade, url) for _ in range(4)]:
            future.result()
    assert version_rows(url) == [("0001",)]
    assert migrate.check(url) == []


# -- migrated schema == models -------------------------------------------------------------


def test_migrated_schema_has_no_autogenerate_diff(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)

    assert migrate.check(url) == []

    # Alembic's own comparison, without nightcrew's help.
    with connect(url) as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(context, Base.metadata)
    if empty_backend.is_postgres:
        assert diff == []
    else:
        # SQLAlchemy cannot reflect "priority DESC" on SQLite, so Alembic always reports
        # this one index as changed (also against create_all); `check` compares it by its
        # stored DDL instead, and test_migration_ddl_equals_create_all proves it equal.
        assert sorted((op[0], op[1].name) for op in diff) == [
            ("add_index", "ix_maintenance_tasks_claimable"),
            ("add_index", "ix_maintenance_tasks_claimable_any"),
            ("remove_index", "ix_maintenance_tasks_claimable"),
            ("remove_index", "ix_maintenance_tasks_claimable_any"),
        ]


def test_migration_ddl_equals_create_all(empty_backend: Backend, reference: str) -> None:
    migrate.upgrade(empty_backend.url)
    migrated = catalog(empty_backend.url)
    assert migrated == catalog(reference)
    assert migrate.check(reference) == []


def test_partial_indexes_and_checks_read_back(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    indexes = index_ddl(url)
    checks = check_ddl(url)

    assert {
        "ix_maintenance_tasks_claimable",
        "ix_maintenance_tasks_claimable_any",
        "ix_maintenance_tasks_status_updated",
        "ix_maintenance_tasks_lease",
        "uq_maintenance_tasks_unique_key_open",
    } <= indexes.keys()
    assert set(checks) == {
        "ck_maintenance_tasks_status",
        "ck_maintenance_tasks_max_attempts",
        "ck_maintenance_tasks_waiting_on",
    }

    if not empty_backend.is_postgres:
        # SQLite keeps the statement verbatim.
        open_in = ", ".join(f"'{s}'" for s in OPEN)
        all_in = ", ".join(f"'{s}'" for s in ALL)
        assert indexes == {
            "ix_maintenance_tasks_claimable": "CREATE INDEX ix_maintenance_tasks_claimable ON "
            "maintenance_tasks (queue, priority DESC, id) "
            "WHERE status = 'PENDING' AND waiting_on = 0",
            "ix_maintenance_tasks_claimable_any": "CREATE INDEX "
            "ix_maintenance_tasks_claimable_any ON maintenance_tasks (priority DESC, id) "
            "WHERE status = 'PENDING' AND waiting_on = 0",
            "ix_maintenance_tasks_status_updated": "CREATE INDEX "
            "ix_maintenance_tasks_status_updated ON maintenance_tasks (status, updated_at)",
            "ix_maintenance_tasks_lease": "CREATE INDEX ix_maintenance_tasks_lease ON "
            "maintenance_tasks (lease_expires_at) WHERE status = 'WORKING'",
            "uq_maintenance_tasks_unique_key_open": "CREATE UNIQUE INDEX "
            "uq_maintenance_tasks_unique_key_open ON maintenance_tasks (unique_key) "
            f"WHERE unique_key IS NOT NULL AND status IN ({open_in})",
        }
        assert checks == {
            "ck_maintenance_tasks_status": f"CHECK (status IN ({all_in}))",
            "ck_maintenance_tasks_max_attempts": "CHECK (max_attempts >= 1)",
            "ck_maintenance_tasks_waiting_on": "CHECK (waiting_on >= 0)",
        }
        return

    # PostgreSQL prints its own normal form: check the parts.
    def split(name: str) -> tuple[str, str]:
        head, _, predicate = indexes[name].partition(" WHERE ")
        return head, predicate

    head, predicate = split("ix_maintenance_tasks_claimable")
    assert head.startswith("CREATE INDEX ") and head.endswith("(queue, priority DESC, id)")
    assert "'PENDING'" in predicate and "waiting_on = 0" in predicate
    assert not any(f"'{s}'" in predicate for s in set(ALL) - {"PENDING"})

    head, predicate = split("ix_maintenance_tasks_claimable_any")
    assert head.endswith("(priority DESC, id)")
    assert "'PENDING'" in predicate and "waiting_on = 0" in predicate

    head, predicate = split("ix_maintenance_tasks_status_updated")
    assert head.endswith("(status, updated_at)") and predicate == ""

    head, predicate = split("ix_maintenance_tasks_lease")
    assert head.endswith("(lease_expires_at)")
    assert "'WORKING'" in predicate
    assert not any(f"'{s}'" in predicate for s in set(ALL) - {"WORKING"})

    head, predicate = split("uq_maintenance_tasks_unique_key_open")
    assert head.startswith("CREATE UNIQUE INDEX ") and head.endswith("(unique_key)")
    assert "unique_key IS NOT NULL" in predicate
    assert all(f"'{s}'" in predicate for s in OPEN)
    assert not any(f"'{s}'" in predicate for s in FINAL)

    assert all(f"'{s}'" in checks["ck_maintenance_tasks_status"] for s in ALL)
    assert checks["ck_maintenance_tasks_max_attempts"] == "CHECK ((max_attempts >= 1))"
    assert checks["ck_maintenance_tasks_waiting_on"] == "CHECK ((waiting_on >= 0))"


def test_constraints_act(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)

    insert(url, unique_key="k", status=MaintenanceTaskStatus.COMPLETED)
    insert(url, unique_key="k", status=MaintenanceTaskStatus.COMPLETED)  # final: not unique
    insert(url, unique_key="k", status=MaintenanceTaskStatus.PENDING)
    for status in OPEN:  # a second open task with the key is refused, whatever its status
        with pytest.raises(IntegrityError):
            insert(url, unique_key="k", status=MaintenanceTaskStatus(status))
    insert(url, unique_key=None)
    insert(url, unique_key=None)

    with pytest.raises(IntegrityError):
        insert(url, max_attempts=0)
    with pytest.raises(IntegrityError):
        insert(url, waiting_on=-1)
    with pytest.raises(IntegrityError):
        sql(
            url,
            f"INSERT INTO {TABLE} (status, processor_type, processor_json, queue, priority, "
            "delay, start_at, attempts, max_attempts, waiting_on, created_at, updated_at) "
            "VALUES ('BOGUS', 'x', '{}', 'default', 0, 0, CURRENT_TIMESTAMP, 0, 1, 0, "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        )
    assert sql(url, f"SELECT count(*) FROM {TABLE}") == [(5,)]


def test_check_reports_what_differs(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    sql(url, "DROP INDEX ix_maintenance_tasks_lease")
    sql(url, "DROP INDEX ix_maintenance_tasks_claimable")
    # Same name, columns and predicate, but ascending priority: the claim order breaks.
    sql(
        url,
        f"CREATE INDEX ix_maintenance_tasks_claimable ON {TABLE} (queue, priority, id) "
        "WHERE status = 'PENDING' AND waiting_on = 0",
    )
    sql(url, f"ALTER TABLE {TABLE} ADD COLUMN stray INTEGER")

    found = {(op[0], getattr(op[-1], "name", None)) for op in migrate.check(url)}

    assert ("add_index", "ix_maintenance_tasks_lease") in found
    assert ("add_index", "ix_maintenance_tasks_claimable") in found
    assert ("remove_column", "stray") in found


# -- around the edges ----------------------------------------------------------------------


def test_task_round_trip_after_upgrade(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    settings = empty_backend.settings()

    task = create_maintenance_task(Echo(value=1), database=url, settings=settings)

    database = Database(url)
    try:
        row = Store(database).run(operations.get_task(task.id))
    finally:
        database.dispose()
    stored = MaintenanceTask(**row._asdict())
    assert stored.status is MaintenanceTaskStatus.PENDING
    assert stored.processor_type == "tests.processors.Echo"
    assert stored.get_processor(loader_for(settings)) == Echo(value=1)
    assert stored.start_at.tzinfo is not None


def test_downgrade_to_base_and_back(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    # Through env.py's own engine (URL in the config, no connection handed over).
    command.downgrade(migrate.make_config(url), "base")
    assert migrate.current(url) is None
    with connect(url) as conn:
        assert TABLE not in inspect(conn).get_table_names()
    migrate.upgrade(url)
    assert migrate.current(url) == "0001"
    assert migrate.check(url) == []


def test_offline_sql_has_the_partial_indexes(
    empty_backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    command.upgrade(migrate.make_config(empty_backend.url), "head", sql=True)
    out = capsys.readouterr().out
    assert "CREATE TABLE maintenance_tasks" in out
    assert "WHERE status = 'PENDING' AND waiting_on = 0" in out
    assert "CREATE UNIQUE INDEX uq_maintenance_tasks_unique_key_open" in out
    assert migrate.current(empty_backend.url) is None  # nothing was run


def test_upgrade_adopts_a_create_all_schema(empty_backend: Backend) -> None:
    url = empty_backend.url
    with connect(url) as conn:
        Base.metadata.create_all(conn)
    insert(url, unique_key="kept")

    migrate.upgrade(url)

    assert migrate.current(url) == "0001"
    assert migrate.check(url) == []
    assert sql(url, f"SELECT unique_key FROM {TABLE}") == [("kept",)]


def test_upgrade_refuses_a_foreign_table(empty_backend: Backend) -> None:
    url = empty_backend.url
    with connect(url) as conn:
        Base.metadata.create_all(conn)
    sql(url, "DROP INDEX ix_maintenance_tasks_lease")

    with pytest.raises(migrate.MigrationError, match="differs from the models"):
        migrate.upgrade(url)
    assert migrate.current(url) is None


def test_unknown_revision_is_a_nightcrew_error(empty_backend: Backend) -> None:
    with pytest.raises(migrate.MigrationError, match="9999"):
        migrate.upgrade(empty_backend.url, "9999")
    assert migrate.current(empty_backend.url) is None


def test_database_newer_than_the_package(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    sql(url, "UPDATE alembic_version SET version_num = '0999'")
    with pytest.raises(migrate.MigrationError, match="0999"):
        migrate.upgrade(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:1/nightcrew",
        "sqlite:////nonexistent-nightcrew-dir/sub/nightcrew.db",
    ],
    ids=["postgresql", "sqlite"],
)
def test_unreachable_database_is_a_clear_error(url: str) -> None:
    for call in (migrate.upgrade, migrate.check):
        with pytest.raises(DatabaseError, match="cannot connect to") as caught:
            call(url)
        assert isinstance(caught.value, NightcrewError)
        assert caught.value.__cause__ is not None
    if url.startswith("postgresql"):
        with pytest.raises(DatabaseError, match="cannot connect to"):
            migrate.current(url)
    else:
        assert migrate.current(url) is None  # a missing file is an unmigrated database
