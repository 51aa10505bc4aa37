"""Seed 004's five APScheduler jobs as durable nightcrew schedules.

The harvester's ``background.py`` ran these in one process with APScheduler: a restart lost
every missed run, and two processes ran every job twice. Here each job is a function
processor and each trigger a `nightcrew.Schedule`; any number of workers on any number of
hosts share them, and every tick runs exactly once.

=================================  ================================  =========================
APScheduler (seed 004)             nightcrew                         schedule
=================================  ================================  =========================
``CronTrigger(hour=2, minute=0)``  ``cron="0 2 * * *"``              daily_social_harvest
``IntervalTrigger(hours=6)``       ``every=timedelta(hours=6)``      refresh_stale_servers
``CronTrigger(hour=3)``            ``cron="0 3 * * *"``              recalculate_health_scores
``CronTrigger(day_of_week='sun',   ``cron="0 4 * * sun"``            cleanup_stale_servers
hour=4)``
``IntervalTrigger(hours=1)``       ``every="1h"``                    warmup_cache
=================================  ================================  =========================

Run them (see ``examples/README.md``)::

    cd examples
    export NIGHTCREW_SCHEDULES=seed004_schedules:SCHEDULES
    export NIGHTCREW_PROCESSOR_MODULES=seed004_schedules
    nightcrew db upgrade && nightcrew worker

The jobs' bodies stand in for the harvester's (no Reddit, no Redis here): each reports its
progress and returns the counts the original logged, which nightcrew stores in the task's
``info`` (``nightcrew tasks show ID``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from nightcrew import Schedule, processor, report_progress

#: The harvester's local time: its crontab-style hours are read in this zone (DST-correct).
TIMEZONE = "Europe/Berlin"
#: How long each fake unit of work takes (seconds), so progress is visible in `tasks ls`.
STEP_SECONDS = 0.05


@processor(timeout=30 * 60)
async def daily_social_harvest(platform: str = "all") -> dict[str, Any]:
    """Harvest yesterday's MCP mentions from Reddit, Twitter and YouTube."""
    platforms = ["reddit", "twitter", "youtube"] if platform == "all" else [platform]
    harvested: dict[str, int] = {}
    for i, name in enumerate(platforms):
        await asyncio.sleep(STEP_SECONDS)  # the harvester's API calls
        harvested[name] = 10 * (i + 1)
        await report_progress(100 * (i + 1) / len(platforms), f"{name} done")
    return {"harvested": harvested, "total": sum(harvested.values())}


@processor(max_attempts=3)
async def refresh_stale_servers(days: int = 7) -> dict[str, Any]:
    """Refresh servers not updated in the past ``days`` days."""
    await asyncio.sleep(STEP_SECONDS)
    return {"refreshed": 42, "older_than_days": days}


@processor
async def recalculate_health_scores(batch_size: int = 100) -> dict[str, Any]:
    """Recalculate every server's health score, ``batch_size`` servers at a time."""
    servers = 1000
    for done in range(0, servers, batch_size):
        await asyncio.sleep(STEP_SECONDS / 10)
        await report_progress(100 * (done + batch_size) / servers)
    return {"updated": servers}


@processor
def cleanup_stale_servers(days: int = 180) -> dict[str, Any]:
    """Delete servers not updated in the past ``days`` days (a plain ``def``: a thread)."""
    return {"deleted": 3, "older_than_days": days}


@processor(timeout=120)
async def warmup_cache(limit: int = 100, ttl_seconds: int = 3600) -> dict[str, Any]:
    """Pre-populate the cache with the ``limit`` most popular servers."""
    await asyncio.sleep(STEP_SECONDS)
    return {"cached": limit, "ttl_seconds": ttl_seconds}


SCHEDULES = [
    Schedule(
        "daily_social_harvest",
        cron="0 2 * * *",
        timezone=TIMEZONE,
        processor=daily_social_harvest(platform="all"),
        # Seed 004's "Retry Configuration": skip a run found more than 5 minutes late,
        # fold missed runs into one, never two at once.
        misfire_grace=300,
        coalesce=True,
        max_instances=1,
    ),
    Schedule(
        "refresh_stale_servers",
        every=timedelta(hours=6),
        processor=refresh_stale_servers(days=7),
    ),
    Schedule(
        "recalculate_health_scores",
        cron="0 3 * * *",
        timezone=TIMEZONE,
        processor=recalculate_health_scores(),
    ),
    Schedule(
        "cleanup_stale_servers",
        cron="0 4 * * sun",
        timezone=TIMEZONE,
        processor=cleanup_stale_servers(days=180),
    ),
    Schedule(
        "warmup_cache",
        every="1h",
        processor=warmup_cache(limit=100),
        jitter=30,  # many hosts' caches need not all be hit in the same second
    ),
]
