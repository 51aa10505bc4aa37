"""FastAPI: a nightcrew worker inside the host application's event loop (seed 003).

Seed 003 started its ``TaskWorker`` in the app's lifespan and cancelled it at shutdown. Here
the worker is nightcrew's own: it claims from the database (so several app processes share
the work), and at shutdown it stops claiming, lets runs finish within
``NIGHTCREW_SHUTDOWN_GRACE_SECONDS`` and hands back what still runs, so a deploy never
loses a task::

    from fastapi import FastAPI
    from nightcrew import Nightcrew, Settings
    from nightcrew.contrib.fastapi import NightcrewFastAPI

    crew = NightcrewFastAPI(Nightcrew(Settings(processor_modules=["myapp.jobs"])))
    app = FastAPI(lifespan=crew.lifespan)   # or crew.install(app) on an existing app
    crew.mount_admin(app, "/nightcrew")     # the admin API, under the host's auth

    @app.post("/reports")
    async def make_report(nc: NightcrewDep) -> dict:   # the app's Nightcrew
        task = await acreate_maintenance_task(Report(), database=nc)
        return {"task": task.id}

Several workers per process are rarely useful (one worker runs many tasks at once); pass
``worker=False`` for an app that only enqueues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, Request

from nightcrew.api.app import mount_admin as _mount_admin
from nightcrew.api.auth import Authenticator
from nightcrew.app import Nightcrew
from nightcrew.worker import Worker

log = logging.getLogger("nightcrew.contrib")

#: Beyond the grace period: how long shutdown waits for a worker to hand runs back.
STOP_MARGIN = 10.0


class NightcrewFastAPI:
    """A `Nightcrew` app wired into a FastAPI (or Starlette) application's lifespan.

    The worker exists while the host app runs (``worker`` is it, None otherwise). With
    ``close_app`` the `Nightcrew` is closed after the worker stopped. With ``live`` the
    live events hub starts with the app (events are then built for every transition of
    the app's worker, which a stream needs anyway).
    """

    def __init__(
        self,
        app: Nightcrew,
        *,
        worker: bool = True,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        queue_limits: dict[str, int] | None = None,
        close_app: bool = True,
        live: bool = True,
    ) -> None:
        self.app = app
        self.live = live
        self.run_worker = worker
        self.queues = queues
        self.concurrency = concurrency
        self.queue_limits = queue_limits
        self.close_app = close_app
        self.worker: Worker | None = None
        self._task: asyncio.Task[None] | None = None

    def dependency(self) -> Nightcrew:
        """A FastAPI dependency giving routes the `Nightcrew` app (to enqueue with)."""
        return self.app

    @asynccontextmanager
    async def lifespan(self, host: Any) -> AsyncIterator[None]:
        """The host's lifespan: start the worker, yield, stop it gracefully."""
        host.state.nightcrew = self.app
        await self.start()
        try:
            yield
        finally:
            await self.stop()
            if self.close_app:
                await self.app.aclose()

    async def start(self) -> None:
        """Start the worker as a task of the running loop (done by `lifespan`), and with
        ``live`` the hub of live events, so ``/events`` can resume from the app's start."""
        self.app.metrics.start()  # the host serves them (mount_admin's /metrics)
        if self.live:
            self.app.live.hub()
        if not self.run_worker or self._task is not None:
            return
        self.worker = self.app.worker(
            queues=self.queues, concurrency=self.concurrency, queue_limits=self.queue_limits
        )
        self._task = asyncio.create_task(self.worker.run(), name="nightcrew-worker")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the nightcrew worker stopped: %s", task.exception())

    async def stop(self) -> None:
        """Stop claiming, let runs finish within the grace period, hand back the rest."""
        worker, task = self.worker, self._task
        self._task = None
        if worker is None or task is None:
            return
        worker.request_stop()
        grace = self.app.settings.shutdown_grace_seconds
        try:
            await asyncio.wait_for(asyncio.shield(task), grace + STOP_MARGIN)
        except TimeoutError:
            worker.hurry()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, STOP_MARGIN)
        except Exception:
            pass  # logged by _ended: the host's shutdown goes on

    def install(self, host: Any) -> None:
        """Run `lifespan` inside an existing app's own lifespan (for apps made elsewhere)."""
        router = host.router
        inner = router.lifespan_context

        @asynccontextmanager
        async def combined(h: Any) -> AsyncIterator[Any]:
            async with inner(h) as state, self.lifespan(h):
                yield state

        router.lifespan_context = combined

    def mount_admin(
        self,
        host: Any,
        prefix: str = "/nightcrew",
        *,
        auth: Authenticator | None = None,
        **options: Any,
    ) -> Any:
        """Mount the admin API (`nightcrew.api.mount_admin`) on this app at ``prefix``."""
        return _mount_admin(host, prefix, app=self.app, auth=auth, **options)


def nightcrew_of(request: Request) -> Nightcrew:
    """The `Nightcrew` of the host app serving ``request`` (set by the lifespan)."""
    found = getattr(request.app.state, "nightcrew", None)
    if not isinstance(found, Nightcrew):
        raise RuntimeError("the host app's lifespan did not run NightcrewFastAPI.lifespan")
    return found


#: A route parameter receiving the host app's `Nightcrew` (to enqueue with).
NightcrewDep = Annotated[Nightcrew, Depends(nightcrew_of)]


def mount_admin(host: Any, prefix: str = "/nightcrew", **options: Any) -> Any:
    """`nightcrew.api.mount_admin`, here for discoverability."""
    return _mount_admin(host, prefix, **options)


__all__ = ["NightcrewDep", "NightcrewFastAPI", "mount_admin", "nightcrew_of"]
