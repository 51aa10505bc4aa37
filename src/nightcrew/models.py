"""The task table as an SQLAlchemy 2 model, and the status enum.

The ORM class serves people (the origin's contract: ``get_processor()``,
``set_processor()``, attribute access); the engine itself works on the same table through
Core statements in ``nightcrew.store``.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from nightcrew.processors import MaintenanceTaskProcessor, ProcessorLoader

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base owning nightcrew's metadata, kept apart from the host app's."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, UTC in the database, on every dialect.

    A naive datetime is read as UTC: that is what the origin's columns meant (it wrote
    ``datetime.utcnow()``), so code written for the origin keeps its meaning instead of
    failing or being shifted by the session's time zone. An aware one is converted to UTC.
    SQLite has no timezone type, so values are stored there as naive UTC text in
    SQLAlchemy's format (``YYYY-MM-DD HH:MM:SS.ffffff``, which `utc_now_default` also
    writes, so stored text compares as time) and made aware again on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        if value.tzinfo is UTC:
            return value
        return value.astimezone(UTC)


class utc_now_default(FunctionElement[datetime]):
    """The current UTC time as a column's server default, in the column's stored format.

    PostgreSQL: ``CURRENT_TIMESTAMP`` (a timestamptz). SQLite's ``CURRENT_TIMESTAMP`` is
    ``YYYY-MM-DD HH:MM:SS``, without the fraction SQLAlchemy writes; text in two formats
    does not sort as time at equal seconds, so SQLite gets the same six-digit format
    (``%f`` gives milliseconds: the last three digits are zeros).
    """

    type = DateTime(timezone=True)
    inherit_cache = True


#: What `utc_now_default` compiles to, per dialect (the migrations spell out the same).
NOW_SQL = {
    "postgresql": "CURRENT_TIMESTAMP",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f000', 'now')",
}


@compiles(utc_now_default)
def _now_default(element: utc_now_default, compiler: SQLCompiler, **kw: Any) -> str:
    return NOW_SQL["postgresql"]


@compiles(utc_now_default, "sqlite")
def _now_default_sqlite(element: utc_now_default, compiler: SQLCompiler, **kw: Any) -> str:
    return NOW_SQL["sqlite"]


JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
BigID = BigInteger().with_variant(Integer(), "sqlite")


class MaintenanceTaskStatus(enum.StrEnum):
    """The origin's five statuses plus CANCELLED."""

    INACTIVE = "INACTIVE"
    PENDING = "PENDING"
    WORKING = "WORKING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {MaintenanceTaskStatus.COMPLETED, MaintenanceTaskStatus.ERROR, MaintenanceTaskStatus.CANCELLED}
)
OPEN_STATUSES = frozenset(set(MaintenanceTaskStatus) - FINAL_STATUSES)
_OPEN_SQL = ", ".join(f"'{s.value}'" for s in sorted(OPEN_STATUSES))
_ALL_SQL = ", ".join(f"'{s.value}'" for s in MaintenanceTaskStatus)


