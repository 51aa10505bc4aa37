"""chancy's jobs for the benchmark, in an importable module: chancy stores a job's function
as its import path (``chancy_jobs.noop``) and imports it so in the worker process."""

from __future__ import annotations

import time
from collections.abc import Callable

from chancy import job

QUEUE = "bench"
#: Jobs of `noop` run in this process.
executed = 0
#: (enqueued at, started at) of every non-warm-up `probe`, in this process.
records: list[tuple[float, float]] = []
#: Called after each recorded probe (the latency scenario stops the worker there).
on_record: Callable[[], None] | None = None


@job(queue=QUEUE)
async def noop() -> None:
    global executed
    executed += 1


@job(queue=QUEUE)
async def probe(*, t0: float, warm: bool) -> None:
    """Records when its body starts, against ``t0`` taken by the enqueuer before enqueuing."""
    started = time.time()
    if not warm:
        records.append((t0, started))
        if on_record is not None:
            on_record()
