"""The publisher: this process's task events, sent to every other process of the database.

A batch subscriber of the app's `EventBus` (so no worker service knows about it): it only
appends each emission to a queue, and a thread of its own encodes the events
(`nightcrew.live.wire`) and sends them through the database's transport
(`nightcrew.store.event_transport`: NOTIFY on PostgreSQL, the journal on SQLite). The thread
takes whatever arrived within `COALESCE_SECONDS` of the first emission, so a drain's
hundreds of emissions a second make tens of sends, and the emitter (a worker's event loop,
a web request) never waits for the database. Events are sent after the transition
committed, since the store emits them then.

Live events are a view, not a log: when the database cannot be reached the publisher drops
what it holds (one warning per outage) rather than let a queue grow without bound; the
tasks themselves are in the database.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Sequence

from nightcrew.events import EventBus, EventKind, TaskEvent
from nightcrew.live.wire import encode
from nightcrew.store.event_transport import EventTransport

log = logging.getLogger("nightcrew.live")

#: How long the thread gathers emissions before one send (seconds).
COALESCE_SECONDS = 0.003
#: Emissions held at most while the transport is slow (then they are dropped).
MAX_PENDING = 10_000
#: How long `close` waits for the last events to be sent.
CLOSE_TIMEOUT = 2.0
#: Every kind the publisher sends: every transition, and a rejected late finish.
PUBLISHED_KINDS = tuple(EventKind)


def new_origin() -> str:
    """Who sent a payload (``host:pid:random``): a process skips its own when listening."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Publisher:
    """Sends a bus's events to other processes, from a daemon thread of its own."""

    def __init__(self, bus: EventBus, transport: EventTransport, origin: str) -> None:
        self.transport = transport
        self.origin = origin
        #: Events sent and events dropped (the transport failed or fell behind).
        self.sent = 0
        self.dropped = 0
        self._queue: queue.SimpleQueue[Sequence[TaskEvent] | None] = queue.SimpleQueue()
        self._failing = False
        self._unsubscribe = bus.subscribe_batches(self._on_events, PUBLISHED_KINDS)
        self._thread = threading.Thread(target=self._run, name="nightcrew-publisher", daemon=True)
        self._started = False
        self._closed = False
        self._lock = threading.Lock()

    def _on_events(self, events: Sequence[TaskEvent]) -> None:
        if self._queue.qsize() >= MAX_PENDING:
            self.dropped += len(events)
            return
        self._queue.put(events)
        if not self._started:
            with self._lock:
                if not self._started and not self._closed:
                    self._started = True
                    self._thread.start()

    def _run(self) -> None:
        scope: str | None = None
        while True:
            first = self._queue.get()
            if first is None:
                return
            time.sleep(COALESCE_SECONDS)
            batches = [first]
            stop = False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batches.append(more)
            events = [e for batch in batches for e in batch]
            try:
                if scope is None:
                    scope = self.transport.scope()
                self.transport.send(encode(events, scope, self.origin))
                self.sent += len(events)
                if self._failing:
                    self._failing = False
                    log.info("live events are sent again")
            except Exception as exc:  # a DatabaseError, mostly: never kill the thread
                self.dropped += len(events)
                if not self._failing:
                    self._failing = True
                    log.warning("live events could not be sent, dropping them: %s", exc)
            if stop:
                return

    def close(self) -> None:
        """Stop listening to the bus and send what is held (waiting at most a moment)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._unsubscribe()
        if self._started:
            self._queue.put(None)
            self._thread.join(CLOSE_TIMEOUT)
        self.transport.close()
