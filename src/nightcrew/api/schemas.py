"""The admin API's request and response bodies (pydantic), and their making from values.

Requests refuse unknown fields (a misspelt option is an error, not silently ignored) and
bound every number and string to what the columns hold, so the OpenAPI document says what
is accepted and bad input stops at validation, before any action runs. Text may not hold
NUL characters or lone surrogates: neither database's JSON can store them.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from nightcrew.catalog import ProcessorCatalog, ProcessorInfo
from nightcrew.errors import ConfigurationError
from nightcrew.models import MaintenanceTaskStatus, PipelineStatus
from nightcrew.schedules.triggers import parse_duration
from nightcrew.schedules.values import ScheduleView
from nightcrew.store.pipeline_ops import PipelineDetail as StoredPipeline
from nightcrew.store.pipeline_ops import PipelineView
from nightcrew.values import (
    AuditPage,
    AuditRecord,
    BulkResult,
    Role,
    TaskStats,
    TaskView,
    TokenView,
)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_ID = 2**63 - 1
#: No NUL (PostgreSQL text refuses it) and no control characters but tab and newlines.
SAFE_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$"


def _storable(value: Any, depth: int = 0) -> Any:
    """Refuse text neither database can store (NUL, lone surrogates) anywhere in a value."""
    if depth > 64:
        raise ValueError("nested more than 64 levels deep")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text may not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text may not contain lone surrogates") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _storable(k, depth + 1)
            _storable(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _storable(v, depth + 1)
    elif isinstance(value, float) and value != value:  # NaN
        raise ValueError("NaN is not a JSON number")
    return value


def _utc(value: datetime | None) -> datetime | None:
    """Aware UTC (naive means UTC); a time that UTC cannot hold (year 1 at +14:00) is refused."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date-time out of range once converted to UTC") from None


Text = Annotated[str, Field(pattern=SAFE_TEXT), AfterValidator(_storable)]
Timestamp = Annotated[datetime, AfterValidator(_utc)]
Status = MaintenanceTaskStatus


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- tasks


class ErrorInfo(BaseModel):
    """How the last attempt failed: the exception's type, message and traceback."""

    model_config = ConfigDict(extra="allow")

    type: str | None = None
    message: str | None = None
    traceback: str | None = None


class Timeline(BaseModel):
    """When the task was made, became due, last started and finished, and the waits."""

    created_at: datetime
    start_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    updated_at: datetime
    #: From due (or creation, if later) to the start of the last attempt.
    waited_seconds: float | None
    #: From the start of the last attempt to its end.
    ran_seconds: float | None


class Progress(BaseModel):
    percent: float | None
    message: str | None


class TaskSummary(BaseModel):
    """A task as a listing shows it."""

    id: int
    status: Status
    processor: str
    processor_name: str
    queue: str
    priority: int
    attempts: int
    max_attempts: int
    rescues: int
    progress: float | None
    created_at: datetime
    start_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    schedule_name: str | None
    pipeline_id: int | None
    step_name: str | None

    @classmethod
    def of(cls, task: TaskView) -> TaskSummary:
        return cls(**_summary_fields(task))


def _summary_fields(task: TaskView) -> dict[str, Any]:
    return {
        "id": task.id,
        "status": task.status,
        "processor": task.processor_type,
        "processor_name": task.processor_name,
        "queue": task.queue,
        "priority": task.priority,
        "attempts": task.attempts,
        "max_attempts": task.max_attempts,
        "rescues": task.rescues,
        "progress": task.progress,
        "created_at": task.created_at,
        "start_at": task.start_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "updated_at": task.updated_at,
        "schedule_name": task.schedule_name,
        "pipeline_id": task.pipeline_id,
        "step_name": task.step_name,
    }


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


