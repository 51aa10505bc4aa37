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


async def test_another_process_events_arrive_as_this_process_own_would() -> None:
    from dataclasses import astuple

    from nightcrew.live.wire import LiveEvent, encode_emissions

    bus = EventBus()
    hub = local_hub(bus)
    hub._scope = "public"
    sub, _ = hub.subscribe(EventFilter())
    try:
        started = EventBatch(
            EventKind.STARTED, AT, S.WORKING, [7, 8], ["a", "b"], ["p.X", "p.Y"], [1, 2],
            waited=[0.25, None],
        )  # fmt: skip
        failed = EventBatch(
            EventKind.FAILED, AT, S.ERROR, [9], ["a"], ["p.X"], [3],
            durations=[1.5], details=[{"error": "boom", "error_type": "ValueError"}],
        )  # fmt: skip
        bus.emit_all(started)
        bus.emit_all(failed)
        own = list(sub._pending)
        sub._pending.clear()
        hub._deliver_here(encode_emissions([started, failed], "public", "there:2:def"))
        hub._deliver_here(encode_emissions([started], "public", hub.origin))  # ours: skipped
        received = list(sub._pending)

        def fields(e: LiveEvent) -> tuple[object, ...]:
            return astuple(e)[1:-1]  # not the id, not the cached JSON

        assert [fields(e) for e in received] == [fields(e) for e in own]
        assert [e.id for e in received] == [own[-1].id + 1, own[-1].id + 2, own[-1].id + 3]
        assert received[2].detail == {"error": "boom", "error_type": "ValueError"}
        assert received[0].waited == 0.25 and received[1].waited is None
    finally:
        hub.close()
