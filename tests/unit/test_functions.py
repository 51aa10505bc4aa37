"""Function processors without a database: the class ``@processor`` builds from a function.

The functions below are module-level on purpose: a task row names its processor by class
path, so the generated class must live at the function's own path in this module, where
``ProcessorLoader(["tests.unit.test_functions"])`` resolves it like any hand-written class.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import pytest
from pydantic import Field, ValidationError

from nightcrew import (
    ConfigurationError,
    InvalidProcessorConfig,
    MaintenanceTask,
    MaintenanceTaskProcessor,
    ProcessorLoader,
    ProcessorNotAllowed,
)
from nightcrew.functions import FunctionProcessor, processor

HERE = __name__  # "tests.unit.test_functions" under pytest


@processor
async def daily_social_harvest(platform: str = "all", limit: int = 100) -> dict[str, Any]:
    """Harvest yesterday's posts from one platform (seed 004's 02:00 job)."""
    await asyncio.sleep(0)
    return {"platform": platform, "limit": limit}


@processor(max_attempts=3, timeout=60, queue="maintenance", priority=5)
def recalculate_health_scores(customer_ids: list[str], *, dry_run: bool = False) -> dict[str, Any]:
    """A plain def: the worker runs it in a thread."""
    return {"count": len(customer_ids), "dry_run": dry_run, "thread": threading.get_ident()}


@processor
async def prune(task: MaintenanceTask, retention_days: int = 30) -> dict[str, Any]:
    """The DESIGN.md example: the first parameter ``task`` is the running task."""
    return {"task": task, "retention_days": retention_days}


@processor
def untyped(value, other=3):  # type: ignore[no-untyped-def]  # deliberately unannotated
    return {"value": value, "other": other}


@processor
def returns_nothing(count: Annotated[int, Field(ge=1)] = 1) -> None:
    """Returning None is allowed, as for classes."""


@processor
def positional_only(first: int, /, second: int = 2) -> dict[str, int]:
    return {"first": first, "second": second}


@processor
def with_mutable_default(tags: list[str] = []) -> dict[str, Any]:  # noqa: B006 - copied per instance
    tags.append("x")
    return {"tags": tags}


def _legacy_handler(name: str) -> dict[str, str]:
    return {"hello": name}


def legacy_handler(name: str) -> dict[str, str]:
    """Wrapped by a call rather than with the decorator syntax."""
    return {"hello": name}


LegacyHandler = processor(legacy_handler)


def _sync_wrapper(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Awaitable[Any]:
        return fn(*args, **kwargs)

    return wrapper


@processor
@_sync_wrapper
async def wrapped_async(n: int = 1) -> dict[str, int]:
    return {"n": n}


@pytest.fixture
def loader() -> ProcessorLoader:
    return ProcessorLoader([HERE])


# --------------------------------------------------------------------------- the class


def test_the_decorator_returns_a_processor_subclass_in_place_of_the_function() -> None:
    assert isinstance(daily_social_harvest, type)
    assert issubclass(daily_social_harvest, MaintenanceTaskProcessor)
    assert issubclass(daily_social_harvest, FunctionProcessor)
    assert not inspect.isabstract(daily_social_harvest)


def test_the_class_has_the_functions_module_qualname_and_path() -> None:
    assert daily_social_harvest.__module__ == HERE
    assert daily_social_harvest.__qualname__ == "daily_social_harvest"
    assert daily_social_harvest.__name__ == "daily_social_harvest"
    assert daily_social_harvest.class_path() == f"{HERE}.daily_social_harvest"


def test_the_class_docstring_is_the_functions_docstring() -> None:
    assert daily_social_harvest.__doc__ == (
        "Harvest yesterday's posts from one platform (seed 004's 02:00 job)."
    )


def test_fields_and_defaults_come_from_the_signature() -> None:
    fields = daily_social_harvest.model_fields
    assert list(fields) == ["platform", "limit"]
    assert (fields["platform"].annotation, fields["platform"].default) == (str, "all")
    assert (fields["limit"].annotation, fields["limit"].default) == (int, 100)
    assert recalculate_health_scores.model_fields["customer_ids"].is_required()
    assert recalculate_health_scores.model_fields["dry_run"].default is False


def test_an_unannotated_parameter_is_any() -> None:
    assert untyped.model_fields["value"].annotation is Any
    assert untyped(value={"any": ["thing"]}).value == {"any": ["thing"]}  # type: ignore[attr-defined]


def test_the_task_parameter_is_not_a_field() -> None:
    assert list(prune.model_fields) == ["retention_days"]
    assert prune.takes_task
    assert not daily_social_harvest.takes_task


def test_calling_the_class_builds_a_processor_instance() -> None:
    proc = daily_social_harvest(platform="reddit")
    assert isinstance(proc, MaintenanceTaskProcessor)
    assert (proc.platform, proc.limit) == ("reddit", 100)  # type: ignore[attr-defined]


def test_the_original_function_stays_reachable_for_unit_tests() -> None:
    assert inspect.iscoroutinefunction(daily_social_harvest.func)
    assert asyncio.run(daily_social_harvest.func("hn", limit=1)) == {"platform": "hn", "limit": 1}
    assert LegacyHandler.func("ada") == {"hello": "ada"}
    proc = daily_social_harvest()
    assert proc.func is daily_social_harvest.func  # not bound to the instance


# --------------------------------------------------------------------------- validation


def test_a_wrong_type_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="limit"):
        daily_social_harvest(limit="many")


def test_a_missing_required_field_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="customer_ids"):
        recalculate_health_scores()


def test_unknown_fields_are_treated_as_the_base_class_treats_them() -> None:
    """Whatever the base's ``extra`` setting is (it was "forbid", is now "allow")."""
    extra = MaintenanceTaskProcessor.model_config.get("extra")
    assert daily_social_harvest.model_config.get("extra") == extra
    if extra == "forbid":
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            daily_social_harvest(platfrom="typo")
    else:
        proc = daily_social_harvest(platfrom="typo")
        assert proc.model_extra == {"platfrom": "typo"}
        # a kept extra key is not passed to the function (it would be a TypeError)
        assert asyncio.run(proc(MaintenanceTask())) == {"platform": "all", "limit": 100}


