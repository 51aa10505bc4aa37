"""Operator transitions on both databases: activate, cancel, retry.

Tasks are put in a status the way the engine would (a claim makes one WORKING) or, for
final statuses the worker writes, through the ORM.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from nightcrew import (
    InvalidTransition,
    MaintenanceTask,
    MaintenanceTaskStatus,
    Settings,
    TaskNotFound,
    create_maintenance_task,
)
from nightcrew.models import utcnow
from nightcrew.store import Database, Store, operations
from nightcrew.store import tasks as st
from tests.processors import Echo

S = MaintenanceTaskStatus
FINAL = [S.COMPLETED, S.ERROR, S.CANCELLED]


def create(
    database: Database, settings: Settings, *, inactive: bool = False, delay: int = 0
) -> int:
    task = create_maintenance_task(
        Echo(), delay=delay, inactive=inactive, database=database, settings=settings
    )
    return task.id


def status_of(store: Store, task_id: int) -> MaintenanceTaskStatus:
    status: MaintenanceTaskStatus = store.run(operations.get_task(task_id)).status
    return status


def set_status(
    database: Database, task_id: int, status: MaintenanceTaskStatus, **values: object
) -> None:
    """Write a status the worker would write, through the ORM."""
    with Session(database.sync_engine) as session, session.begin():
        task = session.get_one(MaintenanceTask, task_id)
        task.status = status
        for name, value in values.items():
            setattr(task, name, value)


def claim(database: Database, now: datetime | None = None) -> list[int]:
    """Run the worker's claim statement; return the ids it took (now WORKING)."""
    stmt, params = st.claim(
        database.dialect,
        queues=None,
        limit=100,
        token="test-worker",
        now=now or utcnow(),
        lease_seconds=30,
    )
    with database.sync_engine.begin() as conn:
        return [t.id for t in st.claimed_from_rows(conn.execute(stmt, params).all())]


# ---------------------------------------------------------------- activation


def test_an_inactive_task_is_created_inactive(
    database: Database, store: Store, settings: Settings
) -> None:
    task_id = create(database, settings, inactive=True)
    assert status_of(store, task_id) is S.INACTIVE


def test_an_inactive_task_is_not_claimable(
    database: Database, store: Store, settings: Settings
) -> None:
    task_id = create(database, settings, inactive=True)
    assert claim(database, now=utcnow() + timedelta(days=365)) == []
    assert status_of(store, task_id) is S.INACTIVE


def test_activate_makes_the_task_pending_at_now_plus_delay(
    database: Database, store: Store, settings: Settings
) -> None:
    task_id = create(database, settings, inactive=True, delay=60)
    now = utcnow() + timedelta(hours=1)  # the delay counts from activation, not creation

    task = store.run(operations.activate(store.dialect, task_id, now))

    assert task.status is S.PENDING
    assert task.start_at == now + timedelta(seconds=60)


def test_an_activated_task_is_claimable_once_its_delay_has_passed(
    database: Database, store: Store, settings: Settings
) -> None:
    task_id = create(database, settings, inactive=True, delay=60)
    now = utcnow()
    store.run(operations.activate(store.dialect, task_id, now))

    assert claim(database, now=now + timedelta(seconds=59)) == []
    assert claim(database, now=now + timedelta(seconds=60)) == [task_id]


@pytest.mark.parametrize("status", [S.PENDING, S.WORKING, *FINAL])
def test_activating_a_task_that_is_not_inactive_is_refused(
    database: Database, store: Store, settings: Settings, status: MaintenanceTaskStatus
) -> None:
    task_id = create(database, settings)
    set_status(database, task_id, status)
    with pytest.raises(InvalidTransition):
        store.run(operations.activate(store.dialect, task_id, utcnow()))
    assert status_of(store, task_id) is status


def test_activating_a_missing_task_raises_task_not_found(store: Store) -> None:
    with pytest.raises(TaskNotFound):
        store.run(operations.activate(store.dialect, 999_999, utcnow()))


# ---------------------------------------------------------------- cancel


