"""``/api/v1/workers``: the worker registry (who runs, where, with what, alive or not)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from nightcrew import actions
from nightcrew.api.auth import Principal, require, role_extra
from nightcrew.api.deps import NightcrewDep
from nightcrew.values import Role, WorkerView

router = APIRouter(tags=["workers"])


class WorkerOut(BaseModel):
    """A registered worker; ``alive`` is false once its heartbeat is older than the
    dead-after age (``NIGHTCREW_WORKER_DEAD_AFTER_SECONDS``): it died without saying so."""

    id: str
    host: str
    pid: int
    version: str
    queues: list[str] | None
    concurrency: int
    in_flight: int
    started_at: datetime
    last_heartbeat_at: datetime
    alive: bool

    @classmethod
    def of(cls, w: WorkerView) -> WorkerOut:
        return cls(
            id=w.id,
            host=w.host,
            pid=w.pid,
            version=w.version,
            queues=None if w.queues is None else list(w.queues),
            concurrency=w.concurrency,
            in_flight=w.in_flight,
            started_at=w.started_at,
            last_heartbeat_at=w.last_heartbeat_at,
            alive=w.alive,
        )


class WorkerList(BaseModel):
    workers: list[WorkerOut]


@router.get("/workers", openapi_extra=role_extra(Role.VIEWER), summary="The worker registry")
def list_workers(
    app: NightcrewDep,
    _caller: Annotated[Principal, Depends(require(Role.VIEWER))],
    alive: Annotated[bool, Query(description="Only workers that beat lately.")] = False,
) -> WorkerList:
    """Registered workers, newest first (one indexed read of the registry)."""
    return WorkerList(
        workers=[WorkerOut.of(w) for w in actions.list_workers(app, alive_only=alive)]
    )
