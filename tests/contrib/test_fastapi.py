"""The FastAPI example: the host app's lifespan starts a worker in its loop, a route's task
runs (its progress seen on the admin API's event stream), and shutdown stops the worker
gracefully (its registry row gone, its task done, nothing left running)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from nightcrew import Nightcrew, actions
from nightcrew.settings import Settings
from tests.conftest import TEST_MODULES, Backend


def test_the_fastapi_example_runs_a_task_in_its_lifespan_and_stops_cleanly(
    backend: Backend,
) -> None:
    import fastapi_app

    settings = backend.settings(processor_modules=[*TEST_MODULES, "fastapi_app"])
    host = fastapi_app.create_app(settings)
    with Nightcrew(settings) as other:
        _, token = actions.create_token(other, "ops", "viewer")
    with TestClient(host) as client:
        crew_app = host.state.nightcrew
        assert isinstance(crew_app, Nightcrew)
        made = client.post("/reports", json={"pages": 3, "seconds_per_page": 0.05})
        assert made.status_code == 200
        task_id = made.json()["task"]
        deadline = time.monotonic() + 30
        shown: dict[str, object] = {}
        while time.monotonic() < deadline:
            shown = client.get(f"/reports/{task_id}").json()
            if shown["status"] == "COMPLETED":
                break
            time.sleep(0.05)
        assert shown == {"status": "COMPLETED", "progress": 100.0, "info": {"pages": 3}}
        workers = client.get(
            "/nightcrew/api/v1/workers", headers={"Authorization": f"Bearer {token}"}
        ).json()["workers"]
        assert len(workers) == 1 and workers[0]["alive"]
        page = client.get(
            "/nightcrew/api/v1/events",
            params={"task": task_id},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert "completed" in [e["kind"] for e in page["events"]]
    with Nightcrew(Settings(database_url=backend.url)) as after:
        assert actions.list_workers(after) == []  # removed at shutdown
        assert actions.get(after, task_id).status.value == "COMPLETED"
