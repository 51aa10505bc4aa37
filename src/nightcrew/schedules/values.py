"""Typed values of schedules that cross module lines: a definition to write, a row read back,
and what a sync or a ticker pass did.

The store's schedule operations take and return these (never rows or dicts), the CLI and
the operator actions print them, and `nightcrew.Schedule` (a declaration in code) becomes a
`ScheduleDefinition` once its processor has been checked against the allowlist.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

from nightcrew.models import MaintenanceTaskStatus
from nightcrew.schedules.triggers import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    Trigger,
    format_duration,
)

Source = Literal["code", "runtime"]

#: Names under this prefix belong to nightcrew's own upkeep schedules.
RESERVED_PREFIX = "nightcrew."


def trigger_columns(trigger: Trigger) -> dict[str, Any]:
    """The schedules table's trigger columns for a trigger (the others None)."""
    columns: dict[str, Any] = {
        "trigger_kind": trigger.kind,
        "cron": None,
        "timezone": "UTC",
        "every_seconds": None,
        "run_at": None,
    }
    if isinstance(trigger, CronTrigger):
        columns.update(cron=trigger.expression, timezone=trigger.timezone)
    elif isinstance(trigger, IntervalTrigger):
        columns["every_seconds"] = int(trigger.seconds)
    else:
        columns["run_at"] = trigger.at
    return columns


def trigger_from_columns(
    kind: str, cron: str | None, timezone: str, every_seconds: int | None, run_at: datetime | None
) -> Trigger:
    """The trigger a stored row describes (the inverse of `trigger_columns`)."""
    if kind == "cron":
        assert cron is not None
        return CronTrigger(cron, timezone)
    if kind == "interval":
        assert every_seconds is not None
        return IntervalTrigger(timedelta(seconds=every_seconds))
    assert run_at is not None
    return DateTrigger(run_at)


@dataclass(frozen=True, slots=True)
class ScheduleDefinition:
    """Everything a schedule row holds that its owner decides: trigger, task, options.

    Made by `nightcrew.schedules.declare.define` (checked: name, allowlist, ranges), from a
    `nightcrew.Schedule` in code or from ``schedules add``. Task options are resolved at
    definition time (the processor class's defaults filled in), so a ticker enqueues from
    the row alone, without importing the processor.
    """

    name: str
    trigger: Trigger
    processor_type: str
    processor_json: str
    queue: str
    priority: int
    max_attempts: int
    timeout: float | None
    misfire_grace_seconds: float | None
    coalesce: bool
    max_instances: int
    jitter_seconds: float
    enabled: bool = True
    source: Source = "runtime"

    def columns(self) -> dict[str, Any]:
        """The row's definition columns (not the run state: next/last run, counters)."""
        return {
            "name": self.name,
            **trigger_columns(self.trigger),
            "processor_type": self.processor_type,
            "processor_json": self.processor_json,
            "queue": self.queue,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "misfire_grace_seconds": self.misfire_grace_seconds,
            "coalesce": self.coalesce,
            "max_instances": self.max_instances,
            "jitter_seconds": self.jitter_seconds,
        }

    def declared_hash(self) -> str:
        """A fingerprint of the declaration: ``<digest of the definition>:<1|0>``, the flag
        being the declared ``enabled``. A code row whose stored fingerprint matches is left
        alone by a sync; keeping the flag apart tells a sync whether the code's own
        ``enabled=`` changed, so an operator's pause holds across deploys otherwise."""
        text = json.dumps(self.columns(), sort_keys=True, default=str, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()[:62]
        return f"{digest}:{int(self.enabled)}"


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """One schedule row as the store reads it, with the status of its last task.

    ``last_run_at`` is the tick of the last task it enqueued (``scheduled_for``; a run-now
    counts, with its own time); ``last_task_status`` is None when that task is gone
    (pruned) or there was none.
    """

    id: int
    name: str
    trigger_kind: str
    cron: str | None
    timezone: str
    every_seconds: int | None
    run_at: datetime | None
    anchor_at: datetime | None
    processor_type: str
    processor_json: str
    queue: str | None
    priority: int | None
    max_attempts: int | None
    timeout: float | None
    enabled: bool
    source: Source
    declared_hash: str | None
    misfire_grace_seconds: float | None
    coalesce: bool
    max_instances: int
    jitter_seconds: float
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_task_id: int | None
    misfires: int
    skipped_instances: int
    last_skip_at: datetime | None
    last_skip_reason: str | None
    created_at: datetime
    updated_at: datetime
    last_task_status: MaintenanceTaskStatus | None = None

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> ScheduleView:
        values = {name: row[name] for name in _VIEW_FIELDS if name in row}
        status = values.get("last_task_status")
        if status is not None:
            values["last_task_status"] = MaintenanceTaskStatus(status)
        values["enabled"] = bool(values["enabled"])
        values["coalesce"] = bool(values["coalesce"])
        return cls(**values)

    @property
    def trigger(self) -> Trigger:
        return trigger_from_columns(
            self.trigger_kind, self.cron, self.timezone, self.every_seconds, self.run_at
        )

    def describe_trigger(self) -> str:
        """``cron 0 2 * * * (Europe/Berlin)``, ``every 6h``, ``once at 2030-01-01 00:00Z``."""
        return self.trigger.describe()

    @property
    def retired(self) -> bool:
        """A code schedule no longer declared in code (disabled by a sync, kept)."""
        return self.source == "code" and self.declared_hash is None and not self.enabled

    @property
    def state(self) -> str:
        """``active``, ``paused``, ``retired`` (gone from code) or ``done`` (a one-off that ran)."""
        if self.retired:
            return "retired"
        if not self.enabled:
            return "paused"
        if self.next_run_at is None:
            return "done"
        return "active"

    @property
    def misfire_grace(self) -> str:
        if self.misfire_grace_seconds is None:
            return "unlimited"
        return format_duration(timedelta(seconds=self.misfire_grace_seconds))


_VIEW_FIELDS = tuple(f.name for f in fields(ScheduleView))


@dataclass(frozen=True, slots=True)
class ScheduleChange:
    """One schedule a sync touched, and how (``created``, ``updated``, ``retired``, ...)."""

    name: str
    action: Literal["created", "updated", "retired", "adopted"]
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What a sync from code did, schedule by schedule; ``unchanged`` counts the rest."""

    changes: tuple[ScheduleChange, ...]
    unchanged: int

    def names(self, action: str) -> list[str]:
        return [c.name for c in self.changes if c.action == action]


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one ticker pass did: schedules claimed, tasks enqueued, ticks skipped.

    ``conflicts`` counts ticks that already had a task (a restore, a clock step): the
    unique (schedule, tick) key refused the second insert. ``full`` says the pass claimed
    as many schedules as it could take, so more may be due.
    """

    claimed: int
    enqueued: int
    misfired: int
    skipped_instances: int
    conflicts: int
    full: bool
