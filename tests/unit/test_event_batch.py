"""`EventBatch`: a store's emission held as columns is, to every reader, the events it
stands for — as a sequence, on the wire and in the metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightcrew.events import EventBatch, EventBus, EventKind, TaskEvent
from nightcrew.live.wire import decode, encode, encode_emissions
from nightcrew.metrics import TaskEventCollector
from nightcrew.models import MaintenanceTaskStatus as S
from tests.unit.test_metrics_counting import state
from tests.unit.test_wire import expected

AT = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
SCOPE = "public"
maybe_seconds = st.none() | st.floats(min_value=0, max_value=10_000, allow_nan=False)
KINDS = [
    (EventKind.STARTED, S.WORKING),
    (EventKind.COMPLETED, S.COMPLETED),
    (EventKind.FAILED, S.ERROR),
    (EventKind.RETRIED, S.PENDING),
]


@st.composite
def batches(draw: st.DrawFn) -> EventBatch:
    """A batch as the store makes them: one kind, a few queues, processors, pipelines."""
    ids = draw(st.lists(st.integers(1, 10**12), unique=True, min_size=1, max_size=700))
    n = len(ids)
    if draw(st.booleans()):  # tasks enqueued together: a run of ids
        ids = list(range(ids[0], ids[0] + n))

    def column(values: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(values, min_size=n, max_size=n))

    kind, status = draw(st.sampled_from(KINDS))
    detail = st.none() | st.fixed_dictionaries({"error": st.text(max_size=80)})
    return EventBatch(
        kind,
        AT,
        status,
        ids,
        column(st.sampled_from(["default", "reports"])),
        column(st.sampled_from(["p.X", "p.Y"])),
        column(st.integers(1, 5)),
        progress=column(st.none() | st.floats(0, 100, allow_nan=False)),
        durations=column(maybe_seconds),
        details=column(detail) if draw(st.booleans()) else None,
        pipeline_ids=column(st.none() | st.integers(1, 3)),
        schedules=column(st.none() | st.just("nightly")),
        waited=column(maybe_seconds),
    )


def uniform(n: int, **columns: Any) -> EventBatch:
    return EventBatch(
        EventKind.COMPLETED,
        AT,
        S.COMPLETED,
        list(range(1, n + 1)),
        ["default"] * n,
        ["p.X"] * n,
        [1] * n,
        **columns,
    )


def test_a_batch_reads_as_the_events_it_stands_for() -> None:
    batch = uniform(3, durations=[0.5, None, 0.25])
    first = TaskEvent(EventKind.COMPLETED, 1, AT, S.COMPLETED, "default", "p.X", 1, duration=0.5)
    assert len(batch) == 3
    assert batch[0] == first
    assert batch[-1].task_id == 3
    assert batch[1:] == list(batch)[1:]
    assert next(iter(batch)) == first
    assert [e.duration for e in batch] == [0.5, None, 0.25]
    with pytest.raises(IndexError):
        batch[3]


def test_a_column_of_nothing_but_none_is_dropped() -> None:
    batch = uniform(2, durations=[None, None], waited=[0.1, None])
    assert batch.durations is None
    assert batch.waited == [0.1, None]


def test_a_batch_of_one_queue_and_processor_is_one_group() -> None:
    assert uniform(500).groups() == [(("default", "p.X", None, None), None)]


def test_a_batch_is_handed_whole_to_batch_subscribers_and_evented_to_others() -> None:
    bus, batches_seen, events_seen = EventBus(), [], []
    bus.subscribe_batches(batches_seen.append)
    bus.subscribe(events_seen.append, [EventKind.COMPLETED])
    batch = uniform(2)
    bus.emit_all(batch)
    assert batches_seen == [batch]
    assert [e.task_id for e in events_seen] == [1, 2]


@settings(max_examples=150, deadline=None)
@given(batches())
def test_a_batch_comes_back_from_the_wire_as_its_events_would(batch: EventBatch) -> None:
    received: dict[int, list[Any]] = {}
    for payload in encode_emissions([batch], SCOPE, "host:1:abc"):
        assert len(payload.encode()) <= 7000
        decoded = decode(payload, SCOPE)
        assert decoded is not None
        received.update({row[1]: row for row in decoded.rows})
    assert within_a_microsecond(received, expected(list(batch)))


def within_a_microsecond(got: dict[int, list[Any]], want: dict[int, list[Any]]) -> bool:
    """Rows equal, durations and waits to the microsecond (JSON columns carry whole
    microseconds, packed ones the exact seconds)."""
    assert got.keys() == want.keys()
    for task_id, row in want.items():
        other = got[task_id]
        for i, (a, b) in enumerate(zip(other, row, strict=True)):
            if i in (9, 14) and a is not None and b is not None:
                assert abs(a - b) <= 1e-6, (task_id, i, a, b)
            else:
                assert a == b, (task_id, i, a, b)
    return True


def test_a_claim_is_packed_and_comes_back_exact() -> None:
    waits = [0.25 + i / 1000 for i in range(500)]
    claim = EventBatch(
        EventKind.STARTED,
        AT,
        S.WORKING,
        list(range(10**9, 10**9 + 500)),
        ["default"] * 500,
        ["p.X"] * 500,
        [1] * 500,
        waited=waits,
    )
    payloads = encode(claim, SCOPE, "host:1:abc")
    groups = [g for p in payloads for g in json.loads(p)["g"]]
    assert all(isinstance(g[8], str) and g[9] == 1 for g in groups)  # packed ids, one attempt
    rows = [row for p in payloads for row in decode(p, SCOPE).rows]  # type: ignore[union-attr]
    assert [r[1] for r in rows] == list(claim.task_ids)
    assert [r[14] for r in rows] == waits
    assert {r[6] for r in rows} == {1}


def test_a_payload_of_the_previous_version_is_still_read() -> None:
    text = json.dumps(
        {
            "v": 2,
            "s": SCOPE,
            "o": "old:1:abc",
            "g": [["completed", 1.5, "COMPLETED", "q", "p.X", None, None, None, [7, 8],
                   [1, 2], None, None, [1500, None], None, None]],
        }
    )  # fmt: skip
    decoded = decode(text, SCOPE)
    assert decoded is not None
    assert [(r[1], r[6], r[9]) for r in decoded.rows] == [(7, 1, 0.0015), (8, 2, None)]


@settings(max_examples=150, deadline=None)
@given(batches())
def test_a_batch_counts_in_the_metrics_as_its_events_would(batch: EventBatch) -> None:
    together, each = TaskEventCollector(), TaskEventCollector()
    together.on_events(batch)
    each._count_each(list(batch))
    assert state(together) == state(each)


def test_a_drain_batch_of_500_comes_back_whole_in_payloads_that_fit() -> None:
    batch = uniform(500, durations=[0.000123] * 500)
    payloads = encode(batch, SCOPE, "host:1:abc")
    rows = [row for p in payloads for row in decode(p, SCOPE).rows]  # type: ignore[union-attr]
    assert [r[1] for r in rows] == list(range(1, 501))
    assert {r[9] for r in rows} == {0.000123}
    assert all(len(p) <= 7000 for p in payloads)


def test_a_run_of_ids_goes_as_its_first_and_count() -> None:
    first = 2**40  # beyond 32 bits, as a run may be
    claim = EventBatch(
        EventKind.STARTED,
        AT,
        S.WORKING,
        list(range(first, first + 500)),
        ["default"] * 500,
        ["p.X"] * 500,
        [1] * 500,
        waited=[0.5] * 500,
    )
    payloads = encode(claim, SCOPE, "host:1:abc")
    groups = [g for p in payloads for g in json.loads(p)["g"]]
    assert [g[8] for g in groups] == [f"r{first}:500"]
    rows = [row for p in payloads for row in decode(p, SCOPE).rows]  # type: ignore[union-attr]
    assert [r[1] for r in rows] == list(claim.task_ids)


def test_a_run_without_other_columns_is_cut_in_parts_of_at_most_max_run() -> None:
    batch = uniform(25_000)
    payloads = encode(batch, SCOPE, "host:1:abc")
    groups = [g for p in payloads for g in json.loads(p)["g"]]
    assert [g[8] for g in groups] == ["r1:10000", "r10001:10000", "r20001:5000"]
    rows = [row for p in payloads for row in decode(p, SCOPE).rows]  # type: ignore[union-attr]
    assert [r[1] for r in rows] == list(range(1, 25_001))


@pytest.mark.parametrize("run", ["r1:0", "r1:-5", "r1:99999999", "r1", "rx:3"])
def test_a_payload_with_a_run_out_of_bounds_is_refused(run: str) -> None:
    text = json.dumps(
        {"v": 4, "s": SCOPE, "o": "x:1:abc",
         "g": [["completed", 1.5, "COMPLETED", "q", "p.X", None, None, None, run,
                1, None, None, None, None, None]]}
    )  # fmt: skip
    assert decode(text, SCOPE) is None
