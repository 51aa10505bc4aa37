"""Schedule triggers: when a durable schedule fires, as pure arithmetic on aware UTC datetimes.

The ticker (every worker runs one) claims a due schedule row, enqueues the task for the tick
that was due and advances ``next_run_at``, all in one transaction. Everything here is the
part of that which needs no database: the triggers' next tick, the misfire/coalesce decision
for a row that is late, jitter, and parsing the CLI's ``--every`` durations. Keeping it pure
(no clock, no global random state, frozen values) is what lets the tests pin down DST days,
drift and misfires exactly, and lets several workers compute the *same* tick for a row, which
the unique (schedule, tick) key on tasks relies on.

Cron arithmetic is delegated to ``cronsim`` (a maintained, dependency-free, typed library
that mimics Debian cron, including its DST rules); nothing here parses a cron field itself.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import ClassVar, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from nightcrew.errors import ConfigurationError

__all__ = [
    "MAX_TICKS_PER_PLAN",
    "CronTrigger",
    "DateTrigger",
    "IntervalTrigger",
    "TickPlan",
    "Trigger",
    "apply_jitter",
    "first_fire_at_or_after",
    "format_duration",
    "latest_fire_at_or_before",
    "make_trigger",
    "parse_datetime",
    "parse_duration",
    "plan_ticks",
]

#: At most this many ticks are listed in one `TickPlan` (enqueued, and separately skipped).
#: A schedule that was down for long with ``coalesce=False`` catches up over several ticker
#: passes instead of writing an unbounded number of tasks in one transaction.
MAX_TICKS_PER_PLAN = 100

_MIN_INTERVAL = timedelta(seconds=1)
_ONE_MICROSECOND = timedelta(microseconds=1)
_ONE_SECOND = timedelta(seconds=1)
#: How often `CronTrigger.next_fire` may step past a library answer that is not strictly
#: later than ``after`` (happens only around a DST fold); far above any real need.
_MAX_CRON_STEPS = 1000

#: The standard crontab(5) nicknames, as the five fields they stand for. ``@reboot`` has no
#: meaning for a durable schedule and is refused.
_CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_CRON_FIELDS = "minute hour day-of-month month day-of-week"


def _require_aware(value: datetime, what: str) -> datetime:
    """Return ``value`` in UTC; a naive datetime here is a caller's bug, so it is refused.

    (Only `DateTrigger` reads a naive datetime as UTC: that is user input, not arithmetic.)
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _load_zone(name: str) -> tzinfo:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"timezone must be an IANA zone name like 'Europe/Berlin', got {name!r}"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ConfigurationError(
            f"unknown timezone {name!r}: use an IANA zone name like 'Europe/Berlin' or 'UTC'"
        ) from exc


# --------------------------------------------------------------------------- the triggers


