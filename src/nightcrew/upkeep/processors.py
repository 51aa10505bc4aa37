"""The upkeep's built-in processors, always allowed by the processor allowlist.

They run as ordinary tasks on the default schedules of `nightcrew.upkeep.schedules` (or by
``nightcrew schedules run-now nightcrew.prune``). Each works on the database of the worker
running it (`current_app`: a worker given its settings in code need not match the
environment), or on ``database_url`` if one is given. The schedules never store a URL in a
row, so no password ends up in the task table.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from nightcrew.app import Nightcrew
from nightcrew.errors import NightcrewError
from nightcrew.execution import current_app
from nightcrew.processors import MaintenanceTaskProcessor
from nightcrew.settings import Settings
from nightcrew.upkeep.pruning import Retention, cancel_stale_pending, prune_finished

if TYPE_CHECKING:
    from nightcrew.models import MaintenanceTask


@contextlib.asynccontextmanager
async def upkeep_app(database_url: str | None) -> AsyncIterator[Nightcrew]:
    """The app an upkeep task works on: its own URL's, else its worker's (not closed)."""
    worker_app: Nightcrew | None = None
    if database_url is None:
        with contextlib.suppress(NightcrewError):  # outside a worker: the environment's
            worker_app = current_app()
    if worker_app is not None:
        yield worker_app
        return
    settings = Settings() if database_url is None else Settings(database_url=database_url)
    async with Nightcrew(settings) as app:
        yield app


class PruneFinishedTasks(MaintenanceTaskProcessor):
    """Delete finished tasks past their retention, in bounded batches (see `prune_finished`)."""

    completed_days: float = Field(default=30.0, ge=0)
    error_days: float = Field(default=90.0, ge=0)
    cancelled_days: float = Field(default=90.0, ge=0)
    audit_days: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    pause_seconds: float = Field(default=0.05, ge=0, le=60)
    database_url: str | None = None

    timeout: ClassVar[float | None] = None

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        retention = Retention(
            self.completed_days, self.error_days, self.cancelled_days, self.audit_days
        )
        async with upkeep_app(self.database_url) as app:
            report = await prune_finished(
                app.store, retention, batch_size=self.batch_size, pause=self.pause_seconds
            )
        return report.as_info()


class CancelStalePending(MaintenanceTaskProcessor):
    """Cancel PENDING tasks that have been due for longer than ``minutes`` without a worker
    taking them (seed 002's MaintenanceService: 240 minutes)."""

    minutes: float = Field(gt=0)
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    database_url: str | None = None

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        async with upkeep_app(self.database_url) as app:
            ids = await cancel_stale_pending(app.store, self.minutes, batch_size=self.batch_size)
        return {"cancelled": len(ids), "ids": ids[:100]}
