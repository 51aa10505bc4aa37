"""Processors: typed pydantic classes named by class path, and their allowlisted loading."""

from __future__ import annotations

import importlib
import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from nightcrew.errors import (
    InvalidProcessorConfig,
    PayloadTooLarge,
    ProcessorImportError,
    ProcessorNotAllowed,
)

if TYPE_CHECKING:
    from nightcrew.models import MaintenanceTask

_CLASS_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

#: Modules allowed whatever ``NIGHTCREW_PROCESSOR_MODULES`` says: nightcrew's own upkeep
#: processors (pruning, stale-task cancelling) run on its default schedules in every
#: install, and they are this package's code, not anything a row could point elsewhere.
ALWAYS_ALLOWED_MODULES = ("nightcrew.upkeep",)


class MaintenanceTaskProcessor(BaseModel, ABC):
    """Base of every processor: its fields are the task's configuration.

    ``__call__`` may be ``async def`` (run on the worker's loop) or a plain ``def`` (run in
    a thread so it never blocks the loop). The class variables are per-processor defaults
    that a task can override when it is created.
    """

    #: Unknown keys in a stored configuration are kept and ignored, as under the origin
    #: (whose own rows carry such keys); a processor opts into strict fields with
    #: ``model_config = ConfigDict(extra="forbid")``.
    #: NaN and Infinity are refused: JSON has no such numbers, and a database would store
    #: them as null, a configuration the processor never meant.
    model_config = ConfigDict(extra="allow", frozen=False, allow_inf_nan=False)

    max_attempts: ClassVar[int] = 1
    timeout: ClassVar[float | None] = None
    queue: ClassVar[str] = "default"
    priority: ClassVar[int] = 0
    backoff_base: ClassVar[float] = 2.0
    backoff_max: ClassVar[float] = 600.0

    @abstractmethod
    def __call__(self, task: MaintenanceTask) -> Any:
        """Do the work; a returned dict is stored in ``task.info``."""

    @classmethod
    def class_path(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"


def unknown_fields(processor: BaseModel) -> list[str]:
    """Keys of a configuration that no field of the processor declares (kept, ignored).

    The CLI and the API warn about them: usually a typo of a field's name.
    """
    return sorted((processor.model_extra or {}).keys())


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class ProcessorLoader:
    """Turns a stored class path into a processor class, for allowlisted modules only.

    The check is done on the string before anything is imported: a row may come from an
    API caller, and importing an arbitrary dotted path would run its module's code.
    """

    def __init__(self, allowed_modules: Iterable[str], *, max_json_bytes: int = 64 * 1024):
        self.allowed_modules = tuple(allowed_modules)
        self.max_json_bytes = max_json_bytes
        self._classes: dict[str, type[MaintenanceTaskProcessor]] = {}

    def is_allowed(self, class_path: str) -> bool:
        if not _CLASS_PATH.match(class_path):
            return False
        module = class_path.rpartition(".")[0]
        allowed = (*self.allowed_modules, *ALWAYS_ALLOWED_MODULES)
        return any(module == m or module.startswith(m + ".") for m in allowed)

    def resolve(self, class_path: str) -> type[MaintenanceTaskProcessor]:
        """Return the processor class for ``class_path`` or raise `ProcessorNotAllowed`."""
        cached = self._classes.get(class_path)
        if cached is not None:
            return cached
        if not self.is_allowed(class_path):
            raise ProcessorNotAllowed(
                f"processor {class_path!r} is not in the allowed modules "
                f"({', '.join((*self.allowed_modules, *ALWAYS_ALLOWED_MODULES))}); "
                "set NIGHTCREW_PROCESSOR_MODULES to allow it"
            )
        module_name, _, attr = class_path.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ProcessorNotAllowed(
                f"processor module {module_name!r} cannot be imported: {exc}"
            ) from exc
        except Exception as exc:  # the module itself raised while being imported
            raise ProcessorImportError(
                f"processor module {module_name!r} raised on import: {type(exc).__name__}: {exc}"
            ) from exc
        cls = getattr(module, attr, None)
        if cls is None:
            raise ProcessorNotAllowed(f"processor {class_path!r} not found in {module_name!r}")
        if not (isinstance(cls, type) and issubclass(cls, MaintenanceTaskProcessor)):
            raise ProcessorNotAllowed(f"{class_path!r} is not a MaintenanceTaskProcessor subclass")
        if inspect.isabstract(cls):
            raise ProcessorNotAllowed(f"{class_path!r} is abstract and cannot run")
        if cls.class_path() != class_path:
            raise ProcessorNotAllowed(f"{class_path!r} is an alias of {cls.class_path()!r}")
        self._classes[class_path] = cls
        return cls

    def resolve_or_none(self, class_path: str) -> type[MaintenanceTaskProcessor] | None:
        """The class if it was already resolved; never imports (used on the failure path)."""
        return self._classes.get(class_path)

    def check_size(self, processor_json: str) -> None:
        size = len(processor_json.encode())
        if size > self.max_json_bytes:
            raise PayloadTooLarge(
                f"processor_json is {size} bytes, more than the limit of {self.max_json_bytes}"
            )

    def load(self, class_path: str, processor_json: str | bytes) -> MaintenanceTaskProcessor:
        """Rebuild a processor from its stored form, validating the configuration."""
        cls = self.resolve(class_path)
        text = processor_json.decode() if isinstance(processor_json, bytes) else processor_json
        self.check_size(text)
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise InvalidProcessorConfig(
                f"invalid configuration for {class_path}: {_describe_validation(exc)}"
            ) from exc

    def validate(self, processor: MaintenanceTaskProcessor) -> str:
        """Check a processor about to be enqueued; return its JSON."""
        self.resolve(processor.class_path())
        data = processor.model_dump_json()
        self.check_size(data)
        return data


def loader_for(settings: Any) -> ProcessorLoader:
    """A loader for a `Settings`' allowlist and size bound (an app keeps one for its life)."""
    return ProcessorLoader(
        settings.processor_modules, max_json_bytes=settings.max_processor_json_bytes
    )


def default_loader() -> ProcessorLoader:
    """The loader configured by the environment (``NIGHTCREW_PROCESSOR_MODULES``)."""
    from nightcrew.settings import Settings

    return loader_for(Settings())


class Noop(MaintenanceTaskProcessor):
    """Does nothing; used by benchmarks and smoke checks of a deployment."""

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        return {}
