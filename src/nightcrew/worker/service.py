"""What a worker service is: something the supervisor runs and stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from nightcrew.errors import DatabaseError

log = logging.getLogger("nightcrew.worker")


class Service(Protocol):
    """A loop of the worker. ``run`` returns when ``stop`` was called (or there is nothing
    to do, as for a waker without notifications); the supervisor restarts one that
    crashes and stops the worker on an error that cannot heal."""

    name: str

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class Periodic:
    """A service that does one step every ``interval`` seconds until stopped.

    A step that fails with an error that can heal (a dropped connection) is logged in one
    line and tried again at the next interval; any other error leaves `run` for the
    supervisor to handle.
    """

    name = "periodic"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = asyncio.Event()

    async def step(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                await self.step()
            except DatabaseError as exc:
                if not exc.transient:
                    raise
                log.warning("%s failed, retrying in %.2g s: %s", self.name, self.interval, exc)

    def stop(self) -> None:
        self._stop.set()
