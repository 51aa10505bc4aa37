"""procrastinate's app and tasks for the benchmark, in an importable module as its docs ask
(an App built in ``__main__`` triggers its "top-level app" warning)."""

from __future__ import annotations

import time
from typing import Any

import procrastinate

executed = 0
records: list[tuple[float, float]] = []
on_probe: Any = None


def make_app(url: str, settings: dict[str, Any]) -> procrastinate.App:
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=url, min_size=settings["pool_min"], max_size=settings["pool_max"]
        )
    )

    @app.task(name="noop")
    async def noop() -> None:
        global executed
        executed += 1

    @app.task(name="probe")
    async def probe(t0: float, warm: bool) -> None:
        started = time.time()
        if not warm:
            records.append((t0, started))
            if on_probe is not None:
                on_probe()

    return app