@dataclass(frozen=True)
class CronTrigger:
    """A five-field cron expression evaluated in an IANA timezone.

    Fields are ``minute hour day-of-month month day-of-week`` as in crontab(5), plus the
    nicknames ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``; cronsim also
    takes ``L``, ``LW`` and ``DOW#n``. Six-field (seconds) expressions are refused: use an
    `IntervalTrigger` below a minute.

    DST follows Debian cron, which cronsim mimics (checked by the tests), for expressions
    with a fixed minute and hour such as ``30 2 * * *``:

    - spring forward: a local time that does not exist that day fires at the first minute
      that does, the moment the clocks jump (02:30 in Europe/Berlin or America/New_York on
      the spring-forward day fires at 03:00 local) - once;
    - fall back: a local time that happens twice fires only the first time (the
      summer-time one, ``fold=0``) - once.

    Expressions whose minute or hour field starts with ``*`` (``*/15 * * * *``, ``0 * * * *``)
    run on real elapsed time instead: an hourly job runs every real hour, 23 times on the
    spring-forward day and 25 times on the fall-back day, as Debian cron does.

    One library quirk is known: in Australia/Lord_Howe (a 30-minute shift), an expression
    with a restricted hour and a ``*`` minute can skip minutes just after the spring-forward
    gap, depending on where the search starts. Ticks stay strictly increasing either way.
    """

    expression: str
    timezone: str = "UTC"
    kind: ClassVar[Literal["cron"]] = "cron"
    _fields: str = field(init=False, repr=False, compare=False)
    _zone: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str):
            raise ConfigurationError(
                f"cron expression must be a string, got {type(self.expression).__name__}"
            )
        normalized = " ".join(self.expression.split())
        fields = _CRON_ALIASES.get(normalized.lower(), normalized)
        if fields.startswith("@"):
            raise ConfigurationError(
                f"invalid cron expression {normalized!r}: unknown nickname "
                f"(known: {', '.join(sorted(_CRON_ALIASES))})"
            )
        count = len(fields.split())
        if count != 5:
            hint = "; use an interval below one minute" if count == 6 else ""
            raise ConfigurationError(
                f"invalid cron expression {normalized!r}: expected 5 fields "
                f"({_CRON_FIELDS}), got {count}{hint}"
            )
        try:
            CronSim(fields, datetime(2000, 1, 1, tzinfo=UTC))
        except Exception as exc:  # cronsim raises CronSimError; anything else is bad input too
            reason = str(exc).lower() if isinstance(exc, CronSimError) else "unreadable"
            raise ConfigurationError(
                f"invalid cron expression {normalized!r}: {reason} "
                f"(the 5 fields are {_CRON_FIELDS})"
            ) from exc
        object.__setattr__(self, "expression", normalized)
        object.__setattr__(self, "_fields", fields)
        object.__setattr__(self, "_zone", _load_zone(self.timezone))

    def next_fire(self, after: datetime) -> datetime | None:
        """The first tick strictly after ``after`` (aware, any zone), in UTC.

        None when the expression has no tick in the next 50 years (cronsim's search bound;
        e.g. ``0 0 29 2 *`` always has one within 8 years).
        """
        after_utc = _require_aware(after, "after")
        for candidate in self._iterate(after_utc):
            if candidate > after_utc:
                return candidate
        return None

    def _iterate(self, start: datetime) -> Iterator[datetime]:
        """cronsim's ticks from ``start`` on, in UTC, bounded.

        Around a fall-back fold cronsim works on local wall time, so for a start inside the
        repeated hour its first answer can be the *earlier* pass of a wall time; the caller
        steps past such answers, which keeps ``next_fire`` strictly after its argument.
        """
        local = start.astimezone(self._zone)
        try:
            sim = CronSim(self._fields, local)
            for _ in range(_MAX_CRON_STEPS):
                yield next(sim).astimezone(UTC)
        except (StopIteration, OverflowError):
            return
        raise RuntimeError(
            f"cron {self.expression!r} ({self.timezone}): no tick after {start.isoformat()} "
            f"within {_MAX_CRON_STEPS} library steps"
        )

    def describe(self) -> str:
        """One line for ``schedules ls``: ``cron 0 2 * * * (Europe/Berlin)``."""
        return f"cron {self.expression} ({self.timezone})"


@dataclass(frozen=True)
class IntervalTrigger:
    """Every ``every`` (at least one second), counted from an anchor so ticks never drift.

    Ticks are ``anchor + k * every`` for whole ``k >= 0``: a ticker that wakes late computes
    the next tick from the anchor (the schedule's previous tick), never from the clock, so a
    6-hour schedule stays on its grid however late its passes are. Pure elapsed time: an
    interval does not move with DST.
    """

    every: timedelta
    kind: ClassVar[Literal["interval"]] = "interval"

    def __post_init__(self) -> None:
        if not isinstance(self.every, timedelta):
            raise ConfigurationError(
                f"interval must be a timedelta, got {type(self.every).__name__} "
                "(parse_duration('6h') builds one from text)"
            )
        if self.every < _MIN_INTERVAL:
            raise ConfigurationError(
                f"interval must be at least 1s, got {format_duration(self.every)}"
            )
        if self.every > MAX_SPAN:
            raise ConfigurationError("an interval is at most 100 years")

    @property
    def seconds(self) -> float:
        """The interval in seconds, as the schedules table stores it."""
        return self.every.total_seconds()

    def next_fire(self, after: datetime, *, anchor: datetime | None = None) -> datetime:
        """The first tick ``anchor + k * every`` strictly after ``after``, in UTC.

        Without an anchor, ``after`` itself is the anchor (the first tick is one interval
        after it). With an anchor later than ``after``, the anchor is that first tick.
        Exact integer arithmetic on microseconds: no float, no accumulated error.
        """
        after_utc = _require_aware(after, "after")
        base = after_utc if anchor is None else _require_aware(anchor, "anchor")
        if base > after_utc:
            return base
        steps = (after_utc - base) // self.every + 1
        return base + steps * self.every

    def describe(self) -> str:
        """One line for ``schedules ls``: ``every 6h``."""
        return f"every {format_duration(self.every)}"


