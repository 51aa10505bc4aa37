"""How task runs reach a host's error tracker and tracer: the error hook and OpenTelemetry.

**Error hook.** A callable ``hook(task, exc)`` called by the worker on every failed attempt
(the processor raised, timed out, returned a result that cannot be stored, or could not be
loaded), retried or not; a `nightcrew.RetryTask` is the processor asking for another
attempt, not a failure, and is not reported. Sentry is one line::

    Nightcrew(settings, on_error=lambda task, exc: sentry_sdk.capture_exception(exc))

or ``NIGHTCREW_ERROR_HOOK=myapp.errors:report`` (a ``module:function`` path). The hook runs
on the worker's event loop, so it must be quick (Sentry's capture only queues); one that
raises is logged and ignored, never failing the task a second time.

**OpenTelemetry.** When ``opentelemetry-api`` is installed (the ``otel`` extra) and the host
configured a tracer provider, each run is a span ``nightcrew.run <Processor>`` with the
task id, processor, queue and attempt as attributes, the exception recorded when it fails.
Without a configured provider (the API's default proxy) no span is made at all: the API's
no-op spans still cost a few microseconds per task, a tenth of a drained task's budget.
Whether a provider is configured is asked at most once a second per worker (`Tracing`):
the question itself reads the environment, which costs a drain as much again.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from nightcrew.errors import ConfigurationError

if TYPE_CHECKING:
    from nightcrew.models import MaintenanceTask
    from nightcrew.values import ClaimedTask

log = logging.getLogger("nightcrew.worker")

#: ``hook(task, exception)``: called on every failed attempt; its return value is ignored.
ErrorHook = Callable[["MaintenanceTask", BaseException], object]

try:  # the optional extra: nightcrew never requires it
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    _trace = None  # type: ignore[assignment]


def load_error_hook(path: str | None) -> ErrorHook | None:
    """The callable a ``module:function`` setting names (None: no hook)."""
    if not path:
        return None
    module_name, sep, attr = path.partition(":")
    if not sep or not attr:
        raise ConfigurationError(f"error hook: expected module:function, got {path!r}")
    try:
        hook = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"error hook {path!r} cannot be loaded: {exc}") from exc
    if not callable(hook):
        raise ConfigurationError(f"error hook {path!r} is not callable")
    return hook  # type: ignore[no-any-return]


def report_error(hook: ErrorHook, task: MaintenanceTask, exc: BaseException) -> None:
    """Call ``hook``; a hook that fails is logged, never raised into the run's outcome."""
    try:
        hook(task, exc)
    except Exception:
        log.exception("the error hook failed", extra={"task_id": task.id})


def _tracer() -> Any:
    """The host's tracer, or None when tracing is off (no API, or no provider set up)."""
    if _trace is None:
        return None
    provider = _trace.get_tracer_provider()
    if isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider):
        return None
    return provider.get_tracer("nightcrew")


@contextlib.contextmanager
def _span(tracer: Any, claimed: ClaimedTask) -> Iterator[None]:
    name = claimed.processor_type.rpartition(".")[2]
    attributes = {
        "nightcrew.task_id": claimed.id,
        "nightcrew.processor": claimed.processor_type,
        "nightcrew.queue": claimed.queue,
        "nightcrew.attempt": claimed.attempt,
    }
    with tracer.start_as_current_span(f"nightcrew.run {name}", attributes=attributes):
        yield


#: How often a worker asks again whether the host configured a tracer provider (seconds).
TRACER_CHECK_SECONDS = 1.0


class Tracing:
    """A worker's view of the host's tracer: looked up at most every `TRACER_CHECK_SECONDS`
    (a provider configured after the worker started is used from then on)."""

    __slots__ = ("_checked", "_tracer")

    def __init__(self) -> None:
        self._tracer: Any = None
        self._checked = float("-inf")

    def span(self, claimed: ClaimedTask) -> AbstractContextManager[Any] | None:
        """A span around one run, or None when tracing is off (nothing to enter)."""
        now = time.monotonic()
        if now - self._checked >= TRACER_CHECK_SECONDS:
            self._tracer = _tracer()
            self._checked = now
        tracer = self._tracer
        return None if tracer is None else _span(tracer, claimed)
