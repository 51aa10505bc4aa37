"""The progress flusher: writes the latest progress of running tasks, a few times a second.

``report_progress`` only records a value in the run's context, so a processor may call it in
a tight loop; this service writes what changed since the last flush, every
`PROGRESS_INTERVAL`, in one statement for all runs. The last value of a run is also written
with its outcome, so a value reported just before the end is never lost.
"""

from __future__ import annotations

from nightcrew.execution import PROGRESS_INTERVAL
from nightcrew.store import TaskStore
from nightcrew.values import ProgressUpdate
from nightcrew.worker.service import Periodic
from nightcrew.worker.state import WorkerState


class ProgressFlusher(Periodic):
    name = "progress flusher"

    def __init__(self, store: TaskStore, state: WorkerState) -> None:
        super().__init__(PROGRESS_INTERVAL)
        self.store = store
        self.state = state

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
                        claimed.id, claimed.lease_token, claimed.attempt, percent, message
                    )
                )
        await self.store.save_progress(updates)