#: The longest interval, grace or jitter a schedule may have: beyond, date arithmetic
#: overflows (and no such schedule is meant).
MAX_SPAN = timedelta(days=36525)
#: One-off dates a schedule may name: a year of slack on both sides of datetime's range.
_EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
_LATEST = datetime(9998, 12, 31, tzinfo=UTC)


@dataclass(frozen=True)
class DateTrigger:
    """Once, at ``at``. A naive datetime means UTC; an aware one is converted to UTC."""

    at: datetime
    kind: ClassVar[Literal["date"]] = "date"

    def __post_init__(self) -> None:
        if not isinstance(self.at, datetime):
            raise ConfigurationError(
                f"one-off date must be a datetime, got {type(self.at).__name__}"
            )
        at = self.at
        at = at.replace(tzinfo=UTC) if at.tzinfo is None or at.utcoffset() is None else at
        try:
            at = at.astimezone(UTC)
        except OverflowError:
            raise ConfigurationError(
                f"one-off date {self.at.isoformat()} is out of range"
            ) from None
        if not _EARLIEST <= at <= _LATEST:
            raise ConfigurationError(f"one-off date {self.at.isoformat()} is out of range")
        object.__setattr__(self, "at", at)

    def next_fire(self, after: datetime) -> datetime | None:
        """``at`` if it is strictly after ``after``, else None (the schedule has run)."""
        return self.at if self.at > _require_aware(after, "after") else None

    def describe(self) -> str:
        """One line for ``schedules ls``: ``once at 2030-01-01 00:00Z``."""
        at = self.at
        if at.microsecond:
            text = at.strftime("%Y-%m-%d %H:%M:%S.%f")
        elif at.second:
            text = at.strftime("%Y-%m-%d %H:%M:%S")
        else:
            text = at.strftime("%Y-%m-%d %H:%M")
        return f"once at {text}Z"


Trigger: TypeAlias = CronTrigger | IntervalTrigger | DateTrigger


def make_trigger(
    *,
    cron: str | None = None,
    timezone: str | None = None,
    every: timedelta | str | float | None = None,
    at: datetime | str | None = None,
) -> Trigger:
    """The one trigger that ``Schedule(...)`` keywords or CLI options describe.

    Exactly one of ``cron``, ``every`` or ``at``; ``timezone`` only with ``cron`` (default
    UTC). ``every`` may be a timedelta, seconds, or a duration like ``"6h"``; ``at`` a
    datetime or ISO 8601 text (naive means UTC).
    """
    given = [
        name for name, value in (("cron", cron), ("every", every), ("at", at)) if value is not None
    ]
    if len(given) != 1:
        got = ", ".join(given) if given else "none"
        raise ConfigurationError(f"give exactly one of cron, every or at (got {got})")
    if timezone is not None and cron is None:
        raise ConfigurationError("timezone applies to a cron trigger only")
    if cron is not None:
        return CronTrigger(cron, "UTC" if timezone is None else timezone)
    if every is not None:
        if isinstance(every, str):
            return IntervalTrigger(parse_duration(every))
        if isinstance(every, bool) or not isinstance(every, int | float | timedelta):
            raise ConfigurationError(
                f"every must be a timedelta, seconds or a duration like '6h', got {every!r}"
            )
        if isinstance(every, timedelta):
            return IntervalTrigger(every)
        try:
            return IntervalTrigger(timedelta(seconds=every))
        except (OverflowError, ValueError) as exc:
            raise ConfigurationError(f"interval of {every!r} seconds is out of range") from exc
    assert at is not None
    return DateTrigger(parse_datetime(at) if isinstance(at, str) else at)


# --------------------------------------------------------------------------- text forms

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_DURATION_HELP = "use seconds or d/h/m/s units in that order, e.g. 90, 30s, 15m, 6h, 2d, 1h30m"