class StatusType(TypeDecorator[MaintenanceTaskStatus]):
    """A short string column that reads back as the enum (no native enum: cheap to extend)."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else MaintenanceTaskStatus(value).value

    def process_result_value(
        self, value: str | None, dialect: Dialect
    ) -> MaintenanceTaskStatus | None:
        return None if value is None else MaintenanceTaskStatus(value)


#: Claimable rows: due-able PENDING tasks without a dependency left and without a
#: ``delay`` (tasks with one are claimed one at a time, spaced: `SPACED`).
CLAIMABLE = "status = 'PENDING' AND waiting_on = 0 AND delay = 0"
SPACED = "status = 'PENDING' AND waiting_on = 0 AND delay > 0"


def utcnow() -> datetime:
    return datetime.now(UTC)


class MaintenanceTask(Base):
    """One unit of background work: a processor's class path, its configuration and outcome."""

    __tablename__ = "maintenance_tasks"

    # Every NOT NULL column beyond the origin's own has a server default, and so do
    # ``delay`` and the timestamps: plain SQL naming only the origin's columns (its data
    # migrations do) makes a runnable task. ``status`` has no server default, as in the
    # origin; its Python default is the origin's INACTIVE (a task committed without a
    # status never runs until activated; ``create_maintenance_task`` sets PENDING).
    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    status: Mapped[MaintenanceTaskStatus] = mapped_column(
        StatusType, default=MaintenanceTaskStatus.INACTIVE
    )
    processor_type: Mapped[str] = mapped_column(String(255))
    processor_json: Mapped[str] = mapped_column(Text, default="{}")
    queue: Mapped[str] = mapped_column(String(64), default="default", server_default="default")
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    delay: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    start_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=utc_now_default()
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    #: Times the task was handed back after its worker died (a lease expired); counted
    #: apart from ``attempts``, since a crash is not the task's failure.
    rescues: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    unique_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    waiting_on: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    progress: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    info: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=utc_now_default()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=utc_now_default()
    )
    #: The schedule that made this task and the tick it stands for (unique together).
    schedule_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The pipeline this task is a step of, its step name, and how its failure counts.
    pipeline_id: Mapped[int | None] = mapped_column(BigID, nullable=True)
    step_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    critical: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    run_anyway: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (
        CheckConstraint(f"status IN ({_ALL_SQL})", name="status"),
        CheckConstraint("max_attempts >= 1", name="max_attempts"),
        CheckConstraint("waiting_on >= 0", name="waiting_on"),
        # The claim query walks one of these: only claimable rows are in them, so their
        # size follows the backlog, not the history kept in the table. Claim order is
        # priority, then oldest ``created_at`` (the origin's runner order), then id. The
        # first serves workers of named queues, the second workers of all queues (a
        # leading queue column would force a sort of the whole backlog on every claim).
        Index(
            "ix_maintenance_tasks_claimable",
            "queue",
            text("priority DESC"),
            "created_at",
            "id",
            postgresql_where=text(CLAIMABLE),
            sqlite_where=text(CLAIMABLE),
        ),
        Index(
            "ix_maintenance_tasks_claimable_any",
            text("priority DESC"),
            "created_at",
            "id",
            postgresql_where=text(CLAIMABLE),
            sqlite_where=text(CLAIMABLE),
        ),
        # Tasks with the origin's ``delay`` (a pause after each), claimed one at a time.
        Index(
            "ix_maintenance_tasks_spaced",
            text("priority DESC"),
            "created_at",
            "id",
            postgresql_where=text(SPACED),
            sqlite_where=text(SPACED),
        ),
        # Listing by status and recency (CLI, API, upkeep's pruning).
        Index("ix_maintenance_tasks_status_updated", "status", "updated_at"),
        # The admin API's and CLI's listings of one status, newest first (keyset on id):
        # without it a listing of a rare status walks the whole table backwards.
        Index("ix_maintenance_tasks_status_id", "status", "id"),
        # Lease rescue scans only in-flight rows.
        Index(
            "ix_maintenance_tasks_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'WORKING'"),
            sqlite_where=text("status = 'WORKING'"),
        ),
        # At most one open task per unique key, enforced by the database itself.
        Index(
            "uq_maintenance_tasks_unique_key_open",
            "unique_key",
            unique=True,
            postgresql_where=text(f"unique_key IS NOT NULL AND status IN ({_OPEN_SQL})"),
            sqlite_where=text(f"unique_key IS NOT NULL AND status IN ({_OPEN_SQL})"),
        ),
        # One task per tick of a schedule, whatever the workers, restores or clocks do.
        Index(
            "uq_maintenance_tasks_schedule_tick",
            "schedule_name",
            "scheduled_for",
            unique=True,
            postgresql_where=text("schedule_name IS NOT NULL"),
            sqlite_where=text("schedule_name IS NOT NULL"),
        ),
        # A schedule's tasks newest first (the admin API's listing by schedule).
        Index(
            "ix_maintenance_tasks_schedule_id",
            "schedule_name",
            "id",
            postgresql_where=text("schedule_name IS NOT NULL"),
            sqlite_where=text("schedule_name IS NOT NULL"),
        ),
        # A schedule's open tasks (its max_instances check).
        Index(
            "ix_maintenance_tasks_schedule_open",
            "schedule_name",
            postgresql_where=text(f"schedule_name IS NOT NULL AND status IN ({_OPEN_SQL})"),
            sqlite_where=text(f"schedule_name IS NOT NULL AND status IN ({_OPEN_SQL})"),
        ),
        # A pipeline's steps.
        Index(
            "ix_maintenance_tasks_pipeline",
            "pipeline_id",
            postgresql_where=text("pipeline_id IS NOT NULL"),
            sqlite_where=text("pipeline_id IS NOT NULL"),
        ),
    )

    @classmethod
    def detached(cls, columns: Mapping[str, Any], *, only_columns: bool = False) -> MaintenanceTask:
        """A task object filled from a row's columns, as a query would load it, but cheaply.

        Filling ``__dict__`` is how the ORM itself populates loaded rows; going through
        ``__init__`` instead fires an attribute event per column, which costs more than
        the rest of a one-task enqueue or of running a no-op processor. The object is
        not attached to any session. Keys that are not columns are ignored, unless the
        caller vouches with ``only_columns`` that there are none.
        """
        _configure_mappers()
        task: MaintenanceTask = _NEW_INSTANCE()
        if only_columns:
            task.__dict__.update(columns)
        else:
            task.__dict__.update((k, v) for k, v in columns.items() if k in _COLUMN_NAMES)
        return task

    def get_processor(self, loader: ProcessorLoader | None = None) -> MaintenanceTaskProcessor:
        """Rebuild the processor from its stored class path and JSON, through the allowlist."""
        from nightcrew.processors import default_loader

        return (loader or default_loader()).load(self.processor_type, self.processor_json)

    def set_processor(self, processor: MaintenanceTaskProcessor) -> None:
        """Store the processor's fully qualified class name and its JSON configuration."""
        self.processor_type = processor.class_path()
        self.processor_json = processor.model_dump_json()

    def __repr__(self) -> str:
        return f"<MaintenanceTask id={self.id} {self.status} {self.processor_type}>"