class TaskDetail(TaskSummary):
    """Everything about one task: its configuration, outcome, attempts and timeline."""

    config: dict[str, Any] | None
    info: dict[str, Any] | None
    error: ErrorInfo | None
    progress_detail: Progress
    timeline: Timeline
    delay: int
    timeout: float | None
    unique_key: str | None
    waiting_on: int
    lease_expires_at: datetime | None
    scheduled_for: datetime | None
    critical: bool
    run_anyway: bool

    @classmethod
    def of(cls, task: TaskView) -> TaskDetail:
        try:
            config = json.loads(task.processor_json)
        except ValueError:
            config = None
        if not isinstance(config, dict):
            config = None
        started = task.started_at
        due = max(task.start_at, task.created_at)
        return cls(
            **_summary_fields(task),
            config=config,
            info=task.info if isinstance(task.info, dict) else None,
            error=ErrorInfo.model_validate(task.error) if isinstance(task.error, dict) else None,
            progress_detail=Progress(percent=task.progress, message=task.progress_message),
            timeline=Timeline(
                created_at=task.created_at,
                start_at=task.start_at,
                started_at=started,
                finished_at=task.finished_at,
                cancel_requested_at=task.cancel_requested_at,
                updated_at=task.updated_at,
                waited_seconds=_seconds(due, started),
                ran_seconds=_seconds(started, task.finished_at) if task.finished_at else None,
            ),
            delay=task.delay,
            timeout=task.timeout,
            unique_key=task.unique_key,
            waiting_on=task.waiting_on,
            lease_expires_at=task.lease_expires_at,
            scheduled_for=task.scheduled_for,
            critical=task.critical,
            run_anyway=task.run_anyway,
        )


class TaskList(BaseModel):
    """One page, newest first; pass ``next_cursor`` as ``cursor`` for the next (null: last)."""

    tasks: list[TaskSummary]
    next_cursor: str | None


class CreateTask(Strict):
    """A task to create: the processor's class path, its configuration, and the options of
    `create_maintenance_task` (each defaults to the processor class's)."""

    processor: Annotated[
        str, Field(min_length=3, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    ]
    config: dict[str, Any] = Field(default_factory=dict)
    start_at: Timestamp | None = None
    start_in: Annotated[float, Field(ge=0, le=10**9, allow_inf_nan=False)] | None = None
    delay: Annotated[int, Field(ge=0, le=INT32_MAX)] = 0
    priority: Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)] | None = None
    queue: Annotated[Text, Field(min_length=1, max_length=64)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    timeout: Annotated[float, Field(gt=0, le=10**9, allow_inf_nan=False)] | None = None
    unique_key: Annotated[Text, Field(min_length=1, max_length=255)] | None = None
    inactive: bool = False

    @model_validator(mode="after")
    def _check(self) -> CreateTask:
        _storable(self.config)
        if self.start_at is not None and self.start_in is not None:
            raise ValueError("give start_at or start_in, not both")
        return self


class CreatedTask(BaseModel):
    """The task; ``created`` false: an open task held the unique key and is returned
    instead. ``warnings`` name configuration keys the processor does not declare."""

    task: TaskDetail
    created: bool
    warnings: list[str]


class BulkFilter(Strict):
    """Which tasks a bulk action acts on (at least one criterion), at most ``limit``."""

    status: list[Status] = Field(default_factory=list, max_length=6)
    processor: Annotated[Text, Field(min_length=1, max_length=255)] | None = None
    queue: Annotated[Text, Field(min_length=1, max_length=64)] | None = None
    schedule: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    pipeline: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    created_after: Timestamp | None = None
    created_before: Timestamp | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 1000

    @model_validator(mode="after")
    def _some_criterion(self) -> BulkFilter:
        fields = (
            self.status,
            self.processor,
            self.queue,
            self.schedule,
            self.pipeline,
            self.created_after,
            self.created_before,
        )
        if not any(f not in (None, []) for f in fields):
            raise ValueError("give at least one criterion: a bulk action never means every task")
        return self


class BulkOutcome(BaseModel):
    """The ids changed, those found but no longer changeable, and whether more match."""

    changed: list[int]
    skipped: list[int]
    more: bool

    @classmethod
    def of(cls, result: BulkResult) -> BulkOutcome:
        return cls(changed=list(result.changed), skipped=list(result.skipped), more=result.more)


# ---------------------------------------------------------------- schedules

#: A schedule's name: what `nightcrew.Schedule` accepts (``/`` included: the routes take it).
SCHEDULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]*$"
#: The longest interval or misfire grace the API accepts (100 years): a tick stays a date
#: either database and Python can hold.
MAX_SCHEDULE_SECONDS = 100 * 366 * 86_400
#: The most jitter: a week (it spreads the starts of ticks, it does not move them by years).
MAX_JITTER_SECONDS = 7 * 86_400
#: The latest one-off date: later ones leave no room for jitter before year 9999 ends.
MAX_RUN_AT = datetime(9999, 1, 1, tzinfo=UTC)

