"""Log output for the CLI: one line per event, with the structured fields appended.

The engine logs with ``extra={"task_id": ..., "processor": ..., "attempt": ...,
"duration": ...}``; this formatter prints those as ``key=value`` (or the whole record as
JSON), so logs can be grepped and shipped without parsing the message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from nightcrew.events import EventBus, EventKind, TaskEvent

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        parts = [f"{when}Z", record.levelname, record.name, record.getMessage()]
        parts += [f"{k}={v}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure(level: str = "INFO", *, as_json: bool = False, stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else KeyValueFormatter())
    root = logging.getLogger("nightcrew")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


_task_log = logging.getLogger("nightcrew.tasks")

#: Level of each event kind's log line; the kinds at DEBUG are only subscribed to when the
#: log is at DEBUG when the app is made, so a busy worker does not build an event per
#: completion just to drop it.
EVENT_LEVELS: dict[EventKind, int] = {
    EventKind.CREATED: logging.DEBUG,
    EventKind.STARTED: logging.DEBUG,
    EventKind.PROGRESS: logging.DEBUG,
    EventKind.COMPLETED: logging.DEBUG,
    EventKind.ACTIVATED: logging.INFO,
    EventKind.RETRIED: logging.INFO,
    EventKind.CANCELLED: logging.INFO,
    EventKind.CANCEL_REQUESTED: logging.INFO,
    EventKind.RESET: logging.INFO,
    EventKind.FAILED: logging.WARNING,
    EventKind.RESCUED: logging.WARNING,
    EventKind.FINISH_REJECTED: logging.WARNING,
}

_MESSAGES = {
    EventKind.FINISH_REJECTED: (
        "task %s: late outcome rejected, its lease was lost (rescued for another worker, "
        "or finished by an operator) while it ran"
    ),
    EventKind.RESCUED: "task %s rescued: its run was abandoned (lease expired, or left WORKING)",
    EventKind.RETRIED: "task %s retrying",
    EventKind.FAILED: "task %s error",
}


def _log_event(event: TaskEvent) -> None:
    level = EVENT_LEVELS[event.kind]
    if not _task_log.isEnabledFor(level):
        return
    fields: dict[str, Any] = {"task_id": event.task_id, "event": event.kind.value}
    for name in ("processor", "queue", "attempt", "actor"):
        value = getattr(event, name)
        if value is not None:
            fields[name] = value
    if event.status is not None:
        fields["status"] = event.status.value
    if event.duration is not None:
        fields["duration"] = round(event.duration, 6)
    if event.detail:
        fields.update(event.detail)
    message = _MESSAGES.get(event.kind, "task %s " + event.kind.value.replace("_", " "))
    _task_log.log(level, message, event.task_id, extra=fields)


def log_events(bus: EventBus) -> None:
    """Subscribe the task log to ``bus`` for the kinds its current level shows."""
    kinds = [kind for kind, level in EVENT_LEVELS.items() if _task_log.isEnabledFor(level)]
    if kinds:
        bus.subscribe(_log_event, kinds)
