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
import contextlib
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from nightcrew.events import EventBatch, EventBus, EventKind, TaskEvent
from nightcrew.live.wire import encode_emissions
from nightcrew.store.event_transport import EventTransport

log = logging.getLogger("nightcrew.live")

#: How long the thread gathers emissions before one send, and how long a loop gathers its
#: claims and finishes before encoding them (seconds; progress goes at once). A tenth of a
#: second is still live to a person, and a 20,000-task drain then sends its 156 payloads in
#: 14 NOTIFY statements instead of 44 to 48 (with 0.02 s), each a wake-up of every listener.
COALESCE_SECONDS = 0.002
LOOP_COALESCE_SECONDS = 0.1
#: How often the publisher asks whether any process receives events.
LISTENERS_CHECK_SECONDS = 1.0
#: Emissions held at most while the transport is slow (then they are dropped).
MAX_PENDING = 10_000
#: How long `close` waits for the last events to be sent.
CLOSE_TIMEOUT = 2.0


#: One emission as the publisher holds it until encoded.
Emission = Sequence[TaskEvent]


def _count(emissions: list[Emission]) -> int:
    return sum(map(len, emissions))


def new_origin() -> str:
    """Who sent a payload (``host:pid:random``): a process skips its own when listening."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Publisher:
    """Sends a bus's events to other processes.

    Emissions made on an event loop (a worker's claims and finishes) are gathered on that
    loop for `LOOP_COALESCE_SECONDS`, encoded there in one go and, on PostgreSQL, sent from
    the loop on a connection of its own: a thread woken per batch would cost the loop
    about a millisecond each time, handing the interpreter lock back and forth (measured:
    80-150 ms over a 20,000-task drain). Emissions made elsewhere (a web request's thread,
    a script) and SQLite's journal writes go through the thread. The thread also asks,
    every second, whether anyone listens.
    """

    def __init__(self, bus: EventBus, transport: EventTransport, origin: str) -> None:
        self.transport = transport
        self.origin = origin
        #: Events sent and events dropped (the transport failed or fell behind).
        self.sent = 0
        self.dropped = 0
        #: Emissions (or payloads a loop encoded) for the thread to send.
        self._queue: queue.SimpleQueue[tuple[list[Emission], list[str]] | None] = (
            queue.SimpleQueue()
        )
        self._failing = False
        self._scope: str | None = None
        self._buffers: dict[asyncio.AbstractEventLoop, list[Emission]] = {}
        #: Payloads each loop sends itself (PostgreSQL), its sender task and wake-up.
        self._outboxes: dict[asyncio.AbstractEventLoop, list[list[str]]] = {}
        self._outbox_ready: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self._senders: set[asyncio.Task[None]] = set()
        #: Loops whose senders are to stop once their outbox is empty (`aclose`).
        self._closing: set[asyncio.AbstractEventLoop] = set()
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
        # Kept as emitted (an `EventBatch` stays columns until it is encoded).
        emission = events if isinstance(events, EventBatch) else list(events)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._hand_over([emission], [])
            return
        if not self._started:
            self._start_thread()  # it asks who listens, every second
        # Progress is what a client waits for: it goes at once, with whatever claims and
        # finishes gathered before it (a worker writes progress at most every 0.05 s); those
        # alone gather for `LOOP_COALESCE_SECONDS`, to be encoded and sent together.
        progress = events[0].kind is EventKind.PROGRESS
        buffer = self._buffers.get(loop)
        if buffer is None:
            buffer = self._buffers[loop] = []
            if not progress:
                loop.call_later(LOOP_COALESCE_SECONDS, self._flush_loop, loop)
        if progress:
            loop.call_soon(self._flush_loop, loop)
        buffer.append(emission)

    def _flush_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        events = self._buffers.pop(loop, [])
        if not events or not self.listened:
            return
        if self._scope is None:
            self._hand_over(events, [])  # the thread learns the scope first
            return
        payloads = encode_emissions(events, self._scope, self.origin)
        if not self.transport.sends_async:
            self._hand_over([], payloads)
            return
        outbox = self._outboxes.get(loop)
        if outbox is None:
            outbox = self._outboxes[loop] = []
            self._senders.add(loop.create_task(self._send_from_loop(outbox, loop)))
        outbox.append(payloads)
        self._wake(loop)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        flag = self._outbox_ready.get(loop)
        if flag is None:
            flag = self._outbox_ready[loop] = asyncio.Event()
        flag.set()

    async def _send_from_loop(
        self, outbox: list[list[str]], loop: asyncio.AbstractEventLoop
    ) -> None:
        """This loop's sender: one statement per batch of payloads, in order, on the loop
        (PostgreSQL): no thread to wake, no interpreter lock handed back and forth."""
        flag = self._outbox_ready.setdefault(loop, asyncio.Event())
        while True:
            if not outbox and (self._closed or loop in self._closing):
                return  # closing: what it held is sent (`aclose` waits for that)
            await flag.wait()
            flag.clear()
            while outbox:
                batch = [p for payloads in outbox for p in payloads]
                outbox.clear()
                try:
                    await self.transport.asend(batch)
                    self.sent += len(batch)
                    self._recovered()
                except Exception as exc:  # a DatabaseError, mostly: never stop the loop's
                    self.dropped += len(batch)
                    self._failed(exc)

    def _hand_over(self, events: list[Emission], payloads: list[str]) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= MAX_PENDING:
            self.dropped += _count(events) or len(payloads)
            return
        self._queue.put((events, payloads))
        if not self._started:
            self._start_thread()

    def _start_thread(self) -> None:
        with self._lock:
            if not self._started and not self._closed:
                self._started = True
                self._thread.start()

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("live events are sent again")

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning("live events could not be sent, dropping them: %s", exc)

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
            count = sum(_count(events) or len(payloads) for events, payloads in items)
            if not self.listened:
                if stop:
                    return
                continue  # nobody receives: what was gathered before the check is dropped
            try:
                if self._scope is None:
                    self._scope = self.transport.scope()
                payloads = []
                for events, encoded in items:
                    payloads += (
                        encoded if encoded else encode_emissions(events, self._scope, self.origin)
                    )
                self.transport.send(payloads)
                self.sent += count
                self._recovered()
            except Exception as exc:  # a DatabaseError, mostly: never kill the thread
                self.dropped += count
                self._failed(exc)
            if stop:
                return

    async def aclose(self) -> None:
        """`close` from a loop: what this loop holds is sent from it first.

        Its sender finishes the statement under way and whatever is queued behind it (a
        worker's last finishes, the ones a dashboard is waiting for), within
        `CLOSE_TIMEOUT`; only then is it cancelled. Cancelling a NOTIFY in flight lost
        its events: a 20,000-task drain's last 5,500 in one benchmark run of fifteen."""
        loop = asyncio.get_running_loop()
        events = self._buffers.pop(loop, [])
        payloads: list[str] = []
        if events and self.listened and self._scope is not None:
            payloads = encode_emissions(events, self._scope, self.origin)
        elif events and self.listened:
            self._hand_over(events, [])
        senders = [t for t in self._senders if t.get_loop() is loop]
        outbox = self._outboxes.get(loop)
        if payloads and outbox is not None and senders:
            outbox.append(payloads)  # after what the sender already holds: in order
            payloads = []
        self._closing.add(loop)
        if senders:
            self._wake(loop)
            _, late = await asyncio.wait(senders, timeout=CLOSE_TIMEOUT)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            self._senders.difference_update(senders)
        self._outboxes.pop(loop, None)
        if payloads and self.transport.sends_async:
            try:
                await self.transport.asend(payloads)
                self.sent += len(payloads)
            except Exception as exc:
                self._failed(exc)
        elif payloads:
            self._hand_over([], payloads)
        self.close()
        await self.transport.aclose()

    def close(self) -> None:
        """Stop listening to the bus and send what is held (waiting at most a moment).

        What a loop still holds goes through the thread (the loop may be closing)."""
        for loop in list(self._buffers):
            events = self._buffers.pop(loop, [])
            if events and self.listened:
                self._hand_over(events, [])
        for outbox in self._outboxes.values():
            for payloads in outbox:
                self._hand_over([], payloads)
            outbox.clear()
        for task in self._senders:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing runs
                task.get_loop().call_soon_threadsafe(task.cancel)
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
