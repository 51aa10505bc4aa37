"""The waker: tells the claimer when to look for work, sooner than its poll would.

On PostgreSQL it holds a ``LISTEN`` connection: an enqueue, activation or retry wakes the
claimer at once (or exactly when the new task becomes due), and a cancel request stops the
run it names. A lost connection is made again with a short backoff (at most half a second), and
the claimer is woken as soon as it is back, so work enqueued meanwhile is picked up then,
whatever the poll interval. Polling (the claimer's ``poll_interval``) stays on as the
fallback, and is the whole mechanism on SQLite, which has no notifications.

It also keeps timers for retries this worker scheduled, so a retry due in 200 ms starts
then, not at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nightcrew.store import TaskStore
from nightcrew.store.notices import Notice
from nightcrew.values import StopReason
from nightcrew.worker.state import WorkerState

log = logging.getLogger("nightcrew.worker")

#: Reconnect backoff of the LISTEN connection (seconds): first and longest wait. The
#: longest wait bounds the pickup of the first task after an outage (issue 9: within a
#: second, whatever the poll interval), with the connect and the claim on top of it.
RECONNECT_FIRST, RECONNECT_MAX = 0.05, 0.5


class Waker:
    name = "waker"

    def __init__(self, store: TaskStore, state: WorkerState) -> None:
        self.store = store
        self.state = state
        self.listening = False
        self.listener_pid: int | None = None
        self._connected = False
        self._timers: set[asyncio.TimerHandle] = set()
        self._stop = asyncio.Event()
        #: Other services' interest in notices of other kinds (the ticker: "schedule").
        self._listeners: dict[str, list[Callable[[Notice], None]]] = {}

    async def run(self) -> None:
        if not self.store.supports_listen:
            return
        delay = RECONNECT_FIRST
        while not self._stop.is_set():
            self._connected = False
            listen = asyncio.ensure_future(self.store.listen(self._on_notice, self._on_listening))
            stop = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait({listen, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                if not listen.done():
                    listen.cancel()
                    await asyncio.gather(listen, return_exceptions=True)
            self.listening = False
            if self._stop.is_set():
                return
            exc = listen.exception() if not listen.cancelled() else None
            log.warning("listen connection lost (%s); reconnecting in %.2g s", exc, delay)
            if self._connected:
                delay = RECONNECT_FIRST
            try:
                async with asyncio.timeout(delay):
                    await self._stop.wait()
                return
            except TimeoutError:
                pass
            delay = min(delay * 2, RECONNECT_MAX)

    def stop(self) -> None:
        self._stop.set()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _on_listening(self, backend_pid: int) -> None:
        self.listening = True
        self._connected = True
        self.listener_pid = backend_pid
        self.state.wake.set()  # catch up on anything enqueued while we were not listening

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind == "task":
            if self.state.config.serves(notice.queue):
                if notice.due is not None:
                    self.wake_at(notice.due)
                else:
                    self.state.wake.set()
        elif notice.kind == "cancel" and self._holds(notice.task_id):
            assert notice.task_id is not None
            self.state.stop_run(notice.task_id, StopReason.CANCEL)
        for listener in self._listeners.get(notice.kind, ()):
            listener(notice)

    def _holds(self, task_id: int | None) -> bool:
        """A task this worker runs, or claimed ahead (that one ends CANCELLED unstarted)."""
        return task_id in self.state.running or task_id in self.state.queued

    def add_listener(self, kind: str, listener: Callable[[Notice], None]) -> None:
        """Hand notices of ``kind`` to ``listener`` too (called on the loop, must be quick)."""
        self._listeners.setdefault(kind, []).append(listener)

    def wake_at(self, epoch: float) -> None:
        """Wake the claimer when a task becomes due (a retry, or a notice of a future task)."""
        delay = epoch - time.time()
        if delay <= 0:
            self.state.wake.set()
            return
        if delay > self.state.config.poll_interval * 4 and not self.store.supports_listen:
            return  # polling finds it just as well
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self.state.wake.set()

        handle = loop.call_later(delay + 0.001, fire)
        self._timers.add(handle)
