"""The rescuer: hands back tasks whose worker is gone (every worker runs one; safe so).

A task whose lease expired goes back to PENDING without spending an attempt, up to the
rescue budget (``NIGHTCREW_MAX_RESCUES``), after which it ends ERROR as a poison task; a
WORKING row with no lease at all (the origin's runner leaves such rows) ends ERROR once it
is older than ``NIGHTCREW_STALE_WORKING_SECONDS``. The statement is in
`nightcrew.store.statements.rescue_statement`.
"""

from __future__ import annotations

from nightcrew.store import TaskStore
from nightcrew.values import Written
from nightcrew.worker.service import Periodic
from nightcrew.worker.state import WorkerState


class Rescuer(Periodic):
    name = "rescuer"

    def __init__(self, store: TaskStore, state: WorkerState) -> None:
        super().__init__(state.config.lease_seconds / 2)
        self.store = store
        self.state = state

    async def step(self) -> None:
        await self.rescue()

    async def rescue(self) -> list[Written]:
        config = self.state.config
        rescued = await self.store.rescue(
            max_rescues=config.max_rescues, stale_after=config.stale_working_seconds
        )
        if rescued:
            self.state.wake.set()
        return rescued