_NEW_INSTANCE = MaintenanceTask.__mapper__.class_manager.new_instance
_COLUMN_NAMES = frozenset(MaintenanceTask.__table__.columns.keys())


@functools.cache
def _configure_mappers() -> None:
    """Instrumentation is set up on the ORM's first use; objects made by hand need it too."""
    MaintenanceTask.registry.configure()


# ---------------------------------------------------------------- schedules


class Schedule(Base):
    """A durable schedule: a trigger (cron in a timezone, an interval, or one date) and the
    task to enqueue at each tick. ``next_run_at`` is the tick due next (None: no more)."""

    __tablename__ = "nightcrew_schedules"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    trigger_kind: Mapped[str] = mapped_column(String(8))
    cron: Mapped[str | None] = mapped_column(String(200), nullable=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    every_seconds: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Where an interval counts from, so its ticks never drift.
    anchor_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    processor_type: Mapped[str] = mapped_column(String(255))
    processor_json: Mapped[str] = mapped_column(Text, default="{}")
    #: Task options; None means the processor class's default.
    queue: Mapped[str | None] = mapped_column(String(64), nullable=True)
    priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_attempts: Mapped[int | None] = mapped_column(Integer, nullable=True)
    timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    #: "code" (declared in NIGHTCREW_SCHEDULES, kept in line by sync) or "runtime".
    source: Mapped[str] = mapped_column(String(8), default="runtime", server_default="runtime")
    #: A code schedule's declaration as last synced (a hash, with its ``enabled``): sync
    #: rewrites the row only when the declaration changed, so an operator's pause holds
    #: across worker restarts. None for runtime rows and for code rows no longer declared.
    declared_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    misfire_grace_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    coalesce: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    max_instances: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    jitter_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_task_id: Mapped[int | None] = mapped_column(BigID, nullable=True)
    misfires: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    skipped_instances: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_skip_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_skip_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=utc_now_default()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=utc_now_default()
    )

    __table_args__ = (
        CheckConstraint("trigger_kind IN ('cron', 'interval', 'date')", name="trigger_kind"),
        CheckConstraint("source IN ('code', 'runtime')", name="source"),
        CheckConstraint("max_instances >= 1", name="max_instances"),
        # The ticker's one query when idle: the earliest tick of the enabled schedules.
        Index(
            "ix_nightcrew_schedules_due",
            "next_run_at",
            postgresql_where=text("enabled"),
            sqlite_where=text("enabled"),
        ),
    )


