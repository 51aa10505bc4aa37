"""chancy's side of the benchmark (runs in bench/.peers-venv).

Used as chancy documents it for many small IO-bound jobs: psycopg 3 with its connection
pool (its only driver), ``push_many`` for bulk enqueues and ``push`` for single ones, async
jobs on a queue declared with the ``AsyncExecutor`` ("useful for running large numbers of
IO-bound jobs ... without the high overhead of new processes or threads"; its default, the
``ProcessExecutor``, runs jobs in a pool of spawned processes, for CPU-bound jobs),
``eager_polling`` on (its docs: for queues "where jobs are expected to be continuously
available"), LISTEN/NOTIFY on (its default), its default plugins (leadership, pruner,
recovery, metrics, workflows), and its logger turned down to WARNING as its logging how-to
advises for production (at INFO it logs a line per job). Schema made by
``chancy.migrate()``. Stdlib asyncio, as its CLI runs.

chancy has no "stop when the queue is empty" mode, so a drain ends when the parent sees
every job ``succeeded`` in the table (``benchlib.release_and_watch``) and then stops the
workers. Its workers write job results in batches every ``send_outgoing_interval``
seconds, so that interval is part of what the drain measures.

    python sc_chancy.py enqueue|drain|burst|latency|memory --params JSON --settings JSON
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import benchlib as bl

LIB = "chancy"
DB = "bench_chancy"
URL = bl.pg_url(DB)
DONE = "SELECT count(*) FROM chancy_jobs WHERE state = 'succeeded'"
DEFAULTS: dict[str, Any] = {
    "executor": "Async",  # Chancy.Executor.Async: async jobs in the worker's event loop
    # Queue.concurrency (jobs at once per worker process) and Worker.send_outgoing_interval
    # (seconds between its batched writes of finished jobs; default 1, its docstring names
    # it as the knob): chosen with `run.py --calibrate` (results/calibration.md, 20,000
    # tasks on a busy machine): 1000 and 0.1 s drain fastest, 50 is half as fast.
    "concurrency": 1000,
    "eager_polling": True,  # fetch again as soon as a job finishes, not after polling_interval
    "polling_interval": 5,  # seconds (its default): a fallback, NOTIFY wakes the queue
    "send_outgoing_interval": 0.1,
    "push_batch_size": 1000,  # push_many(batch_size=...): jobs per transaction (its default)
    "pool_min": 1,  # Chancy(min_connection_pool_size=...), its default
    "pool_max": 10,  # Chancy(max_connection_pool_size=...), its default
    "log_level": "WARNING",
    "loop": "asyncio",
}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {n: version(n) for n in ("chancy", "psycopg", "psycopg-pool")}


def run_async(coro: Coroutine[Any, Any, Any], settings: dict[str, Any]) -> Any:
    if settings["loop"] == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def make_app(settings: dict[str, Any]) -> Any:
    from chancy import Chancy

    app = Chancy(
        URL,
        min_connection_pool_size=settings["pool_min"],
        max_connection_pool_size=settings["pool_max"],
    )
    app.log.setLevel(getattr(logging, settings["log_level"]))
    return app


def install(settings: dict[str, Any]) -> None:
    from chancy import Chancy, Queue
    from chancy_jobs import QUEUE

    bl.recreate_database(DB)

    async def main() -> None:
        async with make_app(settings) as app:
            await app.migrate()
            await app.declare(
                Queue(
                    QUEUE,
                    concurrency=settings["concurrency"],
                    executor=getattr(Chancy.Executor, settings["executor"]),
                    polling_interval=settings["polling_interval"],
                    eager_polling=settings["eager_polling"],
                ),
                upsert=True,
            )

    run_async(main(), settings)


async def push_all(app: Any, n: int, settings: dict[str, Any]) -> int:
    from chancy_jobs import noop

    pushed = 0
    async for refs in app.push_many([noop.job] * n, batch_size=settings["push_batch_size"]):
        pushed += len(refs)
    return pushed


def fill(n: int, settings: dict[str, Any]) -> None:
    async def main() -> None:
        async with make_app(settings) as app:
            await push_all(app, n, settings)

    run_async(main(), settings)


# ------------------------------------------------------------------ scenarios


def scenario_enqueue(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    from chancy_jobs import noop

    install(settings)
    bulk, single = params["bulk"], params["single"]

    async def main() -> dict[str, Any]:
        async with make_app(settings) as app:
            await app.push(noop.job)  # warm the pool
            t = time.perf_counter()
            pushed = await push_all(app, bulk, settings)
            bulk_s = time.perf_counter() - t
            assert pushed == bulk
            t = time.perf_counter()
            for _ in range(single):
                await app.push(noop.job)
            single_s = time.perf_counter() - t
        return {
            "bulk_tps": round(bulk / bulk_s, 1),
            "single_tps": round(single / single_s, 1),
            "bulk_s": round(bulk_s, 4),
            "single_s": round(single_s, 4),
        }

    metrics = run_async(main(), settings)
    rows = bl.sql_scalar(DB, "SELECT count(*) FROM chancy_jobs")
    metrics["verified"] = rows == bulk + single + 1
    return metrics


def _spawn(role: str, params: dict[str, Any], settings: dict[str, Any], n: int) -> bl.Children:
    return bl.Children(bl.child_argv("sc_chancy.py", role, params, settings), n)


def scenario_drain(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The tuned drain, and (``params["burst"]``) the burst: no ANALYZE, autovacuum off."""
    install(settings)
    n, procs = params["n"], params["procs"]
    bl.before_fill(DB, params, "chancy_jobs")
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
    from chancy_jobs import probe

    install(settings)
    n, interval, warm = params["n"], params["interval"], params["warmup"]
    children = _spawn("worker-latency", params, settings, 1)
    children.wait_ready()
    children.go()

    async def enqueue_all() -> None:
        async with make_app(settings) as app:
            await asyncio.sleep(params["settle"])  # the worker is up, connected and idle
            for i in range(warm + n):
                if i == warm:
                    await asyncio.sleep(params["settle"])
                t0 = time.time()
                await app.push(probe.job.with_kwargs(t0=t0, warm=i < warm))
                await asyncio.sleep(max(0.0, t0 + interval - time.time()))

    run_async(enqueue_all(), settings)
    (child,) = children.results(timeout=120)
    metrics = bl.latency_summary([start - t0 for t0, start in child["records"]])
    metrics["verified"] = metrics["samples"] == n
    return metrics