@pytest.mark.parametrize("inactive", [True, False], ids=["INACTIVE", "PENDING"])
def test_cancel_of_a_task_that_is_not_running_cancels_it_at_once(
    database: Database, store: Store, settings: Settings, inactive: bool
) -> None:
    task_id = create(database, settings, inactive=inactive)
    now = utcnow()

    task = store.run(operations.cancel(store.dialect, task_id, now))

    assert task.status is S.CANCELLED
    assert task.finished_at == now


def test_a_cancelled_task_is_not_claimable(
    database: Database, store: Store, settings: Settings
) -> None:
    task_id = create(database, settings)
    store.run(operations.cancel(store.dialect, task_id, utcnow()))
    assert claim(database) == []


@pytest.mark.parametrize("status", FINAL)
def test_cancel_of_a_finished_task_is_refused(
    database: Database, store: Store, settings: Settings, status: MaintenanceTaskStatus
) -> None:
    task_id = create(database, settings)
    set_status(database, task_id, status)
    with pytest.raises(InvalidTransition):
        store.run(operations.cancel(store.dialect, task_id, utcnow()))
    assert status_of(store, task_id) is status


def test_cancel_of_a_working_task_requests_cancellation_and_keeps_it_working(
    database: Database, store: Store, settings: Settings
) -> None:
    task_id = create(database, settings)
    assert claim(database) == [task_id]
    now = utcnow()

    task = store.run(operations.cancel(store.dialect, task_id, now))

    assert task.status is S.WORKING
    assert task.cancel_requested_at == now
    assert task.lease_token == "test-worker"


def test_a_second_cancel_of_a_working_task_keeps_the_first_request_time(
    database: Database, store: Store, settings: Settings
) -> None:
    task_id = create(database, settings)
    claim(database)
    first = utcnow()
    store.run(operations.cancel(store.dialect, task_id, first))

    task = store.run(operations.cancel(store.dialect, task_id, first + timedelta(seconds=5)))

    assert (task.status, task.cancel_requested_at) == (S.WORKING, first)


def test_cancel_of_a_missing_task_raises_task_not_found(store: Store) -> None:
    with pytest.raises(TaskNotFound):
        store.run(operations.cancel(store.dialect, 999_999, utcnow()))


# ---------------------------------------------------------------- retry


@pytest.mark.parametrize("status", [S.ERROR, S.CANCELLED])
def test_retry_makes_a_failed_task_pending_with_attempts_reset(
    database: Database, store: Store, settings: Settings, status: MaintenanceTaskStatus
) -> None:
    task_id = create(database, settings)
    set_status(
        database,
        task_id,
        status,
        attempts=3,
        finished_at=utcnow(),
        error={"type": "RuntimeError", "message": "boom", "traceback": None},
    )
    now = utcnow()

    task = store.run(operations.retry(store.dialect, task_id, now))

    assert task.status is S.PENDING
    assert (task.attempts, task.start_at, task.finished_at, task.error) == (0, now, None, None)


def test_a_retried_task_is_claimable_again(
    database: Database, store: Store, settings: Settings
) -> None:
    task_id = create(database, settings)
    assert claim(database) == [task_id]
    set_status(database, task_id, S.ERROR)
    store.run(operations.retry(store.dialect, task_id, utcnow()))
    assert claim(database) == [task_id]


def test_retry_of_a_cancelled_task_clears_the_cancel_request(
    database: Database, store: Store, settings: Settings
) -> None:
    task_id = create(database, settings)
    store.run(operations.cancel(store.dialect, task_id, utcnow()))
    task = store.run(operations.retry(store.dialect, task_id, utcnow()))
    assert task.cancel_requested_at is None


@pytest.mark.parametrize("status", [S.INACTIVE, S.PENDING, S.WORKING, S.COMPLETED])
def test_retry_of_a_task_that_did_not_fail_is_refused(
    database: Database, store: Store, settings: Settings, status: MaintenanceTaskStatus
) -> None:
    task_id = create(database, settings)
    set_status(database, task_id, status)
    with pytest.raises(InvalidTransition):
        store.run(operations.retry(store.dialect, task_id, utcnow()))
    assert status_of(store, task_id) is status


def test_retry_of_a_missing_task_raises_task_not_found(store: Store) -> None:
    with pytest.raises(TaskNotFound):
        store.run(operations.retry(store.dialect, 999_999, utcnow()))
