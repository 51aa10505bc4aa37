"""The metrics' counting: a batch counted by columns moves the numbers as one by one would."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from nightcrew.events import EventKind, TaskEvent
from nightcrew.metrics import PICKUP_BUCKETS, TaskEventCollector, _Histogram
from nightcrew.models import MaintenanceTaskStatus as S

AT = datetime(2026, 12, 2, tzinfo=UTC)
values = st.lists(st.floats(min_value=-5, max_value=1e5, allow_nan=False), max_size=300)


@given(values)
def test_observing_many_values_at_once_is_observing_each(found: list[float]) -> None:
    together, each = _Histogram(PICKUP_BUCKETS), _Histogram(PICKUP_BUCKETS)
    together.observe_all(found)
    for value in found:
        each.observe(max(0.0, value))
    assert together.counts == each.counts
    assert abs(together.total - each.total) <= 1e-9 * max(1.0, abs(each.total))


def finished(kind: EventKind, status: S, queue: str, duration: float | None) -> TaskEvent:
    return TaskEvent(kind, 1, AT, status, queue, "p.X", 1, None, None, duration)


def started(queue: str, waited: float | None) -> TaskEvent:
    return TaskEvent(EventKind.STARTED, 1, AT, S.WORKING, queue, "p.X", waited=waited)


events = st.lists(
    st.one_of(
        st.builds(started, st.sampled_from(["a", "b"]), st.none() | st.floats(-1, 100)),
        st.builds(
            finished,
            st.sampled_from([EventKind.COMPLETED, EventKind.FAILED]),
            st.sampled_from([S.COMPLETED, S.ERROR]),
            st.sampled_from(["a", "b"]),
            st.none() | st.floats(0, 100),
        ),
    ),
    min_size=1,
    max_size=50,
)


def state(c: TaskEventCollector) -> tuple[object, ...]:
    return (
        dict(c.finished),
        {k: (h.counts, round(h.total, 6)) for k, h in c.durations.items()},
        {k: (h.counts, round(h.total, 6)) for k, h in c.pickups.items()},
    )


@settings(max_examples=200)
@given(events)
def test_an_emission_counts_the_same_as_event_by_event(batch: list[TaskEvent]) -> None:
    together, each = TaskEventCollector(), TaskEventCollector()
    together.on_events(batch)
    each._count_each(batch)  # the event-by-event way, whatever the emission's shape
    assert state(together) == state(each)


def test_a_claim_of_one_queue_fills_its_pickup_histogram() -> None:
    collector = TaskEventCollector()
    collector.on_events([started("a", 0.002), started("a", 0.5), started("a", None)])
    histogram = collector.pickups["a"]
    assert sum(histogram.counts) == 2
    assert abs(histogram.total - 0.502) < 1e-9
