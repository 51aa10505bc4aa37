"""Processors the dashboard's browser tests run in a real worker process."""

from __future__ import annotations

import asyncio
import enum
from typing import Any

from pydantic import Field

from nightcrew import MaintenanceTask, MaintenanceTaskProcessor


class Steps(MaintenanceTaskProcessor):
    """Walks through ``steps`` steps over ``seconds``, reporting progress after each one,
    so a page can watch its progress bar move (and cancel it halfway)."""

    seconds: float = 6.0
    steps: int = 60

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew.execution import report_progress

        for i in range(1, self.steps + 1):
            await asyncio.sleep(self.seconds / self.steps)
            await report_progress(i * 100 / self.steps, f"step {i} of {self.steps}")
        return {"steps": self.steps}


class Mode(enum.StrEnum):
    FAST = "fast"
    THOROUGH = "thorough"


class Report(MaintenanceTaskProcessor):
    """Builds a report: the processor form test fills each kind of field it has.

    A second paragraph, shown on the processor's page.
    """

    title: str = Field(description="The report's title")
    copies: int = Field(default=1, ge=1, le=10)
    ratio: float = 0.5
    mode: Mode = Mode.FAST
    dry_run: bool = False
    tags: list[str] = Field(default_factory=list)

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        return {"title": self.title, "copies": self.copies, "tags": self.tags}


class Flaky(MaintenanceTaskProcessor):
    """Fails, so a task page shows an error with its traceback."""

    reason: str = "the upstream API answered 503"

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        raise ConnectionError(self.reason)
