"""One exception root, so callers can catch everything nightcrew raises with one clause."""

from __future__ import annotations


class NightcrewError(Exception):
    """Base of every error nightcrew raises on purpose."""


class ConfigurationError(NightcrewError):
    """A setting or option is invalid; raised early so a bad deploy fails loudly."""


class ProcessorNotAllowed(NightcrewError):
    """A processor class path is outside the allowlist or is not a processor.

    Raised before any import happens: a row can come from an API caller, so loading an
    arbitrary dotted path would be remote code loading.
    """


class InvalidProcessorConfig(NightcrewError):
    """The stored or submitted configuration does not validate against the processor model."""


class PayloadTooLarge(NightcrewError):
    """`processor_json` or `info` exceeds its configured size bound."""


class InvalidTaskOptions(NightcrewError):
    """An enqueue option is out of range (negative delay, naive datetime, ...)."""


class TaskNotFound(NightcrewError):
    """No task has the given id."""


class InvalidTransition(NightcrewError):
    """The task is not in a status from which the requested change is allowed."""


class DatabaseError(NightcrewError):
    """The database refused or failed an operation; the driver's error is the `__cause__`."""


class RetryTask(NightcrewError):
    """Raised by a processor to be run again after `delay` seconds (spends an attempt)."""

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class FailTask(NightcrewError):
    """Raised by a processor to end ERROR at once, whatever attempts remain."""
