"""Durable schedules (cron, interval, one-off).

- `nightcrew.schedules.triggers`: the pure trigger arithmetic (DST, drift, misfire,
  coalesce, jitter);
- `nightcrew.schedules.declare`: `Schedule`, a schedule declared in code;
- `nightcrew.schedules.values`: the typed values the store and the CLI share;
- `nightcrew.schedules.sync`: syncing declared schedules into the table.

The ticker is a worker service (`nightcrew.worker.ticker`); every statement is in
`nightcrew.store.schedule_statements` and `nightcrew.store.schedule_ops`.
"""

from nightcrew.schedules.declare import Schedule
from nightcrew.schedules.triggers import (
    MAX_TICKS_PER_PLAN,
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    TickPlan,
    Trigger,
    apply_jitter,
    first_fire_at_or_after,
    format_duration,
    latest_fire_at_or_before,
    make_trigger,
    parse_datetime,
    parse_duration,
    plan_ticks,
)

__all__ = [
    "MAX_TICKS_PER_PLAN",
    "CronTrigger",
    "DateTrigger",
    "IntervalTrigger",
    "Schedule",
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
