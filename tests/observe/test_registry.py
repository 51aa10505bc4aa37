"""The worker registry: a worker's row appears when it starts, its heartbeat moves, and it
vanishes on a clean exit; a dead worker's row is shown dead and pruned by upkeep; the CLI
(``workers ls``, ``stats``) and the API (``/api/v1/workers``) read it."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from nightcrew import Nightcrew, actions, create_maintenance_task
from nightcrew.api import create_api
from nightcrew.models import WorkerRecord, utcnow
from nightcrew.upkeep import PRUNE_DEAD_WORKERS, PruneDeadWorkers, upkeep_schedules
from tests.conftest import Backend, run_cli
from tests.observe.conftest import observe_settings, until
from tests.processors import Echo, Sleep


def _dead_row(app: Nightcrew, worker_id: str, age: float) -> None:
    then = utcnow() - timedelta(seconds=age)
    with Session(app.database.sync_engine) as session, session.begin():
        session.add(
            WorkerRecord(
                id=worker_id,
                host="gone-host",
                pid=1,
                version="0",
                queues=["default"],
                concurrency=5,
                in_flight=2,
                started_at=then,
                last_heartbeat_at=then,
            )
        )


async def test_a_workers_row_appears_beats_and_vanishes_on_a_clean_exit(
    backend: Backend,
) -> None:
    app = Nightcrew(observe_settings(backend, worker_dead_after_seconds=2.0))
    try:
        sleeper = create_maintenance_task(Sleep(seconds=30), database=app)
        worker = app.worker(concurrency=3, queues=["default"], worker_id="registry-test")
        run = asyncio.create_task(worker.run())
        try:
            (first,) = await until(lambda: actions.list_workers(app), "the row")
            assert (first.id, first.pid, first.concurrency) == ("registry-test", os.getpid(), 3)
            assert list(first.queues or []) == ["default"] and first.alive

            def beat_later() -> bool:
                rows = actions.list_workers(app)
                return bool(rows) and rows[0].last_heartbeat_at > first.last_heartbeat_at

            await until(beat_later, "a later heartbeat")
            await until(lambda: actions.list_workers(app)[0].in_flight == 1, "in flight 1")
            assert actions.get(app, sleeper.id).status.value == "WORKING"
        finally:
            worker.request_stop()
            worker.hurry()
            await asyncio.wait_for(run, 60)
        assert actions.list_workers(app) == []
    finally:
        await app.aclose()


async def test_a_dead_workers_row_is_marked_then_pruned_by_upkeep(backend: Backend) -> None:
    settings = observe_settings(backend)
    app = Nightcrew(settings)
    try:
        _dead_row(app, "dead-worker", age=3600)
        _dead_row(app, "fresh-worker", age=0)
        rows = {w.id: w.alive for w in actions.list_workers(app)}
        assert rows == {"dead-worker": False, "fresh-worker": True}
        assert actions.workers_alive(app) == 1
        (prune,) = [s for s in upkeep_schedules(settings) if s.name == PRUNE_DEAD_WORKERS]
        assert isinstance(prune.processor, PruneDeadWorkers)
        processor = PruneDeadWorkers(dead_after_seconds=60, database_url=backend.url)
        info = await processor(None)  # type: ignore[arg-type]
        assert info == {"pruned": 1, "workers": ["dead-worker"]}
        assert [w.id for w in actions.list_workers(app)] == ["fresh-worker"]
    finally:
        await app.aclose()


def test_workers_ls_and_the_api_show_the_registry(backend: Backend, app: Nightcrew) -> None:
    _dead_row(app, "old-one", age=3600)
    _dead_row(app, "new-one", age=0)
    listed = json.loads(run_cli(backend, "workers", "ls", "--json").stdout)
    assert [(w["id"], w["alive"]) for w in listed] == [("new-one", True), ("old-one", False)]
    alive = json.loads(run_cli(backend, "workers", "ls", "--json", "--alive").stdout)
    assert [w["id"] for w in alive] == ["new-one"]
    table = run_cli(backend, "workers", "ls")
    assert table.returncode == 0 and "dead" in table.stdout and "alive" in table.stdout
    _, token = actions.create_token(app, "reader", "viewer")
    with TestClient(create_api(app)) as client:
        got = client.get("/api/v1/workers", headers={"Authorization": f"Bearer {token}"})
        assert got.status_code == 200
        assert [w["id"] for w in got.json()["workers"]] == ["new-one", "old-one"]
        assert client.get("/api/v1/workers").status_code == 401


def test_stats_counts_by_status_and_queue_with_workers_alive(
    backend: Backend, app: Nightcrew
) -> None:
    for queue in ("mail", "mail", "reports"):
        create_maintenance_task(Echo(), database=app, queue=queue)
    _dead_row(app, "live", age=0)
    result = run_cli(backend, "stats", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["by_status"]["PENDING"] == 3
    assert doc["by_queue"]["mail"]["PENDING"] == 2 and doc["by_queue"]["reports"]["PENDING"] == 1
    assert doc["workers_alive"] == 1
    assert doc["oldest_pending_seconds"] is not None
    assert doc["finished_last_hour"]["total"] == 0
    table = run_cli(backend, "stats")
    assert table.returncode == 0 and "workers alive: 1" in table.stdout
    _, token = actions.create_token(app, "stats-reader", "viewer")
    with TestClient(create_api(app)) as client:
        body = client.get("/api/v1/stats", headers={"Authorization": f"Bearer {token}"}).json()
    assert body["workers_alive"] == 1 and body["by_status"]["PENDING"] == 3
