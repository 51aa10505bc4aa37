"""Function processors: ``@processor`` turns a typed function into a processor class.

Seeds 001 and 003 register plain handler functions and seed 004's jobs are functions; making
each one a class by hand is boilerplate that invites mistakes. The decorator builds the class
a task row can name: a `MaintenanceTaskProcessor` subclass whose pydantic fields are the
function's parameters, with the function's ``__module__`` and ``__qualname__``, bound to the
function's name in its module. So the allowlist, ``processor_json`` validation, enqueueing
and schedules treat it exactly like a hand-written class, and
``ProcessorLoader.resolve("myapp.jobs.daily_social_harvest")`` finds it by the path a reader
expects::

    @processor(max_attempts=3, timeout=60)
    async def daily_social_harvest(platform: str = "all") -> dict[str, int]:
        '''Harvest yesterday's posts.'''
        ...

    create_maintenance_task(daily_social_harvest(platform="reddit"))

A first parameter named ``task`` receives the running `MaintenanceTask` and is not a field.
An ``async def`` runs on the worker's event loop; a plain ``def`` stays a plain ``def
__call__``, which the worker runs in a thread. The original function stays reachable as
``.func`` for direct unit tests.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, overload

from pydantic import PydanticUserError

from nightcrew.errors import ConfigurationError
from nightcrew.processors import MaintenanceTaskProcessor

if TYPE_CHECKING:
    from nightcrew.models import MaintenanceTask

__all__ = ["FunctionProcessor", "processor"]

_TASK_PARAMETER = "task"


class FunctionProcessor(MaintenanceTaskProcessor):
    """Base of the classes `processor` builds; abstract until a function supplies ``__call__``.

    Its model configuration is inherited from the base processor, never set here, so unknown
    keys are treated exactly as for a hand-written class (and follow any change there). Only
    declared fields are passed to the function: a kept extra key never reaches it.
    """

    #: The decorated function, unchanged (a staticmethod, so ``instance.func`` is not bound).
    func: ClassVar[Callable[..., Any]]
    #: Whether the function's first parameter is ``task`` (it gets the running task).
    takes_task: ClassVar[bool] = False
    #: Names of the function's positional-only parameters, passed by position on a call.
    positional_fields: ClassVar[tuple[str, ...]] = ()

    if TYPE_CHECKING:
        # The generated classes' fields are only known at run time; to a type checker a
        # function processor takes keyword arguments (pydantic validates them when called).
        def __init__(self, **data: Any) -> None: ...

    def _invoke(self, task: MaintenanceTask) -> Any:
        """Call the function with this processor's fields (and the task, if it takes one)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        args: list[Any] = [task] if self.takes_task else []
        args.extend(values.pop(name) for name in self.positional_fields)
        return type(self).func(*args, **values)


@overload
def processor(func: Callable[..., Any], /) -> type[FunctionProcessor]: ...


@overload
def processor(
    *,
    max_attempts: int | None = None,
    timeout: float | None = None,
    queue: str | None = None,
    priority: int | None = None,
    backoff_base: float | None = None,
    backoff_max: float | None = None,
) -> Callable[[Callable[..., Any]], type[FunctionProcessor]]: ...


def processor(
    func: Callable[..., Any] | None = None,
    /,
    *,
    max_attempts: int | None = None,
    timeout: float | None = None,
    queue: str | None = None,
    priority: int | None = None,
    backoff_base: float | None = None,
    backoff_max: float | None = None,
) -> type[FunctionProcessor] | Callable[[Callable[..., Any]], type[FunctionProcessor]]:
    """Make a processor class from a function: ``@processor`` or ``@processor(options)``.

    The options are the class defaults a hand-written processor sets as class variables
    (a task may still override them when it is created); an option left out keeps the base
    class's default. Everything wrong with the function or the options is a
    `ConfigurationError` raised at import time, so a bad deploy fails before any task runs.
    """
    options = _check_options(
        max_attempts=max_attempts,
        timeout=timeout,
        queue=queue,
        priority=priority,
        backoff_base=backoff_base,
        backoff_max=backoff_max,
    )

    def decorate(function: Callable[..., Any]) -> type[FunctionProcessor]:
        return _build(function, options)

    return decorate if func is None else decorate(func)