def parse_duration(text: str) -> timedelta:
    """``"30s"``, ``"15m"``, ``"6h"``, ``"2d"``, ``"1h30m"`` or bare seconds ``"90"``.

    For the CLI's ``--every`` and ``--misfire-grace``: whole units, largest first, each at
    most once; the result must be positive. Anything else is a `ConfigurationError`.
    """
    if not isinstance(text, str):
        raise ConfigurationError(f"duration must be text like '6h', got {type(text).__name__}")
    value = text.strip()
    if value.startswith("-"):
        raise ConfigurationError(f"duration {text!r} is negative; it must be positive")
    try:
        if value.isdigit() and value.isascii():
            result = timedelta(seconds=int(value))
        else:
            match = _DURATION.fullmatch(value)
            if not value or match is None:
                raise ConfigurationError(f"invalid duration {text!r}: {_DURATION_HELP}")
            days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
            result = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError as exc:
        raise ConfigurationError(f"duration {text!r} is too large") from exc
    if result <= timedelta(0):
        raise ConfigurationError(f"duration {text!r} is zero; it must be positive")
    return result


def format_duration(value: timedelta) -> str:
    """The compact form `parse_duration` reads back: ``6h``, ``1h30m``, ``2d``.

    A fractional second (only a timedelta can hold one) is written as ``1.5s``.
    """
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign, micros = ("-", -micros) if micros < 0 else ("", micros)
    total, fraction = divmod(micros, 1_000_000)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    if fraction:
        parts.append(f"{seconds}.{fraction:06d}".rstrip("0") + "s")
    elif seconds or not parts:
        parts.append(f"{seconds}s")
    return sign + "".join(parts)


