"""Live-event payloads: what `encode` packs, `decode` gives back, within NOTIFY's limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nightcrew.events import EventKind, TaskEvent
from nightcrew.live.wire import MAX_PAYLOAD, decode, encode, rows_of
from nightcrew.models import MaintenanceTaskStatus

AT = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
SCOPE = "public"

texts = st.text(max_size=120)  # non-ASCII too: JSON escapes it, up to 6 bytes a character
seconds = st.none() | st.floats(min_value=0, max_value=10_000, allow_nan=False)
details = st.none() | st.dictionaries(
    st.sampled_from(["error", "error_type", "retry_at", "pipeline_id", "schedule"]),
    texts | st.integers(0, 10**6) | st.none(),
    max_size=2,
)


@st.composite
def emissions(draw: st.DrawFn) -> list[TaskEvent]:
    """One emission: at most one event per task, a few kinds, queues and times."""
    ids = draw(st.lists(st.integers(1, 10**12), unique=True, max_size=700))
    times = [AT, AT + timedelta(seconds=1)]
    return [
        TaskEvent(
            draw(st.sampled_from([EventKind.STARTED, EventKind.COMPLETED, EventKind.PROGRESS])),
            task_id,
            draw(st.sampled_from(times)),
            draw(st.sampled_from([MaintenanceTaskStatus.WORKING, MaintenanceTaskStatus.COMPLETED])),
            draw(st.sampled_from(["default", "reports"])),
            "observe_tasks.Nothing",
            draw(st.none() | st.integers(1, 5)),
            draw(st.none() | st.floats(0, 100, allow_nan=False)),
            draw(st.none() | texts),
            draw(seconds),
            None,
            draw(details),
            draw(st.none() | st.integers(1, 99)),
            None,
            draw(seconds),
        )
        for task_id in ids
    ]


def expected(events: list[TaskEvent]) -> dict[int, list[Any]]:
    """What a receiver should get: `rows_of`, with durations and waits in whole µs."""
    out = {}
    for row in rows_of(events):
        for i in (9, 14):
            if row[i] is not None:
                row[i] = int(row[i] * 1_000_000) / 1_000_000
        out[row[1]] = json.loads(json.dumps(row))  # enums and tuples as JSON gives them back
    return out


@settings(max_examples=150, deadline=None)
@given(emissions())
def test_every_event_comes_back_as_it_was_sent(events: list[TaskEvent]) -> None:
    received: dict[int, list[Any]] = {}
    for payload in encode(events, SCOPE, "host:1:abc"):
        decoded = decode(payload, SCOPE)
        assert decoded is not None
        received.update({row[1]: row for row in decoded.rows})
    assert received == expected(events)


@settings(max_examples=150, deadline=None)
@given(emissions())
def test_every_payload_fits_in_a_notify(events: list[TaskEvent]) -> None:
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in encode(events, SCOPE, "host:1:abc"))


def test_a_batch_of_finishes_is_one_group_of_columns() -> None:
    events = [
        TaskEvent(EventKind.COMPLETED, i, AT, MaintenanceTaskStatus.COMPLETED, "default", "p.X")
        for i in range(1, 4)
    ]
    (payload,) = encode(events, SCOPE, "host:1:abc")
    (group,) = json.loads(payload)["g"]
    assert group[8] == [1, 2, 3]


def test_a_payload_of_another_scope_is_ignored() -> None:
    event = TaskEvent(EventKind.STARTED, 1, AT, MaintenanceTaskStatus.WORKING, "default", "p.X")
    (payload,) = encode([event], "tenant_a", "host:1:abc")
    assert decode(payload, "tenant_b") is None
