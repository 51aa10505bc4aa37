"""Processors of the observability tests (allowlisted by `tests.observe.conftest`)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from nightcrew import MaintenanceTask, MaintenanceTaskProcessor

#: What `record_error` saw: (task id, attempt, exception type), for the hook-by-path test.
SEEN_ERRORS: list[tuple[int, int, str]] = []


class Ticking(MaintenanceTaskProcessor):
    """Reports progress every ``interval`` seconds, the report's ``time.time()`` as its
    message (so a client can tell how late it saw it), until ``path`` exists or ``steps``
    reports were made."""

    steps: int = 3
    interval: float = 0.05
    path: str | None = None

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew.execution import report_progress

        done = 0
        for done in range(1, self.steps + 1):
            await report_progress(min(99.0, float(done)), repr(time.time()))
            if self.path is not None and os.path.exists(self.path):  # noqa: ASYNC240
                break
            await asyncio.sleep(self.interval)
        return {"ticks": done}


def record_error(task: MaintenanceTask, exc: BaseException) -> None:
    SEEN_ERRORS.append((task.id, task.attempts, type(exc).__name__))
