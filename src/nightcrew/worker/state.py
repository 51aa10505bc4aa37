"""What a worker's services share: its configuration, the runs in flight, the claimer's wake-up.

Each service (`claimer`, `finisher`, `leases`, `rescuer`, `waker`, `progress`) reads and
changes this state only through the methods here, so the rules — a run is stopped at most
once, a slot frees when its run ends — live in one place.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nightcrew.errors import ConfigurationError
from nightcrew.execution import RunContext
from nightcrew.settings import Settings
from nightcrew.values import ClaimedTask, StopReason

log = logging.getLogger("nightcrew.worker")


#: Longest worker id: its lease tokens (id, a run's random part, a counter) must fit the
#: 64 characters of ``lease_token``.
MAX_WORKER_ID = 40


def default_worker_id() -> str:
    """``host:pid:random``: unique per process start, readable in ``tasks show``."""
    return f"{socket.gethostname()[:22]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """A worker's options, checked once."""

    id: str
    queues: tuple[str, ...] | None
    concurrency: int
    queue_limits: dict[str, int]
    lease_seconds: float
    heartbeat_interval: float
    poll_interval: float
    max_rescues: int
    stale_working_seconds: float

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        queues: Sequence[str] | None,
        concurrency: int | None,
        queue_limits: dict[str, int] | None,
        worker_id: str | None,
    ) -> WorkerConfig:
        served = tuple(queues) if queues else None
        limits = dict(queue_limits or {})
        slots = settings.concurrency if concurrency is None else concurrency
        if slots < 1:
            raise ConfigurationError("concurrency must be >= 1")
        for queue, limit in limits.items():
            if limit < 1:
                raise ConfigurationError(f"limit of queue {queue!r} must be >= 1")
            if served is not None and queue not in served:
                raise ConfigurationError(f"queue {queue!r} has a limit but is not served")
        if worker_id is not None and not 0 < len(worker_id) <= MAX_WORKER_ID:
            raise ConfigurationError(f"a worker id has 1 to {MAX_WORKER_ID} characters")
        return cls(
            id=worker_id or default_worker_id(),
            queues=served,
            concurrency=slots,
            queue_limits=limits,
            lease_seconds=settings.lease_seconds,
            heartbeat_interval=settings.heartbeat_interval,
            poll_interval=settings.poll_interval,
            max_rescues=settings.max_rescues,
            stale_working_seconds=settings.stale_working_seconds,
        )

    def serves(self, queue: str | None) -> bool:
        return self.queues is None or queue in self.queues


@dataclass(eq=False)
class Running:
    ctx: RunContext
    task: asyncio.Task[None]


@dataclass(eq=False)
class WorkerState:
    """The runs in flight and the signals between services."""

    config: WorkerConfig
    running: dict[int, Running] = field(default_factory=dict)
    #: Claimed ahead (leased, not yet started), in claim order: see `Claimer` on prefetch.
    queued: dict[int, ClaimedTask] = field(default_factory=dict)
    #: Called for a queued task whose cancel was requested (it never starts).
    on_queued_cancel: Callable[[ClaimedTask], None] | None = None
    #: Set when the claimer should look for work now.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    #: Told when a run's progress becomes dirty (the progress flusher's signal).
    on_progress: Callable[[], None] | None = None
    _claims: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    #: Random per worker object, so a worker restarted under the same id never repeats
    #: the tokens of its previous life.
    _life: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def next_token(self) -> str:
        """A lease token unique to one claim statement: ``worker id/life.claim number``.

        Every write about a run (finish, heartbeat, progress) is fenced by its claim's
        token, so a late outcome of an earlier run of the same task — even by this worker,
        after a stall, or by its previous life under the same id — can never be mistaken
        for the current one.
        """
        return f"{self.config.id}/{self._life}.{next(self._claims)}"

    @property
    def free_slots(self) -> int:
        return self.config.concurrency - len(self.running)

    def busy_by_queue(self) -> dict[str, int]:
        busy: dict[str, int] = {}
        for running in self.running.values():
            q = running.ctx.claimed.queue
            busy[q] = busy.get(q, 0) + 1
        return busy

    def leases(self) -> list[tuple[int, str]]:
        held = [(i, r.ctx.claimed.lease_token) for i, r in self.running.items()]
        return held + [(i, c.lease_token) for i, c in self.queued.items()]

    def stop_run(self, task_id: int, reason: StopReason) -> None:
        """Cancel a run once, recording why (the reason decides the status it ends in).

        A task still queued never starts: a lost lease just drops it, a cancel ends it
        CANCELLED through `on_queued_cancel`.
        """
        queued = self.queued.pop(task_id, None)
        if queued is not None:
            if reason is StopReason.CANCEL and self.on_queued_cancel is not None:
                self.on_queued_cancel(queued)
            return
        running = self.running.get(task_id)
        if running is None or running.ctx.stop_reason is not None:
            return
        log.info("stopping task", extra={"task_id": task_id, "reason": reason.value})
        running.ctx.stop_reason = reason
        running.task.cancel()
