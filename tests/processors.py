"""Processors the test suite runs; allowlisted by the backend fixture's settings."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from typing import Any, ClassVar

from pydantic import ConfigDict

from nightcrew import MaintenanceTask, MaintenanceTaskProcessor


class Echo(MaintenanceTaskProcessor):
    """Returns its configuration, so a test can see which task ran."""

    value: int = 0
    label: str = ""

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        return {"value": self.value, "label": self.label, "task_id": task.id}


class StrictEcho(MaintenanceTaskProcessor):
    """`Echo` that opts into strict fields: an unknown key in its configuration is refused."""

    model_config = ConfigDict(extra="forbid")
    value: int = 0

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        return {"value": self.value}


class SyncEcho(MaintenanceTaskProcessor):
    """A plain ``def __call__``: must run in a thread, off the event loop."""

    value: int = 0

    def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        time.sleep(0.01)
        return {"value": self.value, "sync": True}


class Boom(MaintenanceTaskProcessor):
    """Always raises."""

    message: str = "boom"

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        raise RuntimeError(self.message)


class Sleep(MaintenanceTaskProcessor):
    """Sleeps, for timeouts, cancellation, shutdown and crash tests."""

    seconds: float = 1.0

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        await asyncio.sleep(self.seconds)
        return {"slept": self.seconds}


class RecordRun(MaintenanceTaskProcessor):
    """Appends one line per run to a file, so exactly-once can be checked across processes."""

    path: str
    key: str
    seconds: float = 0.0

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        if self.seconds:
            await asyncio.sleep(self.seconds)
        with open(self.path, "a") as f:  # noqa: ASYNC230 - one short append, by design
            f.write(f"{self.key} {os.getpid()}\n")
        return {"key": self.key}


class Retrying(MaintenanceTaskProcessor):
    """Fails its first ``failures`` attempts, then succeeds."""

    failures: int = 1
    max_attempts: ClassVar[int] = 3
    backoff_base: ClassVar[float] = 0.05

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew.execution import current_attempt

        if current_attempt() <= self.failures:
            raise RuntimeError(f"attempt {current_attempt()} fails")
        return {"attempt": current_attempt()}


class NotAProcessor:
    """Importable, allowlisted, but not a processor: must be refused."""


# ---------------------------------------------------------------- engine tests (worker)


def _wait_for_path(path: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


async def _await_path(path: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):  # noqa: ASYNC240 - one stat per poll, in tests
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


class WaitForFile(MaintenanceTaskProcessor):
    """Stays WORKING until ``path`` exists (or ``give_up_after`` seconds pass)."""

    path: str
    give_up_after: float = 60.0

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        if not await _await_path(self.path, self.give_up_after):
            raise RuntimeError(f"{self.path} never appeared")
        return {"released": True}


class SyncWaitForFile(MaintenanceTaskProcessor):
    """A sync processor that blocks its thread until ``path`` exists."""

    path: str
    give_up_after: float = 30.0

    def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        import threading

        released = _wait_for_path(self.path, self.give_up_after)
        return {
            "released": released,
            "in_main_thread": threading.current_thread() is threading.main_thread(),
        }


class SyncUntilCancelled(MaintenanceTaskProcessor):
    """Polls ``is_cancel_requested()`` from its thread and writes ``marker`` when it sees it."""

    marker: str
    give_up_after: float = 30.0

    def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew.execution import is_cancel_requested

        deadline = time.monotonic() + self.give_up_after
        while time.monotonic() < deadline:
            if is_cancel_requested():
                with open(self.marker, "w") as f:
                    f.write("cancel seen\n")
                return {"stopped": True}
            time.sleep(0.01)
        return {"stopped": False}


class ReportsProgress(MaintenanceTaskProcessor):
    """Reports ``steps`` progress values in a tight loop, then waits for ``path``."""

    path: str
    steps: int = 50
    give_up_after: float = 60.0

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew.execution import report_progress

        for i in range(1, self.steps + 1):
            await report_progress(i * 100 / (self.steps + 1), f"step {i}")
        await _await_path(self.path, self.give_up_after)
        return {"steps": self.steps}


class SyncReportsProgress(MaintenanceTaskProcessor):
    """Reports progress from a thread (plain call), then waits for ``path``."""

    path: str
    percent: float = 42.0
    message: str = "from a thread"

    def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew.execution import report_progress

        report_progress(self.percent, self.message)
        _wait_for_path(self.path, 30.0)
        return {}


class AsksRetry(MaintenanceTaskProcessor):
    """Asks to be run again after ``delay`` seconds on its first attempt, then succeeds."""

    delay: float = 0.1
    max_attempts: ClassVar[int] = 3

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew import RetryTask
        from nightcrew.execution import current_attempt

        if current_attempt() == 1:
            raise RetryTask("not ready yet", delay=self.delay)
        return {"attempt": current_attempt()}


class GivesUp(MaintenanceTaskProcessor):
    """Fails without retry although attempts remain."""

    message: str = "cannot ever work"
    max_attempts: ClassVar[int] = 3

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew import FailTask

        raise FailTask(self.message)


class FailsWithLongBackoff(MaintenanceTaskProcessor):
    """Always fails; its retries wait a minute or more, so backoff can be measured."""

    max_attempts: ClassVar[int] = 5
    backoff_base: ClassVar[float] = 60.0
    backoff_max: ClassVar[float] = 3600.0

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        raise RuntimeError("still failing")


#: Per group: tasks of `Tracked` running now, and the most ever seen at once (in-process).
TRACKED_RUNNING: dict[str, int] = {}
TRACKED_MAX: dict[str, int] = {}


class Tracked(MaintenanceTaskProcessor):
    """Counts how many tasks of its ``group`` run at once in this process."""

    group: str
    seconds: float = 0.2

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        TRACKED_RUNNING[self.group] = TRACKED_RUNNING.get(self.group, 0) + 1
        TRACKED_MAX[self.group] = max(TRACKED_MAX.get(self.group, 0), TRACKED_RUNNING[self.group])
        try:
            await asyncio.sleep(self.seconds)
        finally:
            TRACKED_RUNNING[self.group] -= 1
        return {"group": self.group}


class HasClassTimeout(MaintenanceTaskProcessor):
    """Sleeps ``seconds`` under a class-level default timeout of 0.3 s."""

    seconds: float = 60.0
    timeout: ClassVar[float | None] = 0.3

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        await asyncio.sleep(self.seconds)
        return {"slept": self.seconds}


class SlowOnFirstAttempt(MaintenanceTaskProcessor):
    """Sleeps ``seconds`` on attempt 1 (to time out), returns at once afterwards."""

    seconds: float = 60.0
    max_attempts: ClassVar[int] = 2
    backoff_base: ClassVar[float] = 0.05

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew.execution import current_attempt

        if current_attempt() == 1:
            await asyncio.sleep(self.seconds)
        return {"attempt": current_attempt()}


class ProgressThenEnd(MaintenanceTaskProcessor):
    """Reports one progress value, then at once returns (or raises, with ``fail``)."""

    percent: float = 80.0
    message: str = "last words"
    fail: bool = False

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew.execution import report_progress

        await report_progress(self.percent, self.message)
        if self.fail:
            raise RuntimeError("failed after reporting progress")
        return {}


class OriginUpgrade(MaintenanceTaskProcessor):
    """Stands in for the origin's ``UserVersionUpgradeProcessor``: records when it ran.

    Appends ``<first user id> <start epoch> <end epoch>`` to ``path`` per run, so a test
    can check the origin's spacing (``delay`` seconds after a task) from the runs alone.
    """

    user_ids: list[str]
    path: str

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        started = time.time()
        await asyncio.sleep(0.05)
        with open(self.path, "a") as f:  # noqa: ASYNC230 - one short append, by design
            f.write(f"{self.user_ids[0]} {started:.6f} {time.time():.6f}\n")
        return {"upgraded": len(self.user_ids)}


class CollectResults(MaintenanceTaskProcessor):
    """A fan-in step: returns its dependencies' results, by step name."""

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew import adependency_results

        results = await adependency_results()
        return {"results": results, "count": len(results)}


class SyncCollectResults(MaintenanceTaskProcessor):
    """`CollectResults` from a thread (a plain ``def``)."""

    def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew import dependency_results

        return {"results": dependency_results()}


class Timed(MaintenanceTaskProcessor):
    """Records when its body started and ended (epoch seconds), in its result."""

    seconds: float = 0.0

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        started = time.time()
        await asyncio.sleep(self.seconds)
        return {"started": started, "ended": time.time()}


class RecordGcThreshold(MaintenanceTaskProcessor):
    """Writes the cyclic collector's young-generation threshold as the worker runs it."""

    path: str

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        with open(self.path, "w") as f:  # noqa: ASYNC230 - one short write, by design
            f.write(str(gc.get_threshold()[0]))
        return {}
