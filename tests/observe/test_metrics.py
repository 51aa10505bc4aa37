"""Prometheus metrics: values move as tasks run (read back with prometheus-client's own
parser), the database gauges come from one query, and /metrics is a viewer's unless the
operator made it public; a worker serves its own on --metrics-port."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time

import httpx
from fastapi.testclient import TestClient

from nightcrew import Nightcrew, actions, create_maintenance_task
from nightcrew.api import create_api
from nightcrew.models import MaintenanceTaskStatus
from nightcrew.store import observe_ops
from tests.conftest import ROOT, Backend
from tests.helpers import wait_for_status
from tests.observe.conftest import MODULES, free_port, observe_settings, samples, until, value
from tests.processors import Boom, Echo, Retrying, Sleep

S = MaintenanceTaskStatus
FINISHED = "nightcrew_tasks_finished_total"


async def test_metric_values_move_as_tasks_run(backend: Backend) -> None:
    app = Nightcrew(observe_settings(backend))
    try:
        for i in range(3):
            create_maintenance_task(Echo(value=i), database=app, queue="metrics")
        failing = create_maintenance_task(Boom(), database=app, queue="metrics", max_attempts=1)
        retried = create_maintenance_task(Retrying(failures=1), database=app, queue="metrics")
        sleeper = create_maintenance_task(Sleep(seconds=30), database=app, queue="slow")
        before = samples(app.metrics.exposition()[0].decode())
        assert value(before, "nightcrew_queue_depth", queue="metrics", status="PENDING") == 5
        assert value(before, "nightcrew_oldest_pending_age_seconds", queue="metrics") >= 0
        assert value(before, FINISHED, processor=Echo.class_path(), queue="metrics") == 0

        worker = app.worker(concurrency=10)
        run = asyncio.create_task(worker.run())
        try:
            await wait_for_status(app.store, retried.id, S.COMPLETED, worker=run)
            await wait_for_status(app.store, failing.id, S.ERROR, worker=run)
            await wait_for_status(app.store, sleeper.id, S.WORKING, worker=run)

            def running() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
                found = samples(app.metrics.exposition()[0].decode())
                done = value(
                    found,
                    FINISHED,
                    processor=Echo.class_path(),
                    queue="metrics",
                    status="COMPLETED",
                )
                return found if done == 3 else {}

            during = await until(running, "three completions counted")
        finally:
            worker.request_stop()
            worker.hurry()
            await asyncio.wait_for(run, 60)
    finally:
        await app.aclose()

    echo = {"processor": Echo.class_path(), "queue": "metrics"}
    assert value(during, FINISHED, status="COMPLETED", **echo) == 3
    boom = {"processor": Boom.class_path(), "queue": "metrics"}
    assert value(during, FINISHED, status="ERROR", **boom) == 1
    flaky = {"processor": Retrying.class_path(), "queue": "metrics"}
    assert value(during, "nightcrew_task_retries_total", **flaky) == 1
    assert value(during, FINISHED, status="COMPLETED", **flaky) == 1
    assert value(during, "nightcrew_task_duration_seconds_count", **echo) == 3
    assert value(during, "nightcrew_task_duration_seconds_count", **flaky) == 2
    assert value(during, "nightcrew_task_pickup_latency_seconds_count", queue="metrics") == 6
    inf = value(during, "nightcrew_task_pickup_latency_seconds_bucket", queue="metrics", le="+Inf")
    assert inf == 6
    assert value(during, "nightcrew_tasks_in_progress", queue="slow") == 1
    assert value(during, "nightcrew_queue_depth", queue="metrics", status="PENDING") == 0
    assert value(during, "nightcrew_queue_depth", queue="slow", status="WORKING") == 1
    assert value(during, "nightcrew_workers_alive") == 1
    assert value(during, "nightcrew_database_up") == 1


def test_database_gauges_are_one_statement(backend: Backend, app: Nightcrew) -> None:
    statements: list[str] = []
    from sqlalchemy import event

    engine = app.database.sync_engine

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    for queue in ("a", "b", "c"):
        create_maintenance_task(Echo(), database=app, queue=queue)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        gauges = app.store.run(observe_ops.gauges, 60.0)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert {q for q, _ in gauges.depth} == {"a", "b", "c"}
    queries = [s for s in statements if s.strip().upper() != "BEGIN"]  # SQLite's own BEGIN
    assert len(queries) == 1 and queries[0].lstrip().upper().startswith("SELECT")


def test_metrics_need_a_viewer_unless_made_public(backend: Backend) -> None:
    app = Nightcrew(observe_settings(backend))
    _, token = actions.create_token(app, "scraper", "viewer")
    try:
        with TestClient(create_api(app)) as client:
            assert client.get("/metrics").status_code == 401
            ok = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
            assert ok.headers["content-type"].startswith("text/plain")
            assert "nightcrew_queue_depth" in ok.text or "nightcrew_database_up 1" in ok.text
    finally:
        app.close()
    public = Nightcrew(observe_settings(backend, metrics_public=True))
    try:
        with TestClient(create_api(public)) as client:
            assert client.get("/metrics").status_code == 200
    finally:
        public.close()


def test_a_worker_serves_its_own_metrics_on_its_port(backend: Backend) -> None:
    port = free_port()
    env = backend.env(NIGHTCREW_PROCESSOR_MODULES=",".join(MODULES))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nightcrew", "worker", "--metrics-port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        app = Nightcrew(observe_settings(backend))
        try:
            create_maintenance_task(Echo(), database=app, queue="served")
            deadline = time.monotonic() + 30
            text = ""
            while time.monotonic() < deadline:
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                except httpx.HTTPError:
                    text = ""
                if 'queue="served",status="COMPLETED"' in text:
                    break
                time.sleep(0.1)
        finally:
            app.close()
        found = samples(text)
        labels = {"processor": Echo.class_path(), "queue": "served", "status": "COMPLETED"}
        assert value(found, FINISHED, **labels) == 1
        assert "process_cpu_seconds_total" in text
        assert "nightcrew_queue_depth" not in text  # the database's gauges are the API's
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_a_worker_whose_metrics_port_is_taken_exits_with_one_error_line(backend: Backend) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "nightcrew", "worker", "--metrics-port", str(port)],
            env=backend.env(NIGHTCREW_PROCESSOR_MODULES=",".join(MODULES)),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"error: cannot serve metrics on 0.0.0.0:{port}" in done.stderr
