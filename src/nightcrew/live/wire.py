"""Live events on the wire: `LiveEvent`, and the compact payloads processes exchange.

A payload is one JSON text: ``{"v": 3, "s": scope, "o": origin, "g": [group, ...]}`` (see
`encode_emissions` for a group). Events carry ids, kind, status, progress, queue, processor,
pipeline and schedule, and a few short strings (the progress message, an error's first
`MAX_TEXT` characters); anything larger is read by task id. Payloads are at most
`MAX_PAYLOAD` bytes, well under PostgreSQL's 8,000-byte NOTIFY limit, by construction: one
event alone is at most a few kilobytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import operator
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, repeat
from typing import Any

from nightcrew.events import EventBatch, EventKind, TaskEvent

#: The largest payload `encode` makes (bytes).
MAX_PAYLOAD = 7000
#: Longest text of a detail value on the wire (error messages are cut there).
MAX_TEXT = 300
#: Room for groups in a payload (the rest is the header and brackets).
GROUP_BUDGET = MAX_PAYLOAD - 400
VERSION = 4
#: Versions `decode` reads (2: every column a JSON list; 4: runs of ids, ``r<first>:<count>``).
_READ = frozenset({2, 3, 4})

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


def _row(e: TaskEvent, at: float) -> list[Any]:
    # Hot: a drain encodes two events per task. The enums are str subclasses, which JSON
    # writes as their values; ``at`` is the emission's, converted once per batch.
    detail = e.detail
    pipeline_id, schedule = e.pipeline_id, e.schedule
    if detail:
        if pipeline_id is None:
            pipeline_id = _detail_int(detail, "pipeline_id")
        if schedule is None:
            schedule = _detail_str(detail, "schedule")
        detail = _short(detail)
    return [
        e.kind,
        e.task_id,
        at,
        e.status,
        e.queue,
        e.processor,
        e.attempt,
        e.progress,
        e.message,
        e.duration,
        pipeline_id,
        schedule,
        e.actor,
        detail or None,
        e.waited,
    ]


def _detail_int(detail: dict[str, Any] | None, key: str) -> int | None:
    value = detail.get(key) if detail else None
    return value if isinstance(value, int) else None


def _detail_str(detail: dict[str, Any] | None, key: str) -> str | None:
    value = detail.get(key) if detail else None
    return value if isinstance(value, str) else None


#: A `TaskEvent`'s fields by position (it is a named tuple, so a group's events transpose
#: into one tuple per field in C: ``zip(*events)``).
_KIND, _ID, _AT, _STATUS, _QUEUE, _PROCESSOR, _ATTEMPT, _PROGRESS = range(8)
_MESSAGE, _DURATION, _ACTOR, _DETAIL, _PIPELINE, _SCHEDULE, _WAITED = range(8, 15)
#: What a group's events share (the detail-derived pipeline and schedule aside).
_SHARED = operator.itemgetter(_KIND, _AT, _STATUS, _QUEUE, _PROCESSOR, _ACTOR, _PIPELINE, _SCHEDULE)


#: JSON without spaces (one encoder, not one made per call as ``json.dumps`` does).
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _column(values: Sequence[Any]) -> list[Any] | None:
    """A per-event column, or None when every value is None (most columns of a drain)."""
    return None if values.count(None) == len(values) else list(values)


def _micros(values: Sequence[float | None]) -> list[int | None] | None:
    """Seconds as whole microseconds: an integer is written in a tenth of a float's time."""
    nones = values.count(None)
    if nones == len(values):
        return None
    if not nones:  # a batch's durations or waits
        return [int(v * 1_000_000) for v in values]  # type: ignore[operator]
    return [None if v is None else int(v * 1_000_000) for v in values]


def _columns(fields: list[tuple[Any, ...]]) -> list[list[Any] | None]:
    """A group's per-event columns, from its events transposed (``fields``)."""
    details = fields[_DETAIL]
    return [
        list(fields[_ID]),
        _column(fields[_ATTEMPT]),
        _column(fields[_PROGRESS]),
        _column(fields[_MESSAGE]),
        _micros(fields[_DURATION]),
        _column([_short(d) if d else None for d in details]) if any(details) else None,
        _micros(fields[_WAITED]),
    ]


#: A group of more events than this is cut to size before it is written (see `_fitted`).
LARGE_GROUP = 64


