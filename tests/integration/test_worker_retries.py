"""Retries with backoff, the processor's retry/fail signals, and timeouts, on both databases."""

from __future__ import annotations

from pathlib import Path

from nightcrew import MaintenanceTaskStatus, create_maintenance_task
from nightcrew.models import utcnow
from nightcrew.store import Database, TaskStore
from nightcrew.values import TaskView
from tests.conftest import Backend
from tests.helpers import (
    get_task,
    run_until_idle,
    running_worker,
    set_columns,
    wait_for_status,
)
from tests.processors import (
    AsksRetry,
    Boom,
    FailsWithLongBackoff,
    GivesUp,
    HasClassTimeout,
    Retrying,
    Sleep,
    SlowOnFirstAttempt,
    SyncWaitForFile,
)

S = MaintenanceTaskStatus


def make_due(database: Database, task_id: int) -> None:
    """Skip a retry's wait: the task becomes due now."""
    set_columns(database, task_id, start_at=utcnow())


def retry_delay(row: TaskView) -> float:
    """Seconds between the failed attempt being written and the retry being due."""
    return float((row.start_at - row.updated_at).total_seconds())


# ---------------------------------------------------------------- attempts


async def test_max_attempts_defaults_to_one_so_a_failure_is_final(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(Boom(), database=database, settings=backend.settings())
    assert task.max_attempts == 1

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.ERROR
    assert row.attempts == 1
    assert "retry_at" not in row.info


async def test_failed_attempts_are_retried_until_one_succeeds(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        Retrying(failures=2), database=database, settings=backend.settings()
    )
    assert task.max_attempts == 3  # the processor's class default

    async with running_worker(backend) as (_, worker):
        row = await wait_for_status(astore, task.id, S.COMPLETED, S.ERROR, worker=worker)

    assert row.status is S.COMPLETED
    assert row.attempts == 3
    assert row.info == {"attempt": 3}


async def test_task_ends_error_when_every_attempt_fails(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        Retrying(failures=10), database=database, settings=backend.settings()
    )

    async with running_worker(backend) as (_, worker):
        row = await wait_for_status(astore, task.id, S.COMPLETED, S.ERROR, worker=worker)

    assert row.status is S.ERROR
    assert row.attempts == 3
    assert row.info["error"] == "attempt 3 fails"
    assert row.error["type"] == "RuntimeError"
    assert row.finished_at is not None


async def test_per_task_max_attempts_overrides_the_processor_default(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        Retrying(failures=1), max_attempts=1, database=database, settings=backend.settings()
    )

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.ERROR
    assert row.attempts == 1
    assert row.info["error"] == "attempt 1 fails"


async def test_a_failed_attempt_waits_for_its_backoff_before_running_again(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        FailsWithLongBackoff(), database=database, settings=backend.settings()
    )

    await run_until_idle(backend)  # returns: the retry is not due yet

    row = await get_task(astore, task.id)
    assert row.status is S.PENDING
    assert row.attempts == 1
    assert row.info["error"] == "still failing"
    assert row.finished_at is None and row.lease_token is None
    # First retry: base 60 s with "equal jitter", so between 30 and 60 seconds away.
    assert 30 - 2 <= retry_delay(row) <= 60 + 2


async def test_backoff_grows_exponentially_with_each_attempt(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        FailsWithLongBackoff(), database=database, settings=backend.settings()
    )
    delays = []
    for attempt in (1, 2, 3):
        await run_until_idle(backend)
        row = await get_task(astore, task.id)
        assert (row.status, row.attempts) == (S.PENDING, attempt)
        delays.append(retry_delay(row))
        make_due(database, task.id)

    # base * 2**(attempt-1), half of it jittered: [30, 60], [60, 120], [120, 240].
    for delay, (low, high) in zip(delays, [(30, 60), (60, 120), (120, 240)], strict=True):
        assert low - 2 <= delay <= high + 2, delays


# ---------------------------------------------------------------- RetryTask / FailTask


async def test_retry_task_runs_the_task_again_and_it_can_succeed(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        AsksRetry(delay=0.1), database=database, settings=backend.settings()
    )

    async with running_worker(backend) as (_, worker):
        row = await wait_for_status(astore, task.id, S.COMPLETED, S.ERROR, worker=worker)

    assert row.status is S.COMPLETED
    assert row.attempts == 2
    assert row.info == {"attempt": 2}


async def test_retry_task_delay_decides_when_the_task_runs_again(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        AsksRetry(delay=3600), database=database, settings=backend.settings()
    )

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.PENDING
    assert row.attempts == 1
    assert row.info["error"] == "not ready yet"
    assert 3600 - 5 <= retry_delay(row) <= 3600 + 5


async def test_retry_task_on_the_last_attempt_ends_error(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        AsksRetry(delay=0), max_attempts=1, database=database, settings=backend.settings()
    )

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.ERROR
    assert row.attempts == 1
    assert row.info["error"] == "not ready yet"


async def test_fail_task_ends_error_without_retry_although_attempts_remain(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        GivesUp(message="config is wrong"), database=database, settings=backend.settings()
    )
    assert task.max_attempts == 3

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.ERROR
    assert row.attempts == 1
    assert row.info["error"] == "config is wrong"
    assert row.error["type"] == "FailTask"


# ---------------------------------------------------------------- timeouts


async def test_async_task_past_its_timeout_ends_error_with_a_clear_reason(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        Sleep(seconds=60), timeout=0.5, database=database, settings=backend.settings()
    )

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.ERROR
    assert row.attempts == 1
    assert row.info["error_type"] == "TaskTimedOut"
    assert "timed out" in row.info["error"]
    assert "0.5" in row.info["error"]


async def test_processor_class_timeout_applies_by_default(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        HasClassTimeout(seconds=60), database=database, settings=backend.settings()
    )
    assert task.timeout == 0.3

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.ERROR
    assert row.info["error_type"] == "TaskTimedOut"


async def test_per_task_timeout_overrides_the_processor_default(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        HasClassTimeout(seconds=0.6), timeout=60, database=database, settings=backend.settings()
    )

    await run_until_idle(backend)

    row = await get_task(astore, task.id)
    assert row.status is S.COMPLETED
    assert row.info == {"slept": 0.6}


async def test_timed_out_task_is_retried_when_attempts_remain(
    backend: Backend, database: Database, astore: TaskStore
) -> None:
    task = create_maintenance_task(
        SlowOnFirstAttempt(seconds=60), timeout=0.5, database=database, settings=backend.settings()
    )

    async with running_worker(backend) as (_, worker):
        row = await wait_for_status(astore, task.id, S.COMPLETED, S.ERROR, worker=worker)

    assert row.status is S.COMPLETED
    assert row.attempts == 2
    assert row.info == {"attempt": 2}


async def test_sync_task_past_its_timeout_ends_error_without_waiting_for_its_thread(
    backend: Backend, database: Database, astore: TaskStore, tmp_path: Path
) -> None:
    """A thread cannot be killed: the task ends ERROR at its timeout; the thread runs on."""
    release = tmp_path / "release"
    task = create_maintenance_task(
        SyncWaitForFile(path=str(release), give_up_after=120),
        timeout=0.3,
        database=database,
        settings=backend.settings(),
    )

    try:
        async with running_worker(backend) as (_, worker):
            # The thread is still blocked (120 s) when the task is recorded.
            row = await wait_for_status(astore, task.id, S.COMPLETED, S.ERROR, worker=worker)
            assert not release.exists()
    finally:
        release.touch()

    assert row.status is S.ERROR
    assert row.info["error_type"] == "TaskTimedOut"
