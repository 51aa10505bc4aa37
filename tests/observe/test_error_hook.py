"""The error hook: called with the task and the exception once per failed attempt (retried
or not), never for a success or a RetryTask, from the app option or a settings path; a hook
that raises changes nothing about the task."""

from __future__ import annotations

import asyncio

from nightcrew import MaintenanceTask, Nightcrew, create_maintenance_task
from nightcrew.models import MaintenanceTaskStatus
from tests.conftest import Backend
from tests.helpers import get_task, wait_for_status
from tests.observe.conftest import observe_settings
from tests.observe_processors import SEEN_ERRORS
from tests.processors import AsksRetry, Boom, Echo, Retrying

S = MaintenanceTaskStatus


async def _run(app: Nightcrew, *task_ids: int, final: S = S.COMPLETED) -> None:
    worker = app.worker(concurrency=4)
    run = asyncio.create_task(worker.run())
    try:
        for task_id in task_ids:
            await wait_for_status(app.store, task_id, S.COMPLETED, S.ERROR, worker=run)
    finally:
        worker.request_stop()
        await asyncio.wait_for(run, 60)


async def test_the_error_hook_is_called_once_per_failed_attempt(backend: Backend) -> None:
    calls: list[tuple[int, int, BaseException]] = []

    def hook(task: MaintenanceTask, exc: BaseException) -> None:
        calls.append((task.id, task.attempts, exc))

    app = Nightcrew(observe_settings(backend), on_error=hook)
    try:
        flaky = create_maintenance_task(Retrying(failures=2), database=app)
        ok = create_maintenance_task(Echo(), database=app)
        asked = create_maintenance_task(AsksRetry(), database=app)
        await _run(app, flaky.id, ok.id, asked.id)
        assert (await get_task(app.store, flaky.id)).status is S.COMPLETED
    finally:
        await app.aclose()
    assert [(task_id, attempt) for task_id, attempt, _ in calls] == [(flaky.id, 1), (flaky.id, 2)]
    assert all(isinstance(exc, RuntimeError) for _, _, exc in calls)
    assert str(calls[0][2]) == "attempt 1 fails"


async def test_the_error_hook_from_settings_and_a_failing_hook_change_nothing(
    backend: Backend,
) -> None:
    SEEN_ERRORS.clear()
    by_path = Nightcrew(
        observe_settings(backend, error_hook="tests.observe_processors:record_error")
    )
    try:
        boom = create_maintenance_task(Boom(), database=by_path, max_attempts=1)
        await _run(by_path, boom.id)
    finally:
        await by_path.aclose()
    assert list(SEEN_ERRORS) == [(boom.id, 1, "RuntimeError")]

    def broken(task: MaintenanceTask, exc: BaseException) -> None:
        raise ValueError("the tracker is down")

    app = Nightcrew(observe_settings(backend), on_error=broken)
    try:
        failing = create_maintenance_task(Boom(message="real"), database=app, max_attempts=1)
        await _run(app, failing.id)
        view = await get_task(app.store, failing.id)
    finally:
        await app.aclose()
    assert view.status is S.ERROR and view.error is not None
    assert view.error["message"] == "real"
