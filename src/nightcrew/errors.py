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
    """An enqueue option is out of range (negative delay, a timeout that is not finite, ...)."""


class TaskNotFound(NightcrewError):
    """No task has the given id."""


class PipelineNotFound(NightcrewError):
    """No pipeline has the given id."""


class InvalidTransition(NightcrewError):
    """The task is not in a status from which the requested change is allowed."""


class DatabaseError(NightcrewError):
    """The database refused or failed an operation; the driver's error is the `__cause__`.

    ``transient`` says whether trying again later can help: a server that is restarting or
    a dropped connection can heal; a missing schema, a wrong password or an unknown
    database cannot, and a worker stops at once with the message instead of retrying.
    """

    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class DatabaseUnavailable(DatabaseError):
    """The server cannot be reached or is restarting: worth retrying with backoff."""

    transient = True


class SchemaMissing(DatabaseError):
    """nightcrew's tables are not there: run ``nightcrew db upgrade`` first."""


class RetryTask(NightcrewError):
    """Raised by a processor to be run again after `delay` seconds (spends an attempt)."""

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class ProcessorImportError(ProcessorNotAllowed):
    """An allowlisted processor module raised while it was imported (not an ImportError):
    the task cannot run until the module is fixed, so it ends ERROR with this reason."""


class FailTask(NightcrewError):
    """Raised by a processor to end ERROR at once, whatever attempts remain."""


class InvalidTokenRequest(NightcrewError):
    """An API token's name or role is not acceptable (empty, too long, an unknown role)."""


class TokenNameTaken(NightcrewError):
    """Another API token (active or revoked) already has this name: names stay unique so
    the audit log's actors stay unambiguous."""


class TokenNotFound(NightcrewError):
    """No active API token has this name."""


class ScheduleNotFound(NightcrewError):
    """No schedule has the given name."""


class ScheduleExists(NightcrewError):
    """A schedule with this name exists already (names are unique; delete it first)."""
