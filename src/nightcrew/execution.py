"""Running one claimed task: context, progress, timeout, and the outcome it leads to.

The worker decides *when* a task runs; this module decides *how* one run goes and what
status it ends in. Nothing here touches the database: progress is recorded in the run's
context and flushed by the worker in batches, and the outcome is returned as a value.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import json
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from nightcrew.errors import FailTask, InvalidTaskOptions, NightcrewError, RetryTask
from nightcrew.instrument import ErrorHook, Tracing, report_error
from nightcrew.models import MaintenanceTask, MaintenanceTaskStatus, utcnow
from nightcrew.processors import MaintenanceTaskProcessor, ProcessorLoader
from nightcrew.retry import backoff_seconds
from nightcrew.values import ClaimedTask, Outcome, StopReason

if TYPE_CHECKING:
    from nightcrew.app import Nightcrew

log = logging.getLogger("nightcrew.execution")
S = MaintenanceTaskStatus

#: Minimum seconds between two progress writes of one task (the last value always lands).
PROGRESS_INTERVAL = 0.25


class TaskTimedOut(NightcrewError):
    """The task ran past its ``timeout``; it was cancelled (a sync one keeps its thread)."""


@dataclass(eq=False)
class RunContext:
    """The state of one running task, shared by the processor, the worker and its loops.

    Written from the processor (possibly in a thread) and read by the worker's loops; each
    field is replaced whole, which is atomic under the GIL.
    """

    claimed: ClaimedTask
    #: Reads a task's dependencies' results (`dependency_results`); set by the worker.
    results: Callable[[int], dict[str, Any]] | None = None
    started: float = field(default_factory=time.monotonic)
    progress: tuple[float, str | None] | None = None
    progress_dirty: bool = False
    stop_reason: StopReason | None = None
    #: Called (from any thread) when a report makes the progress dirty, so the worker can
    #: write it soon rather than at its next round; set by the worker.
    on_progress: Callable[[], None] | None = None
    #: The app of the worker running the task (`current_app`); set by the worker.
    app: Nightcrew | None = None

    @property
    def task_id(self) -> int:
        return self.claimed.id


_current: contextvars.ContextVar[RunContext] = contextvars.ContextVar("nightcrew_run")


def _context(fn: str) -> RunContext:
    try:
        return _current.get()
    except LookupError:
        raise NightcrewError(f"{fn}() called outside a running nightcrew task") from None


class _Done:
    """An already finished awaitable: ``await report_progress(...)`` and a bare call both work."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


_DONE = _Done()


def report_progress(percent: float, message: str | None = None) -> _Done:
    """Record the running task's progress (0-100) and an optional message.

    Usable as ``await report_progress(50, "half")`` in async processors and as a plain call
    in sync ones (they run in a thread that inherits the context). The worker writes the
    latest value at most every `PROGRESS_INTERVAL` seconds per task, so calling this in a
    tight loop costs nothing but an assignment.

    The message keeps its first 1,000 characters, with any NUL replaced by U+FFFD: neither
    database keeps one in a text value (PostgreSQL refuses it, SQLite cuts the text there).
    """
    ctx = _context("report_progress")
    pct = float(percent)
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"progress must be between 0 and 100, got {percent}")
    text = None if message is None else str(message)[:1000].replace("\x00", "\ufffd")
    was_dirty = ctx.progress_dirty
    ctx.progress = (pct, text)
    ctx.progress_dirty = True
    if not was_dirty and ctx.on_progress is not None:
        ctx.on_progress()  # only the first report since the last write signals
    return _DONE


def is_cancel_requested() -> bool:
    """True once an operator asked to cancel this task (or the worker is stopping it).

    Long processors check this between steps to stop cleanly; they are also cancelled at
    their next ``await`` regardless.
    """
    return _context("is_cancel_requested").stop_reason is not None


def dependency_results() -> dict[str, Any]:
    """The results (``info``) of the running pipeline step's dependencies, by step name.

    One indexed query; call it from a sync processor as it is, and from an async one as
    ``await adependency_results()`` so the event loop is not held up by it.
    """
    ctx = _context("dependency_results")
    if ctx.results is None:
        raise NightcrewError("dependency_results() needs a worker that can read them")
    if ctx.claimed.pipeline_id is None:
        return {}
    return ctx.results(ctx.task_id)


