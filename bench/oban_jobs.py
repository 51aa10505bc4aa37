"""oban's workers for the benchmark, in an importable module: oban stores a job's worker
as its import path (``oban_jobs.Noop``) and resolves it so in the worker process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from oban import worker

QUEUE = "bench"
#: Jobs of `Noop` run in this process.
executed = 0
#: (enqueued at, started at) of every non-warm-up `Probe`, in this process.
records: list[tuple[float, float]] = []
#: Called after each recorded probe (the latency scenario stops the worker there).
on_record: Callable[[], None] | None = None


@worker(queue=QUEUE)
class Noop:
    async def process(self, job: Any) -> None:
        global executed
        executed += 1


@worker(queue=QUEUE)
class Probe:
    """Records when its body starts, against ``t0`` taken by the enqueuer before enqueuing."""

    async def process(self, job: Any) -> None:
        started = time.time()
        if not job.args["warm"]:
            records.append((job.args["t0"], started))
            if on_record is not None:
                on_record()
