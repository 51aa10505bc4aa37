"""The admin API's routers, mounted under ``/api/v1`` in this order.

A resource is one module with one ``router``; adding one (schedules, pipelines) is an
import and an entry in `ROUTERS`. Routes with literal segments come before those with a
parameter in the same place (``/tasks/bulk/cancel`` before ``/tasks/{task_id}/...``),
which each module's own order already ensures.
"""

from __future__ import annotations

from fastapi import APIRouter

from nightcrew.api.routers import (
    audit,
    events,
    pipelines,
    processors,
    schedules,
    stats,
    tasks,
    tokens,
    workers,
)

ROUTERS: list[APIRouter] = [
    tasks.router,
    stats.router,
    processors.router,
    audit.router,
    tokens.router,
    workers.router,
    events.router,
    schedules.router,
    pipelines.router,
]