# ------------------------------------------------------------------ worker children


def make_worker(app: Any, settings: dict[str, Any]) -> Any:
    from chancy import Worker

    worker = Worker(app, register_signal_handlers=False)
    worker.send_outgoing_interval = settings["send_outgoing_interval"]
    return worker


def child_drain(params: dict[str, Any], settings: dict[str, Any]) -> None:
    import chancy_jobs

    async def main() -> dict[str, Any]:
        async with make_app(settings) as app:  # the pool is open before GO
            t_start = await asyncio.to_thread(bl.child_ready_and_wait)
            worker = make_worker(app, settings)
            await worker.start()
            await asyncio.to_thread(bl.child_wait_stop)
            await worker.stop()
            t_end = time.time()
        return {"t_start": t_start, "t_end": t_end, "executed": chancy_jobs.executed}

    bl.emit(run_async(main(), settings))


def child_latency(params: dict[str, Any], settings: dict[str, Any]) -> None:
    import chancy_jobs

    async def main() -> dict[str, Any]:
        async with make_app(settings) as app:
            done = asyncio.Event()
            chancy_jobs.on_record = lambda: (
                done.set() if len(chancy_jobs.records) >= params["n"] else None
            )
            worker = make_worker(app, settings)
            await worker.start()
            await asyncio.to_thread(bl.child_ready_and_wait)
            await done.wait()
            await worker.stop()
        return {"records": chancy_jobs.records, "executed": len(chancy_jobs.records)}

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
