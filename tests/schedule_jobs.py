"""Function processors and declared schedules the schedule tests use.

Allowlisted by `SCHEDULE_MODULES` (the backend fixture's modules plus this one). The lists
stand for versions of an application's ``NIGHTCREW_SCHEDULES`` across deploys:
``SCHEDULES`` (first deploy), ``SCHEDULES_CHANGED`` (a trigger and a processor changed),
``SCHEDULES_SHRUNK`` (one removed), ``NONE`` (all removed).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from nightcrew import MaintenanceTask, Schedule, processor
from tests.conftest import TEST_MODULES

SCHEDULE_MODULES = [*TEST_MODULES, "tests.schedule_jobs"]


@processor
async def harvest(platform: str = "all") -> dict[str, Any]:
    """An async function processor (seed 004's daily harvest, in miniature)."""
    return {"platform": platform, "harvested": 3}


@processor(max_attempts=2, queue="default")
def refresh(task: MaintenanceTask, days: int = 7) -> dict[str, Any]:
    """A plain function processor that receives its task (runs in a thread)."""
    return {"days": days, "task_id": task.id, "schedule": "refresh"}


@processor
def record_tick(path: str) -> dict[str, Any]:
    """Appends one line per run, so a test can count runs across processes."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return {"recorded": True}


SCHEDULES = [
    Schedule("harvest", cron="0 2 * * *", timezone="Europe/Berlin", processor=harvest()),
    Schedule("refresh", every=timedelta(hours=6), processor=refresh(days=7)),
]

SCHEDULES_CHANGED = [
    Schedule("harvest", cron="0 * * * *", timezone="Europe/Berlin", processor=harvest()),
    Schedule("refresh", every=timedelta(hours=6), processor=refresh(days=14)),
]

SCHEDULES_SHRUNK = [SCHEDULES_CHANGED[0]]

NONE: list[Schedule] = []

#: Due every second: a worker started with it runs it at once.
EVERY_SECOND = [Schedule("every-second", every=1, processor=harvest(platform="tick"))]

NOT_A_LIST = Schedule("lonely", every=60, processor=harvest())
