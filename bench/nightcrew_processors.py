"""Processors used by nightcrew's side of the benchmark.

The module is the worker's allowlist in ``sc_nightcrew.py``
(``processor_modules=["nightcrew_processors"]``, ``NIGHTCREW_PROCESSOR_MODULES`` for the
burst's ``nightcrew run --once``) and found on ``sys.path`` because the scenario scripts run
from ``bench/`` (the burst puts ``bench/`` on ``PYTHONPATH``). It uses only nightcrew's
public API (``MaintenanceTaskProcessor``, ``MaintenanceTask``), so a refactor inside the
package does not move it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nightcrew import MaintenanceTask, MaintenanceTaskProcessor

#: (enqueued at, started at) of every non-warm-up `Probe`, in this worker process.
records: list[tuple[float, float]] = []
#: Called after each recorded probe / counted task (the scenario stops the worker there).
on_record: Callable[[], None] | None = None
#: `Noop` tasks run in this process.
executed = 0
#: `Count` tasks run in this process, and the time the latest one started.
counted = 0
last_counted_at = 0.0


class Noop(MaintenanceTaskProcessor):
    """Does nothing but count itself: the drain, burst and memory scenarios' task."""

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        global executed
        executed += 1
        return {}


class Probe(MaintenanceTaskProcessor):
    """Records when its body starts, against ``t0`` taken by the enqueuer before enqueuing.

    Both are ``time.time()`` on the same host, so the difference is enqueue-to-start.
    """

    t0: float
    warm: bool = False

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        started = time.time()
        if not self.warm:
            records.append((self.t0, started))
            if on_record is not None:
                on_record()
        return {}


class Count(MaintenanceTaskProcessor):
    """A no-op that counts itself (the backlog scenario stops after a number of claims)."""

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        global counted, last_counted_at
        counted += 1
        last_counted_at = time.time()
        if on_record is not None:
            on_record()
        return {}