# ---------------------------------------------------------------- pipelines


class PipelineStatus(enum.StrEnum):
    PENDING = "PENDING"
    WORKING = "WORKING"
    COMPLETED = "COMPLETED"
    PARTIAL_SUCCESS = "PARTIAL_SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


_PIPELINE_SQL = ", ".join(f"'{s.value}'" for s in PipelineStatus)
_PIPELINE_OPEN_SQL = "'PENDING', 'WORKING'"


class Pipeline(Base):
    """A named group of tasks with dependencies; its counters move in the transactions of
    the steps that change them, never by a sweep."""

    __tablename__ = "nightcrew_pipelines"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="PENDING")
    unique_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    #: Steps not yet in a final status.
    steps_open: Mapped[int] = mapped_column(Integer, default=0)
    critical_failed: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    optional_failed: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cancelled: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    info: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=utc_now_default()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=utc_now_default()
    )
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        CheckConstraint(f"status IN ({_PIPELINE_SQL})", name="status"),
        CheckConstraint("steps_open >= 0", name="steps_open"),
        Index(
            "uq_nightcrew_pipelines_unique_key_open",
            "unique_key",
            unique=True,
            postgresql_where=text(f"unique_key IS NOT NULL AND status IN ({_PIPELINE_OPEN_SQL})"),
            sqlite_where=text(f"unique_key IS NOT NULL AND status IN ({_PIPELINE_OPEN_SQL})"),
        ),
        Index("ix_nightcrew_pipelines_status_updated", "status", "updated_at"),
    )


class TaskDependency(Base):
    """``task_id`` waits for ``depends_on`` (keyed for finding a finished task's dependents)."""

    __tablename__ = "nightcrew_task_dependencies"

    depends_on: Mapped[int] = mapped_column(
        BigID, ForeignKey("maintenance_tasks.id", ondelete="CASCADE"), primary_key=True
    )
    task_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("maintenance_tasks.id", ondelete="CASCADE"), primary_key=True
    )

    __table_args__ = (Index("ix_nightcrew_task_dependencies_task_id", "task_id"),)


# ---------------------------------------------------------------- admin API


class ApiToken(Base):
    """A bearer token of the admin API, stored only as its hash."""

    __tablename__ = "nightcrew_api_tokens"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=utc_now_default()
    )
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role"),)


class AuditEntry(Base):
    """One mutating call, API or CLI: who, what, on what, with which parameters, how it
    ended. Append-only."""

    __tablename__ = "nightcrew_audit_log"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    client: Mapped[str | None] = mapped_column(String(100), nullable=True)

    __table_args__ = (
        CheckConstraint("outcome IN ('ok', 'refused', 'error')", name="outcome"),
        Index("ix_nightcrew_audit_log_at", "at"),
        Index("ix_nightcrew_audit_log_actor_at", "actor", "at"),
    )


# ---------------------------------------------------------------- workers


class WorkerRecord(Base):
    """A live worker, kept fresh by its lease keeper and removed on a clean exit."""

    __tablename__ = "nightcrew_workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32))
    queues: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    concurrency: Mapped[int] = mapped_column(Integer)
    in_flight: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_nightcrew_workers_last_heartbeat_at", "last_heartbeat_at"),)


# ---------------------------------------------------------------- secrets


class SecretRecord(Base):
    """A secret nightcrew makes for itself, shared by all its processes on one database
    (the dashboard's session-signing key): made once by whichever process needs it first,
    so a dashboard served by several processes works without configuration."""

    __tablename__ = "nightcrew_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=utc_now_default()
    )
