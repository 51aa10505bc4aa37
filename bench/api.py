"""The admin API under load: listing latency with 1,000,000 rows, creations per second.

Stand-alone: ``.venv/bin/python bench/api.py [--rows N] [--sqlite]``. A real uvicorn server
(``nightcrew serve``, in a subprocess, access log off) answers on a loopback port; clients
are httpx over asyncio in this process.

- ``GET /api/v1/tasks``: the first page, a deep cursor page (past 99 % of the rows) and a
  page of one rare status (the ``(status, id)`` index), 50 rows each, one request at a time
  (latency, not throughput): p50 and p99 over ``--requests`` calls each, after a warm-up.
- ``POST /api/v1/tasks``: creations per second with 16 concurrent clients, against the
  Python API's rate of one ``create_maintenance_task`` after another on one app.

The database is made for the run (PostgreSQL: database ``bench_api`` on ``BENCH_PG``;
SQLite: a file in a temporary directory) and the rows are inserted by the database itself
(``generate_series`` / a recursive CTE), mostly COMPLETED, as a history table is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import text

from nightcrew import Nightcrew, Settings, actions, create_maintenance_task
from nightcrew.migrate import upgrade
from nightcrew.processors import Noop

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB_NAME = "bench_api"
PROCESSOR = "nightcrew.processors.Noop"

PG_FILL = """
INSERT INTO maintenance_tasks (status, processor_type, processor_json, queue, priority,
    attempts, max_attempts, created_at, updated_at, start_at, started_at, finished_at)
SELECT CASE WHEN g % 1000 = 0 THEN 'ERROR' WHEN g % 97 = 0 THEN 'PENDING' ELSE 'COMPLETED' END,
       :processor, '{}', CASE WHEN g % 10 = 0 THEN 'reports' ELSE 'default' END, 0, 1, 1,
       t, t, t, t, CASE WHEN g % 97 = 0 THEN NULL ELSE t END
FROM (SELECT g, now() - make_interval(secs => (:rows - g) * 0.5) AS t
      FROM generate_series(1, :rows) AS g) s
"""
SQLITE_FILL = """
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :rows)
INSERT INTO maintenance_tasks (status, processor_type, processor_json, queue, priority,
    attempts, max_attempts, created_at, updated_at, start_at, started_at, finished_at)
SELECT CASE WHEN n % 1000 = 0 THEN 'ERROR' WHEN n % 97 = 0 THEN 'PENDING' ELSE 'COMPLETED' END,
       :processor, '{}', CASE WHEN n % 10 = 0 THEN 'reports' ELSE 'default' END, 0, 1, 1,
       t, t, t, t, CASE WHEN n % 97 = 0 THEN NULL ELSE t END
FROM (SELECT n, strftime('%Y-%m-%d %H:%M:%f000', 'now', printf('-%d seconds', (:rows - n) / 2))
      AS t FROM g)
"""


def make_database(use_sqlite: bool, workdir: Path) -> str:
    if use_sqlite:
        return f"sqlite:///{workdir / 'bench_api.db'}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    return f"{PG}/{DB_NAME}"


def fill(app: Nightcrew, rows: int) -> float:
    started = time.perf_counter()
    sql = SQLITE_FILL if app.database.dialect == "sqlite" else PG_FILL
    with app.database.sync_engine.begin() as conn:
        conn.execute(text(sql), {"rows": rows, "processor": PROCESSOR})
    with app.database.sync_engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("VACUUM ANALYZE" if app.database.is_postgres else "ANALYZE"))
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "NIGHTCREW_DATABASE_URL": url,
        "NIGHTCREW_PROCESSOR_MODULES": "nightcrew.processors",
    }
    args = [sys.executable, "-m", "nightcrew", "serve", "--port", str(port)]
    server = subprocess.Popen([*args, "--log-level", "warning"], env=env, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not come up")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def latency(client: httpx.AsyncClient, params: dict[str, Any], n: int) -> dict[str, float]:
    for _ in range(20):  # warm-up: connections, plans, caches
        (await client.get("/api/v1/tasks", params=params)).raise_for_status()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = await client.get("/api/v1/tasks", params=params)
        times.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
        assert response.json()["tasks"], "an empty page measures nothing"
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(percentile(times, 0.99), 2),
        "max_ms": round(max(times), 2),
        "n": n,
    }


async def creations(base: str, headers: dict[str, str], clients: int, total: int) -> float:
    body = {"processor": PROCESSOR, "config": {}}
    per = total // clients
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:
        for _ in range(10):
            (await client.post("/api/v1/tasks", json=body)).raise_for_status()

        async def one_client() -> None:
            for _ in range(per):
                response = await client.post("/api/v1/tasks", json=body)
                assert response.status_code == 201, response.text

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        return per * clients / (time.perf_counter() - t0)


def python_rate(app: Nightcrew, total: int) -> float:
    for _ in range(20):
        create_maintenance_task(Noop(), database=app)
    t0 = time.perf_counter()
    for _ in range(total):
        create_maintenance_task(Noop(), database=app)
    return total / (time.perf_counter() - t0)


async def measure(base: str, token: str, deep_cursor: int, requests: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        first = await latency(client, {"limit": 50}, requests)
        deep = await latency(client, {"limit": 50, "cursor": str(deep_cursor)}, requests)
        rare = await latency(client, {"limit": 50, "status": "ERROR"}, requests)
    return {"first_page": first, "deep_page": deep, "status_error_page": rare}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--creations", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = make_database(args.sqlite, Path(tmp))
        upgrade(url)
        settings = Settings(database_url=url, processor_modules=["nightcrew.processors"])
        with Nightcrew(settings) as app:
            filled = fill(app, args.rows)
            _, token = actions.create_token(app, "bench", "operator")
            port = free_port()
            server = start_server(url, port)
            try:
                base = f"http://127.0.0.1:{port}"
                deep_cursor = max(100, args.rows // 100)  # 99 % of the rows above it
                listing = asyncio.run(measure(base, token, deep_cursor, args.requests))
                rate_api = asyncio.run(
                    creations(
                        base, {"Authorization": f"Bearer {token}"}, args.clients, args.creations
                    )
                )
            finally:
                server.terminate()
                server.wait(10)
            rate_python = python_rate(app, args.creations // 2)
    result = {
        "database": "sqlite" if args.sqlite else "postgresql",
        "rows": args.rows,
        "fill_seconds": round(filled, 1),
        "list": listing,
        "create_per_second_api_16_clients": round(rate_api),
        "create_per_second_python_one_by_one": round(rate_python),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
