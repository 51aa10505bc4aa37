"""The backend fixture: every engine test runs on real PostgreSQL and on SQLite.

PostgreSQL tests get a schema of their own (``search_path`` in the URL), SQLite tests a
file of their own, so the suite runs in parallel under pytest-xdist. Under ``CI=true``
an unreachable PostgreSQL fails the run instead of skipping its tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from nightcrew.app import Nightcrew
from nightcrew.models import Base
from nightcrew.settings import Settings
from nightcrew.store import Database, TaskStore

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("NIGHTCREW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_MODULES = ["tests.processors", "nightcrew.processors"]


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as exc:
        return str(exc)


_PG_ERROR = _pg_reachable()


def pytest_sessionstart(session: pytest.Session) -> None:
    if _PG_ERROR and IN_CI:
        pytest.exit(f"CI=true and PostgreSQL is unreachable: {_PG_ERROR}", returncode=3)


@dataclass
class Backend:
    """One isolated database for one test, with helpers to reach it."""

    name: str
    url: str
    cleanup: list[Any] = field(default_factory=list)

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgresql"

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": self.url,
            "processor_modules": TEST_MODULES,
            "poll_interval": 0.05,
            "lease_seconds": 5.0,
        }
        values.update(overrides)
        return Settings(**values)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess (CLI, worker) pointed at this database."""
        env = dict(os.environ)
        env.update(
            NIGHTCREW_DATABASE_URL=self.url,
            NIGHTCREW_PROCESSOR_MODULES=",".join(TEST_MODULES),
            NIGHTCREW_POLL_INTERVAL="0.05",
            NIGHTCREW_LEASE_SECONDS="5",
            PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        )
        env.update(extra)
        return env


def _make_pg(schema: str) -> Backend:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    return Backend("postgresql", url)


def _drop_pg(schema: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


BACKENDS = [
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(
            bool(_PG_ERROR) and not IN_CI, reason=f"PostgreSQL unreachable: {_PG_ERROR}"
        ),
    ),
    "sqlite",
]


@pytest.fixture(params=BACKENDS)
def empty_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An isolated, empty database (no tables): for migration tests."""
    if request.param == "postgresql":
        schema = f"t_{uuid.uuid4().hex[:16]}"
        backend = _make_pg(schema)
        yield backend
        _drop_pg(schema)
    else:
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'nightcrew.db'}")


@pytest.fixture
def backend(empty_backend: Backend) -> Iterator[Backend]:
    """An isolated database with nightcrew's tables."""
    db = Database(empty_backend.url)
    Base.metadata.create_all(db.sync_engine)
    db.dispose()
    yield empty_backend


@pytest.fixture
def database(backend: Backend) -> Iterator[Database]:
    db = Database(backend.url)
    yield db
    db.dispose()


@pytest.fixture
async def adatabase(backend: Backend) -> AsyncIterator[Database]:
    db = Database(backend.url)
    yield db
    await db.adispose()


@pytest.fixture
def settings(backend: Backend) -> Settings:
    return backend.settings()


@pytest.fixture
def app(settings: Settings) -> Iterator[Nightcrew]:
    """The composition root for the backend (sync tests)."""
    nightcrew = Nightcrew(settings)
    yield nightcrew
    nightcrew.close()


@pytest.fixture
async def aapp(settings: Settings) -> AsyncIterator[Nightcrew]:
    """The composition root for the backend (async tests: disposes its async engines)."""
    nightcrew = Nightcrew(settings)
    yield nightcrew
    await nightcrew.aclose()


@pytest.fixture
def store(app: Nightcrew) -> TaskStore:
    return app.store


@pytest.fixture
async def astore(aapp: Nightcrew) -> AsyncIterator[TaskStore]:
    """A store of its own, whose hot-path connections are closed after the test."""
    from nightcrew.store import open_store

    store = open_store(aapp.database, aapp.events)
    yield store
    await store.aclose()


def run_cli(
    backend: Backend, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nightcrew ARGS`` against the backend, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "nightcrew", *args],
        env=backend.env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
