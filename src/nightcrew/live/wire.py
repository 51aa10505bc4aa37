"""Live events on the wire: `LiveEvent`, and the compact payloads processes exchange.

A payload is one JSON text: ``{"v": 1, "s": scope, "o": origin, "e": [row, ...]}`` where
each row is a list of the event's fields in `FIELDS` order. Rows carry ids, kind, status,
progress, queue, processor, pipeline and schedule, and a few short strings (the progress
message, an error's first `MAX_TEXT` characters); anything larger is read by task id.
`encode` packs rows into payloads of at most `MAX_PAYLOAD` bytes, well under PostgreSQL's
8,000-byte NOTIFY limit, by construction: a row alone is at most a few kilobytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nightcrew.events import EventKind, TaskEvent

#: The largest payload `encode` makes (bytes).
MAX_PAYLOAD = 7000
#: Longest text of a detail value on the wire (error messages are cut there).
MAX_TEXT = 300
#: Rows packed per payload before its size is checked.
ROWS_PER_PAYLOAD = 48
VERSION = 1

FIELDS = (
    "kind",
    "task_id",
    "at",
    "status",
    "queue",
    "processor",
    "attempt",
    "progress",
    "message",
    "duration",
    "pipeline_id",
    "schedule",
    "actor",
    "detail",
    "waited",
)
_KINDS = {kind.value: kind for kind in EventKind}


@dataclass(slots=True, eq=False)
class LiveEvent:
    """One task transition as a live stream hands it out.

    ``id`` is given by the process serving the stream: it increases by one per event that
    process saw (starting from its start time in microseconds, so ids keep increasing
    across its restarts), which is what ``Last-Event-ID`` resumes from. ``at`` is when the
    transition committed (UTC). ``status`` is the task's status afterwards; ``detail``
    holds a kind's few words (an error's message and type, a retry time, a rescue count).
    """

    id: int
    kind: EventKind
    task_id: int
    at: datetime
    status: str | None = None
    queue: str | None = None
    processor: str | None = None
    attempt: int | None = None
    progress: float | None = None
    message: str | None = None
    duration: float | None = None
    pipeline_id: int | None = None
    schedule: str | None = None
    actor: str | None = None
    detail: dict[str, Any] | None = None
    waited: float | None = None
    _json: str | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON-ready values (what an SSE ``data:`` line holds)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "task_id": self.task_id,
            "at": self.at.isoformat(),
            "status": self.status,
            "queue": self.queue,
            "processor": self.processor,
            "attempt": self.attempt,
            "progress": self.progress,
            "message": self.message,
            "duration": self.duration,
            "pipeline_id": self.pipeline_id,
            "schedule": self.schedule,
            "actor": self.actor,
            "detail": self.detail,
            "waited": self.waited,
        }

    def to_json(self) -> str:
        """`as_dict` as JSON text, made once however many clients receive the event."""
        if self._json is None:
            self._json = json.dumps(self.as_dict(), separators=(",", ":"))
        return self._json


def _short(detail: dict[str, Any] | None) -> dict[str, Any] | None:
    if not detail:
        return None
    out: dict[str, Any] = {}
    for key, value in detail.items():
        if isinstance(value, str):
            out[key] = value[:MAX_TEXT]
        elif value is None or isinstance(value, bool | int | float):
            out[key] = value
        else:
            out[key] = str(value)[:MAX_TEXT]
    return out


def _row(e: TaskEvent) -> list[Any]:
    status = e.status
    return [
        e.kind.value,
        e.task_id,
        round(e.at.timestamp(), 6),
        None if status is None else status.value,
        e.queue,
        e.processor,
        e.attempt,
        e.progress,
        e.message,
        None if e.duration is None else round(e.duration, 6),
        e.pipeline_id if e.pipeline_id is not None else _detail_int(e.detail, "pipeline_id"),
        e.schedule if e.schedule is not None else _detail_str(e.detail, "schedule"),
        e.actor,
        _short(e.detail),
        None if e.waited is None else round(e.waited, 6),
    ]


def _detail_int(detail: dict[str, Any] | None, key: str) -> int | None:
    value = detail.get(key) if detail else None
    return value if isinstance(value, int) else None


def _detail_str(detail: dict[str, Any] | None, key: str) -> str | None:
    value = detail.get(key) if detail else None
    return value if isinstance(value, str) else None


def encode(events: Sequence[TaskEvent], scope: str, origin: str) -> list[str]:
    """Payloads for ``events``, in order, each at most `MAX_PAYLOAD` bytes."""
    head = json.dumps({"v": VERSION, "s": scope, "o": origin}, separators=(",", ":"))[:-1]
    rows = [_row(e) for e in events]
    payloads: list[str] = []

    def pack(part: list[list[Any]]) -> None:
        text = f'{head},"e":{json.dumps(part, separators=(",", ":"))}}}'
        if len(text.encode()) <= MAX_PAYLOAD or len(part) == 1:
            payloads.append(text)
            return
        middle = len(part) // 2
        pack(part[:middle])
        pack(part[middle:])

    for start in range(0, len(rows), ROWS_PER_PAYLOAD):
        pack(rows[start : start + ROWS_PER_PAYLOAD])
    return payloads


@dataclass(frozen=True, slots=True)
class Decoded:
    """A payload's origin and rows (each row ``FIELDS`` values; no id yet)."""

    origin: str
    rows: list[list[Any]]


def decode(text: str, scope: str) -> Decoded | None:
    """The rows of a payload meant for ``scope``; None for others' and for garbage."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != VERSION or data.get("s") != scope:
            return None
        rows = data["e"]
        if not isinstance(rows, list):
            return None
        return Decoded(str(data.get("o", "")), [r for r in rows if _well_formed(r)])
    except (ValueError, KeyError, TypeError):
        return None


def _well_formed(row: Any) -> bool:
    return (
        isinstance(row, list)
        and len(row) == len(FIELDS)
        and row[0] in _KINDS
        and isinstance(row[1], int)
        and isinstance(row[2], int | float)
    )


def from_row(event_id: int, row: list[Any]) -> LiveEvent:
    """A decoded row as a `LiveEvent` with ``event_id``."""
    detail = row[13]
    return LiveEvent(
        event_id,
        _KINDS[row[0]],
        row[1],
        datetime.fromtimestamp(row[2], UTC),
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        detail if isinstance(detail, dict) else None,
        row[14],
    )


def from_event(event_id: int, e: TaskEvent) -> LiveEvent:
    """A local `TaskEvent` as a `LiveEvent` with ``event_id`` (the same fields a row has)."""
    return from_row(event_id, _row(e))


def rows_of(events: Iterable[TaskEvent]) -> list[list[Any]]:
    return [_row(e) for e in events]