def test_pydantic_constraints_in_annotations_are_enforced() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        returns_nothing(count=0)


def test_a_mutable_default_is_not_shared_between_instances() -> None:
    first, second = with_mutable_default(), with_mutable_default()
    asyncio.run(asyncio.to_thread(first, MaintenanceTask()))
    assert second.tags == []  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- by path, as JSON


def test_the_loader_resolves_the_function_path_through_the_allowlist(
    loader: ProcessorLoader,
) -> None:
    assert loader.resolve(f"{HERE}.daily_social_harvest") is daily_social_harvest
    assert loader.resolve(f"{HERE}.recalculate_health_scores") is recalculate_health_scores


def test_the_loader_refuses_a_function_processor_outside_the_allowlist() -> None:
    with pytest.raises(ProcessorNotAllowed, match="not in the allowed modules"):
        ProcessorLoader(["myapp"]).resolve(f"{HERE}.daily_social_harvest")


def test_the_abstract_base_is_not_loadable() -> None:
    with pytest.raises(ProcessorNotAllowed, match="abstract"):
        ProcessorLoader(["nightcrew.functions"]).resolve("nightcrew.functions.FunctionProcessor")


def test_json_round_trip_rebuilds_an_equal_processor(loader: ProcessorLoader) -> None:
    proc = recalculate_health_scores(customer_ids=["c1", "c2"], dry_run=True)
    data = loader.validate(proc)
    assert data == proc.model_dump_json() == '{"customer_ids":["c1","c2"],"dry_run":true}'
    assert loader.load(proc.class_path(), data) == proc


def test_loading_bad_json_is_an_invalid_processor_config(loader: ProcessorLoader) -> None:
    with pytest.raises(InvalidProcessorConfig, match="limit"):
        loader.load(f"{HERE}.daily_social_harvest", '{"limit": "lots"}')


def test_a_call_form_replaces_the_function_in_its_module_too(loader: ProcessorLoader) -> None:
    """``X = processor(fn)``: the module attribute ``fn`` is the class, so the path loads."""
    assert legacy_handler is LegacyHandler  # type: ignore[comparison-overlap]
    assert loader.resolve(f"{HERE}.legacy_handler") is LegacyHandler


