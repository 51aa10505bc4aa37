"""The hub: one per event loop of a process that serves live streams (an API server).

It gathers events from two sources — this process's own `EventBus` (at once, no database
round trip) and every other process's publisher (a thread receiving the transport's
payloads: LISTEN on PostgreSQL, the journal's tail on SQLite; payloads of this process's
own publisher are skipped, the bus already brought them) — numbers them, keeps the last
`RING_SIZE` in a ring, and hands each to the subscriptions whose filter it matches.

Another process's events stay as they arrived, a `Slab` a group (what its events share,
and a column per field that varies), until a stream reads them: a server numbering a
fleet's events for streams that follow a few tasks, or for nobody, builds no object per
event. Filters on what a group shares (kind, queue, pipeline, schedule) are decided once a
group, and a stream of one task takes its one event out of a group without the others.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload

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

    def matches_group(self, group: Columns) -> bool:
        """Whether the fields a group's events share match (the task id aside)."""
        return (
            (self.queue is None or group.queue == self.queue)
            and (self.pipeline_id is None or group.pipeline_id == self.pipeline_id)
            and (self.schedule is None or group.schedule == self.schedule)
            and (self.kinds is None or group.kind in self.kinds)
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


class _Built(Sequence[LiveEvent]):
    """A sequence of events held in some other shape until indexed (`events` builds them)."""

    __slots__ = ()

    def events(self) -> list[LiveEvent]:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> LiveEvent: ...

    @overload
    def __getitem__(self, index: slice) -> list[LiveEvent]: ...

    def __getitem__(self, index: int | slice) -> LiveEvent | list[LiveEvent]:
        return self.events()[index]


class Slab(_Built):
    """Consecutive events numbered from ``first``: a group of another process's payload
    (`Columns`: its `LiveEvent`s are built when first read, once), or events this process
    built itself (``columns`` None)."""

    __slots__ = ("_events", "columns", "first", "stop")

    def __init__(
        self, first: int, columns: Columns | None = None, events: list[LiveEvent] | None = None
    ) -> None:
        self.first = first
        self.columns = columns
        self._events = events
        if events is not None:
            self.stop = first + len(events)
        else:
            assert columns is not None
            self.stop = first + len(columns.task_ids)

    @property
    def last_id(self) -> int:
        return self.stop - 1

    def events(self) -> list[LiveEvent]:
        if self._events is None:
            assert self.columns is not None
            self._events = self.columns.events(self.first)
        return self._events

    def event(self, index: int) -> LiveEvent:
        """One event, without building the others (a stream of one task takes one)."""
        if self._events is not None or self.columns is None:
            return self.events()[index]
        return self.columns.event(index, self.first + index)

    def __len__(self) -> int:
        return self.stop - self.first

    def __iter__(self) -> Iterator[LiveEvent]:
        return iter(self.events())


def _last_id(chunk: Sequence[LiveEvent]) -> int:
    return chunk.last_id if isinstance(chunk, Slab) else chunk[-1].id


class LiveBatch(_Built):
    """Events handed out together, as the slabs and lists they arrived in: a sequence whose
    events are built when read (a consumer that forwards or counts a batch builds none)."""

    __slots__ = ("_chunks", "_flat", "_len")

    def __init__(self, chunks: list[Sequence[LiveEvent]]) -> None:
        self._chunks = chunks
        self._len = sum(map(len, chunks))
        self._flat: list[LiveEvent] | None = None

    @property
    def last_id(self) -> int | None:
        """The id of the batch's last event (None: empty), read without building it."""
        return _last_id(self._chunks[-1]) if self._chunks else None

    def __len__(self) -> int:
        return self._len

    def events(self) -> list[LiveEvent]:
        """Every event of the batch (built once)."""
        if self._flat is None:
            self._flat = list(itertools.chain.from_iterable(self._chunks))
        return self._flat

    def __iter__(self) -> Iterator[LiveEvent]:
        if self._flat is not None:
            return iter(self._flat)
        return itertools.chain.from_iterable(self._chunks)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LiveBatch):
            return self.events() == other.events()
        if isinstance(other, list):
            return self.events() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LiveBatch({self._len} events)"


