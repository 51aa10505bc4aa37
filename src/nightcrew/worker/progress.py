"""The progress flusher: writes the latest progress of running tasks, a few times a second.

``report_progress`` only records a value in the run's context, so a processor may call it in
a tight loop; this service writes what changed since the last flush in one statement for
all runs. The last value of a run is also written with its outcome, so a value reported
just before the end is never lost.

A report that finds its run's progress clean signals the flusher, which writes at once
unless it wrote less than a gap ago: `LIVE_PROGRESS_GAP` (0.05 s) while someone listens for
progress events (a live stream, the publisher of events to other processes), so a client
sees a report within a tenth of a second or so; `PROGRESS_INTERVAL` (0.25 s) otherwise.
Either way a worker sends at most one progress statement per gap, whatever its runs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from nightcrew.errors import DatabaseError
from nightcrew.events import EventKind
from nightcrew.execution import PROGRESS_INTERVAL
from nightcrew.store import TaskStore
from nightcrew.values import ProgressUpdate
from nightcrew.worker.service import Periodic
from nightcrew.worker.state import WorkerState

log = logging.getLogger("nightcrew.worker")

#: Shortest time between two progress writes of a worker while progress is listened to.
LIVE_PROGRESS_GAP = 0.05


class ProgressFlusher(Periodic):
    name = "progress flusher"

    def __init__(self, store: TaskStore, state: WorkerState) -> None:
        super().__init__(PROGRESS_INTERVAL)
        self.store = store
        self.state = state
        self._dirty = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        state.on_progress = self.signal

    def signal(self) -> None:
        """A run has a new value to write (called from the loop or a sync run's thread)."""
        if threading.get_ident() == self._loop_thread:
            self._dirty.set()
        elif self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody writes now
                self._loop.call_soon_threadsafe(self._dirty.set)

    def stop(self) -> None:
        super().stop()
        self._dirty.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        last = 0.0
        while not self._stop.is_set():
            # A signal, or a round anyway: a report racing the last write stays dirty.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            live = self.store.events.wants(EventKind.PROGRESS)
            wait = last + (LIVE_PROGRESS_GAP if live else PROGRESS_INTERVAL) - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._stop.wait()
                if self._stop.is_set():
                    return
            last = time.monotonic()
            try:
                await self.step()
            except DatabaseError as exc:
                if not exc.transient:
                    raise
                log.warning("%s failed, retrying: %s", self.name, exc)

    async def step(self) -> None:
        updates = []
        for running in list(self.state.running.values()):
            ctx = running.ctx
            if ctx.progress_dirty and ctx.progress is not None:
                ctx.progress_dirty = False
                percent, message = ctx.progress
                claimed = ctx.claimed
                updates.append(
                    ProgressUpdate(
                        claimed.id, claimed.lease_token, claimed.attempt, percent, message, claimed
                    )
                )
        await self.store.save_progress(updates)