def _fitted(shared: list[Any], columns: list[list[Any] | None]) -> list[str]:
    """A group's JSON, in as many parts as it takes for each to fit in a payload.

    A large group with no texts (a claim's, a batch of completions': ids, attempts,
    durations, waits) is cut in parts by an estimate of its size (its last event's values
    as wide as any) before it is written, so that it is written once, not once whole and
    again in parts."""
    ids = columns[0] or []
    n = len(ids)
    if isinstance(ids, str):  # packed: sized to fit when made
        return [_dumps(shared + columns)]
    if n > LARGE_GROUP and columns[3] is None and columns[5] is None:
        width = sum(len(repr(c[-1])) + 1 for c in columns if c is not None)
        count = -(-(n * width + 200) // (GROUP_BUDGET * 9 // 10))
        if count > 1:
            step = -(-n // count)
            out: list[str] = []
            for at in range(0, n, step):
                out += _fitted(shared, [None if c is None else c[at : at + step] for c in columns])
            return out
    text = _dumps(shared + columns)
    if len(text) <= GROUP_BUDGET:
        return [text]
    return _split(shared, columns, len(text))


def _split(shared: list[Any], columns: list[list[Any] | None], size: int) -> list[str]:
    """``columns`` (whose JSON is ``size`` long, too long for a payload) in parts."""
    ids = columns[0] or []
    if len(ids) == 1:  # long texts escaped (non-ASCII): cut them rather than lose it
        messages = columns[3]
        columns[3] = None if messages is None or messages[0] is None else [messages[0][:100]]
        columns[5] = None
        return [_dumps(shared + columns)]
    # As many parts as the text is long (a drain's group of 500 is two), each halved again
    # should it still not fit.
    count = min(len(ids), -(-size // (GROUP_BUDGET * 9 // 10)))
    step = -(-len(ids) // count)
    out: list[str] = []
    for at in range(0, len(ids), step):
        part = [None if c is None else c[at : at + step] for c in columns]
        out += _fitted(shared, part)
    return out


def _group_key(e: TaskEvent) -> tuple[Any, ...]:
    """What ``e`` shares with the rest of its group; an event with a detail may name its
    pipeline or schedule there."""
    detail = e.detail
    if not detail or (e.pipeline_id is not None and e.schedule is not None):
        key: tuple[Any, ...] = _SHARED(e)
        return key
    pipeline_id = e.pipeline_id if e.pipeline_id is not None else _detail_int(detail, "pipeline_id")
    schedule = e.schedule if e.schedule is not None else _detail_str(detail, "schedule")
    return (e.kind, e.at, e.status, e.queue, e.processor, e.actor, pipeline_id, schedule)


def encode(events: Sequence[TaskEvent], scope: str, origin: str) -> list[str]:
    """Payloads for ``events`` (one emission, or several one after the other), each at
    most `MAX_PAYLOAD` bytes; see `encode_emissions`."""
    return encode_emissions([events], scope, origin)


#: A group on the wire: its shared values, then its per-event columns.
Group = tuple[list[Any], list[list[Any] | None]]


def encode_emissions(
    emissions: Iterable[Sequence[TaskEvent]], scope: str, origin: str
) -> list[str]:
    """Payloads for the events of ``emissions``, in order, each at most `MAX_PAYLOAD` bytes.

    Events sharing kind, time, status, queue, processor, actor, pipeline and schedule (a
    batch of finishes, a claim) are one *group*: those values once, then a column per
    per-event field (task ids, attempts, ...; a column with no value is ``null``; durations
    and waits in whole microseconds). A drain's events cost a few list items each, not an
    object each. Order is kept per task: one emission holds at most one event per task, and
    an emission's groups follow their first event.

    Hot: a drain encodes two events per task. A store's `EventBatch` is encoded from its
    columns, and when it carries no text (a claim, a batch of completions) its numbers are
    packed (`_pack`: base64 of machine values, a string per column; an attempt the whole
    group shares is one number), which costs no Python step per event: encoding a drain's
    batches took 0.25 µs an event as JSON lists, against 0.02 packed (`bench/event_costs.py`).
    Another emission whose events share one group is transposed whole, with no loop over its
    events in Python but the durations' conversion.
    """
    groups: list[Group] = []
    for events in emissions:
        if not events:
            continue
        if isinstance(events, EventBatch):
            groups += _batch_groups(events)
        else:
            groups += _event_groups(events)
    if not groups:
        return []
    head = json.dumps({"v": VERSION, "s": scope, "o": origin}, separators=(",", ":"))[:-1]
    head += ',"g":['
    payloads: list[str] = []
    parts: list[str] = []
    size = len(head)
    for shared, columns in groups:
        for text in _fitted(shared, columns):
            if parts and size + len(text) + 3 > GROUP_BUDGET:
                payloads.append(head + ",".join(parts) + "]}")
                parts, size = [], len(head)
            parts.append(text)
            size += len(text) + 1
    if parts:
        payloads.append(head + ",".join(parts) + "]}")
    return payloads


def _pack(code: str, values: Sequence[Any]) -> str:
    """Numbers as machine values, little-endian, in base64, behind their type code (``i``
    32-bit, ``q`` 64-bit integers, ``d`` doubles, NaN for None): made and read in C."""
    try:
        packed = array(code, values)
    except TypeError:  # a None among doubles
        packed = array(code, [math.nan if v is None else v for v in values])
    if sys.byteorder != "little":
        packed.byteswap()
    return code + binascii.b2a_base64(packed.tobytes(), newline=False).decode("ascii")


def _unpack(text: str) -> list[Any]:
    code = text[:1]
    if code == "r":  # a run of integers: ``r<first>:<count>``
        first, count = map(int, text[1:].split(":"))
        if not 0 < count <= MAX_RUN:
            raise ValueError(f"not a run: {text[:20]!r}")
        return list(range(first, first + count))
    if code not in _PACKED:
        raise ValueError(f"not a packed column: {text[:10]!r}")
    values = array(code)
    values.frombytes(base64.b64decode(text[1:], validate=True))
    if sys.byteorder != "little":
        values.byteswap()
    out: list[Any] = values.tolist()
    if code == "d":
        out = [None if v != v else v for v in out]  # NaN: None
    return out


#: Packed columns' type codes and bytes a value.
_PACKED = {"i": 4, "q": 8, "d": 8}
_INT32 = 2**31
#: The most events a group whose ids are a run holds (a garbage count is refused).
MAX_RUN = 10_000


def _packed_groups(batch: EventBatch, shared: list[Any], members: list[int] | None) -> list[Group]:
    """A group of a batch with no texts (a claim's, a batch of completions'): its ids,
    attempts, durations and waits packed (`_pack`), in parts that fit by construction. Ids
    that are a run (tasks enqueued together, claimed and finished in order: every group of
    a 20,000-task drain) are its first and its count, which made a drain's payloads a
    third smaller."""

    def pick(column: Sequence[Any] | None) -> Any:
        if column is None or members is None:
            return column
        return [column[i] for i in members]

    ids, attempts = pick(batch.task_ids), pick(batch.attempts)
    durations, waited = pick(batch.durations), pick(batch.waited)
    first, n = ids[0], len(ids)
    # A run of ids (a drain's claims and finishes of tasks enqueued together): two numbers.
    ranged = ids[-1] - first == n - 1 and list(ids) == list(range(first, first + n))
    id_code = "i" if ids[-1] < _INT32 and max(ids) < _INT32 and min(ids) >= 0 else "q"
    one_attempt = attempts.count(attempts[0]) == len(attempts)
    width = (0 if ranged else _PACKED[id_code]) + (0 if one_attempt else 4)
    width += sum(8 for c in (durations, waited) if c is not None)
    step = max(1, (GROUP_BUDGET - 400) * 3 // 4 // width) if width else MAX_RUN
    out: list[Group] = []
    for at in range(0, n, step):
        part = slice(at, at + step)
        columns: list[Any] = [
            f"r{first + at}:{min(step, n - at)}" if ranged else _pack(id_code, ids[part]),
            attempts[0] if one_attempt else _pack("i", attempts[part]),
            None,
            None,
            None if durations is None else _pack("d", durations[part]),
            None,
            None if waited is None else _pack("d", waited[part]),
        ]
        out.append((shared, columns))
    return out


def _batch_groups(batch: EventBatch) -> list[Group]:
    """An `EventBatch`'s groups, straight from its columns (one for a drain's batch)."""
    stamp = batch.at.timestamp()
    out: list[Group] = []
    packable = batch.progress is None and batch.details is None
    for (queue, processor, pipeline_id, schedule), members in batch.groups():
        if packable:
            shared = [batch.kind, stamp, batch.status, queue, processor, None, pipeline_id]
            out += _packed_groups(batch, [*shared, schedule], members)
            continue

        def pick(column: Sequence[Any] | None, members: list[int] | None = members) -> Any:
            if column is None or members is None:
                return column
            return [column[i] for i in members]

        details = pick(batch.details)
        shared = [batch.kind, stamp, batch.status, queue, processor, None, pipeline_id, schedule]
        columns = [
            list(pick(batch.task_ids)),
            list(pick(batch.attempts)),
            _column(pick(batch.progress)) if batch.progress is not None else None,
            None,
            _micros(pick(batch.durations)) if batch.durations is not None else None,
            _column([_short(d) if d else None for d in details]) if details else None,
            _micros(pick(batch.waited)) if batch.waited is not None else None,
        ]
        out.append((shared, columns))
    return out


def _event_groups(events: Sequence[TaskEvent]) -> list[Group]:
    """The groups of a sequence of events (a buffer of several emissions is cut where
    their shared ``at`` object changes; each uniform one is a group whole)."""
    fields = list(zip(*events, strict=True))
    ats = fields[_AT]
    cuts = [i for i in range(1, len(ats)) if ats[i] is not ats[i - 1]]
    by_key: dict[tuple[Any, ...], list[list[tuple[Any, ...]]]] = {}
    for lo, hi in zip([0, *cuts], [*cuts, len(ats)], strict=True):
        run = [f[lo:hi] for f in fields] if cuts else fields
        if not any(run[_DETAIL]) and all(c.count(c[0]) == len(c) for c in _SHARED(run)):
            by_key.setdefault(_SHARED(events[lo]), []).append(run)
            continue
        members: dict[tuple[Any, ...], list[TaskEvent]] = {}
        for key, e in zip(map(_group_key, events[lo:hi]), events[lo:hi], strict=True):
            found = members.get(key)
            if found is None:
                members[key] = [e]
            else:
                found.append(e)
        for key, group in members.items():
            by_key.setdefault(key, []).append(list(zip(*group, strict=True)))
    stamps: dict[int, float] = {}
    out: list[Group] = []
    for (kind, at, status, queue, processor, actor, pipeline_id, schedule), runs in by_key.items():
        joined = runs[0] if len(runs) == 1 else [tuple(chain(*c)) for c in zip(*runs, strict=True)]
        stamp = stamps.get(id(at))
        if stamp is None:
            stamp = stamps[id(at)] = at.timestamp()
        shared = [kind, stamp, status, queue, processor, actor, pipeline_id, schedule]
        out.append((shared, _columns(joined)))
    return out


@dataclass(frozen=True, slots=True)
class Columns:
    """One group of a payload as it arrived: what its events share, and one list per field
    that varies (each as long as ``task_ids``). A hub numbers a group's events and builds
    them in one call (`events`), without a row per event on the way."""

    kind: EventKind
    at: float
    status: str | None
    queue: str | None
    processor: str | None
    actor: str | None
    pipeline_id: int | None
    schedule: str | None
    task_ids: list[int]
    attempts: list[Any]
    progress: list[Any]
    messages: list[Any]
    durations: list[Any]
    details: list[Any]
    waits: list[Any]

    def events(self, first_id: int) -> list[LiveEvent]:
        """The group's events, numbered from ``first_id`` (the loop runs in C, but for
        each event's own construction)."""
        n = len(self.task_ids)
        at = datetime.fromtimestamp(self.at, UTC)
        return list(
            map(
                LiveEvent,
                range(first_id, first_id + n),
                repeat(self.kind, n),
                self.task_ids,
                repeat(at, n),
                repeat(self.status, n),
                repeat(self.queue, n),
                repeat(self.processor, n),
                self.attempts,
                self.progress,
                self.messages,
                self.durations,
                repeat(self.pipeline_id, n),
                repeat(self.schedule, n),
                repeat(self.actor, n),
                self.details,
                self.waits,
            )
        )

    def event(self, index: int, event_id: int) -> LiveEvent:
        """The group's ``index``-th event alone, numbered ``event_id`` (a stream that
        follows one task takes one event of a group: the others are not built)."""
        return LiveEvent(
            event_id,
            self.kind,
            self.task_ids[index],
            datetime.fromtimestamp(self.at, UTC),
            self.status,
            self.queue,
            self.processor,
            self.attempts[index],
            self.progress[index],
            self.messages[index],
            self.durations[index],
            self.pipeline_id,
            self.schedule,
            self.actor,
            self.details[index],
            self.waits[index],
        )

    def rows(self) -> list[list[Any]]:
        """The group as rows of `FIELDS` values (the kind as its text)."""
        kind, at, status, queue, processor = (
            self.kind.value,
            self.at,
            self.status,
            self.queue,
            self.processor,
        )
        pipeline_id, schedule, actor = self.pipeline_id, self.schedule, self.actor
        return [
            [
                kind,
                task_id,
                at,
                status,
                queue,
                processor,
                attempt,
                progress,
                message,
                duration,
                pipeline_id,
                schedule,
                actor,
                detail,
                waited,
            ]
            for task_id, attempt, progress, message, duration, detail, waited in zip(
                self.task_ids,
                self.attempts,
                self.progress,
                self.messages,
                self.durations,
                self.details,
                self.waits,
                strict=True,
            )
        ]


@dataclass(frozen=True, slots=True)
class Decoded:
    """A payload's origin and groups of events (no ids yet)."""

    origin: str
    groups: list[Columns]

    @property
    def rows(self) -> list[list[Any]]:
        """Every event as a row of `FIELDS` values, in order."""
        return [row for group in self.groups for row in group.rows()]


def decode(text: str, scope: str) -> Decoded | None:
    """The events of a payload meant for ``scope``; None for others' and for garbage."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") not in _READ or data.get("s") != scope:
            return None
        groups = [g for g in map(_expand, data["g"]) if g is not None]
        return Decoded(str(data.get("o", "")), groups)
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def _expand(group: list[Any]) -> Columns | None:
    kind, at, status, queue, processor, actor, pipeline_id, schedule = group[:8]
    ids, attempts, progress, messages, durations, details, waits = group[8:15]
    if isinstance(ids, str):
        ids = _unpack(ids)
    if kind not in _KINDS or not isinstance(at, int | float) or not isinstance(ids, list):
        return None
    n = len(ids)
    none = [None] * n

    def col(values: Any) -> list[Any]:
        if isinstance(values, str):
            values = _unpack(values)
        elif isinstance(values, int) and not isinstance(values, bool):
            return [values] * n  # one value for every event
        return values if isinstance(values, list) and len(values) == n else none

    def seconds(values: Any) -> list[Any]:
        if isinstance(values, str):
            return col(values)  # packed: seconds already
        return [None if v is None else v / 1_000_000 for v in col(values)]

    columns = [
        ids,
        col(attempts),
        col(progress),
        col(messages),
        seconds(durations),
        col(details),
        seconds(waits),
    ]
    if columns[5] is not none:
        columns[5] = [d if isinstance(d, dict) else None for d in columns[5]]
    if not all(type(task_id) is int for task_id in ids):  # garbage: its events are left out
        keep = [i for i, task_id in enumerate(ids) if type(task_id) is int]
        columns = [[c[i] for i in keep] for c in columns]
    return Columns(
        _KINDS[kind], at, status, queue, processor, actor, pipeline_id, schedule, *columns
    )


def from_row(event_id: int, row: list[Any], at: datetime | None = None) -> LiveEvent:
    """A row (`rows_of`) as a `LiveEvent` with ``event_id`` (``at``: its time, if the
    caller already made it from ``row[2]``)."""
    detail = row[13]
    return LiveEvent(
        event_id,
        _KINDS[row[0]],
        row[1],
        at if at is not None else datetime.fromtimestamp(row[2], UTC),
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


def rows_of(events: Iterable[TaskEvent]) -> list[list[Any]]:
    """Rows of events (one emission's share a time: converted once)."""
    rows: list[list[Any]] = []
    last_at: datetime | None = None
    stamp = 0.0
    for e in events:
        if e.at is not last_at:
            last_at, stamp = e.at, e.at.timestamp()
        rows.append(_row(e, stamp))
    return rows
