"""Creating tasks: the origin's ``create_maintenance_task``, its async twin and bulk forms.

Pass ``session=`` (a SQLAlchemy ``Session``/``Connection``, or their async versions) to
write the task inside the caller's transaction: it exists if and only if the caller
commits. Without it, the task is committed on its own through ``database``: a
`nightcrew.Nightcrew` app (what an application should pass: its engines are reused), a
`Database`, a URL, or nothing (the settings' URL; engines made for the call and disposed).

Sync and async forms share everything but the last step: the rows are built and checked
by `build_rows`, then one store operation writes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nightcrew.app import Nightcrew, app_for
from nightcrew.errors import InvalidTaskOptions
from nightcrew.models import MaintenanceTask, MaintenanceTaskStatus, utcnow
from nightcrew.processors import MaintenanceTaskProcessor, ProcessorLoader, loader_for
from nightcrew.settings import Settings
from nightcrew.store import Database, bulk, ops
from nightcrew.store.base import AsyncTarget, SyncTarget, arun_in, run_in
from nightcrew.values import TaskView

_VIEW_FIELDS = tuple(TaskView.__dataclass_fields__)

DatabaseLike = Nightcrew | Database | str | None
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1  # the integer columns' range on PostgreSQL


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Per-task choices; ``None`` means the processor class's default.

    When a task may start: ``start_at`` (a datetime; naive means UTC), or ``start_in``
    seconds from now; neither means now. ``delay`` is the origin's column, kept with its
    meaning: after such a task a worker waits ``delay`` seconds before it starts the next
    task that has a delay (the origin's runner did so to stay under rate limits).
    """

    start_at: datetime | None = None
    delay: int = 0
    priority: int | None = None
    queue: str | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    unique_key: str | None = None
    inactive: bool = False
    start_in: float | None = None


def as_utc(when: datetime) -> datetime:
    """Aware UTC; a naive datetime is read as UTC, as the origin's columns mean it (its
    examples pass ``datetime.utcnow()``)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _check_options(o: TaskOptions) -> None:
    if o.start_in is not None:
        if o.start_at is not None:
            raise InvalidTaskOptions("give start_at or start_in, not both")
        if not (math.isfinite(o.start_in) and o.start_in >= 0):
            raise InvalidTaskOptions(f"start_in must be >= 0 seconds, got {o.start_in}")
    if o.delay < 0:
        raise InvalidTaskOptions(f"delay must be >= 0 seconds, got {o.delay}")
    if not _INT32_MIN <= o.delay <= _INT32_MAX:
        raise InvalidTaskOptions(f"delay must fit in 32 bits, got {o.delay}")
    if o.unique_key is not None and not 0 < len(o.unique_key) <= 255:
        raise InvalidTaskOptions("unique_key must be 1 to 255 characters")


def _class_columns(
    cls: type[MaintenanceTaskProcessor], o: TaskOptions, loader: ProcessorLoader
) -> dict[str, Any]:
    """The columns that depend on the processor's class and the options, checked."""
    class_path = cls.class_path()
    loader.resolve(class_path)  # the allowlist, before anything is written
    max_attempts = cls.max_attempts if o.max_attempts is None else o.max_attempts
    if max_attempts < 1:
        raise InvalidTaskOptions(f"max_attempts must be >= 1, got {max_attempts}")
    timeout = cls.timeout if o.timeout is None else o.timeout
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise InvalidTaskOptions(f"timeout must be a finite number of seconds > 0, got {timeout}")
    queue = cls.queue if o.queue is None else o.queue
    if not queue or len(queue) > 64:
        raise InvalidTaskOptions("queue must be 1 to 64 characters")
    priority = cls.priority if o.priority is None else o.priority
    for name, value in (("priority", priority), ("max_attempts", max_attempts)):
        if not _INT32_MIN <= value <= _INT32_MAX:
            raise InvalidTaskOptions(f"{name} must fit in 32 bits, got {value}")
    return {
        "processor_type": class_path,
        "queue": queue,
        "priority": priority,
        "max_attempts": max_attempts,
        "timeout": timeout,
    }


def build_rows(
    processors: Sequence[MaintenanceTaskProcessor],
    options: TaskOptions,
    loader: ProcessorLoader,
    now: datetime,
) -> list[dict[str, Any]]:
    """The rows for these tasks, after the allowlist and every option have been checked.

    What depends only on the class is worked out once per class, so a bulk enqueue of
    one processor type costs a dict copy and a ``model_dump_json`` per task.
    """
    o = options
    _check_options(o)
    common = {
        "status": MaintenanceTaskStatus.INACTIVE if o.inactive else MaintenanceTaskStatus.PENDING,
        "delay": o.delay,
        "start_at": as_utc(o.start_at) if o.start_at else now + timedelta(seconds=o.start_in or 0),
        "attempts": 0,
        "unique_key": o.unique_key,
        "waiting_on": 0,
        "created_at": now,
        "updated_at": now,
        **bulk.OPTIONAL,
    }
    per_class: dict[type[MaintenanceTaskProcessor], dict[str, Any]] = {}
    rows = []
    for processor in processors:
        cls = type(processor)
        base = per_class.get(cls)
        if base is None:
            if not isinstance(processor, MaintenanceTaskProcessor):
                raise InvalidTaskOptions(
                    f"expected a MaintenanceTaskProcessor instance, got {cls.__name__}"
                )
            base = per_class[cls] = {**common, **_class_columns(cls, o, loader)}
        processor_json = processor.model_dump_json()
        if len(processor_json) * 4 > loader.max_json_bytes:  # else it cannot be too big
            loader.check_size(processor_json)
        rows.append({**base, "processor_json": processor_json})
    return rows


