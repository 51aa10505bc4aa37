"""The publisher: this process's task events, sent to every other process of the database.

A batch subscriber of the app's `EventBus` (so no worker service knows about it): it only
appends each emission to a queue, and a thread of its own encodes the events
(`nightcrew.live.wire`) and sends them through the database's transport
(`nightcrew.store.event_transport`: NOTIFY on PostgreSQL, the journal on SQLite). The thread
takes whatever arrived within `COALESCE_SECONDS` of the first emission, so a drain's
hundreds of emissions a second make tens of sends, and the emitter (a worker's event loop,
a web request) never waits for the database. Events are sent after the transition
committed, since the store emits them then.

While no process receives live events (no stream open anywhere: on PostgreSQL no
connection named ``nightcrew events listener`` in ``pg_stat_activity``, on SQLite no fresh
reader row in the journal), the publisher leaves the bus, so its app builds no event for
it; it looks again every `LISTENERS_CHECK_SECONDS`, and a hub waits that long once when
it starts, so a stream opened then misses nothing. A fleet of workers with no dashboard
open pays one tiny query a second per process.

Live events are a view, not a log: when the database cannot be reached the publisher drops
what it holds (one warning per outage) rather than let a queue grow without bound; the
tasks themselves are in the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from nightcrew.events import EventBus, EventKind, TaskEvent
from nightcrew.live.wire import encode
from nightcrew.store.event_transport import EventTransport

log = logging.getLogger("nightcrew.live")

#: How long the thread gathers emissions before one send, and how long a loop gathers its
#: own before encoding them (seconds).
COALESCE_SECONDS = 0.002
LOOP_COALESCE_SECONDS = 0.02
#: How often the publisher asks whether any process receives events.
LISTENERS_CHECK_SECONDS = 1.0
#: Emissions held at most while the transport is slow (then they are dropped).
MAX_PENDING = 10_000
#: How long `close` waits for the last events to be sent.
CLOSE_TIMEOUT = 2.0


def new_origin() -> str:
    """Who sent a payload (``host:pid:random``): a process skips its own when listening."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Publisher:
    """Sends a bus's events to other processes.

    Emissions made on an event loop (a worker's claims and finishes) are gathered on that
    loop for `LOOP_COALESCE_SECONDS` and encoded there in one go, and only the payloads
    cross to the sending thread: its wake-ups are then a few dozen a second, each mostly
    waiting on the database, rather than one per emission competing with the loop for the
    interpreter. Emissions made elsewhere (a web request's thread, a script) go to the
    thread as events and are encoded there.
    """

    def __init__(self, bus: EventBus, transport: EventTransport, origin: str) -> None:
        self.transport = transport
        self.origin = origin
        #: Events sent and events dropped (the transport failed or fell behind).
        self.sent = 0
        self.dropped = 0
        self._queue: queue.SimpleQueue[tuple[list[TaskEvent], list[str]] | None] = (
            queue.SimpleQueue()
        )
        self._failing = False
        self._scope: str | None = None
        self._buffers: dict[asyncio.AbstractEventLoop, list[TaskEvent]] = {}
        self._bus = bus
        #: Whether some process receives (asked every `LISTENERS_CHECK_SECONDS`); while
        #: none does, the publisher is off the bus, so no event is even built for it.
        self.listened = True
        self._unsubscribe: Callable[[], None] | None = bus.subscribe_batches(self._on_events)
        self._thread = threading.Thread(target=self._run, name="nightcrew-publisher", daemon=True)
        self._started = False
        self._closed = False
        self._lock = threading.Lock()

    def _on_events(self, events: Sequence[TaskEvent]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._hand_over(list(events), [])
            return
        buffer = self._buffers.get(loop)
        if buffer is None:
            buffer = self._buffers[loop] = []
            # Progress is what a client waits for: it goes at once (a worker writes it at
            # most every 0.1 s); finishes and claims gather a little, to be encoded together.
            if events[0].kind is EventKind.PROGRESS:
                loop.call_soon(self._flush_loop, loop)
            else:
                loop.call_later(LOOP_COALESCE_SECONDS, self._flush_loop, loop)
        buffer.extend(events)

    def _flush_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        events = self._buffers.pop(loop, [])
        if events and self._scope is not None:
            self._hand_over([], encode(events, self._scope, self.origin))
        elif events:
            self._hand_over(events, [])  # the thread learns the scope first

    def _hand_over(self, events: list[TaskEvent], payloads: list[str]) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= MAX_PENDING:
            self.dropped += len(events) or len(payloads)
            return
        self._queue.put((events, payloads))
        if not self._started:
            with self._lock:
                if not self._started and not self._closed:
                    self._started = True
                    self._thread.start()

    def _check_listeners(self) -> None:
        """Follow the bus only while someone receives (a transport that cannot tell:
        assume someone does)."""
        try:
            listened = self.transport.listened()
        except Exception:
            listened = True
        self.listened = listened
        with self._lock:
            if self._closed:
                return
            if listened and self._unsubscribe is None:
                self._unsubscribe = self._bus.subscribe_batches(self._on_events)
            elif not listened and self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None

    def _run(self) -> None:
        checked = 0.0
        while True:
            if time.monotonic() - checked >= LISTENERS_CHECK_SECONDS:
                self._check_listeners()
                checked = time.monotonic()
            try:
                first = self._queue.get(timeout=LISTENERS_CHECK_SECONDS)
            except queue.Empty:
                continue
            if first is None:
                return
            time.sleep(COALESCE_SECONDS)
            items = [first]
            stop = False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                items.append(more)
            count = sum(len(events) or len(payloads) for events, payloads in items)
            if not self.listened:
                if stop:
                    return
                continue  # nobody receives: what was gathered before the check is dropped
            try:
                if self._scope is None:
                    self._scope = self.transport.scope()
                payloads = []
                for events, encoded in items:
                    payloads += encoded if encoded else encode(events, self._scope, self.origin)
                self.transport.send(payloads)
                self.sent += count
                if self._failing:
                    self._failing = False
                    log.info("live events are sent again")
            except Exception as exc:  # a DatabaseError, mostly: never kill the thread
                self.dropped += count
                if not self._failing:
                    self._failing = True
                    log.warning("live events could not be sent, dropping them: %s", exc)
            if stop:
                return

    def close(self) -> None:
        """Stop listening to the bus and send what is held (waiting at most a moment)."""
        for loop in list(self._buffers):
            self._flush_loop(loop)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
        if self._started:
            self._queue.put(None)
            self._thread.join(CLOSE_TIMEOUT)
        self.transport.close()
