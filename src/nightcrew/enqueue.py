"""Creating tasks: the origin's ``create_maintenance_task``, its async twin and bulk forms.

Pass ``session=`` (a SQLAlchemy ``Session``/``Connection``, or their async versions) to
write the task inside the caller's transaction: it exists if and only if the caller
commits. Without it, the task is committed on its own through ``database`` (a URL or a
`Database`; default ``NIGHTCREW_DATABASE_URL``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from nightcrew.errors import InvalidTaskOptions
from nightcrew.models import MaintenanceTask, MaintenanceTaskStatus, utcnow
from nightcrew.processors import MaintenanceTaskProcessor, ProcessorLoader, loader_for
from nightcrew.settings import Settings
from nightcrew.store import Database, Store, arun, operations, run

DatabaseLike = Database | str | None
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1  # the integer columns' range on PostgreSQL
SyncTarget = Session | Connection
AsyncTarget = AsyncSession | AsyncConnection


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Per-task choices; ``None`` means the processor class's default."""

    start_at: datetime | None = None
    delay: int = 0
    priority: int | None = None
    queue: str | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    unique_key: str | None = None
    inactive: bool = False


@functools.lru_cache(maxsize=16)
def _database_for(url: str) -> Database:
    return Database(url)


def resolve_database(database: DatabaseLike, settings: Settings | None = None) -> Database:
    """The database to write to: the one given, else the settings' URL, else the default."""
    if isinstance(database, Database):
        return database
    return _database_for(database or (settings or Settings()).database_url)


def _check_options(o: TaskOptions) -> None:
    if o.start_at is not None and o.start_at.tzinfo is None:
        raise InvalidTaskOptions("start_at must be timezone-aware (use datetime.now(UTC))")
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
    if timeout is not None and timeout <= 0:
        raise InvalidTaskOptions(f"timeout must be > 0 seconds, got {timeout}")
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
        "start_at": o.start_at or now + timedelta(seconds=o.delay),
        "attempts": 0,
        "unique_key": o.unique_key,
        "waiting_on": 0,
        "created_at": now,
        "updated_at": now,
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


def _rows(
    processors: Sequence[MaintenanceTaskProcessor], options: TaskOptions, settings: Settings | None
) -> list[dict[str, Any]]:
    loader = loader_for(settings or Settings())
    return build_rows(processors, options, loader, utcnow())


def _to_task(row: Any) -> MaintenanceTask:
    return MaintenanceTask.detached(row._mapping)


def _sync_execute(
    plan_for: Any,
    session: SyncTarget | None,
    database: DatabaseLike,
    settings: Settings | None,
    *,
    single: bool = False,
) -> Any:
    if session is not None:
        conn = session.connection() if isinstance(session, Session) else session
        return run(conn, plan_for(conn.dialect.name))
    store = Store(resolve_database(database, settings))
    return store.run(plan_for(store.dialect), single_statement=single)


async def _async_execute(
    plan_for: Any,
    session: AsyncTarget | None,
    database: DatabaseLike,
    settings: Settings | None,
    *,
    single: bool = False,
) -> Any:
    if session is not None:
        conn = await session.connection() if isinstance(session, AsyncSession) else session
        return await arun(conn, plan_for(conn.dialect.name))
    store = Store(resolve_database(database, settings))
    return await store.arun(plan_for(store.dialect), single_statement=single)


def create_maintenance_task(
    processor: MaintenanceTaskProcessor,
    start_at: datetime | None = None,
    *,
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

    ``start_at`` defaults to now + ``delay``; an ``inactive`` task waits for an explicit
    activation, which sets ``start_at = now + delay``.
    """
    options = TaskOptions(
        start_at, delay, priority, queue, max_attempts, timeout, unique_key, inactive
    )
    (row,) = _rows([processor], options, settings)
    single = row["unique_key"] is None
    found = _sync_execute(
        lambda d: operations.insert_one(d, row), session, database, settings, single=single
    )
    return _to_task(found)


async def acreate_maintenance_task(
    processor: MaintenanceTaskProcessor,
    start_at: datetime | None = None,
    *,
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
    """Async twin of `create_maintenance_task`."""
    options = TaskOptions(
        start_at, delay, priority, queue, max_attempts, timeout, unique_key, inactive
    )
    (row,) = _rows([processor], options, settings)
    single = row["unique_key"] is None
    found = await _async_execute(
        lambda d: operations.insert_one(d, row), session, database, settings, single=single
    )
    return _to_task(found)


def create_maintenance_tasks(
    processors: Sequence[MaintenanceTaskProcessor],
    options: TaskOptions | None = None,
    *,
    session: SyncTarget | None = None,
    database: DatabaseLike = None,
    settings: Settings | None = None,
) -> list[int]:
    """Create many tasks in one multi-row insert; returns their ids in order."""
    rows = _rows(processors, options or TaskOptions(), settings)
    if not rows:
        return []
    ids: list[int] = _sync_execute(
        lambda d: operations.insert_tasks(d, rows), session, database, settings
    )
    return ids


async def acreate_maintenance_tasks(
    processors: Sequence[MaintenanceTaskProcessor],
    options: TaskOptions | None = None,
    *,
    session: AsyncTarget | None = None,
    database: DatabaseLike = None,
    settings: Settings | None = None,
) -> list[int]:
    """Async twin of `create_maintenance_tasks`."""
    rows = _rows(processors, options or TaskOptions(), settings)
    if not rows:
        return []
    ids: list[int] = await _async_execute(
        lambda d: operations.insert_tasks(d, rows), session, database, settings
    )
    return ids
