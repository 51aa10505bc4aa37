"""`Schedule`: a durable schedule declared in code, and how it becomes a row's definition.

::

    from datetime import timedelta
    from nightcrew import Schedule
    from myapp.jobs import daily_social_harvest, refresh_stale_servers

    SCHEDULES = [
        Schedule("daily-harvest", cron="0 2 * * *", timezone="Europe/Berlin",
                 processor=daily_social_harvest(platform="all")),
        Schedule("refresh", every=timedelta(hours=6), processor=refresh_stale_servers()),
    ]

``NIGHTCREW_SCHEDULES=myapp.schedules:SCHEDULES`` points workers at the list; each worker
syncs it by name when it starts. A `Schedule` is a frozen value checked when it is made
(trigger, options), so a bad declaration fails at import time; its processor is checked
against the allowlist when it is synced (`define`), where the loader is known.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from nightcrew.errors import ConfigurationError, NightcrewError
from nightcrew.processors import MaintenanceTaskProcessor, ProcessorLoader
from nightcrew.schedules.triggers import (
    MAX_SPAN,
    IntervalTrigger,
    Trigger,
    make_trigger,
    parse_duration,
)
from nightcrew.schedules.values import RESERVED_PREFIX, ScheduleDefinition, Source

__all__ = ["Schedule", "define", "load_declared"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]*$")
_MAX_NAME = 200
_INT32_MAX = 2**31 - 1


def _seconds(value: float | timedelta | str | None, what: str) -> float | None:
    """Seconds from a number, a timedelta or a duration like ``"5m"`` (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        seconds = parse_duration(value).total_seconds()
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(
            f"{what} must be seconds, a timedelta or a duration like '5m', got {value!r}"
        )
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigurationError(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    if seconds > MAX_SPAN.total_seconds():
        raise ConfigurationError(f"{what} is at most 100 years, got {value!r}")
    return seconds


def check_name(name: object, *, reserved: bool = False) -> str:
    """A schedule name: 1-200 characters, letters, digits and ``. _ : @ / + -``, no spaces.

    Names starting with ``nightcrew.`` belong to nightcrew's upkeep and are refused here
    unless ``reserved`` (the upkeep's own declarations).
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"a schedule needs a name, got {name!r}")
    if len(name) > _MAX_NAME or not _NAME.match(name):
        raise ConfigurationError(
            f"invalid schedule name {name!r}: 1 to {_MAX_NAME} letters, digits or . _ : @ / + - "
            "(starting with a letter or digit)"
        )
    if name.startswith(RESERVED_PREFIX) and not reserved:
        raise ConfigurationError(
            f"schedule name {name!r}: names starting with {RESERVED_PREFIX!r} are nightcrew's own"
        )
    return name


@dataclass(frozen=True, init=False)
class Schedule:
    """A schedule declared in code: a trigger and the processor a tick enqueues.

    Give exactly one trigger: ``cron`` (five fields, in ``timezone``, default UTC),
    ``every`` (a timedelta, seconds, or ``"6h"``; whole seconds, at least 1) or ``at`` (one
    datetime; naive means UTC), or a ready ``trigger``. The task options (``queue``,
    ``priority``, ``max_attempts``, ``timeout``) default to the processor class's.

    - ``misfire_grace``: a tick found later than this (seconds, timedelta or ``"5m"``) is
      skipped and recorded; None (the default) runs a late tick however late.
    - ``coalesce`` (default on): ticks missed while no worker ran fold into one task.
    - ``max_instances`` (default 1): a tick is skipped, and recorded, while this many of the
      schedule's tasks are still open (PENDING or WORKING).
    - ``jitter``: each task starts up to this many seconds after its tick (its
      ``scheduled_for`` stays the tick).
    - ``enabled=False`` declares it paused.
    """

    name: str
    trigger: Trigger
    processor: MaintenanceTaskProcessor
    queue: str | None
    priority: int | None
    max_attempts: int | None
    timeout: float | None
    misfire_grace: float | None
    coalesce: bool
    max_instances: int
    jitter: float
    enabled: bool

    def __init__(
        self,
        name: str,
        *,
        processor: MaintenanceTaskProcessor,
        cron: str | None = None,
        timezone: str | None = None,
        every: timedelta | str | float | None = None,
        at: datetime | str | None = None,
        trigger: Trigger | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        misfire_grace: float | timedelta | str | None = None,
        coalesce: bool = True,
        max_instances: int = 1,
        jitter: float = 0,
        enabled: bool = True,
        _reserved: bool = False,
    ) -> None:
        check_name(name, reserved=_reserved)
        where = f"schedule {name!r}"
        if trigger is None:
            try:
                trigger = make_trigger(cron=cron, timezone=timezone, every=every, at=at)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{where}: {exc}") from None
        elif any(v is not None for v in (cron, timezone, every, at)):
            raise ConfigurationError(f"{where}: give trigger= or cron/every/at, not both")
        if isinstance(trigger, IntervalTrigger) and trigger.every % timedelta(seconds=1):
            raise ConfigurationError(
                f"{where}: an interval is whole seconds, got {trigger.describe()}"
            )
        if not isinstance(processor, MaintenanceTaskProcessor):
            raise ConfigurationError(
                f"{where}: processor must be a processor instance (e.g. Reindex() or a "
                f"@processor function called with its arguments), got {processor!r}"
            )
        if queue is not None and not (isinstance(queue, str) and 0 < len(queue) <= 64):
            raise ConfigurationError(f"{where}: queue must be 1 to 64 characters")
        for option, value, low in (
            ("priority", priority, -_INT32_MAX - 1),
            ("max_attempts", max_attempts, 1),
            ("max_instances", max_instances, 1),
        ):
            if value is None and option != "max_instances":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value:
                raise ConfigurationError(f"{where}: {option} must be an integer >= {low}")
            if value > _INT32_MAX:
                raise ConfigurationError(f"{where}: {option} must fit in 32 bits")
        if timeout is not None:
            seconds = _seconds(timeout, f"{where}: timeout")
            if not seconds:
                raise ConfigurationError(f"{where}: timeout must be > 0 seconds")
            timeout = seconds
        grace = _seconds(misfire_grace, f"{where}: misfire_grace")
        jitter_seconds = _seconds(jitter, f"{where}: jitter") or 0.0
        values: tuple[tuple[str, object], ...] = (
            ("name", name),
            ("trigger", trigger),
            ("processor", processor),
            ("queue", queue),
            ("priority", priority),
            ("max_attempts", max_attempts),
            ("timeout", timeout),
            ("misfire_grace", grace),
            ("coalesce", bool(coalesce)),
            ("max_instances", max_instances),
            ("jitter", jitter_seconds),
            ("enabled", bool(enabled)),
        )
        for attr, given in values:
            object.__setattr__(self, attr, given)

    def __repr__(self) -> str:
        return (
            f"Schedule({self.name!r}, {self.trigger.describe()}, "
            f"processor={self.processor.class_path()})"
        )


def define(
    schedule: Schedule, loader: ProcessorLoader, *, source: Source = "runtime"
) -> ScheduleDefinition:
    """The row definition of ``schedule``: its processor checked against the allowlist and
    its configuration size, and every option resolved (the class's defaults filled in)."""
    processor = schedule.processor
    cls = type(processor)
    try:
        processor_json = loader.validate(processor)
    except NightcrewError as exc:
        raise ConfigurationError(f"schedule {schedule.name!r}: {exc}") from exc
    return ScheduleDefinition(
        name=schedule.name,
        trigger=schedule.trigger,
        processor_type=cls.class_path(),
        processor_json=processor_json,
        queue=cls.queue if schedule.queue is None else schedule.queue,
        priority=cls.priority if schedule.priority is None else schedule.priority,
        max_attempts=cls.max_attempts if schedule.max_attempts is None else schedule.max_attempts,
        timeout=cls.timeout if schedule.timeout is None else schedule.timeout,
        misfire_grace_seconds=schedule.misfire_grace,
        coalesce=schedule.coalesce,
        max_instances=schedule.max_instances,
        jitter_seconds=schedule.jitter,
        enabled=schedule.enabled,
        source=source,
    )


def load_declared(spec: str) -> list[Schedule]:
    """The schedules ``NIGHTCREW_SCHEDULES`` names (``module:ATTR``, a list of `Schedule`).

    Every problem is a `ConfigurationError` naming the setting, raised when a worker starts,
    so a bad deploy fails before it ticks anything.
    """
    where = f"NIGHTCREW_SCHEDULES={spec}"
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    except Exception as exc:
        raise ConfigurationError(
            f"{where}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not hasattr(module, attr):
        raise ConfigurationError(f"{where}: module {module_name!r} has no attribute {attr!r}")
    value = getattr(module, attr)
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ConfigurationError(
            f"{where}: expected a list of nightcrew.Schedule, got {type(value).__name__}"
        )
    schedules: list[Schedule] = []
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, Schedule):
            raise ConfigurationError(
                f"{where}: expected nightcrew.Schedule items, got {type(item).__name__}"
            )
        if item.name in seen:
            raise ConfigurationError(f"{where}: schedule name {item.name!r} is declared twice")
        seen.add(item.name)
        schedules.append(item)
    return schedules