def parse_datetime(text: str) -> datetime:
    """ISO 8601 text for ``--at``, in UTC: ``2030-01-01T00:00Z``, ``2030-01-01 02:00+01:00``.

    Naive text means UTC, as for `DateTrigger`.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigurationError(
            f"invalid date {text!r}: use ISO 8601 like 2030-01-01T02:00Z or 2030-01-01 02:00+01:00"
        ) from exc
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ConfigurationError(f"date {text!r} is out of range") from None


# --------------------------------------------------------------------------- the ticker's plan


def _successor(trigger: Trigger, tick: datetime, anchor: datetime) -> datetime | None:
    if isinstance(trigger, IntervalTrigger):
        return trigger.next_fire(tick, anchor=anchor)
    return trigger.next_fire(tick)


def first_fire_at_or_after(
    trigger: Trigger, moment: datetime, *, anchor: datetime | None = None
) -> datetime | None:
    """The first tick at or after ``moment`` (``anchor`` places an interval's grid)."""
    moment = _require_aware(moment, "moment")
    return _successor(trigger, moment - _ONE_MICROSECOND, moment if anchor is None else anchor)


def latest_fire_at_or_before(
    trigger: Trigger, moment: datetime, *, since: datetime
) -> datetime | None:
    """The latest tick in ``[since, moment]``, where ``since`` is itself a tick (or None if none).

    This is the tick a coalescing schedule enqueues. Intervals and dates are arithmetic;
    cron walks forward a few ticks and, for a long gap, bisects on ``next_fire`` (which is
    non-decreasing in its argument), so a schedule that was down for a year costs about 40
    library calls, not one per missed tick.
    """
    moment = _require_aware(moment, "moment")
    since = _require_aware(since, "since")
    if since > moment:
        return None
    if isinstance(trigger, IntervalTrigger):
        return since + ((moment - since) // trigger.every) * trigger.every
    if isinstance(trigger, DateTrigger):
        return since
    latest = since
    for _ in range(8):
        following = trigger.next_fire(latest)
        if following is None or following > moment:
            return latest
        latest = following
    # Bisect for the point after which no tick is left before `moment`: `low` only moves to a
    # point with a tick in (low, moment], and there is none in (high, moment]. Cron ticks are
    # whole seconds at least a minute apart, so once they are a second apart the first tick
    # after `low` is the latest one (and if `low` never moved, `latest` may already be it).
    low, high = latest, moment
    while high - low > _ONE_SECOND:
        middle = low + (high - low) / 2
        following = trigger.next_fire(middle)
        if following is not None and following <= moment:
            low = middle
        else:
            high = middle
    found = trigger.next_fire(low)
    if found is None or found > moment:
        return latest
    while (following := trigger.next_fire(found)) is not None and following <= moment:
        found = following
    return found


@dataclass(frozen=True)
class TickPlan:
    """What a ticker pass does with one due schedule: tasks to enqueue and the new ``next_run_at``.

    ``enqueue`` lists the ticks to create tasks for now, oldest first (each becomes the task's
    ``scheduled_for`` and the unique (schedule, tick) key). ``skipped`` lists the misfired
    ticks (older than the grace time), oldest first and at most `MAX_TICKS_PER_PLAN` of them;
    ``skipped_truncated`` says there were more. ``next_run_at`` is the schedule's new
    ``next_run_at``; None means it will never fire again (a one-off that ran). When it is
    still ``<= now`` (a no-coalesce catch-up longer than the bound), the ticker simply runs
    the schedule again on its next pass.
    """

    enqueue: tuple[datetime, ...]
    skipped: tuple[datetime, ...]
    next_run_at: datetime | None
    skipped_truncated: bool = False


def plan_ticks(
    trigger: Trigger,
    next_run_at: datetime,
    now: datetime,
    *,
    misfire_grace_time: float | None,
    coalesce: bool = True,
    max_ticks: int = MAX_TICKS_PER_PLAN,
) -> TickPlan:
    """Decide what a due schedule enqueues now, given the tick that was due and the clock.

    - A tick older than ``misfire_grace_time`` seconds at ``now`` is *misfired*: it gets no
      task and is reported in ``skipped`` (None = unlimited grace: nothing misfires). A tick
      exactly ``grace`` old is still on time.
    - ``coalesce=True`` (the default): all due ticks within the grace fold into one task, for
      the latest of them; ``next_run_at`` becomes the first tick after ``now``.
    - ``coalesce=False``: each due tick within the grace gets its own task, oldest first, at
      most ``max_ticks`` (default 100) per call; beyond that ``next_run_at`` is the first tick
      not yet enqueued (still due), so the next pass goes on from there.

    ``next_run_at`` is taken to be a tick of ``trigger``; for an interval it also anchors the
    grid, so later ticks stay ``next_run_at + k * every``. A schedule not yet due (``now <
    next_run_at``) gets an empty plan that keeps its ``next_run_at``.
    """
    due = _require_aware(next_run_at, "next_run_at")
    now = _require_aware(now, "now")
    if isinstance(max_ticks, bool) or not isinstance(max_ticks, int) or max_ticks < 1:
        raise ConfigurationError(f"max_ticks must be a positive integer, got {max_ticks!r}")
    if misfire_grace_time is not None and not misfire_grace_time >= 0:
        raise ConfigurationError(
            f"misfire_grace_time must be >= 0 seconds or None, got {misfire_grace_time!r}"
        )
    if due > now:
        return TickPlan((), (), due)

    skipped: list[datetime] = []
    truncated = False
    first_on_time: datetime | None = due
    if misfire_grace_time is not None:
        cutoff = now - timedelta(seconds=misfire_grace_time)
        if due < cutoff:
            tick: datetime | None = due
            while tick is not None and tick < cutoff:
                if len(skipped) == max_ticks:
                    truncated = True
                    break
                skipped.append(tick)
                tick = _successor(trigger, tick, due)
            first_on_time = first_fire_at_or_after(trigger, cutoff, anchor=due)

    if first_on_time is None or first_on_time > now:
        return TickPlan((), tuple(skipped), first_on_time, truncated)
    if coalesce:
        latest = latest_fire_at_or_before(trigger, now, since=first_on_time)
        assert latest is not None
        return TickPlan((latest,), tuple(skipped), _successor(trigger, latest, due), truncated)
    ticks: list[datetime] = []
    tick = first_on_time
    while tick is not None and tick <= now and len(ticks) < max_ticks:
        ticks.append(tick)
        tick = _successor(trigger, tick, due)
    return TickPlan(tuple(ticks), tuple(skipped), tick, truncated)


def apply_jitter(tick: datetime, jitter: float | None, rng: random.Random) -> datetime:
    """``tick`` plus a random 0..``jitter`` seconds, drawn from the given ``rng``.

    Jitter spreads the *start* of the tasks of many schedules due at the same moment; the
    tick itself (``scheduled_for`` and the unique key) stays the unjittered one, so every
    worker still agrees on which tick a task stands for. The generator is passed in, never
    the module-level one, so tests are deterministic.
    """
    if jitter is None or jitter == 0:
        return tick
    if not jitter > 0:
        raise ConfigurationError(f"jitter must be >= 0 seconds, got {jitter!r}")
    return tick + timedelta(seconds=rng.uniform(0, jitter))