# --------------------------------------------------------------------------- calling


async def test_an_async_function_is_awaited_on_the_loop() -> None:
    proc = daily_social_harvest(platform="reddit", limit=5)
    assert inspect.iscoroutinefunction(proc.__call__)  # what the worker checks
    assert await proc(MaintenanceTask()) == {"platform": "reddit", "limit": 5}


async def test_a_sync_function_stays_sync_and_runs_in_a_thread() -> None:
    proc = recalculate_health_scores(customer_ids=["a", "b", "c"])
    assert not inspect.iscoroutinefunction(proc.__call__)
    result = await asyncio.to_thread(proc, MaintenanceTask())
    assert result["count"] == 3
    assert result["dry_run"] is False
    assert result["thread"] != threading.get_ident()


async def test_the_task_parameter_receives_the_running_task() -> None:
    task = MaintenanceTask()
    result = await prune(retention_days=7)(task)
    assert result["task"] is task
    assert result["retention_days"] == 7


def test_positional_only_parameters_are_passed_by_position() -> None:
    assert positional_only(first=1)(MaintenanceTask()) == {"first": 1, "second": 2}


def test_a_function_may_return_none() -> None:
    assert returns_nothing(count=2)(MaintenanceTask()) is None


async def test_a_sync_wrapper_around_an_async_function_is_awaited() -> None:
    proc = wrapped_async(n=4)
    assert inspect.iscoroutinefunction(proc.__call__)
    assert await proc(MaintenanceTask()) == {"n": 4}


# --------------------------------------------------------------------------- options


def test_decorator_options_set_the_class_defaults() -> None:
    cls = recalculate_health_scores
    assert (cls.max_attempts, cls.timeout, cls.queue, cls.priority) == (3, 60.0, "maintenance", 5)


def test_without_options_the_base_defaults_stay() -> None:
    cls = daily_social_harvest
    base = MaintenanceTaskProcessor
    assert (cls.max_attempts, cls.timeout, cls.queue, cls.priority) == (
        base.max_attempts,
        base.timeout,
        base.queue,
        base.priority,
    )


def test_empty_parentheses_work_like_the_bare_decorator() -> None:
    def job(n: int = 1) -> None: ...

    cls = processor()(job)
    assert list(cls.model_fields) == ["n"]
    assert cls.max_attempts == 1


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"max_attempts": True},
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": "60"},
        {"queue": ""},
        {"priority": "high"},
        {"backoff_base": 0},
    ],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="@processor"):
        processor(**options)


# --------------------------------------------------------------------------- refused functions


def test_star_args_are_refused() -> None:
    def job(*names: str) -> None: ...

    with pytest.raises(ConfigurationError, match=r"\*names is not allowed"):
        processor(job)


def test_star_star_kwargs_are_refused() -> None:
    def job(n: int = 1, **extra: Any) -> None: ...

    with pytest.raises(ConfigurationError, match=r"\*\*extra is not allowed"):
        processor(job)


def test_a_task_parameter_that_is_not_first_is_refused() -> None:
    def job(n: int, task: MaintenanceTask) -> None: ...

    with pytest.raises(ConfigurationError, match="'task' must be the first parameter"):
        processor(job)


@pytest.mark.parametrize("name", ["queue", "timeout", "model_config", "json", "func"])
def test_a_parameter_clashing_with_a_processor_attribute_is_refused(name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"def job({name}=1): pass", namespace)
    with pytest.raises(ConfigurationError, match=f"parameter '{name}' clashes"):
        processor(namespace["job"])


def test_a_parameter_starting_with_underscore_is_refused() -> None:
    def job(_secret: int = 1) -> None: ...

    with pytest.raises(ConfigurationError, match="starts with '_'"):
        processor(job)


def test_a_generator_is_refused() -> None:
    def job(n: int = 1) -> Any:
        yield n

    with pytest.raises(ConfigurationError, match="generator"):
        processor(job)


def test_a_non_function_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="expected a def"):
        processor(functools.partial(_legacy_handler, "x"))


def test_an_unresolvable_annotation_is_refused_with_a_hint() -> None:
    def job(n: NotDefinedAnywhere = 1) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigurationError, match="cannot resolve its annotations"):
        processor(job)
