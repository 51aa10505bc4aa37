"""The worker: a supervisor of small services sharing one `WorkerState`.

- `Claimer` (in front): claims due tasks up to the free slots and starts their runs;
- `Finisher`: writes outcomes in batches;
- `LeaseKeeper`: heartbeats and cancel requests;
- `Rescuer`: hands back other workers' abandoned tasks;
- `Waker`: LISTEN/NOTIFY and retry timers;
- `ProgressFlusher`: progress of running tasks;
- `WorkerRegistry`: this worker's row in the worker registry.

The supervisor starts them, restarts one that crashes, stops the worker on a database
error that cannot heal (and raises it from `run`), and shuts down in order: stop claiming,
let runs finish within the grace period, hand back what still runs, write every outcome.
Adding a service is adding a file and a line to `Worker.__init__`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nightcrew.errors import DatabaseError
from nightcrew.execution import TaskRunner
from nightcrew.models import MaintenanceTaskStatus
from nightcrew.settings import Settings
from nightcrew.store import Database, TaskStore, open_store, pipeline_ops
from nightcrew.values import Outcome, StopReason
from nightcrew.worker.claimer import Claimer
from nightcrew.worker.finisher import Finisher
from nightcrew.worker.leases import LeaseKeeper
from nightcrew.worker.progress import ProgressFlusher
from nightcrew.worker.registry import WorkerRegistry
from nightcrew.worker.rescuer import Rescuer
from nightcrew.worker.service import Service
from nightcrew.worker.state import WorkerConfig, WorkerState
from nightcrew.worker.ticker import Ticker
from nightcrew.worker.waker import Waker

if TYPE_CHECKING:
    from nightcrew.app import Nightcrew

log = logging.getLogger("nightcrew.worker")
S = MaintenanceTaskStatus

#: Seconds a run that was cancelled at shutdown may take to wind down.
ABANDON_TIMEOUT = 5.0
#: Seconds ``run(until_idle=True)`` waits for the ticker's first look at due schedules.
FIRST_TICKS_TIMEOUT = 10.0


class Worker:
    """Runs tasks from a set of queues until stopped.

    Usable from a host application's event loop (``asyncio.create_task(worker.run())``,
    then ``worker.request_stop()``) or through ``nightcrew worker``. Several workers, in
    one process or many, on one host or many, share the work through the database.

    Give it an ``app`` (`nightcrew.Nightcrew`) to share its settings, loader and bus;
    without one it makes its own from ``settings`` (and ``database``) and closes it when
    it stops. Each worker has a store of its own, so its connections are its own.
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
        app: Nightcrew | None = None,
    ) -> None:
        from nightcrew.app import Nightcrew

        self._owns_app = app is None
        self.app = app if app is not None else Nightcrew(settings, database=database)
        self.settings = self.app.settings
        config = WorkerConfig.build(
            self.settings,
            queues=queues,
            concurrency=concurrency,
            queue_limits=queue_limits,
            worker_id=worker_id,
        )
        self.state = WorkerState(config)
        self.store: TaskStore = open_store(self.app.database, self.app.events)
        runner = TaskRunner(
            self.app.loader, self.settings.max_info_bytes, on_error=self.app.on_error
        )
        self.finisher = Finisher(self.store, self.state, self._on_written)
        self.waker = Waker(self.store, self.state)
        self.claimer = Claimer(self.store, self.state, runner, self.finisher)
        self.claimer.app = self.app
        app_store = self.app.store
        self.claimer.results = lambda task_id: app_store.run(
            pipeline_ops.dependency_results, task_id
        )
        self.rescuer = Rescuer(self.store, self.state)
        self.ticker = Ticker(self.app, self.store, self.state, self.waker)
        self.services: list[Service] = [
            self.finisher,
            LeaseKeeper(self.store, self.state, self.finisher),
            self.rescuer,
            self.waker,
            ProgressFlusher(self.store, self.state),
            self.ticker,
            WorkerRegistry(self.app, self.state),
        ]
        self._hurry = asyncio.Event()
        self._fatal: BaseException | None = None
        self._ticks_awaited = False

    # ---------------------------------------------------------------- public

    @property
    def id(self) -> str:
        return self.state.config.id

    @property
    def queues(self) -> list[str] | None:
        queues = self.state.config.queues
        return list(queues) if queues is not None else None

    @property
    def concurrency(self) -> int:
        return self.state.config.concurrency

    @property
    def in_flight(self) -> int:
        return len(self.state.running)

    @property
    def processed(self) -> int:
        """Outcomes written (completions, failures, retries, cancellations, hand-backs)."""
        return self.finisher.processed

    @property
    def listening(self) -> bool:
        return self.waker.listening

    def request_stop(self) -> None:
        """Stop claiming; in-flight tasks get the grace period, then are handed back."""
        if not self.state.stopping:
            log.info("worker stopping", extra={"worker": self.id})
        self.claimer.stop()

    def hurry(self) -> None:
        """Stop now: skip (the rest of) the grace period; running tasks are handed back."""
        self.request_stop()
        self._hurry.set()

    async def run(self, *, until_idle: bool = False) -> None:
        """Run until `request_stop` (or, with ``until_idle``, until nothing is due).

        Raises the `DatabaseError` that stopped it when the database cannot be used (no
        schema, a wrong password; or, when draining, unreachable for too long).
        """
        log.info(
            "worker started",
            extra={"worker": self.id, "queues": self.queues, "concurrency": self.concurrency},
        )
        background = [
            asyncio.create_task(self._supervise(s), name=f"nightcrew-{s.name}")
            for s in self.services
        ]
        frozen = self.settings.gc_freeze
        if frozen:
            gc.freeze()  # see `Settings.gc_freeze`
        thresholds = gc.get_threshold()
        young = self.settings.gc_threshold  # see `Settings.gc_threshold`
        if young:
            gc.set_threshold(young, *thresholds[1:])
        try:
            await self._first_rescue()
            if until_idle:
                # Claims start at once; draining ends only once the ticker has had its
                # first look, so the ticks due at the start are among the tasks it runs.
                ticker = background[self.services.index(self.ticker)]
                self.claimer.before_idle = lambda: self._first_ticks(ticker)
            await self._claim(until_idle)
            self.claimer.hand_back_queued()
            await self._drain_in_flight()
        finally:
            self.state.stopping = True
            self.claimer.hand_back_queued()
            await self._abandon_in_flight()
            for service in self.services:
                if service is not self.finisher:
                    service.stop()
            self.finisher.stop()
            await asyncio.gather(*background, return_exceptions=True)
            await self._final_flush()
            await self.store.aclose()
            if self._owns_app:
                await self.app.aclose()
            if frozen:
                gc.unfreeze()
            if young and gc.get_threshold()[0] == young:  # not if another worker changed it
                gc.set_threshold(*thresholds)
            log.info("worker stopped", extra={"worker": self.id, "processed": self.processed})
        if self._fatal is not None:
            raise self._fatal

    # ---------------------------------------------------------------- supervision

    async def _first_rescue(self) -> None:
        """Hand back abandoned tasks before claiming (what ``run --once`` does first).

        A database that cannot be reached right now is the claimer's to wait for; one
        that cannot be used at all (no schema, say) stops the worker here.
        """
        try:
            await self.rescuer.rescue()
        except DatabaseError as exc:
            if not exc.transient:
                self._fatal = exc
                self.hurry()
            else:
                log.warning("rescue before claiming failed (%s); the claimer retries", exc)

    async def _first_ticks(self, ticker: asyncio.Task[None]) -> bool:
        """Draining, nothing left to claim: wait for the ticker's first look (the ticks
        due when the worker started), once; True the first time (claim again).

        Bounded (`FIRST_TICKS_TIMEOUT`): a database the ticker cannot reach is the
        claimer's to report; a ticker that stopped (crashed) is not waited for.
        """
        if self._ticks_awaited:
            return False
        self._ticks_awaited = True
        caught_up = asyncio.ensure_future(self.ticker.caught_up.wait())
        try:
            await asyncio.wait(
                {caught_up, ticker},
                timeout=FIRST_TICKS_TIMEOUT,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            caught_up.cancel()
        return True

    async def _claim(self, until_idle: bool) -> None:
        if self._fatal is not None:
            return
        try:
            await self.claimer.run(until_idle=until_idle)
        except DatabaseError as exc:
            self._fatal = exc
            self.hurry()

    async def _supervise(self, service: Service) -> None:
        crashes = 0
        while True:
            try:
                await service.run()
                return
            except asyncio.CancelledError:
                raise
            except DatabaseError as exc:
                if exc.transient:
                    continue
                log.error("%s: %s; stopping the worker", service.name, exc)
                self._fatal = self._fatal or exc
                self.hurry()
                return
            except Exception:
                crashes += 1
                log.exception("%s crashed (%d); restarting it", service.name, crashes)
                await asyncio.sleep(min(5.0, 0.1 * 2**crashes))

    def _on_written(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.claimed.pipeline_id is not None and outcome.status.is_final:
                self.state.wake.set()  # its dependents may be claimable now
            elif outcome.status is S.PENDING:
                if outcome.start_at is None:
                    self.state.wake.set()
                else:
                    self.waker.wake_at(outcome.start_at.timestamp())

    # ---------------------------------------------------------------- shutdown

    async def _drain_in_flight(self) -> None:
        running = self.state.running
        if not running:
            return
        grace = self.settings.shutdown_grace_seconds
        log.info(
            "waiting for in-flight tasks",
            extra={"worker": self.id, "in_flight": len(running), "grace": grace},
        )
        if self._hurry.is_set():
            return
        finished = asyncio.ensure_future(asyncio.wait([r.task for r in running.values()]))
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait(
                {finished, hurry}, timeout=grace, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            finished.cancel()
            hurry.cancel()

    async def _abandon_in_flight(self) -> None:
        """Stop what still runs and hand it back (PENDING, no attempt spent)."""
        running = self.state.running
        if not running:
            return
        tasks = [r.task for r in running.values()]
        for task_id in list(running):
            self.state.stop_run(task_id, StopReason.SHUTDOWN)
        await asyncio.wait(tasks, timeout=ABANDON_TIMEOUT)

    async def _final_flush(self) -> None:
        try:
            await self.finisher.flush()
        except DatabaseError as exc:
            log.error("could not write the last outcomes: %s", exc)
            self._fatal = self._fatal or exc