async def adependency_results() -> dict[str, Any]:
    """`dependency_results` for async processors (the query runs in a thread)."""
    ctx = _context("adependency_results")
    if ctx.claimed.pipeline_id is None:
        return {}
    return await asyncio.to_thread(dependency_results)


def current_app() -> Nightcrew:
    """The `Nightcrew` app of the worker running this task: its settings and database.

    For processors that work on nightcrew's own tables (the upkeep's do): they use the
    database the worker was given, which need not be the one the environment names.
    """
    app = _context("current_app").app
    if app is None:
        raise NightcrewError("current_app() needs a worker that names its app")
    return app


def current_task_id() -> int:
    return _context("current_task_id").task_id


def current_attempt() -> int:
    """The 1-based number of the attempt now running."""
    return _context("current_attempt").claimed.attempt


def _task_object(claimed: ClaimedTask, now: datetime) -> MaintenanceTask:
    """The processor's view of its task: a detached `MaintenanceTask` as if loaded."""
    return MaintenanceTask.detached(
        {
            "id": claimed.id,
            "status": S.WORKING,
            "processor_type": claimed.processor_type,
            "processor_json": claimed.processor_json,
            "queue": claimed.queue,
            "priority": claimed.priority,
            "delay": claimed.delay,
            "start_at": claimed.start_at,
            "attempts": claimed.attempt,
            "max_attempts": claimed.max_attempts,
            "timeout": claimed.timeout,
            "unique_key": claimed.unique_key,
            "started_at": now,
            "created_at": claimed.created_at,
        },
        only_columns=True,
    )


def _seconds(value: float) -> str:
    return f"{value:g} second" + ("" if value == 1 else "s")


def _error_of(exc: BaseException, with_traceback: bool = True) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(exc)) if with_traceback else None
    return {"type": type(exc).__qualname__, "message": str(exc), "traceback": tb}


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the run was cancelled (timed out, or stopped) meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a daemon thread of its own, with the caller's context (so
    ``report_progress`` works in a sync processor).

    Python cannot stop a thread: a run given up on (timed out, cancelled, handed back at
    shutdown) leaves its thread running until the function returns. A thread of its own
    means such a thread never holds a slot of a shared pool (the loop's default executor
    has only ``cpu count + 4`` threads), and a daemon one never keeps a stopping worker's
    process alive once its tasks were handed back.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def target() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = context.run(fn, *args)
        except BaseException as exc:
            error = exc
        # A closed loop (RuntimeError): nobody waits for this run any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, future, result, error)

    threading.Thread(target=target, name="nightcrew-sync-task", daemon=True).start()
    return await future


