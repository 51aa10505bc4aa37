"""The hub's routing: each subscription gets the events its filter matches, in order, in
one hand-over per batch; one that falls behind the window it may hold refills from the ring
(no database: a hub on a transport that crosses no process)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nightcrew.events import EventBatch, EventBus, EventKind
from nightcrew.live import hub as hub_module
from nightcrew.live.hub import EventFilter, Hub
from nightcrew.models import MaintenanceTaskStatus as S
from nightcrew.store.event_transport import EventTransport

AT = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def local_hub(bus: EventBus) -> Hub:
    transport = EventTransport()
    transport.crosses_processes = False
    return Hub(bus, transport, "here:1:abc")


def batch(kind: EventKind, status: S, ids: list[int], queues: list[str]) -> EventBatch:
    n = len(ids)
    return EventBatch(kind, AT, status, ids, queues, ["p.X"] * n, [1] * n)


async def test_each_subscription_gets_what_its_filter_matches_in_order() -> None:
    bus = EventBus()
    hub = local_hub(bus)
    everything, _ = hub.subscribe(EventFilter())
    one_task, _ = hub.subscribe(EventFilter(task_id=2))
    finishes_of_b, _ = hub.subscribe(EventFilter(queue="b", kinds=frozenset({EventKind.COMPLETED})))
    started_only, _ = hub.subscribe(EventFilter(kinds=frozenset({EventKind.STARTED})))
    try:
        queues = ["a", "b", "b", "a"]
        bus.emit_all(batch(EventKind.STARTED, S.WORKING, [1, 2, 3, 4], queues))
        bus.emit_all(batch(EventKind.COMPLETED, S.COMPLETED, [1, 2, 3, 4], queues))

        def seen(sub: hub_module.Subscription) -> list[tuple[str, int]]:
            return [(e.kind.value, e.task_id) for e in sub._pending]

        assert seen(everything) == [
            *[("started", i) for i in (1, 2, 3, 4)],
            *[("completed", i) for i in (1, 2, 3, 4)],
        ]
        assert seen(one_task) == [("started", 2), ("completed", 2)]
        assert seen(finishes_of_b) == [("completed", 2), ("completed", 3)]
        assert seen(started_only) == [("started", i) for i in (1, 2, 3, 4)]
        ids = [e.id for e in everything._pending]
        assert ids == sorted(ids) and len(set(ids)) == 8
    finally:
        hub.close()


async def test_a_subscription_past_its_window_refills_from_the_ring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_module, "MAX_PENDING", 3)
    bus = EventBus()
    hub = local_hub(bus)
    sub, _ = hub.subscribe(EventFilter())
    try:
        bus.emit_all(batch(EventKind.STARTED, S.WORKING, [1, 2], ["a", "a"]))
        bus.emit_all(batch(EventKind.COMPLETED, S.COMPLETED, [1, 2], ["a", "a"]))
        got = await sub.get(0)
        assert [(e.kind.value, e.task_id) for e in got] == [
            ("started", 1),
            ("started", 2),
            ("completed", 1),
            ("completed", 2),
        ]
    finally:
        hub.close()