def _select(event_filter: EventFilter, slab: Slab, start: int = 0) -> Sequence[LiveEvent]:
    """The events of ``slab`` from its ``start``-th that the filter matches: a group is
    decided by what its events share, and a task found by its id (once in a group: a group
    is part of one emission, which holds at most one event a task)."""
    group = slab.columns
    if group is None:
        events = slab.events()[start:] if start else slab.events()
        if event_filter == _EVERYTHING:
            return events
        return [e for e in events if event_filter.matches(e)]
    if not event_filter.matches_group(group):
        return ()
    if event_filter.task_id is not None:
        try:
            index = group.task_ids.index(event_filter.task_id, start)
        except ValueError:
            return ()
        return [slab.event(index)]
    return slab.events()[start:] if start else slab


class Subscription:
    """Events for one stream, in order; read with `get`."""

    def __init__(self, hub: Hub, event_filter: EventFilter) -> None:
        self.hub = hub
        self.filter = event_filter
        #: The id of the last event handed out (resumes from there after an overflow).
        self.last_id: int | None = None
        #: What arrived since the last `get`: slabs and lists of events, in order.
        self._pending: deque[Sequence[LiveEvent]] = deque()
        self._count = 0
        self._ready = asyncio.Event()
        self._overflowed = False
        self.closed = False

    def push_all(self, chunks: Sequence[Sequence[LiveEvent]]) -> None:
        """Hand over events, as slabs or lists (kept as they are until read)."""
        if self._overflowed:
            return
        count = sum(map(len, chunks))
        if not count:
            return
        if self._count + count > MAX_PENDING:
            self._overflowed = True  # the ring has them: `get` refills from it
            self._pending.clear()
            self._count = 0
        else:
            self._pending.extend(c for c in chunks if c)
            self._count += count
        self._ready.set()

    async def get(self, wait: float | None = None) -> Sequence[LiveEvent]:
        """The events that arrived since the last call, waiting up to ``wait`` seconds for
        one (empty when none came; the stream goes on). `EventsMissed` if some were lost.

        A `LiveBatch` (events built as they are read) or, after falling behind, a list."""
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
            if refill:
                self.last_id = refill[-1].id
            return refill
        batch = LiveBatch(list(self._pending))
        self._pending.clear()
        self._count = 0
        if batch.last_id is not None:
            self.last_id = batch.last_id
        return batch

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
        self._ring: deque[Slab] = deque()
        self._ring_size = ring_size
        #: Events in the ring's slabs (the first may hold some older than the window).
        self._kept = 0
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
            sub.last_id = self._next_id - 1
        return sub, replay

    def unsubscribe(self, sub: Subscription) -> None:
        key = sub.filter.key()
        subs = self._index.get(key)
        if subs and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._index[key]

    @property
    def last_id(self) -> int | None:
        """The id of the newest event kept (None: none yet)."""
        return self._next_id - 1 if self._ring else None

    def _first_kept(self) -> int:
        return max(self._ring[0].first, self._next_id - self._ring_size)

    def kept(self, event_filter: EventFilter) -> list[LiveEvent]:
        """Every kept event the filter matches, oldest first."""
        if not self._ring:
            return []
        return self.replay(self._first_kept() - 1, event_filter) or []

    def replay(self, after: int | None, event_filter: EventFilter) -> list[LiveEvent] | None:
        """Kept events after ``after`` matching the filter; None if some may be gone.

        An id this hub cannot place (it has kept nothing yet, as after a restart, or the id
        is past its newest: another process's numbering) may hide missed events: None.
        """
        ring = self._ring
        if after is None:
            return []
        if not ring:
            return None
        first, last = self._first_kept(), self._next_id - 1
        if after == last:
            return []
        if after > last or after < first - 1:
            return None
        start = after + 1  # ids in the ring are consecutive
        parts: list[Sequence[LiveEvent]] = []
        for slab in reversed(ring):  # a resume is mostly of the last few slabs
            if slab.stop <= start:
                break
            found = _select(event_filter, slab, max(0, start - slab.first))
            if found:
                parts.append(found)
        return list(itertools.chain.from_iterable(reversed(parts)))

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
        # Rows of one emission share their time.
        stamp, at = None, None
        events: list[LiveEvent] = []
        for event_id, row in zip(ids, rows, strict=True):
            if row[2] != stamp:
                stamp, at = row[2], datetime.fromtimestamp(row[2], UTC)
            events.append(from_row(event_id, row, at))
        if events:
            self._keep([Slab(ids.start, events=events)])

    def _ingest_groups(self, groups: Sequence[Columns]) -> None:
        """Other processes' events, as decoded: numbered and kept a group at a time, no
        object made per event (`Slab`)."""
        slabs: list[Slab] = []
        for group in groups:
            if group.task_ids:
                slab = Slab(self._next_id, group)
                slabs.append(slab)
                self._next_id = slab.stop
        if slabs:
            self._keep(slabs)

    def _keep(self, slabs: list[Slab]) -> None:
        ring = self._ring
        ring.extend(slabs)
        self._next_id = slabs[-1].stop
        self._kept += sum(map(len, slabs))
        while len(ring) > 1 and self._kept - len(ring[0]) >= self._ring_size:
            self._kept -= len(ring.popleft())
        if self._index:
            self._route(slabs)

    def _route(self, slabs: list[Slab]) -> None:
        """Hand the slabs' events to the subscriptions they match, in order, a batch to
        each: a stream of everything (the dashboard's, a script's) takes the slabs whole;
        the others are found through the index, by what a group shares (its queue,
        pipeline, schedule) or by the task ids it holds, and get just what they match."""
        index = self._index
        for sub in index.get(("all", None), ()):
            if sub.filter == _EVERYTHING:
                sub.push_all(slabs)
            else:
                sub.push_all([_select(sub.filter, slab) for slab in slabs])
        names = {name for name, _ in index} - {"all"}
        if not names:
            return
        tasks = {key for name, key in index if name == "task"}
        found: dict[Subscription, list[Sequence[LiveEvent]]] = {}
        for slab in slabs:
            group = slab.columns
            if group is None:  # this process's own: event by event
                self._route_each(slab.events(), names, found)
                continue
            for name, value in (
                ("pipeline", group.pipeline_id),
                ("schedule", group.schedule),
                ("queue", group.queue),
            ):
                if name in names:
                    for sub in index.get((name, value), ()):
                        if sub.filter.matches_group(group):
                            found.setdefault(sub, []).append(slab)
            if tasks:
                for task_id in tasks.intersection(group.task_ids):
                    subs = [s for s in index[("task", task_id)] if s.filter.matches_group(group)]
                    if subs:
                        one = [slab.event(group.task_ids.index(task_id))]
                        for sub in subs:
                            found.setdefault(sub, []).append(one)
        for sub, chunks in found.items():
            sub.push_all(chunks)

    def _route_each(
        self,
        events: list[LiveEvent],
        names: set[str],
        found: dict[Subscription, list[Sequence[LiveEvent]]],
    ) -> None:
        index = self._index
        fields = [(name, _FIELD_OF[name]) for name in ("task", "pipeline", "schedule", "queue")]
        fields = [(name, get) for name, get in fields if name in names]
        for event in events:
            for name, get in fields:
                subs = index.get((name, get(event)))
                if subs:
                    for sub in subs:
                        if sub.filter.matches(event):
                            found.setdefault(sub, []).append([event])

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
