"""The hub: one per event loop of a process that serves live streams (an API server).

It gathers events from two sources — this process's own `EventBus` (at once, no database
round trip) and every other process's publisher (a thread receiving the transport's
payloads: LISTEN on PostgreSQL, the journal's tail on SQLite; payloads of this process's
own publisher are skipped, the bus already brought them) — numbers them, keeps the last
`RING_SIZE` in a ring, and hands each to the subscriptions whose filter it matches.

Ids increase by one per event, starting at the hub's start time in microseconds, so a
``Last-Event-ID`` from before a restart is older than anything in the new ring and is told
apart from one within the window. A subscription that resumes after an id still in the ring
gets every matching event since, then the live ones, without a gap: both happen on the
loop, in one step. Subscriptions are indexed by their most selective filter (a task, a
pipeline, a schedule, a queue), so an event costs a few dictionary look-ups however many
clients follow other tasks.

Once started, a hub keeps recording until its app closes, whether or not anyone is
subscribed: a client that reconnects finds what it missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nightcrew.errors import NightcrewError
from nightcrew.events import EventBus, EventKind, TaskEvent
from nightcrew.live.publisher import LISTENERS_CHECK_SECONDS
from nightcrew.live.wire import Columns, LiveEvent, decode, from_row, rows_of
from nightcrew.store.event_transport import EventTransport

log = logging.getLogger("nightcrew.live")

#: Events a hub keeps for resuming streams (the ``Last-Event-ID`` window).
RING_SIZE = 20_000
#: Events a subscription may hold unread before it falls back on the ring.
MAX_PENDING = 10_000
#: Beyond the publishers' check interval: their query, and a loaded machine.
NOTICE_MARGIN = 0.3
#: Backoff of the receiving thread after its connection failed: first and longest wait.
RETRY_FIRST, RETRY_MAX = 0.1, 2.0


#: How an event's value is read for each kind of index key.
_FIELD_OF = {
    "task": operator.attrgetter("task_id"),
    "pipeline": operator.attrgetter("pipeline_id"),
    "schedule": operator.attrgetter("schedule"),
    "queue": operator.attrgetter("queue"),
}


class EventsMissed(NightcrewError):
    """Events of a stream were lost: it fell behind (or resumed from an id) past the window
    the server keeps. Read the tasks' state again, then follow the stream anew."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What a subscription wants; every given field must match (None: any)."""

    task_id: int | None = None
    queue: str | None = None
    pipeline_id: int | None = None
    schedule: str | None = None
    kinds: frozenset[EventKind] | None = None

    def matches(self, e: LiveEvent) -> bool:
        return (
            (self.task_id is None or e.task_id == self.task_id)
            and (self.queue is None or e.queue == self.queue)
            and (self.pipeline_id is None or e.pipeline_id == self.pipeline_id)
            and (self.schedule is None or e.schedule == self.schedule)
            and (self.kinds is None or e.kind in self.kinds)
        )

    def key(self) -> tuple[str, Any]:
        """The index entry: the most selective field given."""
        if self.task_id is not None:
            return ("task", self.task_id)
        if self.pipeline_id is not None:
            return ("pipeline", self.pipeline_id)
        if self.schedule is not None:
            return ("schedule", self.schedule)
        if self.queue is not None:
            return ("queue", self.queue)
        return ("all", None)


#: The filter of a stream of every event.
_EVERYTHING = EventFilter()


class Subscription:
    """Events for one stream, in order; read with `get`."""

    def __init__(self, hub: Hub, event_filter: EventFilter) -> None:
        self.hub = hub
        self.filter = event_filter
        #: The id of the last event handed out (resumes from there after an overflow).
        self.last_id: int | None = None
        self._pending: deque[LiveEvent] = deque()
        self._ready = asyncio.Event()
        self._overflowed = False
        self.closed = False

    def push(self, event: LiveEvent) -> None:
        self.push_all((event,))

    def push_all(self, events: Sequence[LiveEvent]) -> None:
        if self._overflowed or not events:
            return
        if len(self._pending) + len(events) > MAX_PENDING:
            self._overflowed = True  # the ring has them: `get` refills from it
            self._pending.clear()
        else:
            self._pending.extend(events)
        self._ready.set()

    async def get(self, wait: float | None = None) -> list[LiveEvent]:
        """The events that arrived since the last call, waiting up to ``wait`` seconds for
        one ([] when none came; the stream goes on). `EventsMissed` if some were lost."""
        if not self._pending and not self._overflowed and not self.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._ready.wait()
        self._ready.clear()
        if self._overflowed:
            self._overflowed = False
            refill = self.hub.replay(self.last_id, self.filter)
            if refill is None:
                raise EventsMissed("the stream fell behind the events the server keeps")
            events = refill
        else:
            events = list(self._pending)
            self._pending.clear()
        if events:
            self.last_id = events[-1].id
        return events

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub.unsubscribe(self)
            self._ready.set()


