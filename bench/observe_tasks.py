"""Processors of ``bench/observe.py`` (its workers' allowlist: ``observe_tasks``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nightcrew import MaintenanceTask, MaintenanceTaskProcessor, report_progress


class Nothing(MaintenanceTaskProcessor):
    """The drain's task: returns at once."""

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        return {}


class Ticker(MaintenanceTaskProcessor):
    """Reports progress every ``interval`` seconds for ``seconds``, the report's
    ``time.time()`` as its message: a client computes how late it saw each report."""

    seconds: float = 10.0
    interval: float = 0.1

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        end = time.time() + self.seconds
        n = 0
        while time.time() < end:
            n += 1
            await report_progress(
                min(99.0, n * 100 * self.interval / self.seconds), repr(time.time())
            )
            await asyncio.sleep(self.interval)
        return {"reports": n}
