"""The shipped Alembic migrations create exactly the schema of ``nightcrew.models``.

Every test runs on PostgreSQL (a schema of its own) and on SQLite (a file of its own).
"Exactly" is proved three ways: Alembic's autogenerate finds no difference; the catalog
of the migrated database (columns, server defaults, constraints, index definitions with
their ``WHERE`` clauses, the id's sequence, as the database itself prints them) is
identical to that of a database made by ``Base.metadata.create_all``; and the partial
indexes, check constraints and server defaults are read back and asserted one by one,
then shown to act. A fresh install runs the whole chain (``origin``, the origin's table,
then its conversion), so these tests cover the conversion path too; adoption of existing
databases is in ``test_origin_adoption.py`` and ``test_schema_coexistence.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Table, inspect, text
from sqlalchemy import insert as sa_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTable

from nightcrew import MaintenanceTaskStatus, create_maintenance_task, migrate
from nightcrew.errors import DatabaseError, NightcrewError
from nightcrew.models import OPEN_STATUSES, Base, MaintenanceTask
from nightcrew.processors import loader_for
from tests.conftest import Backend, run_cli
from tests.migration_helpers import (
    TABLE,
    catalog,
    check_ddl,
    connect,
    has_table,
    index_ddl,
    scratch_database,
    sql,
    version_rows,
)
from tests.processors import Echo

ALL = [s.value for s in MaintenanceTaskStatus]
OPEN = sorted(s.value for s in OPEN_STATUSES)
FINAL = sorted(set(ALL) - set(OPEN))
HEAD = "0003"
CHAIN = ["origin", "0001", "0002", "0003"]
NOW_SQLITE = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


def insert(url: str, **values: Any) -> None:
    row = {"processor_type": "tests.processors.Echo", **values}
    with connect(url) as conn:
        conn.execute(sa_insert(MaintenanceTask).values(**row))


@pytest.fixture
def reference(empty_backend: Backend, tmp_path: Path) -> Iterator[str]:
    """A second database of the same kind, made by ``Base.metadata.create_all``."""
    with scratch_database(empty_backend.url, tmp_path, "reference") as url:
        engine = migrate.open_engine(url)
        Base.metadata.create_all(engine)
        engine.dispose()
        yield url


# -- upgrade -------------------------------------------------------------------------------


def test_the_chain_starts_at_the_origin() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.make_config())
    assert [r.revision for r in reversed(list(script.walk_revisions()))] == CHAIN
    assert migrate.head() == HEAD


def test_upgrade_creates_the_schema_at_head(empty_backend: Backend) -> None:
    url = empty_backend.url
    assert migrate.current(url) is None

    done = migrate.upgrade(url)

    assert (done.before, done.after) == (None, HEAD)
    assert migrate.current(url) == migrate.head() == HEAD
    assert version_rows(url) == [(HEAD,)]
    assert not has_table(url, "alembic_version")  # the application's, never nightcrew's
    with connect(url) as conn:
        assert {TABLE, migrate.VERSION_TABLE} <= set(inspect(conn).get_table_names())
        if empty_backend.is_postgres:
            # Both tables live in the URL's search_path schema, nowhere else.
            schema = url.rsplit("%3D", 1)[1]
            homes = conn.execute(
                text(
                    "SELECT DISTINCT table_schema FROM information_schema.tables "
                    "WHERE table_name IN (:v, :t) AND table_schema = :s"
                ),
                {"v": migrate.VERSION_TABLE, "t": TABLE, "s": schema},
            ).all()
            assert homes == [(schema,)]
            assert conn.execute(
                text("SELECT to_regclass(:v)"), {"v": migrate.VERSION_TABLE}
            ).scalar_one()


def test_a_fresh_install_leaves_no_enum_type(empty_backend: Backend) -> None:
    migrate.upgrade(empty_backend.url)
    if empty_backend.is_postgres:
        assert catalog(empty_backend.url)["enums"] == []
    assert "ix_maintenance_tasks_status" not in index_ddl(empty_backend.url)


def test_upgrade_twice_is_a_no_op(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    insert(url, unique_key="kept")
    before = catalog(url)

    again = migrate.upgrade(url)
    migrate.upgrade(url, HEAD)

    assert (again.before, again.after, again.changed) == (HEAD, HEAD, False)
    assert catalog(url) == before
    assert version_rows(url) == [(HEAD,)]
    assert sql(url, f"SELECT unique_key FROM {TABLE}") == [("kept",)]


def test_upgrade_to_an_older_revision_changes_nothing(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    before = catalog(url)

    done = migrate.upgrade(url, "base")

    assert (done.before, done.after, done.changed) == (HEAD, HEAD, False)
    assert catalog(url) == before


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
        results = [f.result() for f in [pool.submit(migrate.upgrade, url) for _ in range(4)]]
    assert sorted((r.before or "", r.after) for r in results) == [("", HEAD)] + [(HEAD, HEAD)] * 3
    assert version_rows(url) == [(HEAD,)]
    assert migrate.check(url) == []


# -- migrated schema == models -------------------------------------------------------------


def test_migrated_schema_has_no_autogenerate_diff(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)

    assert migrate.check(url) == []

    # Alembic's own comparison, without nightcrew's help (but with its own version table).
    with connect(url) as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "version_table": migrate.VERSION_TABLE,
            },
        )
        diff = compare_metadata(context, Base.metadata)
    if empty_backend.is_postgres:
        assert diff == []
    else:
        # SQLAlchemy cannot reflect "priority DESC" on SQLite, so Alembic always reports
        # these indexes as changed (also against create_all); `check` compares them by
        # their stored DDL instead, and test_migration_ddl_equals_create_all proves them equal.
        assert sorted((op[0], op[1].name) for op in diff) == [
            ("add_index", "ix_maintenance_tasks_claimable"),
            ("add_index", "ix_maintenance_tasks_claimable_any"),
            ("add_index", "ix_maintenance_tasks_spaced"),
            ("remove_index", "ix_maintenance_tasks_claimable"),
            ("remove_index", "ix_maintenance_tasks_claimable_any"),
            ("remove_index", "ix_maintenance_tasks_spaced"),
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

    assert set(indexes) == {
        "ix_maintenance_tasks_claimable",
        "ix_maintenance_tasks_claimable_any",
        "ix_maintenance_tasks_spaced",
        "ix_maintenance_tasks_status_updated",
        "ix_maintenance_tasks_status_id",
        "ix_maintenance_tasks_lease",
        "uq_maintenance_tasks_unique_key_open",
        "uq_maintenance_tasks_schedule_tick",
        "ix_maintenance_tasks_schedule_id",
        "ix_maintenance_tasks_schedule_open",
        "ix_maintenance_tasks_pipeline",
    } | ({"pk_maintenance_tasks"} if empty_backend.is_postgres else set())
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
            "maintenance_tasks (queue, priority DESC, created_at, id) "
            "WHERE status = 'PENDING' AND waiting_on = 0 AND delay = 0",
            "ix_maintenance_tasks_claimable_any": "CREATE INDEX "
            "ix_maintenance_tasks_claimable_any ON maintenance_tasks "
            "(priority DESC, created_at, id) WHERE status = 'PENDING' AND waiting_on = 0 "
            "AND delay = 0",
            "ix_maintenance_tasks_spaced": "CREATE INDEX "
            "ix_maintenance_tasks_spaced ON maintenance_tasks "
            "(priority DESC, created_at, id) WHERE status = 'PENDING' AND waiting_on = 0 "
            "AND delay > 0",
            "ix_maintenance_tasks_status_updated": "CREATE INDEX "
            "ix_maintenance_tasks_status_updated ON maintenance_tasks (status, updated_at)",
            "ix_maintenance_tasks_status_id": "CREATE INDEX "
            "ix_maintenance_tasks_status_id ON maintenance_tasks (status, id)",
            "ix_maintenance_tasks_lease": "CREATE INDEX ix_maintenance_tasks_lease ON "
            "maintenance_tasks (lease_expires_at) WHERE status = 'WORKING'",
            "uq_maintenance_tasks_unique_key_open": "CREATE UNIQUE INDEX "
            "uq_maintenance_tasks_unique_key_open ON maintenance_tasks (unique_key) "
            f"WHERE unique_key IS NOT NULL AND status IN ({open_in})",
            "uq_maintenance_tasks_schedule_tick": "CREATE UNIQUE INDEX "
            "uq_maintenance_tasks_schedule_tick ON maintenance_tasks "
            "(schedule_name, scheduled_for) WHERE schedule_name IS NOT NULL",
            "ix_maintenance_tasks_schedule_id": "CREATE INDEX "
            "ix_maintenance_tasks_schedule_id ON maintenance_tasks (schedule_name, id) "
            "WHERE schedule_name IS NOT NULL",
            "ix_maintenance_tasks_schedule_open": "CREATE INDEX "
            "ix_maintenance_tasks_schedule_open ON maintenance_tasks (schedule_name) "
            f"WHERE schedule_name IS NOT NULL AND status IN ({open_in})",
            "ix_maintenance_tasks_pipeline": "CREATE INDEX ix_maintenance_tasks_pipeline ON "
            "maintenance_tasks (pipeline_id) WHERE pipeline_id IS NOT NULL",
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
    assert head.startswith("CREATE INDEX ")
    assert head.endswith("(queue, priority DESC, created_at, id)")
    assert "'PENDING'" in predicate and "waiting_on = 0" in predicate
    assert not any(f"'{s}'" in predicate for s in set(ALL) - {"PENDING"})

    assert "delay = 0" in predicate

    head, predicate = split("ix_maintenance_tasks_claimable_any")
    assert head.endswith("(priority DESC, created_at, id)")
    assert "'PENDING'" in predicate and "waiting_on = 0" in predicate
    assert "delay = 0" in predicate

    head, predicate = split("ix_maintenance_tasks_spaced")
    assert head.endswith("(priority DESC, created_at, id)")
    assert "'PENDING'" in predicate and "waiting_on = 0" in predicate
    assert "delay > 0" in predicate

    head, predicate = split("ix_maintenance_tasks_status_updated")
    assert head.endswith("(status, updated_at)") and predicate == ""

    head, predicate = split("ix_maintenance_tasks_status_id")
    assert head.endswith("(status, id)") and predicate == ""

    head, predicate = split("ix_maintenance_tasks_schedule_id")
    assert head.endswith("(schedule_name, id)") and "schedule_name IS NOT NULL" in predicate

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


def test_server_defaults_read_back(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    now = NOW_SQLITE if not empty_backend.is_postgres else "CURRENT_TIMESTAMP"
    wanted = {
        "queue": "'default'",
        "priority": "0",
        "delay": "0",
        "start_at": now,
        "attempts": "0",
        "max_attempts": "1",
        "rescues": "0",
        "waiting_on": "0",
        "created_at": now,
        "updated_at": now,
        "critical": "true" if empty_backend.is_postgres else "1",
        "run_anyway": "false" if empty_backend.is_postgres else "0",
    }
    if empty_backend.is_postgres:
        rows = sql(
            url,
            "SELECT column_name, column_default FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = :t",
            t=TABLE,
        )
        wanted["queue"] = "'default'::character varying"
        wanted["id"] = "nextval('maintenance_tasks_id_seq'::regclass)"
    else:
        rows = [(r[1], r[4]) for r in sql(url, f"PRAGMA table_info({TABLE})")]
        # PRAGMA table_info gives the text of the DEFAULT clause without its parentheses.
    assert {name: default for name, default in rows if default is not None} == wanted


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
            f"INSERT INTO {TABLE} (status, processor_type, processor_json, delay) "
            "VALUES ('BOGUS', 'x', '{}', 0)",
        )
    with pytest.raises(IntegrityError):  # no server default for the status, as in the origin
        sql(url, f"INSERT INTO {TABLE} (processor_type, processor_json) VALUES ('x', '{{}}')")
    assert sql(url, f"SELECT count(*) FROM {TABLE}") == [(5,)]


def test_check_reports_what_differs(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    sql(url, "DROP INDEX ix_maintenance_tasks_lease")
    sql(url, "DROP INDEX ix_maintenance_tasks_claimable")
    # Same name, columns and predicate, but ascending priority: the claim order breaks.
    sql(
        url,
        f"CREATE INDEX ix_maintenance_tasks_claimable ON {TABLE} "
        "(queue, priority, created_at, id) WHERE status = 'PENDING' AND waiting_on = 0",
    )
    sql(url, f"ALTER TABLE {TABLE} ADD COLUMN stray INTEGER")

    found = {(op[0], getattr(op[-1], "name", None)) for op in migrate.check(url)}

    assert ("add_index", "ix_maintenance_tasks_lease") in found
    assert ("add_index", "ix_maintenance_tasks_claimable") in found
    assert ("remove_column", "stray") in found


def test_check_reports_a_missing_claim_index(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    sql(url, "DROP INDEX ix_maintenance_tasks_claimable_any")

    found = [(op[0], op[1].name) for op in migrate.check(url)]

    assert found == [("add_index", "ix_maintenance_tasks_claimable_any")]


def test_check_reports_a_missing_server_default(empty_backend: Backend) -> None:
    url = empty_backend.url
    table = cast(Table, MaintenanceTask.__table__)
    with connect(url) as conn:
        ddl = str(CreateTable(table).compile(dialect=conn.dialect))
        plain = "waiting_on INTEGER NOT NULL"
        conn.exec_driver_sql(ddl.replace("waiting_on INTEGER DEFAULT 0 NOT NULL", plain))
        for index in table.indexes:
            index.create(conn)
        others = [t for t in Base.metadata.sorted_tables if t is not table]
        Base.metadata.create_all(conn, tables=others)

    found = [op for op in migrate.check(url) for op in (op if isinstance(op, list) else [op])]

    assert [(op[0], op[3]) for op in found] == [("modify_default", "waiting_on")]


# -- around the edges ----------------------------------------------------------------------


def test_task_round_trip_after_upgrade(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    settings = empty_backend.settings()

    task = create_maintenance_task(Echo(value=1), database=url, settings=settings)

    engine = migrate.open_engine(url)
    try:
        with Session(engine) as session:
            stored = session.get(MaintenanceTask, task.id)
            assert stored is not None
            assert stored.status is MaintenanceTaskStatus.PENDING
            assert stored.processor_type == "tests.processors.Echo"
            assert stored.get_processor(loader_for(settings)) == Echo(value=1)
            assert stored.start_at.tzinfo is not None
            assert stored.rescues == 0
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    # Through env.py's own engine (URL in the config, no connection handed over).
    command.downgrade(migrate.make_config(url), "base")
    assert migrate.current(url) is None
    with connect(url) as conn:
        assert TABLE not in inspect(conn).get_table_names()
    if empty_backend.is_postgres:
        assert catalog(url)["enums"] == []  # the origin's enum type went with its table
    migrate.upgrade(url)
    assert migrate.current(url) == HEAD
    assert migrate.check(url) == []


def test_downgrade_step_by_step_and_back(empty_backend: Backend, reference: str) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    insert(url, unique_key="kept", status=MaintenanceTaskStatus.PENDING)
    for revision in reversed(CHAIN[:-1]):
        assert migrate.downgrade(url, revision).after == revision
    assert migrate.downgrade(url, "base").after is None
    migrate.upgrade(url)
    assert catalog(url) == catalog(reference)


def test_offline_sql_has_the_partial_indexes(
    empty_backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    command.upgrade(migrate.make_config(empty_backend.url), "head", sql=True)
    out = capsys.readouterr().out
    assert "CREATE TABLE maintenance_tasks" in out
    assert "WHERE status = 'PENDING' AND waiting_on = 0" in out
    assert "(queue, priority DESC, created_at, id)" in out
    assert "CREATE UNIQUE INDEX uq_maintenance_tasks_unique_key_open" in out
    assert migrate.VERSION_TABLE in out
    assert migrate.current(empty_backend.url) is None  # nothing was run


def test_upgrade_adopts_a_create_all_schema(empty_backend: Backend) -> None:
    url = empty_backend.url
    with connect(url) as conn:
        Base.metadata.create_all(conn)
    insert(url, unique_key="kept")

    done = migrate.upgrade(url)

    assert migrate.current(url) == HEAD
    assert done.notes == (
        "adopted table 'maintenance_tasks', equal to the models (stamped at head)",
    )
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


def test_downgrade_of_an_unmigrated_database_is_refused(empty_backend: Backend) -> None:
    with pytest.raises(migrate.MigrationError, match="nothing to downgrade"):
        migrate.downgrade(empty_backend.url, "base")


def test_database_newer_than_the_package(empty_backend: Backend) -> None:
    url = empty_backend.url
    migrate.upgrade(url)
    sql(url, f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0999'")
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


# -- the commands --------------------------------------------------------------------------


def _last_line(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    lines: list[str] = result.stdout.strip().splitlines()
    return lines[-1]


def test_db_upgrade_says_from_which_revision_to_which(empty_backend: Backend) -> None:
    assert _last_line(run_cli(empty_backend, "db", "upgrade")).endswith(
        f"upgraded from base to {HEAD}"
    )
    assert _last_line(run_cli(empty_backend, "db", "upgrade")).endswith(
        f"already at {HEAD}, nothing to do"
    )


def test_db_upgrade_to_base_says_nothing_changed(empty_backend: Backend) -> None:
    run_cli(empty_backend, "db", "upgrade")

    line = _last_line(run_cli(empty_backend, "db", "upgrade", "--revision", "base"))

    assert f"still at {HEAD}, nothing to do" in line
    assert "nightcrew db downgrade --revision base" in line
    assert migrate.current(empty_backend.url) == HEAD


def test_db_downgrade_goes_back_to_the_revision(empty_backend: Backend) -> None:
    run_cli(empty_backend, "db", "upgrade")

    line = _last_line(run_cli(empty_backend, "db", "downgrade", "--revision", "origin"))

    assert line.endswith(f"downgraded from {HEAD} to origin")
    assert migrate.current(empty_backend.url) == "origin"


def test_db_downgrade_needs_a_revision(empty_backend: Backend) -> None:
    run_cli(empty_backend, "db", "upgrade")

    result = run_cli(empty_backend, "db", "downgrade")

    assert result.returncode != 0
    assert migrate.current(empty_backend.url) == HEAD
