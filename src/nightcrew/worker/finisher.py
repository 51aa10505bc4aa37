"""The finisher: writes outcomes in batches, and never lets one bad outcome hold the others.

Outcomes wait at most `FLUSH_WINDOW` and are written together, up to `FLUSH_BATCH` per
statement. A batch the database refuses for its data (not for a lost connection) is split
and written one outcome at a time; an outcome that cannot be stored alone ends its task
ERROR with the reason instead, so the rest of the batch lands and the worker keeps going.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nightcrew.errors import DatabaseError
from nightcrew.models import MaintenanceTaskStatus
from nightcrew.store import TaskStore
from nightcrew.values import Outcome
from nightcrew.worker.state import WorkerState

log = logging.getLogger("nightcrew.worker")
S = MaintenanceTaskStatus

#: How long finished outcomes may wait to be written together (seconds).
FLUSH_WINDOW = 0.005
#: Most outcomes written by one statement.
FLUSH_BATCH = 500
#: Failed writes in a row after which a stopping worker gives up on its last outcomes
#: (their leases then expire and another worker runs the tasks again: nothing is lost).
GIVE_UP_WHEN_STOPPING = 5


def _unstorable(outcome: Outcome, exc: DatabaseError) -> Outcome:
    """The ERROR outcome that replaces one the database would not take."""
    reason = f"the task's outcome could not be stored: {exc}"
    return Outcome(
        outcome.claimed,
        S.ERROR,
        {"error": reason, "error_type": "OutcomeNotStored"},
        {"type": "OutcomeNotStored", "message": reason, "traceback": None},
        duration=outcome.duration,
    )


class Finisher:
    name = "finisher"

    def __init__(
        self, store: TaskStore, state: WorkerState, on_written: Callable[[list[Outcome]], None]
    ) -> None:
        self.store = store
        self.state = state
        self.on_written = on_written
        self.pending: dict[int, Outcome] = {}
        self.processed = 0
        self._needed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopped = False

    def submit(self, outcome: Outcome) -> None:
        self.pending[outcome.task_id] = outcome
        if len(self.pending) >= FLUSH_BATCH or not self._needed.is_set():
            self._needed.set()

    def discard(self, task_id: int) -> None:
        """Forget an outcome whose lease was taken away before it was written (a late
        outcome is never dropped silently: a WARNING says which task and why)."""
        outcome = self.pending.pop(task_id, None)
        if outcome is not None:
            log.warning(
                "task %s: outcome of a run whose lease was lost is dropped (the task was "
                "rescued for another run, or ended by an operator, before it was written)",
                task_id,
                extra={"task_id": task_id, "attempt": outcome.attempt},
            )

    def leases(self) -> list[tuple[int, str]]:
        return [(o.task_id, o.claimed.lease_token) for o in self.pending.values()]

    async def run(self) -> None:
        while not self._stopped:
            await self._needed.wait()
            if not self._stopped:
                await asyncio.sleep(FLUSH_WINDOW)
            self._needed.clear()
            await self.flush()

    def stop(self) -> None:
        self._stopped = True
        self._needed.set()

    async def flush(self) -> None:
        """Write everything pending; on a lost connection keep it and retry with backoff.

        When stopping, give up after `GIVE_UP_WHEN_STOPPING` failures in a row.
        """
        async with self._lock:
            failures = 0
            while self.pending:
                batch = list(self.pending.values())[:FLUSH_BATCH]
                try:
                    await self._write(batch)
                    failures = 0
                except DatabaseError as exc:
                    if not exc.transient:
                        raise
                    failures += 1
                    log.warning("writing %d outcome(s) failed (%d): %s", len(batch), failures, exc)
                    if self._stopped and failures >= GIVE_UP_WHEN_STOPPING:
                        log.error(
                            "giving up on %d outcome(s): their leases expire and the tasks "
                            "run again elsewhere",
                            len(self.pending),
                        )
                        return
                    await asyncio.sleep(min(1.0, 0.05 * 2**failures))

    async def _write(self, batch: list[Outcome]) -> None:
        try:
            written = await self.store.finish(batch)
        except DatabaseError as exc:
            if exc.transient:
                raise
            await self._write_alone(batch, exc)
            return
        self._written(batch, written)

    async def _write_alone(self, batch: list[Outcome], batch_error: DatabaseError) -> None:
        """A batch was refused for its data: find the outcome(s) at fault, one by one."""
        log.warning(
            "a batch of %d outcome(s) was refused (%s); writing them one by one",
            len(batch),
            batch_error,
        )
        for outcome in batch:
            try:
                self._written([outcome], await self.store.finish([outcome]))
                continue
            except DatabaseError as exc:
                if exc.transient:
                    raise
                error = exc
            replacement = _unstorable(outcome, error)
            log.error(
                "task %s: outcome refused by the database, ending it ERROR: %s",
                outcome.task_id,
                error,
                extra={"task_id": outcome.task_id},
            )
            try:
                self._written([outcome], await self.store.finish([replacement]))
            except DatabaseError as exc:
                if exc.transient:
                    raise
                log.error(
                    "task %s: not even its ERROR could be stored; its lease will expire",
                    outcome.task_id,
                    extra={"task_id": outcome.task_id},
                )
                self._forget([outcome])

    def _forget(self, batch: list[Outcome]) -> None:
        for outcome in batch:
            # The task may have run again meanwhile (claimed once this write committed):
            # only drop the outcome that was written.
            if self.pending.get(outcome.task_id) is outcome:
                del self.pending[outcome.task_id]

    def _written(self, batch: list[Outcome], written: list[int]) -> None:
        self._forget(batch)
        self.processed += len(written)
        done = set(written)
        self.on_written([o for o in batch if o.task_id in done])
