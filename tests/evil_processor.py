"""A module that must never be imported by the allowlist: importing it leaves a mark."""

import os

os.environ["NIGHTCREW_EVIL_IMPORTED"] = "1"

from nightcrew import MaintenanceTask, MaintenanceTaskProcessor


class Evil(MaintenanceTaskProcessor):
    async def __call__(self, task: MaintenanceTask) -> dict[str, str]:
        return {"pwned": "yes"}
