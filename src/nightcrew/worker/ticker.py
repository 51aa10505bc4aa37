"""The ticker: turns due schedule ticks into tasks, exactly once whatever the workers.

Every worker runs one. When it starts it syncs the schedules declared in code (and the
upkeep's) once, then loops:

- **idle**: one indexed query per poll interval, the earliest ``next_run_at`` of the
  enabled schedules (the first entry of ``ix_nightcrew_schedules_due``); it then sleeps
  until that tick or the poll interval, whichever comes first. On PostgreSQL a ``NOTIFY``
  sent when a schedule is added, resumed or changed wakes it at once.
- **due**: a pass (`schedule_ops.tick`) claims up to a batch of due schedules, inserts
  their ticks' tasks and advances them in one transaction; a full batch is followed by
  another at once. Tickers of other workers take other rows (``SKIP LOCKED``); one that
  finds only rows others hold backs off briefly instead of spinning.

Each transaction runs whole in a thread (the store's sync path), never across awaits of the
event loop: a loop busy with hundreds of runs cannot stretch how long a pass holds its row
locks (or SQLite's write lock), and code that blocks the loop with a database call of its
own cannot deadlock against a pass waiting for the loop.

Which worker ticks a schedule does not matter: the tick a task stands for is computed from
the row, and the unique (schedule, tick) key makes a second task for it impossible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from nightcrew.errors import DatabaseError
from nightcrew.schedules.sync import Declared, declared_schedules, sync_declared
from nightcrew.schedules.values import SyncReport, TickReport
from nightcrew.store import TaskStore, schedule_ops
from nightcrew.store.notices import Notice
from nightcrew.worker.state import WorkerState
from nightcrew.worker.waker import Waker

if TYPE_CHECKING:
    from nightcrew.app import Nightcrew

log = logging.getLogger("nightcrew.worker")

#: Backoff while every due schedule is held by other tickers: first and longest wait.
CONTENDED_FIRST, CONTENDED_MAX = 0.02, 0.5
#: Backoff of the start-up sync while the database cannot be reached.
SYNC_RETRY_FIRST, SYNC_RETRY_MAX = 0.05, 1.0


class Ticker:
    name = "ticker"

    def __init__(self, app: Nightcrew, store: TaskStore, state: WorkerState, waker: Waker) -> None:
        # Loaded and checked here, in the worker's constructor: a bad NIGHTCREW_SCHEDULES
        # (or a schedule whose processor is not allowed) fails the worker before it starts.
        self.declared: Declared = declared_schedules(app.settings, app.loader)
        self.store = store
        self.poll_interval = state.config.poll_interval
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        #: What the start-up sync did (None until it ran).
        self.synced: SyncReport | None = None
        #: Set once the start-up sync ran and no schedule was due at the last look (or its
        #: due rows were other tickers'): ``run --once`` waits for it before it ends, so
        #: the ticks due when it starts are among the tasks it runs.
        self.caught_up = asyncio.Event()
        #: Counters, for operators and benchmarks: earliest-due queries, passes, tasks.
        self.probes = 0
        self.passes = 0
        self.enqueued = 0
        waker.add_listener("schedule", self._on_notice)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _on_notice(self, notice: Notice) -> None:
        self._wake.set()

    async def run(self) -> None:
        await self._sync()
        hint: float | None = None  # epoch of the earliest next_run_at, as last read
        contended = 0
        while not self._stop.is_set():
            self._wake.clear()
            wait = self.poll_interval
            try:
                if hint is None or hint > time.time():
                    hint = await self._earliest()
                if hint is not None and hint <= time.time():
                    report = await self._pass()
                    hint = None
                    if report.claimed:
                        contended = 0
                        continue  # more may be due: look again at once
                    contended += 1  # due rows, all held by other tickers
            except DatabaseError as exc:
                if not exc.transient:
                    raise
                log.warning("ticker: %s; retrying in %.2g s", exc, self.poll_interval)
                hint = None
            self.caught_up.set()
            if contended:
                wait = min(wait, CONTENDED_FIRST * 2 ** min(contended - 1, 8), CONTENDED_MAX)
            elif hint is not None:
                wait = min(wait, max(0.0, hint - time.time()))
            await self._sleep(wait)

    async def _earliest(self) -> float | None:
        self.probes += 1
        earliest = await asyncio.to_thread(self.store.run, schedule_ops.earliest_due)
        return None if earliest is None else earliest.timestamp()

    async def _pass(self) -> TickReport:
        report = await asyncio.to_thread(self.store.run, schedule_ops.tick)
        self.passes += 1
        self.enqueued += report.enqueued
        if report.misfired or report.skipped_instances or report.conflicts:
            log.info(
                "ticker: %d task(s) enqueued, %d misfired tick(s) and %d over max_instances "
                "skipped, %d tick(s) already had a task",
                report.enqueued,
                report.misfired,
                report.skipped_instances,
                report.conflicts,
            )
        return report

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0 or self._stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _sync(self) -> None:
        """Sync the declared schedules once, retrying while the database is unreachable."""
        delay = SYNC_RETRY_FIRST
        while not self._stop.is_set():
            try:
                self.synced = report = await asyncio.to_thread(
                    sync_declared, self.store, self.declared
                )
            except DatabaseError as exc:
                if not exc.transient:
                    raise
                log.warning("schedule sync failed (%s); retrying in %.2g s", exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, SYNC_RETRY_MAX)
                continue
            for change in report.changes:
                level = logging.WARNING if change.action == "retired" else logging.INFO
                log.log(
                    level,
                    "schedule %s %s%s",
                    change.name,
                    change.action,
                    f": {change.detail}" if change.detail else "",
                    extra={"schedule": change.name},
                )
            return
