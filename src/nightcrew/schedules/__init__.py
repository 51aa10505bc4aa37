"""Durable schedules (cron, interval, one-off): for now, the pure trigger arithmetic.

The ticker service, the schedules table and the sync from code build on these; see
`nightcrew.schedules.triggers` for the rules (DST, drift, misfire, coalesce, jitter).
"""

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
