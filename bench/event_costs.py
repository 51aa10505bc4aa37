"""What a task's live events cost in a worker, piece by piece (no database, one process).

    .venv/bin/python bench/event_costs.py

Batches of 500 events, as a drain's claims and finishes make them: building the events (as
named tuples, and as the `EventBatch` of columns the store emits), counting them for the
metrics, and encoding them as NOTIFY payloads (one emission, and a buffer of three, as the
publisher gathers them within 20 ms), each both ways. Each figure is the best of five
timings, per event.
Run it on an older revision (``git checkout REV -- src``) to compare.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from nightcrew.events import EventBatch, EventKind, TaskEvent
from nightcrew.live.wire import encode, encode_emissions
from nightcrew.metrics import TaskEventCollector
from nightcrew.models import MaintenanceTaskStatus as S

N = 500


def emission(kind: EventKind, status: S, first: int, **fields: Any) -> list[TaskEvent]:
    """One emission: its events share one time object, as the store's do."""
    at = datetime.now(UTC) + timedelta(microseconds=first)
    return [
        TaskEvent(
            kind,
            first + i,
            at,
            status,
            "default",
            "app.tasks.Nothing",
            1,
            duration=fields.get("duration"),
            waited=fields.get("waited"),
        )
        for i in range(N)
    ]


def batch(kind: EventKind, status: S, first: int, **columns: Any) -> EventBatch:
    """One emission as the store makes it: columns."""
    at = datetime.now(UTC) + timedelta(microseconds=first)
    ids = list(range(first, first + N))
    return EventBatch(kind, at, status, ids, ["default"] * N, ["app.tasks.Nothing"] * N,
                      [1] * N, **{k: [v] * N for k, v in columns.items()})  # fmt: skip


def per_event(fn: Callable[[], object], events: int) -> float:
    """Microseconds per event: the best of five timings of ``fn``."""
    runs = 200
    return min(timeit.repeat(fn, number=runs, repeat=5)) / runs / events * 1e6


def main() -> None:
    started = emission(EventKind.STARTED, S.WORKING, 0, waited=0.5)
    finished = emission(EventKind.COMPLETED, S.COMPLETED, 0, duration=0.0001)
    buffer = started + finished + emission(EventKind.STARTED, S.WORKING, N, waited=0.5)
    now = datetime.now(UTC)
    new = tuple.__new__

    def by_constructor() -> object:
        return [
            TaskEvent(EventKind.STARTED, i, now, S.WORKING, "q", "p", 1, None, None, None,
                      None, None, None, None, 0.5)
            for i in range(N)
        ]  # fmt: skip

    def by_tuple_new() -> object:
        return [
            new(TaskEvent, (EventKind.STARTED, i, now, S.WORKING, "q", "p", 1, None, None,
                            None, None, None, None, None, 0.5))
            for i in range(N)
        ]  # fmt: skip

    claim = batch(EventKind.STARTED, S.WORKING, 0, waited=0.5)
    completions = batch(EventKind.COMPLETED, S.COMPLETED, 0, durations=0.0001)
    emissions = [claim, completions, batch(EventKind.STARTED, S.WORKING, N, waited=0.5)]
    ids, queues, processors = list(range(N)), ["q"] * N, ["p"] * N
    attempts, waits = [1] * N, [0.5] * N

    def by_columns() -> object:
        return EventBatch(EventKind.STARTED, now, S.WORKING, ids, queues, processors,
                          attempts, waited=waits)  # fmt: skip

    collector = TaskEventCollector()
    rows = [
        ("build 500 events, TaskEvent(...)", per_event(by_constructor, N)),
        ("build 500 events, tuple.__new__", per_event(by_tuple_new, N)),
        ("build 500 events, an EventBatch of given columns", per_event(by_columns, N)),
        ("count a claim's 500 for the metrics", per_event(lambda: collector.on_events(started), N)),
        ("count 500 completions", per_event(lambda: collector.on_events(finished), N)),
        ("count a claim's EventBatch", per_event(lambda: collector.on_events(claim), N)),
        (
            "count an EventBatch of completions",
            per_event(lambda: collector.on_events(completions), N),
        ),
        (
            "encode one emission of 500 completions",
            per_event(lambda: encode(finished, "s", "o"), N),
        ),
        ("encode one emission of 500 starts", per_event(lambda: encode(started, "s", "o"), N)),
        (
            "encode a buffer of 3 emissions (1,500 events)",
            per_event(lambda: encode(buffer, "s", "o"), len(buffer)),
        ),
        ("encode a claim's EventBatch", per_event(lambda: encode(claim, "s", "o"), N)),
        (
            "encode an EventBatch of completions",
            per_event(lambda: encode(completions, "s", "o"), N),
        ),
        (
            "encode a buffer of 3 EventBatches (1,500 events)",
            per_event(lambda: encode_emissions(emissions, "s", "o"), 3 * N),
        ),
    ]
    for label, us in rows:
        print(f"  {label:<52} {us:6.2f} us/event")


if __name__ == "__main__":
    main()