def _check_options(**given: Any) -> dict[str, Any]:
    options = {name: value for name, value in given.items() if value is not None}

    def number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    for name, value in options.items():
        if name in ("max_attempts", "priority"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigurationError(f"@processor {name} must be an integer, got {value!r}")
            if name == "max_attempts" and value < 1:
                raise ConfigurationError(f"@processor max_attempts must be >= 1, got {value}")
        elif name == "queue":
            if not isinstance(value, str) or not value:
                raise ConfigurationError(
                    f"@processor queue must be a non-empty name, got {value!r}"
                )
        elif not number(value) or not value > 0:
            raise ConfigurationError(f"@processor {name} must be a positive number, got {value!r}")
    if "timeout" in options:
        options["timeout"] = float(options["timeout"])
    return options


def _build(func: Callable[..., Any], options: dict[str, Any]) -> type[FunctionProcessor]:
    where = f"@processor {getattr(func, '__qualname__', func)!r}"
    if isinstance(func, type) or not inspect.isfunction(func):
        raise ConfigurationError(f"{where}: expected a def or async def function, got {func!r}")
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        raise ConfigurationError(f"{where}: a generator cannot be a processor; return a dict")
    try:
        signature = inspect.signature(func, eval_str=True)
    except (NameError, SyntaxError, TypeError) as exc:
        raise ConfigurationError(
            f"{where}: cannot resolve its annotations ({exc}); import the types it names "
            "at module level, not under TYPE_CHECKING"
        ) from exc

    parameters = list(signature.parameters.values())
    takes_task = bool(parameters) and parameters[0].name == _TASK_PARAMETER
    if takes_task:
        first = parameters.pop(0)
        if first.kind not in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD):
            raise ConfigurationError(f"{where}: the task parameter must be positional")
        if first.default is not first.empty:
            raise ConfigurationError(f"{where}: the task parameter cannot have a default")

    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {}
    positional: list[str] = []
    for parameter in parameters:
        name = parameter.name
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            star = "*" if parameter.kind is parameter.VAR_POSITIONAL else "**"
            raise ConfigurationError(
                f"{where}: {star}{name} is not allowed; a processor's configuration is a fixed "
                "set of named fields"
            )
        if name == _TASK_PARAMETER:
            raise ConfigurationError(
                f"{where}: 'task' must be the first parameter (it receives the running task)"
            )
        if name.startswith("_"):
            raise ConfigurationError(
                f"{where}: parameter {name!r} starts with '_', which pydantic does not "
                "treat as a field; rename it"
            )
        if hasattr(FunctionProcessor, name) or name in FunctionProcessor.__class_vars__:
            raise ConfigurationError(
                f"{where}: parameter {name!r} clashes with the processor attribute "
                f"{name!r}; rename it (options like queue= go in @processor(...))"
            )
        annotations[name] = Any if parameter.annotation is parameter.empty else parameter.annotation
        if parameter.default is not parameter.empty:
            namespace[name] = parameter.default
        if parameter.kind is parameter.POSITIONAL_ONLY:
            positional.append(name)

    # A sync wrapper (functools.wraps) around an async function returns a coroutine: it must
    # be awaited on the loop too, not run in a thread.
    is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        inspect.unwrap(func)
    )
    namespace.update(
        {
            "__module__": func.__module__,
            "__qualname__": func.__qualname__,
            "__doc__": func.__doc__,
            "__annotations__": annotations,
            "__call__": _make_call(is_async, func.__qualname__),
            "func": staticmethod(func),
            "takes_task": takes_task,
            "positional_fields": tuple(positional),
            **options,
        }
    )
    try:
        cls = types.new_class(
            func.__name__, (FunctionProcessor,), exec_body=lambda ns: ns.update(namespace)
        )
    except (PydanticUserError, TypeError, ValueError, NameError) as exc:
        raise ConfigurationError(f"{where}: cannot build its processor model: {exc}") from exc
    assert issubclass(cls, FunctionProcessor)
    _replace_in_module(func, cls)
    return cls


def _make_call(is_async: bool, qualname: str) -> Callable[..., Any]:
    """A ``__call__`` of the function's own kind: the worker looks at it to pick loop or thread."""

    async def call_async(self: FunctionProcessor, task: MaintenanceTask) -> Any:
        result = self._invoke(task)
        return await result if inspect.isawaitable(result) else result

    def call_sync(self: FunctionProcessor, task: MaintenanceTask) -> Any:
        return self._invoke(task)

    call: Callable[..., Any] = call_async if is_async else call_sync
    call.__name__ = "__call__"
    call.__qualname__ = f"{qualname}.__call__"
    return call


def _replace_in_module(func: Callable[..., Any], cls: type[FunctionProcessor]) -> None:
    """Bind the class to the function's name in its module, where a class path looks for it.

    With ``@processor`` the ``def`` statement binds the returned class anyway; this also covers
    ``harvest = processor(harvest_fn)``, where the module attribute ``harvest_fn`` would still
    be the plain function and the loader would refuse the row's path. Only a module-level
    function that is still bound to that name is replaced.
    """
    if func.__qualname__ != func.__name__:
        return
    module = sys.modules.get(func.__module__)
    if module is not None and getattr(module, func.__name__, None) is func:
        setattr(module, func.__name__, cls)
