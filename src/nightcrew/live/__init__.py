"""Live task events across processes: publish, gather, follow (DESIGN §8).

Every transition the store makes (created, started, progress, retried, finished with its
status, cancelled, rescued, ...) is on the app's `EventBus` after it committed. This package
carries those events to whoever follows them, in any process of the database:

- `Publisher` (`nightcrew.live.publisher`): each app sends its bus's events to the others —
  ``NOTIFY`` on PostgreSQL, a journal file on SQLite (`nightcrew.store.event_transport`);
  ``NIGHTCREW_PUBLISH_EVENTS=false`` turns that off;
- `Hub` (`nightcrew.live.hub`): in a process that follows events, gathers its own bus's
  and the other processes', numbers them and keeps a window of them for resuming;
- `stream` (also ``nightcrew.events.stream``): follow them from Python::

      async with stream(app, task_id=42) as events:
          async for event in events:
              print(event.kind, event.status, event.progress)

  ``async for event in stream(app, queue="reports")`` works too; a stream made that way
  subscribes at its first iteration, an ``async with`` one on entering (so nothing that
  happens after it can be missed); ``async for batch in events.batches()`` takes them a
  list at a time;
- the admin API serves the same as Server-Sent Events at ``/api/v1/events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from nightcrew.events import EventBus, EventKind
from nightcrew.live.hub import EventFilter, EventsMissed, Hub, LiveBatch, Subscription
from nightcrew.live.publisher import Publisher, new_origin
from nightcrew.live.wire import LiveEvent
from nightcrew.store.database import Database
from nightcrew.store.event_transport import for_database

if TYPE_CHECKING:
    from nightcrew.app import Nightcrew


class LiveEvents:
    """An app's live events: its publisher (when on) and a hub per event loop following.

    Made by `nightcrew.Nightcrew`, closed with it; nothing here is global, so two apps on
    two databases in one process never mix their events.
    """

    def __init__(self, database: Database, bus: EventBus, *, publish: bool) -> None:
        self.database = database
        self.bus = bus
        self.origin = new_origin()
        self.publisher: Publisher | None = None
        transport = for_database(database)
        if publish and transport.crosses_processes:
            self.publisher = Publisher(bus, transport, self.origin)
        self._hubs: dict[asyncio.AbstractEventLoop, Hub] = {}
        self._lock = threading.Lock()

    def hub(self) -> Hub:
        """The hub of the running loop, started on first use."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [lp for lp in self._hubs if lp.is_closed()]:
                self._hubs.pop(old).close()
            hub = self._hubs.get(loop)
            if hub is None:
                hub = Hub(self.bus, for_database(self.database), self.origin)
                self._hubs[loop] = hub
        return hub

    async def aclose(self) -> None:
        """`close` from a loop, awaiting what runs on it (connections of the loop's own)."""
        publisher, self.publisher = self.publisher, None
        with self._lock:
            mine = self._hubs.pop(asyncio.get_running_loop(), None)
        if mine is not None:
            await mine.aclose()
        self.close()
        if publisher is not None:
            await publisher.aclose()

    def close(self) -> None:
        """Stop the hubs and send the publisher's last events."""
        with self._lock:
            hubs, self._hubs = list(self._hubs.items()), {}
        for loop, hub in hubs:
            if loop.is_closed() or _on_loop(loop):
                hub.close()
            else:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(hub.close)
        if self.publisher is not None:
            self.publisher.close()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class LiveStream:
    """The events of one stream (see `stream`): an async iterator and context manager."""

    def __init__(self, app: Nightcrew, event_filter: EventFilter, after: int | None) -> None:
        self.app = app
        self.filter = event_filter
        self.after = after
        self._sub: Subscription | None = None
        self._buffer: deque[LiveEvent] = deque()

    async def open(self) -> None:
        """Subscribe now (and wait until other processes' events are received)."""
        if self._sub is not None:
            return
        hub = self.app.live.hub()
        await hub.ready()
        sub, replay = hub.subscribe(self.filter, self.after)
        if replay is None:
            sub.close()
            raise EventsMissed(f"events after {self.after} are no longer kept")
        self._sub = sub
        self._buffer = deque(replay)

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()

    async def __aenter__(self) -> LiveStream:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> LiveStream:
        return self

    async def __anext__(self) -> LiveEvent:
        if self._sub is None:
            await self.open()
        assert self._sub is not None
        while not self._buffer:
            if self._sub.closed:
                raise StopAsyncIteration
            try:
                self._buffer = deque(await self._sub.get())
            except BaseException:  # cancelled (a task following it stopped): unsubscribe
                self.close()
                raise
        return self._buffer.popleft()

    async def batches(self) -> AsyncIterator[Sequence[LiveEvent]]:
        """The same events, a sequence at a time: whatever arrived together (a claim's
        starts, a batch of finishes: hundreds of events on a busy worker) in one step.

        For a consumer that takes everything, a sink or a forwarder, which then handles a
        batch in one go (as the SSE route reads them). A batch of other processes' events
        is a `LiveBatch`: its `LiveEvent` objects are built as they are read (one that is
        only counted or passed on builds none). Events are handed out once, whichever way
        they are read. Batches are never empty; the iteration ends when the stream is
        closed."""
        if self._sub is None:
            await self.open()
        assert self._sub is not None
        while True:
            if self._buffer:
                held = list(self._buffer)
                self._buffer.clear()
                yield held
                continue
            if self._sub.closed:
                return
            try:
                events = await self._sub.get()
            except BaseException:  # cancelled, or fell behind: unsubscribe as `__anext__`
                self.close()
                raise
            if events:
                yield events

    def __del__(self) -> None:
        # A stream iterated with a bare ``async for`` and left (a ``break``) is closed when
        # dropped, so the hub stops holding events for it.
        sub = self._sub
        if sub is not None and not sub.closed:
            with contextlib.suppress(Exception):
                sub.close()


def stream(
    app: Nightcrew,
    *,
    task_id: int | None = None,
    queue: str | None = None,
    pipeline_id: int | None = None,
    schedule: str | None = None,
    kinds: Iterable[EventKind] | None = None,
    after: int | None = None,
) -> LiveStream:
    """Follow ``app``'s task events, from every process of its database.

    Filters combine (every one given must match). ``after`` resumes after the `LiveEvent`
    id this process handed out, if it still keeps it (else `EventsMissed`). A stream that
    falls more than the kept window behind raises `EventsMissed` too: read the state again.
    """
    event_filter = EventFilter(
        task_id=task_id,
        queue=queue,
        pipeline_id=pipeline_id,
        schedule=schedule,
        kinds=None if kinds is None else frozenset(kinds),
    )
    return LiveStream(app, event_filter, after)


__all__ = [
    "EventFilter",
    "EventsMissed",
    "Hub",
    "LiveBatch",
    "LiveEvent",
    "LiveEvents",
    "LiveStream",
    "Publisher",
    "Subscription",
    "stream",
]
