"""The event seam: one typed event per task transition, and the bus that hands them out.

The store emits an event after each transition it made has committed (a claim, a batch of
finishes, a rescue, an operator's cancel); subscribers — the log now, metrics, the live
stream and the audit log later — listen here and never inside the worker's services.

Emitting is cheap when nobody listens: producers ask `EventBus.wants` before they build
events, so a kind without subscribers (say, every completion on a busy worker whose log
is at INFO) costs one set lookup per batch.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nightcrew.models import MaintenanceTaskStatus

log = logging.getLogger("nightcrew.events")


class EventKind(enum.StrEnum):
    """What happened to a task."""

    CREATED = "created"
    ACTIVATED = "activated"
    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRIED = "retried"
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel_requested"
    RESCUED = "rescued"
    RESET = "reset"  # an operator's retry: ERROR/CANCELLED back to PENDING
    #: Not a transition: a worker's late outcome was refused because its lease was lost.
    FINISH_REJECTED = "finish_rejected"


#: The event a finish of each status is.
FINISH_KINDS = {
    MaintenanceTaskStatus.COMPLETED: EventKind.COMPLETED,
    MaintenanceTaskStatus.ERROR: EventKind.FAILED,
    MaintenanceTaskStatus.PENDING: EventKind.RETRIED,
    MaintenanceTaskStatus.CANCELLED: EventKind.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One transition of one task, after it committed.

    ``status`` is the status the task has now. ``detail`` carries what a kind has to say
    (an error message, a retry time, a rescue's reason); it is small by design: a
    subscriber that wants the whole task reads it by id.
    """

    kind: EventKind
    task_id: int
    at: datetime
    status: MaintenanceTaskStatus | None = None
    queue: str | None = None
    processor: str | None = None
    attempt: int | None = None
    progress: float | None = None
    message: str | None = None
    duration: float | None = None
    actor: str | None = None
    detail: dict[str, Any] | None = None


Subscriber = Callable[[TaskEvent], None]


class EventBus:
    """In-process fan-out of `TaskEvent`s to subscribers, each for the kinds it asked for.

    Subscribers run synchronously in the emitter's thread and must be quick; one that
    raises is logged and skipped, so a broken subscriber never fails a transition that has
    already committed.
    """

    def __init__(self) -> None:
        self._subscribers: dict[EventKind, list[Subscriber]] = {}

    def subscribe(
        self, subscriber: Subscriber, kinds: Iterable[EventKind] | None = None
    ) -> Callable[[], None]:
        """Call ``subscriber`` for each event of ``kinds`` (default: all); returns an
        unsubscribe function."""
        chosen = tuple(EventKind) if kinds is None else tuple(kinds)
        for kind in chosen:
            self._subscribers.setdefault(kind, []).append(subscriber)

        def unsubscribe() -> None:
            for kind in chosen:
                listeners = self._subscribers.get(kind, [])
                if subscriber in listeners:
                    listeners.remove(subscriber)
                if not listeners:
                    self._subscribers.pop(kind, None)

        return unsubscribe

    def wants(self, kind: EventKind) -> bool:
        """Whether anyone listens for ``kind`` (producers skip building events otherwise)."""
        return kind in self._subscribers

    def emit(self, event: TaskEvent) -> None:
        for subscriber in tuple(self._subscribers.get(event.kind, ())):
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber failed", extra={"kind": event.kind.value})

    def emit_all(self, events: Iterable[TaskEvent]) -> None:
        for event in events:
            self.emit(event)
