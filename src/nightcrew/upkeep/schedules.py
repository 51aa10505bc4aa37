"""The upkeep's default schedules, from settings, under the reserved names ``nightcrew.*``.

They are synced like code schedules (every worker start, ``nightcrew schedules sync``), so
a change of a setting changes the row, and turning one off (its cron ``off``, or every
retention 0) disables it. An operator may pause them like any schedule.
"""

from __future__ import annotations

from nightcrew.schedules.declare import Schedule
from nightcrew.settings import Settings
from nightcrew.upkeep.processors import CancelStalePending, PruneFinishedTasks
from nightcrew.upkeep.workers import PRUNE_DEAD_WORKERS, PruneDeadWorkers

PRUNE = "nightcrew.prune"
CANCEL_STALE_PENDING = "nightcrew.cancel-stale-pending"


def _off(cron: str) -> bool:
    return cron.strip().lower() in ("off", "none", "")


def upkeep_schedules(settings: Settings) -> list[Schedule]:
    """The upkeep schedules these settings turn on (a `ConfigurationError` for a bad cron
    or time zone, raised when a worker starts)."""
    schedules: list[Schedule] = []
    retention = (
        settings.prune_completed_days,
        settings.prune_error_days,
        settings.prune_cancelled_days,
        settings.prune_audit_days,
    )
    if not _off(settings.upkeep_prune_cron) and any(days > 0 for days in retention):
        schedules.append(
            Schedule(
                PRUNE,
                cron=settings.upkeep_prune_cron,
                timezone=settings.upkeep_timezone,
                processor=PruneFinishedTasks(
                    completed_days=settings.prune_completed_days,
                    error_days=settings.prune_error_days,
                    cancelled_days=settings.prune_cancelled_days,
                    audit_days=settings.prune_audit_days,
                    batch_size=settings.prune_batch_size,
                    pause_seconds=settings.prune_pause_seconds,
                ),
                queue=settings.upkeep_queue,
                _reserved=True,
            )
        )
    minutes = settings.cancel_pending_after_minutes
    if minutes > 0 and not _off(settings.upkeep_cancel_pending_cron):
        schedules.append(
            Schedule(
                CANCEL_STALE_PENDING,
                cron=settings.upkeep_cancel_pending_cron,
                timezone=settings.upkeep_timezone,
                processor=CancelStalePending(minutes=minutes, batch_size=settings.prune_batch_size),
                queue=settings.upkeep_queue,
                _reserved=True,
            )
        )
    if not _off(settings.upkeep_prune_workers_cron):
        schedules.append(
            Schedule(
                PRUNE_DEAD_WORKERS,
                cron=settings.upkeep_prune_workers_cron,
                timezone=settings.upkeep_timezone,
                processor=PruneDeadWorkers(dead_after_seconds=settings.worker_dead_after_seconds),
                queue=settings.upkeep_queue,
                _reserved=True,
            )
        )
    return schedules
