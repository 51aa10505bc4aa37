"""When a worker's loop sends what it gathered: progress at once, even behind gathered
finishes; claims and finishes after `LOOP_COALESCE_SECONDS`. A recording transport stands
in for the database's (pure scheduling logic; the transports have their own tests)."""

from __future__ import annotations

import asyncio

from nightcrew.events import EventBus, EventKind, TaskEvent
from nightcrew.live.publisher import LOOP_COALESCE_SECONDS, Publisher
from nightcrew.live.wire import decode
from nightcrew.models import MaintenanceTaskStatus, utcnow
from nightcrew.store.event_transport import EventTransport
from tests.observe.conftest import until


class Recording(EventTransport):
    sends_async = True

    def __init__(self) -> None:
        self.sent: list[str] = []

    def scope(self) -> str:
        return "test"

    def send(self, payloads: list[str]) -> None:
        self.sent += payloads

    async def asend(self, payloads: list[str]) -> None:
        self.sent += payloads


def event(kind: EventKind, task_id: int) -> TaskEvent:
    status = MaintenanceTaskStatus.COMPLETED if kind is EventKind.COMPLETED else None
    return TaskEvent(kind, task_id, utcnow(), status or MaintenanceTaskStatus.WORKING, "q", "p.X")


def kinds_sent(transport: Recording) -> list[EventKind]:
    out: list[EventKind] = []
    for text in transport.sent:
        decoded = decode(text, "test")
        assert decoded is not None
        out += [group.kind for group in decoded.groups for _ in group.task_ids]
    return out


async def a_publisher_that_knows_its_scope() -> tuple[EventBus, Recording, Publisher]:
    bus, transport = EventBus(), Recording()
    publisher = Publisher(bus, transport, "here")
    bus.emit(event(EventKind.CREATED, 1))  # the first send learns the scope (its thread)
    await until(lambda: transport.sent, "the first event sent")
    transport.sent.clear()
    return bus, transport, publisher


async def test_progress_goes_at_once_with_the_finishes_gathered_before_it() -> None:
    bus, transport, publisher = await a_publisher_that_knows_its_scope()
    try:
        bus.emit(event(EventKind.COMPLETED, 2))
        bus.emit(event(EventKind.PROGRESS, 3))
        for _ in range(5):  # a few turns of the loop, far less than the gathering time
            await asyncio.sleep(0)
        assert kinds_sent(transport) == [EventKind.COMPLETED, EventKind.PROGRESS]
    finally:
        await publisher.aclose()


async def test_finishes_alone_wait_for_the_gathering_time() -> None:
    bus, transport, publisher = await a_publisher_that_knows_its_scope()
    try:
        bus.emit(event(EventKind.COMPLETED, 2))
        for _ in range(5):
            await asyncio.sleep(0)
        assert transport.sent == []
        await until(lambda: transport.sent, f"sent after {LOOP_COALESCE_SECONDS} s")
        assert kinds_sent(transport) == [EventKind.COMPLETED]
    finally:
        await publisher.aclose()


class Slow(Recording):
    """A transport whose sends take a while (a loaded database), counted when they end."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0

    async def asend(self, payloads: list[str]) -> None:
        self.started += 1
        await asyncio.sleep(0.2)
        self.sent += payloads


async def test_closing_waits_for_the_send_in_flight() -> None:
    bus, transport = EventBus(), Slow()
    publisher = Publisher(bus, transport, "here")
    bus.emit(event(EventKind.CREATED, 1))  # the thread learns the scope
    await until(lambda: transport.sent, "the first event sent")
    transport.sent.clear()
    bus.emit(event(EventKind.COMPLETED, 2))
    await until(lambda: transport.started, "a send under way")
    bus.emit(event(EventKind.COMPLETED, 3))  # still gathered when the app closes
    await publisher.aclose()
    assert sorted(kinds_sent(transport)) == [EventKind.COMPLETED, EventKind.COMPLETED]
