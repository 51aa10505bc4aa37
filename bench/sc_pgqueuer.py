"""pgqueuer's side of the benchmark (runs in bench/.peers-venv).

Used as pgqueuer documents it at its best: the asyncpg driver (its docs measure asyncpg at
about twice psycopg's throughput), the batch ``Queries.enqueue`` with lists, a
``batch_size`` for dequeues chosen by ``run.py --calibrate``, ``mode=drain`` to empty a
queue, and uvloop as its ``pgq run`` command and its own benchmark tool use. Schema
installed with its documented ``pgq install`` command (default durability: logged tables).

    python sc_pgqueuer.py enqueue|drain|burst|latency|memory --params JSON --settings JSON
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any

import benchlib as bl

LIB = "pgqueuer"
DB = "bench_pgqueuer"
URL = bl.pg_url(DB)
DEFAULTS: dict[str, Any] = {
    # Chosen with `run.py --calibrate` (see results/calibration.md): bigger dequeue
    # batches drain faster (10, its default, is ~3x slower on no-op tasks); the single
    # connection and the pool driver are within the noise of each other.
    "driver": "asyncpg",  # asyncpg | asyncpg-pool | psycopg
    "batch_size": 200,  # QueueManager.run(batch_size=...): jobs per dequeue
    "max_concurrent_tasks": None,  # None: unbounded (pgqueuer's default)
    "loop": "uvloop",
    "durability": "durable",
    "dequeue_timeout_s": 30.0,
}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {n: version(n) for n in ("pgqueuer", "asyncpg", "uvloop")}


def run_async(coro: Coroutine[Any, Any, Any], settings: dict[str, Any]) -> Any:
    if settings["loop"] == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def install(settings: dict[str, Any]) -> None:
    bl.recreate_database(DB)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pgqueuer",
            "--pg-dsn",
            URL,
            "install",
            "--durability",
            settings["durability"],
        ],
        check=True,
        capture_output=True,
    )


async def make_driver(settings: dict[str, Any]) -> Any:
    from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver, PsycopgDriver

    if settings["driver"] == "asyncpg":
        import asyncpg

        return AsyncpgDriver(await asyncpg.connect(URL))
    if settings["driver"] == "asyncpg-pool":
        import asyncpg

        return AsyncpgPoolDriver(await asyncpg.create_pool(URL))
    if settings["driver"] == "psycopg":
        import psycopg

        return PsycopgDriver(await psycopg.AsyncConnection.connect(URL, autocommit=True))
    raise ValueError(settings["driver"])


async def make_queries(settings: dict[str, Any]) -> Any:
    from pgqueuer.queries import Queries

    return Queries(await make_driver(settings))


async def bulk_enqueue(q: Any, n: int, chunk: int = 20_000) -> None:
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        await q.enqueue(["noop"] * k, [None] * k, [0] * k)


# ------------------------------------------------------------------ scenarios


def scenario_enqueue(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    install(settings)
    bulk, single = params["bulk"], params["single"]

    async def main() -> dict[str, Any]:
        q = await make_queries(settings)
        await q.enqueue("noop", None, 0)  # warm the connection and statement cache
        t = time.perf_counter()
        ids = await q.enqueue(["noop"] * bulk, [None] * bulk, [0] * bulk)
        bulk_s = time.perf_counter() - t
        assert len(ids) == bulk
        t = time.perf_counter()
        for _ in range(single):
            await q.enqueue("noop", None, 0)
        single_s = time.perf_counter() - t
        return {
            "bulk_tps": round(bulk / bulk_s, 1),
            "single_tps": round(single / single_s, 1),
            "bulk_s": round(bulk_s, 4),
            "single_s": round(single_s, 4),
        }

    metrics = run_async(main(), settings)
    rows = bl.sql_scalar(DB, "SELECT count(*) FROM pgqueuer")
    metrics["verified"] = rows == bulk + single + 1
    return metrics


def _spawn(role: str, params: dict[str, Any], settings: dict[str, Any], n: int) -> bl.Children:
    return bl.Children(bl.child_argv("sc_pgqueuer.py", role, params, settings), n)


def scenario_drain(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The tuned drain, and (``params["burst"]``) the burst: no ANALYZE, autovacuum off."""
    install(settings)
    n, procs = params["n"], params["procs"]

    async def fill() -> None:
        await bulk_enqueue(await make_queries(settings), n)

    bl.before_fill(DB, params, "pgqueuer")
    run_async(fill(), settings)
    bl.after_fill(DB, params)
    children = _spawn("worker-drain", params, settings, procs)
    children.wait_ready()
    go = children.go()
    metrics = bl.drain_summary(n, go, children.results())
    left = bl.sql_scalar(DB, "SELECT count(*) FROM pgqueuer")
    metrics["verified"] = left == 0 and metrics["executed"] == n
    return metrics