ScheduleName = Annotated[str, Field(min_length=1, max_length=200, pattern=SCHEDULE_NAME)]
#: A duration as `nightcrew.schedules.triggers.parse_duration` reads it: ``90``, ``6h``, ``1h30m``.
Duration = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9dhms]+$")]
TriggerKind = Literal["cron", "interval", "date"]
ScheduleSource = Literal["code", "runtime"]


def _finite(value: Any, depth: int = 0) -> None:
    """Refuse Infinity anywhere in a JSON value (``_storable`` refuses NaN): JSON has neither."""
    if depth > 64:
        raise ValueError("nested more than 64 levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("Infinity is not a JSON number")
    if isinstance(value, dict):
        for v in value.values():
            _finite(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _finite(v, depth + 1)


def _duration_bound(value: str | float | None, what: str) -> None:
    """A duration text that parses must be at most `MAX_SCHEDULE_SECONDS`; one that does not
    parse is left to the action, which refuses it (and records the refusal)."""
    if not isinstance(value, str):
        return
    try:
        seconds = parse_duration(value).total_seconds()
    except ConfigurationError:
        return
    if seconds > MAX_SCHEDULE_SECONDS:
        raise ValueError(f"{what} is at most {MAX_SCHEDULE_SECONDS} seconds (100 years)")


class CreateSchedule(Strict):
    """A schedule to add at run time (``source`` runtime): a name, the processor's class
    path and configuration (checked as for a task), exactly one trigger (``cron`` with an
    optional ``timezone``, ``every`` in seconds or as a duration like ``"6h"``, or one
    ``at`` date), and the options of `nightcrew.Schedule` (task options default to the
    processor class's)."""

    name: ScheduleName
    processor: Annotated[
        str, Field(min_length=3, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    ]
    config: dict[str, Any] = Field(default_factory=dict)
    cron: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    timezone: Annotated[Text, Field(min_length=1, max_length=64)] | None = None
    every: Annotated[int, Field(strict=True, ge=1, le=MAX_SCHEDULE_SECONDS)] | Duration | None = (
        None
    )
    at: Timestamp | None = None
    queue: Annotated[Text, Field(min_length=1, max_length=64)] | None = None
    priority: Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    timeout: Annotated[float, Field(gt=0, le=10**9, allow_inf_nan=False)] | None = None
    misfire_grace: (
        Annotated[float, Field(ge=0, le=MAX_SCHEDULE_SECONDS, allow_inf_nan=False)]
        | Duration
        | None
    ) = None
    coalesce: bool = True
    max_instances: Annotated[int, Field(ge=1, le=INT32_MAX)] = 1
    jitter: Annotated[float, Field(ge=0, le=MAX_JITTER_SECONDS, allow_inf_nan=False)] = 0

    @model_validator(mode="after")
    def _check(self) -> CreateSchedule:
        _storable(self.config)
        _finite(self.config)
        _duration_bound(self.every, "every")
        _duration_bound(self.misfire_grace, "misfire_grace")
        if self.at is not None and self.at >= MAX_RUN_AT:
            raise ValueError("at must be before 9999-01-01")
        return self


class ScheduleSummary(BaseModel):
    """A schedule as a listing shows it: its trigger, task options, state and last run.

    ``state`` is ``active``, ``paused``, ``retired`` (a code schedule gone from code) or
    ``done`` (a one-off that ran); ``last_task_status`` is null when its last task is gone
    or there was none."""

    id: int
    name: str
    state: Literal["active", "paused", "retired", "done"]
    trigger: str
    trigger_kind: TriggerKind
    cron: str | None
    timezone: str
    every_seconds: int | None
    run_at: datetime | None
    processor: str
    processor_name: str
    queue: str | None
    priority: int | None
    max_attempts: int | None
    timeout: float | None
    enabled: bool
    source: ScheduleSource
    misfire_grace_seconds: float | None
    coalesce: bool
    max_instances: int
    jitter_seconds: float
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_task_id: int | None
    last_task_status: Status | None
    misfires: int
    skipped_instances: int
    last_skip_at: datetime | None
    last_skip_reason: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: ScheduleView) -> ScheduleSummary:
        return cls(**_schedule_fields(view))


def _schedule_fields(view: ScheduleView) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.name,
        "state": view.state,
        "trigger": view.describe_trigger(),
        "trigger_kind": view.trigger_kind,
        "cron": view.cron,
        "timezone": view.timezone,
        "every_seconds": view.every_seconds,
        "run_at": view.run_at,
        "processor": view.processor_type,
        "processor_name": view.processor_type.rpartition(".")[2],
        "queue": view.queue,
        "priority": view.priority,
        "max_attempts": view.max_attempts,
        "timeout": view.timeout,
        "enabled": view.enabled,
        "source": view.source,
        "misfire_grace_seconds": view.misfire_grace_seconds,
        "coalesce": view.coalesce,
        "max_instances": view.max_instances,
        "jitter_seconds": view.jitter_seconds,
        "next_run_at": view.next_run_at,
        "last_run_at": view.last_run_at,
        "last_task_id": view.last_task_id,
        "last_task_status": view.last_task_status,
        "misfires": view.misfires,
        "skipped_instances": view.skipped_instances,
        "last_skip_at": view.last_skip_at,
        "last_skip_reason": view.last_skip_reason,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
    }


class ScheduleDetail(ScheduleSummary):
    """One schedule, with the configuration its ticks' tasks get and the interval's grid."""

    config: dict[str, Any] | None
    anchor_at: datetime | None

    @classmethod
    def of(cls, view: ScheduleView) -> ScheduleDetail:
        try:
            config = json.loads(view.processor_json)
        except ValueError:
            config = None
        return cls(
            **_schedule_fields(view),
            config=config if isinstance(config, dict) else None,
            anchor_at=view.anchor_at,
        )


class ScheduleList(BaseModel):
    """One page by name; pass ``next_cursor`` as ``cursor`` for the next (null: last)."""

    schedules: list[ScheduleSummary]
    next_cursor: str | None


class CreatedSchedule(BaseModel):
    """The new schedule; ``warnings`` name configuration keys the processor does not declare."""

    schedule: ScheduleDetail
    warnings: list[str]


# ---------------------------------------------------------------- pipelines


class PipelineOut(BaseModel):
    """A pipeline: its status and counters (``steps`` in all, ``steps_open`` not final yet,
    failures of critical and optional steps, steps cancelled)."""

    id: int
    name: str
    status: PipelineStatus
    unique_key: str | None
    steps: int
    steps_open: int
    critical_failed: int
    optional_failed: int
    cancelled: int
    info: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, view: PipelineView) -> PipelineOut:
        return cls(
            id=view.id,
            name=view.name,
            status=view.status,
            unique_key=view.unique_key,
            steps=view.steps,
            steps_open=view.steps_open,
            critical_failed=view.critical_failed,
            optional_failed=view.optional_failed,
            cancelled=view.cancelled,
            info=view.info if isinstance(view.info, dict) else None,
            created_at=view.created_at,
            updated_at=view.updated_at,
            finished_at=view.finished_at,
        )


