"""Unique keys on both databases: at most one open task per key, even under concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from sqlalchemy.orm import Session

from nightcrew import (
    InvalidTransition,
    MaintenanceTaskStatus,
    Nightcrew,
    Settings,
    TaskOptions,
    acreate_maintenance_task,
    actions,
    create_maintenance_task,
    create_maintenance_tasks,
)
from nightcrew.models import OPEN_STATUSES
from nightcrew.store import Database, TaskStore
from tests.conftest import ROOT, Backend
from tests.helpers import orm_tasks_with_key, set_status, task_count
from tests.processors import Echo

S = MaintenanceTaskStatus


def test_a_second_create_with_the_same_key_returns_the_existing_task(
    database: Database, settings: Settings
) -> None:
    first = create_maintenance_task(
        Echo(value=1), unique_key="nightly", database=database, settings=settings
    )
    second = create_maintenance_task(
        Echo(value=2), unique_key="nightly", database=database, settings=settings
    )
    assert second.id == first.id
    assert second.processor_json == Echo(value=1).model_dump_json()
    assert [t.id for t in orm_tasks_with_key(database, "nightly")] == [first.id]


def test_different_keys_make_different_tasks(database: Database, settings: Settings) -> None:
    a = create_maintenance_task(Echo(), unique_key="a", database=database, settings=settings)
    b = create_maintenance_task(Echo(), unique_key="b", database=database, settings=settings)
    assert a.id != b.id


def test_tasks_without_a_key_are_never_merged(
    database: Database, store: TaskStore, settings: Settings
) -> None:
    for _ in range(3):
        create_maintenance_task(Echo(), database=database, settings=settings)
    assert task_count(store) == 3


@pytest.mark.parametrize("status", sorted(OPEN_STATUSES))
def test_a_key_held_by_any_open_task_returns_that_task(
    database: Database, settings: Settings, status: MaintenanceTaskStatus
) -> None:
    first = create_maintenance_task(Echo(), unique_key="k", database=database, settings=settings)
    set_status(database, first.id, status)
    again = create_maintenance_task(Echo(), unique_key="k", database=database, settings=settings)
    assert (again.id, again.status) == (first.id, status)


@pytest.mark.parametrize("status", [S.COMPLETED, S.ERROR, S.CANCELLED])
def test_after_the_holder_finishes_a_new_task_is_created(
    database: Database, settings: Settings, status: MaintenanceTaskStatus
) -> None:
    first = create_maintenance_task(Echo(), unique_key="k", database=database, settings=settings)
    set_status(database, first.id, status)

    again = create_maintenance_task(Echo(), unique_key="k", database=database, settings=settings)

    assert again.id != first.id
    assert again.status is S.PENDING
    assert [t.status for t in orm_tasks_with_key(database, "k")] == [status, S.PENDING]


def test_a_key_freed_by_cancel_can_be_used_again(app: Nightcrew) -> None:
    first = create_maintenance_task(Echo(), unique_key="k", database=app)
    actions.cancel(app, first.id)
    again = create_maintenance_task(Echo(), unique_key="k", database=app)
    assert again.id != first.id


def test_retrying_a_task_whose_key_is_free_keeps_the_key(app: Nightcrew) -> None:
    first = create_maintenance_task(Echo(), unique_key="k", database=app)
    actions.cancel(app, first.id)
    actions.retry(app, first.id)
    again = create_maintenance_task(Echo(), unique_key="k", database=app)
    assert again.id == first.id


def test_retrying_a_task_whose_key_was_taken_again_is_refused(app: Nightcrew) -> None:
    first = create_maintenance_task(Echo(), unique_key="k", database=app)
    actions.cancel(app, first.id)
    holder = create_maintenance_task(Echo(), unique_key="k", database=app)

    with pytest.raises(InvalidTransition, match=f"held by open task {holder.id}"):
        actions.retry(app, first.id)

    assert [t.status for t in orm_tasks_with_key(app.database, "k")] == [S.CANCELLED, S.PENDING]


def test_bulk_enqueue_with_one_key_makes_one_task(database: Database, settings: Settings) -> None:
    ids = create_maintenance_tasks(
        [Echo(value=i) for i in range(5)],
        TaskOptions(unique_key="bulk"),
        database=database,
        settings=settings,
    )
    assert len(set(ids)) == 1
    assert len(orm_tasks_with_key(database, "bulk")) == 1


async def test_the_async_twin_returns_the_existing_task(
    adatabase: Database, settings: Settings
) -> None:
    first = await acreate_maintenance_task(
        Echo(), unique_key="k", database=adatabase, settings=settings
    )
    again = await acreate_maintenance_task(
        Echo(), unique_key="k", database=adatabase, settings=settings
    )
    assert again.id == first.id


def test_a_key_held_inside_an_uncommitted_session_is_released_by_its_rollback(
    database: Database, settings: Settings
) -> None:
    with Session(database.sync_engine) as session:
        create_maintenance_task(Echo(), unique_key="k", session=session, settings=settings)
        session.rollback()
    task = create_maintenance_task(Echo(), unique_key="k", database=database, settings=settings)
    assert [t.id for t in orm_tasks_with_key(database, "k")] == [task.id]


def test_enqueue_with_a_key_keeps_working_on_a_reused_connection(
    database: Database, settings: Settings
) -> None:
    # PostgreSQL plans a statement generically once psycopg has prepared it (after a few
    # runs on one connection); the ON CONFLICT target must still find the partial index.
    first = [
        create_maintenance_task(Echo(), unique_key=f"k{i}", database=database, settings=settings)
        for i in range(30)
    ]
    again = [
        create_maintenance_task(Echo(), unique_key=f"k{i}", database=database, settings=settings)
        for i in range(30)
    ]
    assert [t.id for t in again] == [t.id for t in first]


# ---------------------------------------------------------------- several processes at once

PROCESSES = 4
KEYS = 20

_ENQUEUER = """
import json, sys, time
from nightcrew import create_maintenance_task
from tests.processors import Echo

start, keys = float(sys.argv[1]), int(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
ids = {}
for k in range(keys):
    task = create_maintenance_task(Echo(value=k), unique_key=f"race-{k}")
    ids[f"race-{k}"] = task.id
print(json.dumps(ids))
"""


def test_concurrent_enqueue_of_one_key_from_several_processes_makes_one_open_task(
    backend: Backend, database: Database
) -> None:
    start = time.time() + 2.0  # every process is up and connected before the race begins
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ENQUEUER, str(start), str(KEYS)],
            env=backend.env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    seen: list[dict[str, int]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        seen.append(json.loads(out))

    for k in range(KEYS):
        key = f"race-{k}"
        stored = orm_tasks_with_key(database, key)
        assert [t.status for t in stored] == [S.PENDING], key
        assert {ids[key] for ids in seen} == {stored[0].id}, key