class Hub:
    """Gathers, numbers, keeps and fans out live events on one event loop."""

    def __init__(
        self,
        bus: EventBus,
        transport: EventTransport,
        origin: str,
        *,
        ring_size: int = RING_SIZE,
    ) -> None:
        self.bus = bus
        self.transport = transport
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._first_id = time.time_ns() // 1000
        self._next_id = self._first_id
        self.ring: deque[LiveEvent] = deque(maxlen=ring_size)
        self._index: dict[tuple[str, Any], list[Subscription]] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._scope: str | None = None
        self._noticed_at: float | None = None
        self._thread: threading.Thread | None = None
        self._unsubscribe = bus.subscribe_batches(self._on_local)
        self._task: asyncio.Task[None] | None = None
        if transport.receives_async:
            self._task = self.loop.create_task(self._areceive(), name="nightcrew-live-receive")
        elif transport.crosses_processes:
            self._thread = threading.Thread(
                target=self._receive, name="nightcrew-live-receive", daemon=True
            )
            self._thread.start()

    async def ready(self, within: float = 10.0) -> bool:
        """Wait until events of other processes are being received (True), or give up.

        The first time, also as long as publishers take to notice a new receiver
        (`nightcrew.live.publisher.LISTENERS_CHECK_SECONDS`): after that, nothing another
        process does is missed.
        """
        if self._thread is None and self._task is None:
            return True
        deadline = time.monotonic() + within
        while not self._ready.is_set():
            if time.monotonic() > deadline or self._stop.is_set():
                return False
            await asyncio.sleep(0.01)
        if self._noticed_at is None:
            self._noticed_at = time.monotonic() + LISTENERS_CHECK_SECONDS + NOTICE_MARGIN
        wait = self._noticed_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        return True

    # ---------------------------------------------------------------- subscribing

    def subscribe(
        self, event_filter: EventFilter, after: int | None = None
    ) -> tuple[Subscription, list[LiveEvent] | None]:
        """A subscription, and the kept events after ``after`` it matches ([] without
        ``after``; None when ``after`` is older than the ring: events were lost)."""
        sub = Subscription(self, event_filter)
        replay: list[LiveEvent] | None = []
        if after is not None:
            replay = self.replay(after, event_filter)
        self._index.setdefault(event_filter.key(), []).append(sub)
        if replay:
            sub.last_id = replay[-1].id
        else:  # before the first event: one that overflows refills from the ring's start
            sub.last_id = self.ring[-1].id if self.ring else self._first_id - 1
        return sub, replay

    def unsubscribe(self, sub: Subscription) -> None:
        key = sub.filter.key()
        subs = self._index.get(key)
        if subs and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._index[key]

    def replay(self, after: int | None, event_filter: EventFilter) -> list[LiveEvent] | None:
        """Kept events after ``after`` matching the filter; None if some may be gone.

        An id this hub cannot place (it has kept nothing yet, as after a restart, or the id
        is past its newest: another process's numbering) may hide missed events: None.
        """
        ring = self.ring
        if after is None:
            return []
        if not ring:
            return None
        first, last = ring[0].id, ring[-1].id
        if after == last:
            return []
        if after > last or after < first - 1:
            return None
        start = after + 1 - first  # ids in the ring are consecutive
        return [e for e in itertools.islice(ring, start, None) if event_filter.matches(e)]

    @property
    def subscribers(self) -> int:
        return sum(len(subs) for subs in self._index.values())

    # ---------------------------------------------------------------- ingesting

    def _on_local(self, events: Sequence[TaskEvent]) -> None:
        if threading.get_ident() == self._loop_thread:
            self._ingest(rows_of(events))
            return
        rows = rows_of(events)
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens now
            self.loop.call_soon_threadsafe(self._ingest, rows)

    def _ingest(self, rows: Sequence[list[Any]]) -> None:
        """This process's own events (rows of `TaskEvent`s), numbered and kept."""
        ids = range(self._next_id, self._next_id + len(rows))
        self._next_id = ids.stop
        # Rows of one emission share their time.
        stamp, at = None, None
        events: list[LiveEvent] = []
        for event_id, row in zip(ids, rows, strict=True):
            if row[2] != stamp:
                stamp, at = row[2], datetime.fromtimestamp(row[2], UTC)
            events.append(from_row(event_id, row, at))
        self._keep(events)

    def _ingest_groups(self, groups: Sequence[Columns]) -> None:
        """Other processes' events, as decoded, numbered and kept (built a group at a
        time, with no row per event on the way)."""
        events: list[LiveEvent] = []
        for group in groups:
            events += group.events(self._next_id)
            self._next_id += len(group.task_ids)
        self._keep(events)

    def _keep(self, events: list[LiveEvent]) -> None:
        self.ring.extend(events)
        if self._index:
            self._route(events)

    def _route(self, events: list[LiveEvent]) -> None:
        """Hand ``events`` to the subscriptions they match, in order, a batch to each: a
        stream of everything (the dashboard's, a script's) takes them all at once; the
        others are found through the index, by the fields of its keys in use."""
        index = self._index
        names = {name for name, _ in index}
        everything = index.get(("all", None), ())
        for sub in everything:
            if sub.filter == _EVERYTHING:
                sub.push_all(events)
            else:
                sub.push_all([e for e in events if sub.filter.matches(e)])
        fields = [(name, _FIELD_OF[name]) for name in ("task", "pipeline", "schedule", "queue")]
        fields = [(name, get) for name, get in fields if name in names]
        if not fields:
            return
        found: dict[Subscription, list[LiveEvent]] = {}
        for event in events:
            for name, get in fields:
                subs = index.get((name, get(event)))
                if subs:
                    for sub in subs:
                        if sub.filter.matches(event):
                            found.setdefault(sub, []).append(event)
        for sub, matched in found.items():
            sub.push_all(matched)

    def _receive(self) -> None:
        """The receiving thread: payloads of other processes, decoded here, numbered on
        the loop. Reconnects with a short backoff when its connection is lost."""
        delay = RETRY_FIRST
        while not self._stop.is_set():
            try:
                self.transport.receive(self._deliver, self._stop, self._ready)
                delay = RETRY_FIRST
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("live events: receiving failed (%s); retrying in %.2g s", exc, delay)
                self._ready.clear()
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _areceive(self) -> None:
        """The receiving task (PostgreSQL): reconnects with a short backoff when lost."""
        delay = RETRY_FIRST
        while not self._stop.is_set():
            try:
                if self._scope is None:
                    self._scope = await asyncio.to_thread(self.transport.scope)
                await self.transport.areceive(self._deliver_here, self._ready.set)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("live events: receiving failed (%s); retrying in %.2g s", exc, delay)
                self._ready.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            else:
                delay = RETRY_FIRST

    def _deliver_here(self, payloads: list[str]) -> None:
        """On the loop: decode, skip our own, ingest."""
        groups = self._decode(payloads)
        if groups:
            self._ingest_groups(groups)

    def _deliver(self, payloads: list[str]) -> None:
        """In the receiving thread: decode, skip our own, hand the groups to the loop."""
        groups = self._decode(payloads)
        if groups:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens now
                self.loop.call_soon_threadsafe(self._ingest_groups, groups)

    def _decode(self, payloads: list[str]) -> list[Columns]:
        if self._scope is None:
            self._scope = self.transport.scope()
        groups: list[Columns] = []
        for text in payloads:
            decoded = decode(text, self._scope)
            if decoded is not None and decoded.origin != self.origin:
                groups += decoded.groups
        return groups

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop receiving and end every subscription (their `get` returns at once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._unsubscribe()
        for subs in list(self._index.values()):
            for sub in list(subs):
                sub.closed = True
                sub._ready.set()
        self._index.clear()
        if self._task is not None:
            self._task.cancel()
        if self._thread is not None:
            self._thread.join(2.0)

    async def aclose(self) -> None:
        """`close` on the hub's loop, waiting for its receiving connection to close."""
        self.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