def scenario_memory(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    install(settings)
    n = params["n"]

    async def fill() -> None:
        await bulk_enqueue(await make_queries(settings), n)

    run_async(fill(), settings)
    bl.sql_exec(DB, "VACUUM ANALYZE")
    children = _spawn("worker-drain", params, settings, 1)
    children.wait_ready()
    sampler = bl.RssSampler(children.pids[0])
    sampler.start()
    time.sleep(0.3)
    go = children.go()
    (child,) = children.results()
    sampler.stop()
    metrics = bl.drain_summary(n, go, [child])
    metrics.update(bl.rss_summary(sampler.samples, child["t_start"], child["t_end"]))
    metrics["verified"] = metrics["executed"] == n
    return metrics


def scenario_latency(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    install(settings)
    n, interval, warm = params["n"], params["interval"], params["warmup"]
    children = _spawn("worker-latency", params, settings, 1)
    children.wait_ready()
    children.go()

    async def enqueue_all() -> None:
        q = await make_queries(settings)
        await asyncio.sleep(params["settle"])  # the worker is up, connected and idle
        for i in range(warm + n):
            if i == warm:
                await asyncio.sleep(params["settle"])
            t0 = time.time()
            payload = json.dumps({"t0": t0, "warm": i < warm}).encode()
            await q.enqueue("probe", payload, 0)
            await asyncio.sleep(max(0.0, t0 + interval - time.time()))

    run_async(enqueue_all(), settings)
    (child,) = children.results(timeout=120)
    metrics = bl.latency_summary([start - t0 for t0, start in child["records"]])
    metrics["verified"] = metrics["samples"] == n
    return metrics


# ------------------------------------------------------------------ worker children


def child_drain(params: dict[str, Any], settings: dict[str, Any]) -> None:
    from pgqueuer import PgQueuer
    from pgqueuer.types import QueueExecutionMode

    executed = 0

    async def main() -> dict[str, Any]:
        pgq = PgQueuer(await make_driver(settings))

        @pgq.entrypoint("noop")
        async def noop(job: Any) -> None:
            nonlocal executed
            executed += 1

        t_start = await asyncio.to_thread(bl.child_ready_and_wait)
        c0 = time.process_time()
        await pgq.run(
            batch_size=settings["batch_size"],
            max_concurrent_tasks=settings["max_concurrent_tasks"],
            mode=QueueExecutionMode.drain,
        )
        cpu = time.process_time() - c0
        return {"t_start": t_start, "t_end": time.time(), "executed": executed, "cpu_s": cpu}

    bl.emit(run_async(main(), settings))


def child_latency(params: dict[str, Any], settings: dict[str, Any]) -> None:
    from datetime import timedelta

    from pgqueuer import PgQueuer

    records: list[tuple[float, float]] = []

    async def main() -> dict[str, Any]:
        pgq = PgQueuer(await make_driver(settings))

        @pgq.entrypoint("probe")
        async def probe(job: Any) -> None:
            started = time.time()
            data = json.loads(job.payload)
            if not data["warm"]:
                records.append((data["t0"], started))
                if len(records) >= params["n"]:
                    pgq.shutdown.set()

        await asyncio.to_thread(bl.child_ready_and_wait)
        await pgq.run(
            batch_size=settings["batch_size"],
            max_concurrent_tasks=settings["max_concurrent_tasks"],
            dequeue_timeout=timedelta(seconds=settings["dequeue_timeout_s"]),
        )
        return {"records": records, "executed": len(records)}

    bl.emit(run_async(main(), settings))


SCENARIOS: dict[str, bl.Scenario] = {
    "enqueue": scenario_enqueue,
    "drain": scenario_drain,
    "burst": scenario_drain,
    "latency": scenario_latency,
    "memory": scenario_memory,
}
CHILDREN = {"worker-drain": child_drain, "worker-latency": child_latency}


if __name__ == "__main__":
    bl.script_main(LIB, DEFAULTS, SCENARIOS, CHILDREN, versions)
