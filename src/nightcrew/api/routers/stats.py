"""``/api/v1/stats``: counts by status, queue and processor; the oldest wait; throughput."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from nightcrew import actions
from nightcrew.api.auth import Principal, require, role_extra
from nightcrew.api.deps import NightcrewDep
from nightcrew.api.schemas import Stats
from nightcrew.values import Role

router = APIRouter(tags=["stats"])


@router.get("/stats", openapi_extra=role_extra(Role.VIEWER), summary="Task statistics")
def stats(app: NightcrewDep, _caller: Annotated[Principal, Depends(require(Role.VIEWER))]) -> Stats:
    """Read in one transaction: the counts scan the table once (grouped by status, queue
    and processor together); the finishes walk the index of the last hour's rows only.
    ``workers_alive`` counts the worker registry's fresh rows (one indexed count)."""
    return Stats.of(actions.stats(app), actions.workers_alive(app))