def _prepare(
    processors: Sequence[MaintenanceTaskProcessor],
    options: TaskOptions,
    database: DatabaseLike,
    settings: Settings | None,
    session: object,
) -> tuple[list[dict[str, Any]], Nightcrew | None, bool]:
    """Rows checked against the app's allowlist; the app to write through (None when the
    caller's session writes) and whether it was made here (then it is closed after)."""
    if session is not None:  # the caller's transaction writes; an app only lends its loader
        shared = database if isinstance(database, Nightcrew) else None
        loader = shared.loader if shared else loader_for(settings or Settings())
        return build_rows(processors, options, loader, utcnow()), shared, False
    app, owned = app_for(database, settings)
    try:
        return build_rows(processors, options, app.loader, utcnow()), app, owned
    except BaseException:
        if owned:
            app.close()
        raise


def _as_task(view: TaskView) -> MaintenanceTask:
    """The origin's return value: a (detached) `MaintenanceTask` holding the stored row."""
    return MaintenanceTask.detached({name: getattr(view, name) for name in _VIEW_FIELDS})


def create_maintenance_task(
    processor: MaintenanceTaskProcessor,
    start_at: datetime | None = None,
    *,
    start_in: float | None = None,
    delay: int = 0,
    priority: int | None = None,
    queue: str | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    unique_key: str | None = None,
    inactive: bool = False,
    session: SyncTarget | None = None,
    database: DatabaseLike = None,
    settings: Settings | None = None,
) -> MaintenanceTask:
    """Create one task and return it (the existing one if ``unique_key`` is taken).

    It becomes due at ``start_at`` (naive means UTC), or ``start_in`` seconds from now, or
    now. An ``inactive`` task waits for an explicit activation. ``delay`` is the origin's:
    seconds a worker pauses after this task before the next task with a delay (see
    `TaskOptions`). The other options default to the processor class's.
    """
    options = TaskOptions(
        start_at, delay, priority, queue, max_attempts, timeout, unique_key, inactive, start_in
    )
    (row,), app, owned = _prepare([processor], options, database, settings, session)
    insert = ops.insert_one if row["unique_key"] is None else ops.insert_keyed
    if session is not None:
        return _as_task(run_in(session, app.events if app else None, insert, row))
    assert app is not None
    try:
        if row["unique_key"] is None:  # the common call: one statement, the fast way
            return _as_task(app.store.enqueue_one(row))
        return _as_task(app.store.run(insert, row))
    finally:
        if owned:
            app.close()


async def acreate_maintenance_task(
    processor: MaintenanceTaskProcessor,
    start_at: datetime | None = None,
    *,
    start_in: float | None = None,
    delay: int = 0,
    priority: int | None = None,
    queue: str | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - the task's timeout, not this call's
    unique_key: str | None = None,
    inactive: bool = False,
    session: AsyncTarget | None = None,
    database: DatabaseLike = None,
    settings: Settings | None = None,
) -> MaintenanceTask:
    """`create_maintenance_task` for async code (``session``: an async session or connection)."""
    options = TaskOptions(
        start_at, delay, priority, queue, max_attempts, timeout, unique_key, inactive, start_in
    )
    (row,), app, owned = _prepare([processor], options, database, settings, session)
    insert = ops.insert_one if row["unique_key"] is None else ops.insert_keyed
    if session is not None:
        return _as_task(await arun_in(session, app.events if app else None, insert, row))
    assert app is not None
    try:
        return _as_task(await app.store.arun(insert, row))
    finally:
        if owned:
            await app.aclose()


def create_maintenance_tasks(
    processors: Sequence[MaintenanceTaskProcessor],
    options: TaskOptions | None = None,
    *,
    session: SyncTarget | None = None,
    database: DatabaseLike = None,
    settings: Settings | None = None,
) -> list[int]:
    """Create many tasks in one multi-row insert; returns their ids in order."""
    if not processors:
        return []
    rows, app, owned = _prepare(processors, options or TaskOptions(), database, settings, session)
    if session is not None:
        return run_in(session, app.events if app else None, ops.insert_tasks, rows)
    assert app is not None
    try:
        return app.store.run(ops.insert_tasks, rows)
    finally:
        if owned:
            app.close()


async def acreate_maintenance_tasks(
    processors: Sequence[MaintenanceTaskProcessor],
    options: TaskOptions | None = None,
    *,
    session: AsyncTarget | None = None,
    database: DatabaseLike = None,
    settings: Settings | None = None,
) -> list[int]:
    """`create_maintenance_tasks` for async code."""
    if not processors:
        return []
    rows, app, owned = _prepare(processors, options or TaskOptions(), database, settings, session)
    if session is not None:
        return await arun_in(session, app.events if app else None, ops.insert_tasks, rows)
    assert app is not None
    try:
        return await app.store.arun(ops.insert_tasks, rows)
    finally:
        if owned:
            await app.aclose()
