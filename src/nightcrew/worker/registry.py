"""The registry service: this worker's row in ``nightcrew_workers``, while it runs.

When the worker starts it writes its row (id, host, pid, version, queues, concurrency);
every `interval` it refreshes its runs in flight and heartbeat; when it stops cleanly it
deletes the row. A worker that dies leaves its row behind with a heartbeat that ages:
``nightcrew workers ls`` shows it as dead after ``NIGHTCREW_WORKER_DEAD_AFTER_SECONDS`` and
upkeep prunes it (`nightcrew.upkeep.workers`). A row pruned while this worker merely
stalled is written again at its next beat.

It also counts the worker's runs in flight in the app's ``nightcrew_tasks_in_progress``
gauge while it runs. Registry writes are not the worker's job: a database error here is
logged and tried again at the next beat, never a reason to stop running tasks. Each write
is a transaction run whole in a thread (as the ticker's), never across awaits of the loop:
on SQLite a write transaction holds the database's one write lock, and code that blocks the
loop with a write of its own would otherwise wait for it forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from nightcrew.errors import DatabaseError
from nightcrew.store import observe_ops
from nightcrew.worker.service import Periodic
from nightcrew.worker.state import WorkerState

if TYPE_CHECKING:
    from nightcrew.app import Nightcrew

log = logging.getLogger("nightcrew.worker")


def _version() -> str:
    try:
        return version("nightcrew")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "0"


class WorkerRegistry(Periodic):
    name = "registry"

    def __init__(self, app: Nightcrew, state: WorkerState) -> None:
        dead_after = app.settings.worker_dead_after_seconds
        # Four beats per dead-after age (and at least one per lease keeper's beat), so a
        # slow beat or two never makes a live worker look dead.
        super().__init__(min(state.config.heartbeat_interval, dead_after / 4))
        self.app = app
        self.state = state
        self.registered = False
        self._unwatch: Callable[[], None] | None = None

    async def run(self) -> None:
        self._unwatch = self.app.metrics.watch(self.state.busy_by_queue)
        try:
            await self._register()
            await super().run()
        finally:
            if self._unwatch is not None:
                self._unwatch()
            await self._deregister()

    async def step(self) -> None:
        if not self.registered:
            await self._register()
            return
        try:
            kept = await asyncio.to_thread(
                self.app.store.run,
                observe_ops.beat_worker,
                self.state.config.id,
                len(self.state.running),
            )
        except DatabaseError as exc:
            log.warning("worker registry: heartbeat failed: %s", exc)
            return
        if not kept:
            self.registered = False
            await self._register()

    async def _register(self) -> None:
        config = self.state.config
        try:
            await asyncio.to_thread(
                self.app.store.run,
                observe_ops.register_worker,
                config.id,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=_version(),
                queues=config.queues,
                concurrency=config.concurrency,
                in_flight=len(self.state.running),
            )
            self.registered = True
        except DatabaseError as exc:
            log.warning("worker registry: could not register (retrying): %s", exc)

    async def _deregister(self) -> None:
        try:
            await asyncio.to_thread(
                self.app.store.run, observe_ops.remove_worker, self.state.config.id
            )
            self.registered = False
        except DatabaseError as exc:
            log.warning("worker registry: could not remove this worker's row: %s", exc)
