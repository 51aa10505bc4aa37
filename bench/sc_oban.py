"""oban's side of the benchmark (runs in bench/.peers312-venv: oban needs Python >= 3.12).

Used as oban (the Python port, ``pip install oban``) documents it: a psycopg 3 connection
pool made by ``Oban.create_pool`` (its only driver), ``enqueue_many`` for bulk enqueues
and ``enqueue`` for single ones, async workers (``@worker`` classes with ``async def
process``) run by ``Oban(pool=..., queues={queue: limit})``, uvloop (what its ``oban
start`` command runs on). Schema installed with its ``oban install`` command. Completed
jobs are kept (its pruner's default ``max_age`` is one day), as nightcrew keeps its rows.

oban has no "stop when the queue is empty" mode (its ``testing.drain_queue`` runs jobs
inline, not through a worker), so a drain ends when the parent sees every job
``completed`` in the table (``benchlib.release_and_watch``) and then stops the workers.

    python sc_oban.py enqueue|drain|burst|latency|memory --params JSON --settings JSON
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any

import benchlib as bl

LIB = "oban"
DB = "bench_oban"
URL = bl.pg_url(DB)
DONE = "SELECT count(*) FROM oban_jobs WHERE state = 'completed'"
DEFAULTS: dict[str, Any] = {
    # The queue's limit (jobs running at once per process) is oban's one throughput knob
    # for async jobs; its docs' examples use 5-50, its own benchmark 20. Chosen with
    # `run.py --calibrate` (results/calibration.md, 20,000 tasks on a busy machine): 10-20
    # drain at ~1,000/s, 100-200 at ~2,500/s with one process, 500 no faster.
    "queue_limit": 200,
    # Its production guide: the default pool (1-10) "is comfortable for most deployments";
    # jobs borrow a connection only to fetch a batch or to ack.
    "pool_min_size": 1,
    "pool_max_size": 10,
    "debounce_interval": 0.005,  # the producer's default pause between fetches
    "loop": "uvloop",  # `oban start` runs on uvloop (a dependency of oban)
}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {n: version(n) for n in ("oban", "psycopg", "psycopg-pool", "uvloop")}
    out["python"] = ".".join(map(str, sys.version_info[:3]))
    return out


def run_async(coro: Coroutine[Any, Any, Any], settings: dict[str, Any]) -> Any:
    if settings["loop"] == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def install(settings: dict[str, Any]) -> None:
    bl.recreate_database(DB)
    subprocess.run(
        [sys.executable, "-m", "oban", "install", "--dsn", URL], check=True, capture_output=True
    )


async def make_pool(settings: dict[str, Any]) -> Any:
    from oban import Oban

    return await Oban.create_pool(
        URL, min_size=settings["pool_min_size"], max_size=settings["pool_max_size"]
    )


def make_oban(pool: Any, settings: dict[str, Any], serve: bool) -> Any:
    """A client (``serve=False``) or a worker serving the benchmark's queue."""
    from oban import Oban
    from oban_jobs import QUEUE

    queues = {
        QUEUE: {
            "limit": settings["queue_limit"],
            "debounce_interval": settings["debounce_interval"],
        }
    }
    # One node name per process (the default, the host name, is shared by both workers).
    node = f"{socket.gethostname()}-{os.getpid()}"
    return Oban(pool=pool, node=node, queues=queues if serve else None)


def fill(n: int, settings: dict[str, Any]) -> None:
    from oban_jobs import Noop

    async def main() -> None:
        pool = await make_pool(settings)
        try:
            await make_oban(pool, settings, serve=False).enqueue_many(
                [Noop.new() for _ in range(n)]
            )
        finally:
            await pool.close()

    run_async(main(), settings)


# ------------------------------------------------------------------ scenarios