@dataclass(frozen=True, slots=True)
class TaskRunner:
    """Runs one claimed task at a time to its outcome, with one loader and one set of limits."""

    loader: ProcessorLoader
    max_info_bytes: int
    #: Whether each processor class's ``__call__`` is a coroutine function (asked once).
    _is_async: dict[type, bool] = field(default_factory=dict)
    #: Called with the task and the exception on every failed attempt (`nightcrew.instrument`).
    on_error: ErrorHook | None = None
    #: The host's tracer, if it configured one (a span per run).
    tracing: Tracing = field(default_factory=Tracing)

    async def run(self, ctx: RunContext) -> Outcome:
        """Run one task to an outcome; never raises (a bug here must not kill the worker)."""
        claimed = ctx.claimed
        try:
            processor = self.loader.load(claimed.processor_type, claimed.processor_json)
            if claimed.timeout is not None and not (
                math.isfinite(claimed.timeout) and claimed.timeout > 0
            ):
                raise InvalidTaskOptions(
                    f"stored timeout {claimed.timeout!r} is not a positive number of seconds"
                )
        except NightcrewError as exc:
            # Not retryable: the row itself is bad (not allowlisted, invalid config).
            return self._fail(ctx, exc, retry=False, with_traceback=False)
        token = _current.set(ctx)
        try:
            span = self.tracing.span(claimed)
            if span is None:
                result = await self._call(processor, claimed, ctx)
            else:
                with span:
                    result = await self._call(processor, claimed, ctx)
        except asyncio.CancelledError:
            return self.stopped(ctx)
        except TaskTimedOut as exc:
            return self._fail(ctx, exc, retry=True, with_traceback=False)
        except RetryTask as exc:
            return self._fail(ctx, exc, retry=True, delay=exc.delay, with_traceback=False)
        except FailTask as exc:
            return self._fail(ctx, exc, retry=False)
        except Exception as exc:
            return self._fail(ctx, exc, retry=True)
        finally:
            _current.reset(token)
        return self._completed(ctx, result)

    async def _call(
        self, processor: MaintenanceTaskProcessor, claimed: ClaimedTask, ctx: RunContext
    ) -> Any:
        task = _task_object(claimed, utcnow())
        call = processor.__call__
        is_async = self._is_async.get(type(processor))
        if is_async is None:
            is_async = self._is_async[type(processor)] = inspect.iscoroutinefunction(call)
        coro = call(task) if is_async else in_thread(call, task)
        if claimed.timeout is None:
            return await coro
        deadline = asyncio.timeout(claimed.timeout)
        try:
            async with deadline:
                return await coro
        except TimeoutError as exc:
            if deadline.expired():
                raise TaskTimedOut(f"timed out after {_seconds(claimed.timeout)}") from exc
            raise

    def _completed(self, ctx: RunContext, result: Any) -> Outcome:
        if result is not None and not isinstance(result, dict):
            result = {"result": result}
        if not result:  # None or {}: nothing to check (the common case of a no-op)
            return self._outcome(ctx, S.COMPLETED, result)
        try:
            size = len(json.dumps(result).encode())
        except (TypeError, ValueError) as exc:
            bad = TypeError(f"processor returned a value that is not JSON: {exc}")
            return self._fail(ctx, bad, retry=False, with_traceback=False)
        if size > self.max_info_bytes:
            big = ValueError(f"info is {size} bytes, more than the limit of {self.max_info_bytes}")
            return self._fail(ctx, big, retry=False, with_traceback=False)
        return self._outcome(ctx, S.COMPLETED, result)

    @staticmethod
    def _outcome(
        ctx: RunContext,
        status: MaintenanceTaskStatus,
        info: dict[str, Any] | None,
        error: dict[str, Any] | None = None,
        start_at: datetime | None = None,
        attempt_counted: bool = True,
    ) -> Outcome:
        return Outcome(
            ctx.claimed,
            status,
            info,
            error,
            start_at,
            attempt_counted,
            ctx.progress,
            time.monotonic() - ctx.started,
        )

    def stopped(self, ctx: RunContext) -> Outcome:
        """The outcome of a run the worker cancelled, by the reason it gave."""
        if ctx.stop_reason is StopReason.CANCEL:
            info = {"cancelled": True, "error": "cancelled while running"}
            return self._outcome(ctx, S.CANCELLED, info)
        # Shutdown (or anything else that stopped us): hand the task back without spending
        # the attempt, so another worker takes it at once.
        reason = ctx.stop_reason.value if ctx.stop_reason else "cancelled"
        info = {"error": f"interrupted: {reason}", "interrupted": True}
        return self._outcome(ctx, S.PENDING, info, None, utcnow(), attempt_counted=False)

    def _fail(
        self,
        ctx: RunContext,
        exc: BaseException,
        *,
        retry: bool,
        delay: float | None = None,
        with_traceback: bool = True,
    ) -> Outcome:
        claimed = ctx.claimed
        if self.on_error is not None and not isinstance(exc, RetryTask):
            report_error(self.on_error, _task_object(claimed, utcnow()), exc)
        error = _error_of(exc, with_traceback)
        info: dict[str, Any] = {"error": str(exc), "error_type": error["type"]}
        if retry and claimed.attempt < claimed.max_attempts:
            if delay is None:
                cls = self.loader.resolve_or_none(claimed.processor_type)
                base = cls.backoff_base if cls else 2.0
                cap = cls.backoff_max if cls else 600.0
                delay = backoff_seconds(claimed.attempt, base=base, cap=cap)
            start_at = utcnow() + timedelta(seconds=max(0.0, delay))
            info["retry_at"] = start_at.isoformat()
            info["attempt"] = claimed.attempt
            return self._outcome(ctx, S.PENDING, info, error, start_at)
        return self._outcome(ctx, S.ERROR, info, error)
