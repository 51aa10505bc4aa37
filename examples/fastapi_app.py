"""A FastAPI app hosting a nightcrew worker in its lifespan (seed 003), with the admin API.

Seed 003 started a polling ``TaskWorker`` in the app's lifespan and cancelled it at
shutdown. Here the worker is nightcrew's: it is woken by the database (NOTIFY on
PostgreSQL), several app processes share the work, and at shutdown it lets running tasks
finish within the grace period and hands back the rest. Clients follow a task's progress
live (Server-Sent Events) instead of polling it::

    cd examples
    export NIGHTCREW_DATABASE_URL=sqlite:///./fastapi-example.db
    nightcrew db upgrade
    export TOKEN=$(nightcrew tokens create --name me --role viewer)   # shown once
    uvicorn --factory fastapi_app:create_app
    curl -X POST localhost:8000/reports -d '{"pages": 5}' -H 'content-type: application/json'
    curl -N -H "Authorization: Bearer $TOKEN" -H 'Accept: text/event-stream' \\
        'localhost:8000/nightcrew/api/v1/events?task=1'
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from nightcrew import (
    MaintenanceTask,
    MaintenanceTaskProcessor,
    Nightcrew,
    Settings,
    acreate_maintenance_task,
    actions,
    report_progress,
)
from nightcrew.contrib.fastapi import NightcrewDep, NightcrewFastAPI


class BuildReport(MaintenanceTaskProcessor):
    """Stands in for seed 003's agent task: a few steps, each reported as progress."""

    pages: int = Field(default=5, ge=1, le=1000)
    seconds_per_page: float = Field(default=0.2, ge=0, le=60)

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        for page in range(1, self.pages + 1):
            await asyncio.sleep(self.seconds_per_page)
            await report_progress(100 * page / self.pages, f"page {page} of {self.pages}")
        return {"pages": self.pages}


class ReportRequest(BaseModel):
    pages: int = Field(default=5, ge=1, le=1000)
    seconds_per_page: float = Field(default=0.2, ge=0, le=60)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The host app: its routes, the worker in its lifespan, the admin API under /nightcrew."""
    settings = settings or Settings(processor_modules=[__name__])
    crew = NightcrewFastAPI(Nightcrew(settings), concurrency=10)
    app = FastAPI(title="reports", lifespan=crew.lifespan)
    crew.mount_admin(app, "/nightcrew")

    @app.post("/reports")
    async def make_report(body: ReportRequest, nc: NightcrewDep) -> dict[str, int]:
        report = BuildReport(pages=body.pages, seconds_per_page=body.seconds_per_page)
        task = await acreate_maintenance_task(report, database=nc)
        return {"task": task.id}

    @app.get("/reports/{task_id}")
    def show_report(task_id: int, nc: NightcrewDep) -> dict[str, Any]:
        view = actions.get(nc, task_id)
        return {"status": view.status.value, "progress": view.progress, "info": view.info}

    return app
