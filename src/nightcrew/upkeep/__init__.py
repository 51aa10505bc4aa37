"""Upkeep of nightcrew itself (DESIGN §7): built-in processors on default schedules.

- ``nightcrew.prune`` (daily, ``NIGHTCREW_UPKEEP_PRUNE_CRON``): delete finished tasks past
  their retention (``NIGHTCREW_PRUNE_COMPLETED_DAYS`` 30, ``..._ERROR_DAYS`` and
  ``..._CANCELLED_DAYS`` 90) in bounded batches;
- ``nightcrew.prune-dead-workers`` (every ten minutes, ``NIGHTCREW_UPKEEP_PRUNE_WORKERS_CRON``):
  delete the worker registry rows of workers that died (`nightcrew.upkeep.workers`);
- ``nightcrew.cancel-stale-pending`` (off unless ``NIGHTCREW_CANCEL_PENDING_AFTER_MINUTES``
  is set, e.g. 240): cancel PENDING tasks due for longer than that.

Lease rescue is not here: every worker runs it continuously (`nightcrew.worker.rescuer`).
The processors' module is always allowed by the allowlist: it is nightcrew's own code.
"""

from nightcrew.upkeep.processors import CancelStalePending, PruneFinishedTasks
from nightcrew.upkeep.pruning import PruneReport, Retention, cancel_stale_pending, prune_finished
from nightcrew.upkeep.schedules import CANCEL_STALE_PENDING, PRUNE, upkeep_schedules
from nightcrew.upkeep.workers import PRUNE_DEAD_WORKERS, PruneDeadWorkers

__all__ = [
    "CANCEL_STALE_PENDING",
    "PRUNE",
    "PRUNE_DEAD_WORKERS",
    "CancelStalePending",
    "PruneDeadWorkers",
    "PruneFinishedTasks",
    "PruneReport",
    "Retention",
    "cancel_stale_pending",
    "prune_finished",
    "upkeep_schedules",
]
