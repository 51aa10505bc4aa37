"""The hub's routing: each subscription gets the events its filter matches, in order, in
one hand-over per batch; one that falls behind the window it may hold refills from the ring
(no database: a hub on a transport that crosses no process)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nightcrew.events import EventBatch, EventBus, EventKind
from nightcrew.live import hub as hub_module
from nightcrew.live.hub import EventFilter, Hub
from nightcrew.live.wire import LiveEvent
from nightcrew.models import MaintenanceTaskStatus as S
from nightcrew.store.event_transport import EventTransport

AT = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def local_hub(bus: EventBus) -> Hub:
    transport = EventTransport()
    transport.crosses_processes = False
    return Hub(bus, transport, "here:1:abc")


def pending(sub: hub_module.Subscription) -> list[LiveEvent]:
    """What a subscription holds unread, as events."""
    return [e for chunk in sub._pending for e in chunk]


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
            return [(e.kind.value, e.task_id) for e in pending(sub)]

        assert seen(everything) == [
            *[("started", i) for i in (1, 2, 3, 4)],
            *[("completed", i) for i in (1, 2, 3, 4)],
        ]
        assert seen(one_task) == [("started", 2), ("completed", 2)]
        assert seen(finishes_of_b) == [("completed", 2), ("completed", 3)]
        assert seen(started_only) == [("started", i) for i in (1, 2, 3, 4)]
        ids = [e.id for e in pending(everything)]
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

    from nightcrew.live.wire import encode_emissions

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
        own = pending(sub)
        sub._pending.clear()
        sub._count = 0
        hub._deliver_here(encode_emissions([started, failed], "public", "there:2:def"))
        hub._deliver_here(encode_emissions([started], "public", hub.origin))  # ours: skipped
        received = pending(sub)

        def fields(e: LiveEvent) -> tuple[object, ...]:
            return astuple(e)[1:-1]  # not the id, not the cached JSON

        assert [fields(e) for e in received] == [fields(e) for e in own]
        assert [e.id for e in received] == [own[-1].id + 1, own[-1].id + 2, own[-1].id + 3]
        assert received[2].detail == {"error": "boom", "error_type": "ValueError"}
        assert received[0].waited == 0.25 and received[1].waited is None
    finally:
        hub.close()


FILTERS = [
    EventFilter(),
    EventFilter(task_id=8),
    EventFilter(task_id=8, kinds=frozenset({EventKind.COMPLETED})),
    EventFilter(queue="b"),
    EventFilter(queue="b", kinds=frozenset({EventKind.STARTED})),
    EventFilter(pipeline_id=3),
    EventFilter(schedule="nightly"),
    EventFilter(kinds=frozenset({EventKind.COMPLETED})),
]


def mixed(kind: EventKind, status: S) -> EventBatch:
    """Six tasks over two queues, a pipeline and a schedule: several groups on the wire."""
    return EventBatch(
        kind, AT, status, [5, 6, 7, 8, 9, 10], ["a", "b", "a", "b", "b", "a"], ["p.X"] * 6,
        [1] * 6, pipeline_ids=[None, 3, 3, None, None, None],
        schedules=[None, None, None, "nightly", "nightly", None],
    )  # fmt: skip


async def test_other_processes_groups_reach_each_filter_as_own_events_would() -> None:
    from dataclasses import astuple

    from nightcrew.live.wire import encode_emissions

    emitted = [mixed(EventKind.STARTED, S.WORKING), mixed(EventKind.COMPLETED, S.COMPLETED)]

    def fields(e: LiveEvent) -> tuple[object, ...]:
        return astuple(e)[1:-1]

    def followed(remote: bool) -> list[list[tuple[object, ...]]]:
        bus = EventBus()
        hub = local_hub(bus)
        hub._scope = "public"
        subs = [hub.subscribe(f)[0] for f in FILTERS]
        try:
            if remote:
                hub._deliver_here(encode_emissions(emitted, "public", "there:2:def"))
            else:
                for b in emitted:
                    bus.emit_all(b)
            return [[fields(e) for e in pending(sub)] for sub in subs]
        finally:
            hub.close()

    own, theirs = followed(remote=False), followed(remote=True)
    # The wire groups an emission's events (order is kept per task, not across tasks).
    assert [sorted(got, key=repr) for got in theirs] == [sorted(got, key=repr) for got in own]
    for got in theirs:
        kinds_of = [[f[0] for f in got if f[1] == task] for task in range(5, 11)]
        assert all(
            k == sorted(k, key=[EventKind.STARTED, EventKind.COMPLETED].index) for k in kinds_of
        )
    assert [len(got) for got in own] == [12, 2, 1, 6, 3, 4, 4, 6]


async def test_a_group_is_built_only_for_what_streams_read() -> None:
    from nightcrew.live.wire import encode_emissions

    bus = EventBus()
    hub = local_hub(bus)
    hub._scope = "public"
    one_task, _ = hub.subscribe(EventFilter(task_id=8))
    everything, _ = hub.subscribe(EventFilter())
    try:
        hub._deliver_here(
            encode_emissions([mixed(EventKind.STARTED, S.WORKING)], "public", "there:2:def")
        )
        slabs = list(hub._ring)
        assert [e.task_id for e in pending(one_task)] == [8]
        batch = await everything.get(0)
        assert len(batch) == 6
        assert all(slab._events is None for slab in slabs)  # counted, none built
        assert [e.task_id for e in batch] == [5, 10, 6, 7, 8, 9]  # in groups
        assert all(slab._events is not None for slab in slabs)
    finally:
        hub.close()


async def test_the_ring_keeps_the_last_ring_size_events_across_slabs() -> None:
    from nightcrew.live.wire import encode_emissions

    bus = EventBus()
    transport = EventTransport()
    transport.crosses_processes = False
    hub = Hub(bus, transport, "here:1:abc", ring_size=5)
    hub._scope = "public"
    try:
        for first in (1, 4, 7):  # three groups of three
            claim = batch(EventKind.STARTED, S.WORKING, [first, first + 1, first + 2], ["a"] * 3)
            hub._deliver_here(encode_emissions([claim], "public", "there:2:def"))
        base = hub._first_id
        assert [e.task_id for e in hub.kept(EventFilter())] == [5, 6, 7, 8, 9]
        assert hub.last_id == base + 8
        assert [e.id for e in hub.replay(base + 3, EventFilter()) or []] == list(
            range(base + 4, base + 9)
        )
        assert hub.replay(base + 2, EventFilter()) is None  # its next event is gone
        assert [e.task_id for e in hub.replay(base + 3, EventFilter(task_id=8)) or []] == [8]
        assert hub.replay(base + 8, EventFilter()) == []
    finally:
        hub.close()