class PipelineList(BaseModel):
    """One page, newest first; pass ``next_cursor`` as ``cursor`` for the next (null: last)."""

    pipelines: list[PipelineOut]
    next_cursor: str | None


class PipelineEdge(BaseModel):
    """Step ``task_id`` waits for step ``depends_on`` (both task ids)."""

    depends_on: int
    task_id: int


class PipelineDetail(BaseModel):
    """A pipeline, its steps (tasks, by id; ``step_name`` names each) and its edges."""

    pipeline: PipelineOut
    steps: list[TaskSummary]
    edges: list[PipelineEdge]

    @classmethod
    def of(cls, detail: StoredPipeline) -> PipelineDetail:
        return cls(
            pipeline=PipelineOut.of(detail.pipeline),
            steps=[TaskSummary.of(t) for t in detail.steps],
            edges=[PipelineEdge(depends_on=a, task_id=b) for a, b in detail.edges],
        )


# ---------------------------------------------------------------- stats


class MinuteFinished(BaseModel):
    minute: datetime
    completed: int
    error: int
    cancelled: int


class Stats(BaseModel):
    """Counts by status, by queue and status, by processor and status; the oldest due
    PENDING task's wait in seconds (null: none waits); finishes per minute, last hour."""

    at: datetime
    by_status: dict[str, int]
    by_queue: dict[str, dict[str, int]]
    by_processor: dict[str, dict[str, int]]
    oldest_pending_seconds: float | None
    finished_per_minute: list[MinuteFinished]
    #: Workers whose registry heartbeat is fresh (null: not read).
    workers_alive: int | None = None

    @classmethod
    def of(cls, stats: TaskStats, workers_alive: int | None = None) -> Stats:
        def plain(counts: dict[MaintenanceTaskStatus, int]) -> dict[str, int]:
            return {s.value: n for s, n in counts.items()}

        return cls(
            at=stats.at,
            by_status=plain(stats.by_status),
            by_queue={q: plain(c) for q, c in stats.by_queue.items()},
            by_processor={p: plain(c) for p, c in stats.by_processor.items()},
            oldest_pending_seconds=stats.oldest_pending_seconds,
            finished_per_minute=[
                MinuteFinished(
                    minute=m.minute, completed=m.completed, error=m.error, cancelled=m.cancelled
                )
                for m in stats.finished_per_minute
            ],
            workers_alive=workers_alive,
        )


