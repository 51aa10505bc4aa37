"""Pruning the worker registry: rows of workers that died without removing themselves.

A worker deletes its row when it stops cleanly; one killed (SIGKILL, a lost host) leaves a
row whose heartbeat ages. ``nightcrew.prune-dead-workers`` (every ten minutes,
``NIGHTCREW_UPKEEP_PRUNE_WORKERS_CRON``) deletes the rows silent for longer than
``NIGHTCREW_WORKER_DEAD_AFTER_SECONDS``. Until then ``workers ls`` shows them as dead, so
an operator sees which worker vanished; their tasks are the rescuer's, not this one's.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import Field

from nightcrew.processors import MaintenanceTaskProcessor
from nightcrew.store import observe_ops
from nightcrew.upkeep.processors import upkeep_app

if TYPE_CHECKING:
    from nightcrew.models import MaintenanceTask

PRUNE_DEAD_WORKERS = "nightcrew.prune-dead-workers"


class PruneDeadWorkers(MaintenanceTaskProcessor):
    """Delete the registry rows of workers silent for more than ``dead_after_seconds``."""

    dead_after_seconds: float = Field(default=60.0, gt=0)
    database_url: str | None = None

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        async with upkeep_app(self.database_url) as app:
            pruned = await asyncio.to_thread(
                app.store.run, observe_ops.prune_dead_workers, self.dead_after_seconds
            )
        return {"pruned": len(pruned), "workers": pruned[:100]}
