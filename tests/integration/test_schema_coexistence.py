"""nightcrew's schema next to an application's: its own version table, its own tables only.

An application keeps its Alembic history in the default ``alembic_version`` (the origin's
head revision is ``083``) and its own tables in the same database; both upgrade in either
order. A database upgraded by nightcrew 0.1, which used the default version table, moves
over to nightcrew's own on the next upgrade, and another's revisions are never touched.
Each test runs on PostgreSQL (a schema of its own) and SQLite (a file of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select

from nightcrew import migrate
from nightcrew.models import Base, MaintenanceTask
from nightcrew.store.database import normalize_url
from tests.conftest import Backend
from tests.migration_helpers import (
    TABLE,
    catalog,
    connect,
    has_table,
    run_all,
    scratch_database,
    sql,
    version_rows,
)
from tests.origin_schema import PROCESSOR, app_alembic_ddl, nightcrew_01_ddl

HEAD = "0003"
LEGACY = migrate.LEGACY_VERSION_TABLE
APP_TABLES = [
    "CREATE TABLE app_users (id INTEGER PRIMARY KEY, email VARCHAR(255) NOT NULL)",
    "CREATE INDEX ix_app_users_email ON app_users (email)",
]

APP_ENV = """
from alembic import context
from sqlalchemy import create_engine

engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
with engine.begin() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
"""

APP_REVISION = """
from alembic import op

revision = "083"
down_revision = None


def upgrade():
    op.execute("CREATE TABLE app_users (id INTEGER PRIMARY KEY, email VARCHAR(255) NOT NULL)")


def downgrade():
    op.execute("DROP TABLE app_users")
"""


@pytest.fixture
def app_alembic(empty_backend: Backend, tmp_path: Path) -> Callable[[], None]:
    """The application's own Alembic (default version table, head ``083``): call to upgrade."""
    scripts = tmp_path / "app_migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(APP_ENV)
    (scripts / "script.py.mako").write_text("")
    (scripts / "versions" / "083_app_users.py").write_text(APP_REVISION)
    config = Config()
    config.set_main_option("script_location", str(scripts))
    url = normalize_url(empty_backend.url, is_async=False)
    config.set_main_option(
        "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%")
    )

    def upgrade() -> None:
        command.upgrade(config, "head")

    return upgrade


@pytest.fixture
def reference(empty_backend: Backend, tmp_path: Path) -> Iterator[str]:
    """A second database: nightcrew 0.1's schema, from its DDL."""
    with scratch_database(empty_backend.url, tmp_path, "v01") as url:
        run_all(url, nightcrew_01_ddl(_dialect(url), version_row=False))
        yield url


def _dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def make_0_1(url: str, *extra_revisions: str) -> None:
    """nightcrew 0.1's schema, ``0001`` in ``alembic_version`` (with ``extra_revisions``),
    and a task in it."""
    run_all(url, nightcrew_01_ddl(_dialect(url), version_row=False))
    run_all(url, app_alembic_ddl("0001", *extra_revisions))
    now = "CURRENT_TIMESTAMP"
    sql(
        url,
        f"INSERT INTO {TABLE} (status, processor_type, processor_json, queue, priority, "
        "delay, start_at, attempts, max_attempts, waiting_on, created_at, updated_at) "
        f"VALUES ('PENDING', '{PROCESSOR}', '{{}}', 'mail', 5, 0, {now}, 0, 3, 0, {now}, {now})",
    )


# -- only nightcrew's tables ---------------------------------------------------------------


def test_check_ignores_the_application_tables(empty_backend: Backend) -> None:
    url = empty_backend.url
    run_all(url, [*APP_TABLES, *app_alembic_ddl("083")])

    migrate.upgrade(url)

    assert migrate.check(url) == []


def test_a_create_all_table_is_adopted_next_to_application_tables(empty_backend: Backend) -> None:
    url = empty_backend.url
    run_all(url, APP_TABLES)
    with connect(url) as conn:
        Base.metadata.create_all(conn)

    migrate.upgrade(url)

    assert migrate.current(url) == HEAD
    assert has_table(url, "app_users")


# -- the application's Alembic next to nightcrew's -----------------------------------------


def test_the_application_alembic_first_then_nightcrew(
    empty_backend: Backend, app_alembic: Callable[[], None]
) -> None:
    url = empty_backend.url
    app_alembic()

    migrate.upgrade(url)

    assert version_rows(url, LEGACY) == [("083",)]
    assert version_rows(url) == [(HEAD,)]
    assert migrate.check(url) == []
    app_alembic()  # the application's next upgrade still finds its own history


def test_nightcrew_first_then_the_application_alembic(
    empty_backend: Backend, app_alembic: Callable[[], None]
) -> None:
    url = empty_backend.url
    migrate.upgrade(url)

    app_alembic()

    assert version_rows(url, LEGACY) == [("083",)]
    assert has_table(url, "app_users")
    assert migrate.upgrade(url).changed is False
    assert migrate.current(url) == HEAD


# -- nightcrew 0.1's history in the default table ------------------------------------------


def test_a_0_1_database_moves_to_nightcrews_version_table(empty_backend: Backend) -> None:
    url = empty_backend.url
    make_0_1(url)

    done = migrate.upgrade(url)

    assert done.notes == (
        f"moved revision 0001 from {LEGACY} to {migrate.VERSION_TABLE} "
        "(dropped it: nothing else was in it)",
    )
    assert (done.before, done.after) == ("0001", HEAD)
    assert not has_table(url, LEGACY)
    assert version_rows(url) == [(HEAD,)]
    assert migrate.check(url) == []


def test_a_0_1_database_keeps_its_tasks(empty_backend: Backend) -> None:
    url = empty_backend.url
    make_0_1(url)

    migrate.upgrade(url)

    with connect(url) as conn:
        task = conn.execute(select(MaintenanceTask.__table__)).one()
    assert (task.queue, task.priority, task.max_attempts, task.rescues) == ("mail", 5, 3, 0)


def test_a_0_1_revision_next_to_application_revisions_moves_alone(
    empty_backend: Backend,
) -> None:
    url = empty_backend.url
    make_0_1(url, "083")

    migrate.upgrade(url)

    assert version_rows(url, LEGACY) == [("083",)]
    assert version_rows(url) == [(HEAD,)]


def test_an_application_revision_named_0001_is_left_alone(empty_backend: Backend) -> None:
    url = empty_backend.url
    run_all(url, [*APP_TABLES, *app_alembic_ddl("0001")])

    migrate.upgrade(url)

    assert version_rows(url, LEGACY) == [("0001",)]
    assert version_rows(url) == [(HEAD,)]


def test_current_reads_a_0_1_revision_before_the_move(empty_backend: Backend) -> None:
    url = empty_backend.url
    make_0_1(url)

    assert migrate.current(url) == "0001"
    assert version_rows(url, LEGACY) == [("0001",)]  # reading moves nothing


def test_revision_0001_is_still_the_0_1_schema(empty_backend: Backend, reference: str) -> None:
    url = empty_backend.url

    migrate.upgrade(url, "0001")

    assert catalog(url) == catalog(reference)