# ---------------------------------------------------------------- processors


class ProcessorOut(BaseModel):
    """A processor class a task may name, with its configuration's JSON schema."""

    class_path: str
    name: str
    module: str
    doc: str | None
    json_schema: dict[str, Any] | None
    queue: str
    priority: int
    max_attempts: int
    timeout: float | None
    strict: bool

    @classmethod
    def of(cls, info: ProcessorInfo) -> ProcessorOut:
        return cls(
            class_path=info.class_path,
            name=info.name,
            module=info.module,
            doc=info.doc,
            json_schema=info.schema,
            queue=info.queue,
            priority=info.priority,
            max_attempts=info.max_attempts,
            timeout=info.timeout,
            strict=info.strict,
        )


class ModuleProblemOut(BaseModel):
    module: str
    error: str


class ProcessorList(BaseModel):
    processors: list[ProcessorOut]
    problems: list[ModuleProblemOut]

    @classmethod
    def of(cls, catalog: ProcessorCatalog) -> ProcessorList:
        return cls(
            processors=[ProcessorOut.of(p) for p in catalog.processors],
            problems=[ModuleProblemOut(module=p.module, error=p.error) for p in catalog.problems],
        )


# ---------------------------------------------------------------- audit


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    parameters: dict[str, Any] | None
    outcome: str
    detail: str | None
    client: str | None

    @classmethod
    def of(cls, record: AuditRecord) -> AuditOut:
        assert record.id is not None and record.at is not None
        return cls(
            id=record.id,
            at=record.at,
            actor=record.actor,
            action=record.action,
            target=record.target,
            parameters=record.parameters,
            outcome=record.outcome,
            detail=record.detail,
            client=record.client,
        )


class AuditList(BaseModel):
    entries: list[AuditOut]
    next_cursor: str | None

    @classmethod
    def of(cls, page: AuditPage) -> AuditList:
        cursor = None if page.next_before_id is None else str(page.next_before_id)
        return cls(entries=[AuditOut.of(r) for r in page.records], next_cursor=cursor)


# ---------------------------------------------------------------- tokens


class TokenOut(BaseModel):
    """A token's name and role (the token itself is never stored, so never shown again)."""

    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: TokenView) -> TokenOut:
        return cls(
            name=token.name,
            role=token.role,
            created_at=token.created_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
        )


class TokenCreated(TokenOut):
    """The new token, shown this once."""

    token: str


class CreateToken(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")]
    role: Role


class TokenList(BaseModel):
    tokens: list[TokenOut]


class Health(BaseModel):
    status: str
