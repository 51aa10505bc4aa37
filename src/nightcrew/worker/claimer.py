"""The claimer: claims due tasks in batches up to the free slots, and starts their runs.

When busy it claims once a quarter of the slots is free, so claims come in batches; when
idle, as soon as one slot is. It sleeps until the waker (a NOTIFY, a retry coming due, a
finished run freeing slots) or the poll interval wakes it. Per-queue limits are caps: each
limited queue is claimed up to its headroom, and slots they leave unused serve the others.

Tasks with a ``delay`` (the origin's data: its runner slept ``delay`` seconds after such a
task, to stay under rate limits) run in a lane of their own: one at a time, and the next
one only ``delay`` seconds after the previous ended, whatever the worker's concurrency. The
lane's task takes one of the worker's slots.

**Prefetch.** With short tasks a claim of only the free slots is mostly round trip: at the
default concurrency of 10, ten no-op tasks per claim statement. So the claimer also claims
ahead, into a local queue whose runs start the moment a slot frees, but only as far ahead
as the slots will get through in `PREFETCH_WINDOW` at the runs' observed pace: hundreds
for no-op tasks, one or none for tasks that take seconds (none until a run has been
timed, and none with per-queue limits). A queued task keeps its lease like a running one,
is handed back at shutdown without spending an attempt, and is cancelled without starting
if an operator asks — so no other worker waits long for work this one holds.

A database that cannot be reached is retried with a short backoff (one log line each
time); an error that cannot heal (no schema, a wrong password) ends the worker. Draining
(``run --once``) gives up after `GIVE_UP_SECONDS` of failures, so a deploy's runner never
spins forever on a database it cannot use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nightcrew.errors import DatabaseError
from nightcrew.execution import RunContext, TaskRunner
from nightcrew.store import TaskStore
from nightcrew.values import ClaimedTask, ClaimRequest, StopReason
from nightcrew.worker.finisher import Finisher
from nightcrew.worker.state import Running, WorkerState

if TYPE_CHECKING:
    from nightcrew.app import Nightcrew

log = logging.getLogger("nightcrew.worker")

#: Most tasks claimed by one statement.
CLAIM_BATCH = 500
#: How far ahead the claimer claims: what the slots get through in this many seconds.
PREFETCH_WINDOW = 0.1
#: How long a draining claimer keeps retrying a database it cannot reach (seconds).
GIVE_UP_SECONDS = 30.0


def retry_delay(failures: int) -> float:
    """Backoff after consecutive failures: 50 ms doubling, at most one second."""
    return float(min(1.0, 0.05 * 2 ** min(failures - 1, 10)))


class Claimer:
    name = "claimer"

    def __init__(
        self, store: TaskStore, state: WorkerState, runner: TaskRunner, finisher: Finisher
    ) -> None:
        self.store = store
        self.state = state
        self.runner = runner
        self.finisher = finisher
        #: How a pipeline step reads its dependencies' results (`dependency_results`).
        self.results: Callable[[int], dict[str, Any]] | None = None
        #: The worker's app, which a run can ask for (`current_app`).
        self.app: Nightcrew | None = None
        #: The spaced lane: whether its task runs, and when the next one may start.
        self._spaced_busy = False
        self._spaced_gate = 0.0
        #: Draining, nothing left: awaited before giving up; True means look again (the
        #: supervisor waits there, once, for the ticker's first look).
        self.before_idle: Callable[[], Awaitable[bool]] | None = None
        #: The runs' pace: a moving average of their durations (None until one ran).
        self._run_seconds: float | None = None
        state.on_queued_cancel = self._cancel_queued

    def stop(self) -> None:
        self.state.stopping = True
        self.state.wake.set()

    def _threshold(self) -> int:
        # Claim in batches when busy; at once when idle (latency matters then).
        return 1 if not self.state.running else max(1, self.state.config.concurrency // 4)

    def _prefetch_room(self) -> int:
        """How many more tasks to claim ahead of the free slots (see the module's text)."""
        config = self.state.config
        if self._run_seconds is None or config.queue_limits or self.state.stopping:
            return 0
        ahead = int(config.concurrency * PREFETCH_WINDOW / max(self._run_seconds, 1e-5))
        return max(0, min(ahead, CLAIM_BATCH) - len(self.state.queued))

    async def run(self, *, until_idle: bool = False) -> None:
        """Claim and start runs until stopped (or, ``until_idle``, until nothing is due)."""
        state = self.state
        failures = 0
        failing_since = 0.0
        while not state.stopping:
            state.wake.clear()
            free = state.free_slots + self._prefetch_room()
            asked = got = 0
            # Outcomes written after this point may make more work due (a retry, a pipeline
            # step's dependents): draining stops only if none was written since.
            written_before = self.finisher.processed
            if free >= self._threshold():
                try:
                    asked, got = await self._claim_all(free)
                    failures = 0
                except DatabaseError as exc:
                    if not exc.transient:
                        raise
                    failures += 1
                    failing_since = failing_since if failures > 1 else time.monotonic()
                    if until_idle and time.monotonic() - failing_since > GIVE_UP_SECONDS:
                        raise
                    delay = retry_delay(failures)
                    log.warning("claim failed, retrying in %.2g s: %s", delay, exc)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._stopped()
                    continue
            if until_idle and got == 0 and not state.running and not state.queued:
                if self.finisher.pending or self.finisher.processed != written_before:
                    await self.finisher.flush()  # a retry due now must be visible first
                    continue
                if self.before_idle is not None and await self.before_idle():
                    continue  # something the worker waited for may have made work due
                wait = self._spaced_gate - time.monotonic()
                if wait <= 0:
                    return
                # The lane's pause after a spaced task: more of them may be due after it.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._stopped()
                continue
            if asked and got == asked:
                continue  # more may be due: claim again as soon as slots free
            if state.stopping:
                return
            timeout = state.config.poll_interval if got < asked or not asked else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await state.wake.wait()

    async def _stopped(self) -> None:
        while not self.state.stopping:
            await self.state.wake.wait()
            self.state.wake.clear()

    async def _claim_all(self, free: int) -> tuple[int, int]:
        """Claim up to ``free`` tasks; returns (asked, got).

        Without per-queue limits this is one statement. With them, each limited queue is
        claimed up to its own headroom first, and whatever slots they leave unused go to
        the worker's other queues in one more statement.
        """
        asked, got = await self._claim_plain(free)
        if free - got > 0 and not self._spaced_busy and time.monotonic() >= self._spaced_gate:
            asked += 1
            got += await self._claim(self.state.config.queues, 1, spaced=True)
        return asked, got

    async def _claim_plain(self, free: int) -> tuple[int, int]:
        config = self.state.config
        if not config.queue_limits:
            n = min(free, CLAIM_BATCH)
            return n, await self._claim(config.queues, n)
        asked = got = 0
        busy = self.state.busy_by_queue()
        for queue, limit in config.queue_limits.items():
            n = min(free - got, limit - busy.get(queue, 0), CLAIM_BATCH)
            if n > 0:
                asked += n
                got += await self._claim((queue,), n)
        n = min(free - got, CLAIM_BATCH)
        if n > 0:
            limited = tuple(config.queue_limits)
            if config.queues is None:
                asked += n
                got += await self._claim(None, n, exclude=limited)
            else:
                others = tuple(q for q in config.queues if q not in config.queue_limits)
                if others:
                    asked += n
                    got += await self._claim(others, n)
        return asked, got

    async def _claim(
        self,
        queues: tuple[str, ...] | None,
        n: int,
        *,
        exclude: tuple[str, ...] = (),
        spaced: bool = False,
    ) -> int:
        state = self.state
        request = ClaimRequest(
            state.next_token(),
            n,
            state.config.lease_seconds,
            queues=queues,
            exclude=exclude,
            spaced=spaced,
        )
        claimed = await self.store.claim(request)
        for task in claimed:
            if task.delay > 0:
                self._spaced_busy = True
            if state.free_slots > 0 and not state.queued:
                self._start(task)
            else:
                state.queued[task.id] = task
        self._start_queued()
        return len(claimed)

    def _start_queued(self) -> None:
        """Start queued tasks while slots are free (not once the worker is stopping)."""
        state = self.state
        while state.queued and state.free_slots > 0 and not state.stopping:
            task_id = next(iter(state.queued))
            self._start(state.queued.pop(task_id))

    def _cancel_queued(self, claimed: ClaimedTask) -> None:
        ctx = RunContext(claimed, self.results, app=self.app)
        ctx.stop_reason = StopReason.CANCEL
        self.finisher.submit(self.runner.stopped(ctx))

    def hand_back_queued(self) -> None:
        """Stopping: tasks claimed ahead go back PENDING without spending an attempt."""
        state = self.state
        while state.queued:
            task_id = next(iter(state.queued))
            ctx = RunContext(state.queued.pop(task_id), self.results, app=self.app)
            ctx.stop_reason = StopReason.SHUTDOWN
            self.finisher.submit(self.runner.stopped(ctx))

    def _spaced_done(self, claimed: ClaimedTask) -> None:
        """A spaced task ended: the lane opens again ``delay`` seconds from now."""
        self._spaced_busy = False
        self._spaced_gate = time.monotonic() + claimed.delay
        loop = asyncio.get_running_loop()
        loop.call_later(claimed.delay + 0.001, self.state.wake.set)

    def _start(self, claimed: ClaimedTask) -> None:
        state = self.state
        if claimed.id in state.running:
            # An earlier run of this task is still here (this worker stalled past its
            # lease, the task was rescued and is ours again): that run is not the task's.
            state.stop_run(claimed.id, StopReason.LEASE_LOST)
            state.running.pop(claimed.id, None)
        ctx = RunContext(claimed, self.results, app=self.app)
        ctx.on_progress = state.on_progress
        task = asyncio.create_task(self._execute(ctx))
        running = Running(ctx, task)
        task.add_done_callback(lambda t: self._cancelled_before_start(t, running))
        state.running[claimed.id] = running

    def _release(self, running: Running) -> bool:
        """Free the run's slot; False if it was already freed (or replaced)."""
        state = self.state
        if state.running.get(running.ctx.task_id) is not running:
            return False
        del state.running[running.ctx.task_id]
        seconds = time.monotonic() - running.ctx.started
        average = self._run_seconds
        self._run_seconds = seconds if average is None else 0.9 * average + 0.1 * seconds
        if running.ctx.claimed.delay > 0:
            self._spaced_done(running.ctx.claimed)
        self._start_queued()
        wake = state.wake
        if not wake.is_set() and state.free_slots + self._prefetch_room() >= self._threshold():
            wake.set()
        return True

    async def _execute(self, ctx: RunContext) -> None:
        running = self.state.running[ctx.task_id]
        try:
            outcome = await self.runner.run(ctx)
        finally:
            self._release(running)
        if ctx.stop_reason is StopReason.LEASE_LOST:
            log.warning(
                "task %s: result of a run whose lease was lost is dropped (the task was "
                "rescued for another run while this one stalled)",
                ctx.task_id,
                extra={"task_id": ctx.task_id, "attempt": ctx.claimed.attempt},
            )
            return
        self.finisher.submit(outcome)

    def _cancelled_before_start(self, task: asyncio.Task[None], running: Running) -> None:
        """A run cancelled before its first step never ran its body: record it here."""
        if not task.cancelled() or not self._release(running):
            return
        ctx = running.ctx
        if ctx.stop_reason is not StopReason.LEASE_LOST:
            self.finisher.submit(self.runner.stopped(ctx))
