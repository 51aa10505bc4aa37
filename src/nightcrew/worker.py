"""The worker: claims due tasks in batches, runs them, and keeps their leases alive.

It decides *when* tasks run and *which*; how one run goes is `nightcrew.execution`'s
business, and every statement it sends lives in `nightcrew.store`. Four loops share one
event loop: claiming, finishing (batched writes of outcomes), heartbeating (leases,
cancel requests, rescue of other workers' expired leases, progress), and on PostgreSQL a
``LISTEN`` connection that wakes the claimer the moment a task is enqueued.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nightcrew import loop as event_loop
from nightcrew.errors import ConfigurationError
from nightcrew.execution import Executor, RunContext, StopReason
from nightcrew.models import MaintenanceTaskStatus, utcnow
from nightcrew.processors import loader_for
from nightcrew.settings import Settings
from nightcrew.store import Database, Store, postgres
from nightcrew.store import tasks as st
from nightcrew.store.hotpath import hot_path_for
from nightcrew.store.tasks import ClaimedTask, Outcome

log = logging.getLogger("nightcrew.worker")
S = MaintenanceTaskStatus

#: How long finished outcomes may wait to be written together (seconds).
FLUSH_WINDOW = 0.005
#: Most outcomes written by one statement.
FLUSH_BATCH = 500
#: Most tasks claimed by one statement.
CLAIM_BATCH = 500


@dataclass(eq=False)
class _Running:
    ctx: RunContext
    task: asyncio.Task[None]


class Worker:
    """Runs tasks from a set of queues until stopped.

    Usable from a host application's event loop (``asyncio.create_task(worker.run())``,
    then ``worker.request_stop()``) or through ``nightcrew worker``. Several workers, in
    one process or many, on one host or many, share the work through the database.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        queue_limits: dict[str, int] | None = None,
        database: Database | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.queues = list(queues) if queues else None
        self.concurrency = concurrency or self.settings.concurrency
        self.queue_limits = dict(queue_limits or {})
        if self.concurrency < 1:
            raise ConfigurationError("concurrency must be >= 1")
        for queue, limit in self.queue_limits.items():
            if limit < 1:
                raise ConfigurationError(f"limit of queue {queue!r} must be >= 1")
            if self.queues is not None and queue not in self.queues:
                raise ConfigurationError(f"queue {queue!r} has a limit but is not served")
        self._own_database = database is None
        self.database = database or Database(self.settings.database_url)
        self.store = Store(self.database)
        self.hot = hot_path_for(self.database)
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.executor = Executor(loader_for(self.settings), self.settings.max_info_bytes)
        self.lease_seconds = self.settings.lease_seconds

        self._running: dict[int, _Running] = {}
        self._unflushed: dict[int, Outcome] = {}
        self._wake = asyncio.Event()
        self._flush_needed = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()
        self.listening = False
        self._listen_connected = False
        self.listener_pid: int | None = None
        self.processed = 0

    # ---------------------------------------------------------------- public

    def request_stop(self) -> None:
        """Stop claiming; in-flight tasks get the grace period, then are handed back."""
        if not self._stopping:
            log.info("worker stopping", extra={"worker": self.id})
        self._stopping = True
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def run(self, *, until_idle: bool = False) -> None:
        """Run until `request_stop` (or, with ``until_idle``, until nothing is due)."""
        log.info(
            "worker started",
            extra={"worker": self.id, "queues": self.queues, "concurrency": self.concurrency},
        )
        self._stopped.clear()
        helpers = [
            asyncio.create_task(self._finish_loop(), name="nightcrew-finish"),
            asyncio.create_task(self._upkeep_loop(), name="nightcrew-upkeep"),
        ]
        if self.database.is_postgres:
            helpers.append(asyncio.create_task(self._listen_loop(), name="nightcrew-listen"))
        try:
            await self._rescue()
            await self._claim_loop(until_idle)
            await self._drain_in_flight()
        finally:
            self._stopping = True
            await self._abandon_in_flight()
            for timer in self._timers:
                timer.cancel()
            self._stopped.set()
            self._flush_needed.set()
            for helper in helpers:
                if helper.get_name() != "nightcrew-finish":
                    helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._flush()
            await self.hot.aclose()
            if self._own_database:
                await self.database.adispose()
            log.info("worker stopped", extra={"worker": self.id, "processed": self.processed})

    # ---------------------------------------------------------------- claiming

    def _claim_threshold(self) -> int:
        # Claim in batches when busy; at once when idle (latency matters then).
        return 1 if not self._running else max(1, self.concurrency // 4)

    def _busy_by_queue(self) -> dict[str, int]:
        busy: dict[str, int] = {}
        for running in self._running.values():
            q = running.ctx.claimed.queue
            busy[q] = busy.get(q, 0) + 1
        return busy

    async def _claim_all(self, free: int) -> tuple[int, int]:
        """Claim up to ``free`` tasks; returns (asked, got).

        Without per-queue limits this is one statement. With them, each limited queue is
        claimed up to its own headroom first, and whatever slots they leave unused (they
        may have nothing due) go to the worker's other queues in one more statement.
        """
        if not self.queue_limits:
            n = min(free, CLAIM_BATCH)
            return n, await self._claim(self.queues, n)
        asked = got = 0
        busy = self._busy_by_queue()
        for queue, limit in self.queue_limits.items():
            n = min(free - got, limit - busy.get(queue, 0), CLAIM_BATCH)
            if n > 0:
                asked += n
                got += await self._claim([queue], n)
        n = min(free - got, CLAIM_BATCH)
        if n > 0:
            limited = list(self.queue_limits)
            if self.queues is None:
                asked += n
                got += await self._claim(None, n, exclude=limited)
            else:
                others = [q for q in self.queues if q not in self.queue_limits]
                if others:
                    asked += n
                    got += await self._claim(others, n)
        return asked, got

    async def _claim_loop(self, until_idle: bool) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self.concurrency - len(self._running)
            got = asked = 0
            if free >= self._claim_threshold():
                try:
                    asked, got = await self._claim_all(free)
                except Exception:
                    log.exception("claim failed; retrying after the poll interval")
                    await asyncio.sleep(self.settings.poll_interval)
                    continue
            if until_idle and got == 0 and not self._running:
                if not self._unflushed:
                    return
                await self._flush()  # a retry due now must be visible before we decide
                continue
            if asked and got == asked:
                continue  # more may be due: claim again as soon as slots free
            if self._stopping:
                return
            timeout = self.settings.poll_interval if got < asked or not asked else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _claim(self, queues: list[str] | None, n: int, *, exclude: Sequence[str] = ()) -> int:
        stmt, params = st.claim(
            self.database.dialect,
            queues=queues,
            exclude_queues=exclude,
            limit=n,
            token=self.id,
            now=utcnow(),
            lease_seconds=self.lease_seconds,
        )
        claimed = await self.hot.claim(stmt, params)
        for task in claimed:
            self._start(task)
        return len(claimed)

    def _start(self, claimed: ClaimedTask) -> None:
        ctx = RunContext(claimed)
        task = asyncio.create_task(self._execute(ctx))
        task.add_done_callback(lambda t: self._cancelled_before_start(t, ctx))
        self._running[claimed.id] = _Running(ctx, task)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "task started",
                extra={
                    "task_id": claimed.id,
                    "processor": claimed.processor_type,
                    "attempt": claimed.attempt,
                },
            )

    async def _execute(self, ctx: RunContext) -> None:
        try:
            outcome = await self.executor.run(ctx)
        except BaseException as exc:  # pragma: no cover - Executor.run does not raise
            log.exception("executor crashed", extra={"task_id": ctx.task_id})
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            self._running.pop(ctx.task_id, None)
            if self.concurrency - len(self._running) >= self._claim_threshold():
                self._wake.set()
        if ctx.stop_reason == StopReason.LEASE_LOST:
            return  # someone else owns the task now; our result would be rejected anyway
        self._record(ctx, outcome)

    def _cancelled_before_start(self, task: asyncio.Task[None], ctx: RunContext) -> None:
        """A task cancelled before its first step never ran its body: record it here."""
        if not task.cancelled() or self._running.pop(ctx.task_id, None) is None:
            return
        if ctx.stop_reason != StopReason.LEASE_LOST:
            self._record(ctx, self.executor.stopped(ctx))

    def _record(self, ctx: RunContext, outcome: Outcome) -> None:
        if ctx.progress is not None:
            outcome = dataclasses.replace(outcome, progress=ctx.progress)
        self._unflushed[ctx.task_id] = outcome
        if len(self._unflushed) >= FLUSH_BATCH or not self._flush_needed.is_set():
            self._flush_needed.set()
        duration = time.monotonic() - ctx.started
        level = logging.DEBUG if outcome.status == S.COMPLETED else logging.INFO
        if outcome.status == S.ERROR:
            level = logging.WARNING
        if log.isEnabledFor(level):
            log.log(
                level,
                "task %s %s",
                ctx.task_id,
                "retrying" if outcome.status == S.PENDING else outcome.status.value.lower(),
                extra={
                    "task_id": ctx.task_id,
                    "processor": ctx.claimed.processor_type,
                    "attempt": ctx.claimed.attempt,
                    "duration": round(duration, 6),
                    "status": outcome.status.value,
                    "error": (outcome.info or {}).get("error"),
                },
            )
        if outcome.status == S.PENDING and outcome.start_at is not None:
            self._wake_at(outcome.start_at.timestamp())

    def _wake_at(self, epoch: float) -> None:
        """Wake the claimer when a task becomes due (a retry, or a NOTIFY of a future task)."""
        delay = epoch - time.time()
        if delay <= 0:
            self._wake.set()
            return
        if delay > self.settings.poll_interval * 4 and not self.database.is_postgres:
            return  # polling finds it just as well
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self._wake.set()

        handle = loop.call_later(delay + 0.001, fire)
        self._timers.add(handle)

    # ---------------------------------------------------------------- finishing

    async def _finish_loop(self) -> None:
        while True:
            await self._flush_needed.wait()
            if not self._stopped.is_set():
                await asyncio.sleep(FLUSH_WINDOW)
            self._flush_needed.clear()
            await self._flush()
            if self._stopped.is_set() and not self._unflushed:
                return

    async def _flush(self) -> None:
        """Write buffered outcomes, many per statement; on failure keep them and retry.

        When stopping, give up after a few failures: the leases then expire and the
        rescuer hands the tasks to another worker, so nothing is lost either way.
        """
        async with self._flush_lock:
            failures = 0
            while self._unflushed:
                try:
                    await self._flush_batch()
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("writing outcomes failed (%d); will retry", failures)
                    if self._stopped.is_set() and failures >= 5:
                        return
                    await asyncio.sleep(min(1.0, 0.1 * failures))

    async def _flush_batch(self) -> None:
        batch = dict(list(self._unflushed.items())[:FLUSH_BATCH])
        dialect = self.database.dialect
        params = st.finish_params(dialect, self.id, list(batch.values()), utcnow())
        written = await self.hot.finish(st.finish_statement(dialect), params)
        for task_id, outcome in batch.items():
            # The task may have run again meanwhile (claimed once this write committed):
            # only drop the outcome that was written.
            if self._unflushed.get(task_id) is outcome:
                del self._unflushed[task_id]
        self.processed += len(written)
        if len(written) < len(batch):
            lost = set(batch) - {task_id for task_id, _ in written}
            log.warning(
                "outcomes rejected: lease was lost (task rescued or cancelled by an operator)",
                extra={"task_ids": sorted(lost), "worker": self.id},
            )
        if any(status == S.PENDING for _, status in written):
            self._wake.set()

    # ---------------------------------------------------------------- leases and upkeep

    async def _upkeep_loop(self) -> None:
        """Heartbeats, cancel requests, progress and rescue, each at its own pace."""
        # Without NOTIFY (SQLite), look for cancel requests at least every second.
        cancel_interval = min(self.settings.heartbeat_interval, 1.0)
        last_beat = last_rescue = last_cancel_check = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            try:
                await self._flush_progress()
                now = time.monotonic()
                if now - last_beat >= self.settings.heartbeat_interval:
                    last_beat = last_cancel_check = now
                    await self._heartbeat()
                elif not self.database.is_postgres and now - last_cancel_check >= cancel_interval:
                    last_cancel_check = now
                    await self._check_cancels()
                if now - last_rescue >= self.lease_seconds / 2:
                    last_rescue = now
                    await self._rescue()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("upkeep failed; retrying")

    def _held_ids(self) -> list[int]:
        return sorted(set(self._running) | set(self._unflushed))

    async def _heartbeat(self) -> None:
        ids = self._held_ids()
        if not ids:
            return
        stmt = st.heartbeat_statement(self.id, ids, utcnow(), self.lease_seconds)
        rows = (await self.store.aexecute(stmt)).all()
        held = {row.id for row in rows}
        for task_id in ids:
            if task_id not in held:
                self._stop_task(task_id, StopReason.LEASE_LOST)
                self._unflushed.pop(task_id, None)
        for row in rows:
            if row.cancel_requested_at is not None:
                self._stop_task(row.id, StopReason.CANCEL)

    async def _check_cancels(self) -> None:
        ids = sorted(self._running)
        if not ids:
            return
        rows = (await self.store.aexecute(st.cancel_requested_statement(self.id, ids))).all()
        for row in rows:
            self._stop_task(row.id, StopReason.CANCEL)

    def _stop_task(self, task_id: int, reason: str) -> None:
        running = self._running.get(task_id)
        if running is None or running.ctx.stop_reason is not None:
            return
        log.info("stopping task", extra={"task_id": task_id, "reason": reason})
        running.ctx.stop_reason = reason
        running.task.cancel()

    async def _rescue(self) -> None:
        try:
            rows = (await self.store.aexecute(st.rescue_statement(utcnow()))).all()
        except Exception:
            log.exception("rescue failed")
            return
        for row in rows:
            log.warning(
                "rescued task with an expired lease",
                extra={"task_id": row.id, "status": row.status.value, "worker": self.id},
            )
        if rows:
            self._wake.set()

    async def _flush_progress(self) -> None:
        steps = []
        now = utcnow()
        for running in list(self._running.values()):
            ctx = running.ctx
            if ctx.progress_dirty and ctx.progress is not None:
                ctx.progress_dirty = False
                pct, message = ctx.progress
                stmt = st.progress_statement(
                    self.id, ctx.task_id, ctx.claimed.attempt, pct, message, now
                )
                steps.append((stmt, None))
        if steps:
            await self.store.aexecute_all(steps)

    # ---------------------------------------------------------------- PostgreSQL wake-ups

    async def _listen_loop(self) -> None:
        """Keep a LISTEN connection; reconnect with backoff; polling covers the gaps.

        The backoff grows while connecting keeps failing and starts small again once a
        connection has been established, so a later, single drop is repaired quickly.
        """
        delay = 0.1
        while True:
            self._listen_connected = False
            try:
                await postgres.listen(self.database.url, self._on_notice, self._on_listening)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listen connection lost (%s); reconnecting", exc)
            self.listening = False
            if self._listen_connected:
                delay = 0.1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_listening(self, backend_pid: int) -> None:
        self.listening = True
        self._listen_connected = True
        self.listener_pid = backend_pid
        self._wake.set()  # catch up on anything enqueued while we were not listening

    def _on_notice(self, notice: postgres.Notice) -> None:
        if notice.kind == "task":
            if self.queues is None or notice.queue in self.queues:
                if notice.due is not None:
                    self._wake_at(notice.due)
                else:
                    self._wake.set()
        elif notice.kind == "cancel" and notice.task_id in self._running:
            assert notice.task_id is not None
            self._stop_task(notice.task_id, StopReason.CANCEL)

    # ---------------------------------------------------------------- shutdown

    async def _drain_in_flight(self) -> None:
        if not self._running:
            return
        grace = self.settings.shutdown_grace_seconds
        log.info(
            "waiting for in-flight tasks",
            extra={"worker": self.id, "in_flight": len(self._running), "grace": grace},
        )
        tasks = [r.task for r in self._running.values()]
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if pending:
            for task_id in list(self._running):
                self._stop_task(task_id, StopReason.SHUTDOWN)
            await asyncio.wait(pending)

    async def _abandon_in_flight(self) -> None:
        """If `run` itself is cancelled, stop what still runs and hand it back."""
        if not self._running:
            return
        tasks = [r.task for r in self._running.values()]
        for task_id in list(self._running):
            self._stop_task(task_id, StopReason.SHUTDOWN)
        await asyncio.wait(tasks, timeout=5)


def run_worker(settings: Settings, **kwargs: Any) -> None:
    """Blocking helper for scripts: run a worker until SIGTERM/SIGINT."""
    import signal

    async def main() -> None:
        worker = Worker(settings, **kwargs)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        await worker.run()

    event_loop.run(main(), settings)
