"""The processors an operator may create tasks of: discovered from the allowlisted modules.

The allowlist (``NIGHTCREW_PROCESSOR_MODULES``) names modules, not classes; the admin API
and a dashboard need the classes, with their JSON schema, so a form can be drawn for each.
Discovery imports each allowed module (the allowlist already vouches for running its code)
and keeps the concrete `MaintenanceTaskProcessor` subclasses *defined* there, plus those of
its submodules that are already imported; a class only imported into a module is listed
under the module that defines it, if that one is allowed. A module that fails to import
is reported, never raised: one broken module must not hide the others.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from nightcrew.processors import MaintenanceTaskProcessor, ProcessorLoader


@dataclass(frozen=True, slots=True)
class ProcessorInfo:
    """One processor class as a form needs it: its path, doc, defaults and JSON schema."""

    class_path: str
    name: str
    module: str
    doc: str | None
    schema: dict[str, Any] | None
    queue: str
    priority: int
    max_attempts: int
    timeout: float | None
    #: Whether unknown configuration keys are refused (``extra="forbid"``) or kept.
    strict: bool


@dataclass(frozen=True, slots=True)
class ModuleProblem:
    """An allowed module that could not be imported, or a class whose schema failed."""

    module: str
    error: str


@dataclass(frozen=True, slots=True)
class ProcessorCatalog:
    processors: list[ProcessorInfo]
    problems: list[ModuleProblem]


def _doc(cls: type) -> str | None:
    doc = inspect.getdoc(cls)
    if not doc or doc == inspect.getdoc(MaintenanceTaskProcessor):
        return None
    return doc.strip()


def _classes(module: ModuleType) -> list[type[MaintenanceTaskProcessor]]:
    found: list[type[MaintenanceTaskProcessor]] = []
    for value in list(vars(module).values()):
        if not (isinstance(value, type) and issubclass(value, MaintenanceTaskProcessor)):
            continue
        cls: type[MaintenanceTaskProcessor] = value
        if (
            cls.__module__ == module.__name__
            and not inspect.isabstract(cls)
            and getattr(module, cls.__qualname__, None) is cls
        ):
            found.append(cls)
    return found


def discover(loader: ProcessorLoader) -> ProcessorCatalog:
    """Every concrete processor class of the loader's allowed modules, sorted by path."""
    problems: list[ModuleProblem] = []
    modules: dict[str, ModuleType] = {}
    for name in loader.allowed_modules:
        try:
            modules[name] = importlib.import_module(name)
        except Exception as exc:  # an allowed module that raises on import
            problems.append(ModuleProblem(name, f"{type(exc).__name__}: {exc}"))
            continue
        prefix = name + "."
        for loaded_name, loaded in list(sys.modules.items()):
            if loaded_name.startswith(prefix) and loaded is not None:
                modules[loaded_name] = loaded
    infos: dict[str, ProcessorInfo] = {}
    for module in modules.values():
        for cls in _classes(module):
            path = cls.class_path()
            if path in infos or not loader.is_allowed(path):
                continue
            try:
                schema: dict[str, Any] | None = cls.model_json_schema()
            except Exception as exc:  # a field type pydantic cannot describe
                schema = None
                problems.append(ModuleProblem(path, f"no JSON schema: {exc}"))
            infos[path] = ProcessorInfo(
                class_path=path,
                name=cls.__qualname__,
                module=cls.__module__,
                doc=_doc(cls),
                schema=schema,
                queue=cls.queue,
                priority=cls.priority,
                max_attempts=cls.max_attempts,
                timeout=cls.timeout,
                strict=cls.model_config.get("extra") == "forbid",
            )
    return ProcessorCatalog([infos[p] for p in sorted(infos)], problems)
