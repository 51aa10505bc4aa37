"""Typed values that cross module lines: what the store returns and what the worker hands it.

Nothing here talks to the database or runs a task; these are the words the store, the worker
services, the operator actions and the CLI share, so none of them passes rows or dicts around.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal, NamedTuple

from nightcrew.models import MaintenanceTaskStatus

Dialect = Literal["postgresql", "sqlite"]


class ClaimedTask(NamedTuple):
    """A task a worker holds a lease on; ``attempt`` is the lease's fencing number.

    A named tuple: made straight from a result row, thousands a second, at C speed.
    """

    id: int
    processor_type: str
    processor_json: str
    queue: str
    priority: int
    attempt: int
    max_attempts: int
    timeout: float | None
    delay: int
    start_at: datetime
    created_at: datetime
    unique_key: str | None
    rescues: int
    #: The claim's own token: the fence every write about this run carries.
    lease_token: str
    #: The pipeline this task is a step of (None: a plain task), and whether it is critical.
    pipeline_id: int | None = None
    critical: bool = True
    #: The schedule whose tick this task is (live streams filter on it).
    schedule_name: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What a claimer asks for: up to ``limit`` due tasks of some queues, leased to ``token``.

    ``queues`` None means every queue; ``exclude`` removes queues from that (a worker of all
    queues whose limited queues are claimed separately). ``spaced`` asks for tasks with a
    ``delay`` (the origin's pause after a task), which a worker runs one at a time.
    """

    token: str
    limit: int
    lease_seconds: float
    queues: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    spaced: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one run ended, written back by the store's ``finish`` in a batch.

    ``claimed`` is the run it ends. ``status`` is COMPLETED, ERROR, CANCELLED, or PENDING
    for a retry (then ``start_at`` says when). ``attempt_counted`` False hands the task
    back without spending an attempt (graceful shutdown, a deferral). ``progress`` is the
    last progress the run reported, written with the outcome so a value reported just
    before the end is not lost.
    """

    claimed: ClaimedTask
    status: MaintenanceTaskStatus
    info: dict[str, Any] | None
    error: dict[str, Any] | None = None
    start_at: datetime | None = None
    attempt_counted: bool = True
    progress: tuple[float, str | None] | None = None
    #: Seconds the run took (for events and logs; not stored).
    duration: float | None = None

    @property
    def task_id(self) -> int:
        return self.claimed.id

    @property
    def attempt(self) -> int:
        return self.claimed.attempt


class Written(NamedTuple):
    """A row the store changed: its id, the status it now has and its queue."""

    id: int
    status: MaintenanceTaskStatus
    queue: str


class Held(NamedTuple):
    """A lease a heartbeat extended, and whether an operator asked to cancel the task."""

    id: int
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """The latest progress of one running attempt, flushed in batches by the worker."""

    task_id: int
    token: str
    attempt: int
    percent: float
    message: str | None
    #: The run's claim: its queue, processor, pipeline and schedule for the event.
    claimed: ClaimedTask | None = None


class StopReason(enum.Enum):
    """Why the worker cancelled a run; decides the status the task ends in."""

    CANCEL = "cancel requested"
    SHUTDOWN = "worker shutting down"
    LEASE_LOST = "lease lost"


@dataclass(frozen=True, slots=True)
class TaskView:
    """Everything stored about one task, as the store reads it (aware UTC datetimes)."""

    id: int
    status: MaintenanceTaskStatus
    processor_type: str
    processor_json: str
    queue: str
    priority: int
    delay: int
    start_at: datetime
    attempts: int
    max_attempts: int
    timeout: float | None
    lease_token: str | None
    lease_expires_at: datetime | None
    cancel_requested_at: datetime | None
    unique_key: str | None
    waiting_on: int
    progress: float | None
    progress_message: str | None
    info: dict[str, Any] | None
    error: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime
    rescues: int = 0
    schedule_name: str | None = None
    scheduled_for: datetime | None = None
    pipeline_id: int | None = None
    step_name: str | None = None
    critical: bool = True
    run_anyway: bool = False

    @property
    def processor_name(self) -> str:
        """The class name without its module, as listings show it."""
        return self.processor_type.rpartition(".")[2]

    @classmethod
    def created(cls, task_id: int, row: Mapping[str, Any]) -> TaskView:
        """The view of a task just inserted from ``row`` (the values an enqueue writes)."""
        return cls(**{**_NEW_TASK, **row, "id": task_id})

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> TaskView:
        """A view of a result row; columns the view does not know are ignored."""
        return cls(**{name: row[name] for name in _VIEW_FIELDS if name in row})


_VIEW_FIELDS = tuple(f.name for f in fields(TaskView))
#: What a new task holds in the columns an enqueue does not write.
_NEW_TASK: dict[str, Any] = {
    "lease_token": None,
    "lease_expires_at": None,
    "cancel_requested_at": None,
    "unique_key": None,
    "waiting_on": 0,
    "progress": None,
    "progress_message": None,
    "info": None,
    "error": None,
    "started_at": None,
    "finished_at": None,
    "rescues": 0,
    "schedule_name": None,
    "scheduled_for": None,
    "pipeline_id": None,
    "step_name": None,
    "critical": True,
    "run_anyway": False,
}


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks a listing returns: newest first, ``limit`` per page, keyset on id.

    ``processor`` matches the full class path or, without a dot, the class name alone (what
    ``tasks ls`` shows). ``schedule_name`` and ``pipeline_id`` pick the tasks a schedule made
    or a pipeline's steps; ``created_after`` (inclusive) and ``created_before`` (exclusive)
    bound ``created_at``.
    """

    statuses: tuple[MaintenanceTaskStatus, ...] = ()
    processor: str | None = None
    queue: str | None = None
    before_id: int | None = None
    limit: int = 50
    schedule_name: str | None = None
    pipeline_id: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of a listing and the cursor of the next one (None: this is the last)."""

    tasks: Sequence[TaskView]
    next_before_id: int | None


# ---------------------------------------------------------------- admin API


class Role(enum.StrEnum):
    """What an API caller may do: viewer reads; operator also acts on tasks, schedules and
    pipelines; admin also manages tokens. Each includes the ones below it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may."""
        return self.rank >= needed.rank


_ROLE_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


@dataclass(frozen=True, slots=True)
class TokenView:
    """An API token as stored: its name and role, never the token (only its hash is kept)."""

    id: int
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


AuditOutcome = Literal["ok", "refused", "error"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One row of the audit log: who (``actor``) did what (``action``) to what (``target``),
    with which ``parameters`` (secrets redacted), how it ended, and from where (``client``,
    the caller's address; None from the CLI or Python). ``id`` and ``at`` are set when the
    row is written."""

    actor: str
    action: str
    target: str | None
    parameters: dict[str, Any] | None
    outcome: AuditOutcome
    detail: str | None = None
    client: str | None = None
    at: datetime | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit rows a listing returns: newest first, keyset on id; ``after`` is
    inclusive, ``before`` exclusive."""

    actor: str | None = None
    action: str | None = None
    outcome: AuditOutcome | None = None
    target: str | None = None
    after: datetime | None = None
    before: datetime | None = None
    before_id: int | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class AuditPage:
    records: Sequence[AuditRecord]
    next_before_id: int | None


@dataclass(frozen=True, slots=True)
class MinuteCount:
    """Tasks that finished in one minute (``minute`` is its start, UTC), per final status."""

    minute: datetime
    completed: int = 0
    error: int = 0
    cancelled: int = 0


@dataclass(frozen=True, slots=True)
class TaskStats:
    """Counts per status, per queue and status, per processor and status; how long the
    oldest due PENDING task has waited (None: none waits); finishes per minute over the last
    hour (minutes without any are left out), all read at ``at``."""

    at: datetime
    by_status: dict[MaintenanceTaskStatus, int]
    by_queue: dict[str, dict[MaintenanceTaskStatus, int]]
    by_processor: dict[str, dict[MaintenanceTaskStatus, int]]
    oldest_pending_seconds: float | None
    finished_per_minute: Sequence[MinuteCount]


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a bulk action did: the ids it changed, those it found but could not change
    (their status moved meanwhile), and whether more tasks match (run it again)."""

    changed: Sequence[int]
    skipped: Sequence[int]
    more: bool


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A row of the worker registry: a worker that is running (or died without saying so:
    ``alive`` is whether it beat within the dead-after age when read)."""

    id: str
    host: str
    pid: int
    version: str
    queues: Sequence[str] | None
    concurrency: int
    in_flight: int
    started_at: datetime
    last_heartbeat_at: datetime
    alive: bool = True


@dataclass(frozen=True, slots=True)
class Gauges:
    """The database-wide gauges of one scrape (one query): open tasks per (queue, status),
    the oldest due PENDING task's wait per queue, pipelines per status, live workers and
    their runs in flight, and skipped ticks per schedule (misfires, over max_instances)."""

    depth: dict[tuple[str, str], float]
    oldest_pending: dict[str, float]
    pipelines: dict[str, float]
    workers_alive: float
    workers_in_flight: float
    misfires: dict[str, float]
    skipped_instances: dict[str, float]
