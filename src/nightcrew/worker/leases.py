"""The lease keeper: extends the leases of every run this worker holds, in one statement.

It beats three times per lease, so one slow beat never loses a lease. A lease missing from
the answer was taken away (rescued after a stall, or the task finished by an operator): its
run is stopped and its unwritten outcome forgotten. A beat also carries cancel requests;
without NOTIFY (SQLite) they are looked for at least every second between beats.
"""

from __future__ import annotations

import time

from nightcrew.store import TaskStore
from nightcrew.values import StopReason
from nightcrew.worker.finisher import Finisher
from nightcrew.worker.service import Periodic
from nightcrew.worker.state import WorkerState

#: Seconds between looks for cancel requests where no NOTIFY delivers them.
CANCEL_CHECK_INTERVAL = 1.0


class LeaseKeeper(Periodic):
    name = "lease keeper"

    def __init__(self, store: TaskStore, state: WorkerState, finisher: Finisher) -> None:
        beat = state.config.heartbeat_interval
        cancel_check = beat if store.supports_listen else min(beat, CANCEL_CHECK_INTERVAL)
        super().__init__(min(beat, cancel_check))
        self.store = store
        self.state = state
        self.finisher = finisher
        self._last_beat = time.monotonic()

    async def step(self) -> None:
        now = time.monotonic()
        if now - self._last_beat >= self.state.config.heartbeat_interval - 0.001:
            self._last_beat = now
            await self.beat()
        else:
            await self.check_cancels()

    async def beat(self) -> None:
        leases = self.state.leases() + self.finisher.leases()
        if not leases:
            return
        held = await self.store.heartbeat(leases, self.state.config.lease_seconds)
        kept = {h.id for h in held}
        for task_id, _token in leases:
            if task_id not in kept:
                self.state.stop_run(task_id, StopReason.LEASE_LOST)
                self.finisher.discard(task_id)
        for h in held:
            if h.cancel_requested:
                self.state.stop_run(h.id, StopReason.CANCEL)

    async def check_cancels(self) -> None:
        leases = self.state.leases()
        if not leases:
            return
        for task_id in await self.store.cancel_requests(leases):
            self.state.stop_run(task_id, StopReason.CANCEL)