def scenario_enqueue(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    from oban_jobs import Noop

    install(settings)
    bulk, single = params["bulk"], params["single"]

    async def main() -> dict[str, Any]:
        pool = await make_pool(settings)
        oban = make_oban(pool, settings, serve=False)
        try:
            await oban.enqueue(Noop.new())  # warm the pool
            jobs = [Noop.new() for _ in range(bulk)]
            t = time.perf_counter()
            inserted = await oban.enqueue_many(jobs)
            bulk_s = time.perf_counter() - t
            assert len(inserted) == bulk
            t = time.perf_counter()
            for _ in range(single):
                await oban.enqueue(Noop.new())
            single_s = time.perf_counter() - t
        finally:
            await pool.close()
        return {
            "bulk_tps": round(bulk / bulk_s, 1),
            "single_tps": round(single / single_s, 1),
            "bulk_s": round(bulk_s, 4),
            "single_s": round(single_s, 4),
        }

    metrics = run_async(main(), settings)
    rows = bl.sql_scalar(DB, "SELECT count(*) FROM oban_jobs")
    metrics["verified"] = rows == bulk + single + 1
    return metrics


def _spawn(role: str, params: dict[str, Any], settings: dict[str, Any], n: int) -> bl.Children:
    return bl.Children(bl.child_argv("sc_oban.py", role, params, settings), n)


def scenario_drain(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The tuned drain, and (``params["burst"]``) the burst: no ANALYZE, autovacuum off."""
    install(settings)
    n, procs = params["n"], params["procs"]
    bl.before_fill(DB, params, "oban_jobs")
    fill(n, settings)
    bl.after_fill(DB, params)
    children = _spawn("worker-drain", params, settings, procs)
    children.wait_ready()
    go, t_end, results = bl.release_and_watch(children, DB, DONE, n)
    metrics = bl.drain_summary(n, go, results, t_end=t_end)
    metrics["verified"] = bl.sql_scalar(DB, DONE) == n and metrics["executed"] == n
    return metrics


def scenario_memory(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    install(settings)
    n = params["n"]
    fill(n, settings)
    bl.after_fill(DB, params)
    children = _spawn("worker-drain", params, settings, 1)
    children.wait_ready()
    sampler = bl.RssSampler(children.pids[0])
    sampler.start()
    time.sleep(0.3)
    go, t_end, (child,) = bl.release_and_watch(children, DB, DONE, n)
    sampler.stop()
    metrics = bl.drain_summary(n, go, [child], t_end=t_end)
    metrics.update(bl.rss_summary(sampler.samples, child["t_start"], t_end))
    metrics["verified"] = metrics["executed"] == n
    return metrics


def scenario_latency(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    from oban_jobs import Probe

    install(settings)
    n, interval, warm = params["n"], params["interval"], params["warmup"]
    children = _spawn("worker-latency", params, settings, 1)
    children.wait_ready()
    children.go()

    async def enqueue_all() -> None:
        pool = await make_pool(settings)
        oban = make_oban(pool, settings, serve=False)
        try:
            await asyncio.sleep(params["settle"])  # the worker is up, connected and idle
            for i in range(warm + n):
                if i == warm:
                    await asyncio.sleep(params["settle"])
                t0 = time.time()
                await oban.enqueue(Probe.new({"t0": t0, "warm": i < warm}))
                await asyncio.sleep(max(0.0, t0 + interval - time.time()))
        finally:
            await pool.close()

    run_async(enqueue_all(), settings)
    (child,) = children.results(timeout=120)
    metrics = bl.latency_summary([start - t0 for t0, start in child["records"]])
    metrics["verified"] = metrics["samples"] == n
    return metrics


# ------------------------------------------------------------------ worker children


def child_drain(params: dict[str, Any], settings: dict[str, Any]) -> None:
    import oban_jobs

    async def main() -> dict[str, Any]:
        pool = await make_pool(settings)  # connected before GO, as every library here
        oban = make_oban(pool, settings, serve=True)
        t_start = await asyncio.to_thread(bl.child_ready_and_wait)
        await oban.start()
        await asyncio.to_thread(bl.child_wait_stop)
        await oban.stop()
        t_end = time.time()
        await pool.close()
        return {"t_start": t_start, "t_end": t_end, "executed": oban_jobs.executed}

    bl.emit(run_async(main(), settings))


def child_latency(params: dict[str, Any], settings: dict[str, Any]) -> None:
    import oban_jobs

    async def main() -> dict[str, Any]:
        pool = await make_pool(settings)
        oban = make_oban(pool, settings, serve=True)
        done = asyncio.Event()
        oban_jobs.on_record = lambda: done.set() if len(oban_jobs.records) >= params["n"] else None
        await oban.start()
        await asyncio.to_thread(bl.child_ready_and_wait)
        await done.wait()
        await oban.stop()
        await pool.close()
        return {"records": oban_jobs.records, "executed": len(oban_jobs.records)}

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
