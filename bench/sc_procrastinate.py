"""procrastinate's side of the benchmark (runs in bench/.peers-venv).

Used as procrastinate documents it at its best: the async ``PsycopgConnector`` (psycopg 3
with its C build, a connection pool), ``batch_defer_async`` for bulk enqueues, async tasks
run with worker ``concurrency`` (its "Execute multiple jobs at the same time" how-to),
``wait=False`` to stop once the queues are empty, LISTEN/NOTIFY on (its default). Schema
applied with ``app.schema_manager.apply_schema_async()`` (what ``procrastinate schema
--apply`` runs). Finished jobs are kept (``delete_jobs="never"``, its default), as
nightcrew keeps its rows.

    python sc_procrastinate.py enqueue|drain|burst|latency|memory --params JSON --settings JSON
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import benchlib as bl

LIB = "procrastinate"
DB = "bench_procrastinate"
URL = bl.pg_url(DB)
DEFAULTS: dict[str, Any] = {
    "connector": "PsycopgConnector",
    # The best of `run.py --calibrate` (see results/calibration.md); every concurrency
    # from 1 to 100 (its how-to's example is 30) drains no-op jobs within the noise of
    # each other: one job per fetch query is what bounds it.
    "concurrency": 10,  # worker sub-workers (async jobs in parallel)
    "pool_min": 1,
    "pool_max": 10,  # psycopg_pool max_size for the connector
    "listen_notify": True,
    "delete_jobs": "never",
    "fetch_job_polling_interval_s": 5.0,
    "loop": "asyncio",
}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {n: version(n) for n in ("procrastinate", "psycopg", "psycopg-pool")}


def make_app(settings: dict[str, Any]) -> Any:
    import procrastinate_tasks

    return procrastinate_tasks.make_app(URL, settings)


def run_async(coro: Any, settings: dict[str, Any]) -> Any:
    if settings["loop"] == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def install(settings: dict[str, Any]) -> None:
    bl.recreate_database(DB)

    async def main() -> None:
        app = make_app(settings)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    run_async(main(), settings)


async def bulk_enqueue(app: Any, n: int, chunk: int = 20_000) -> None:
    task = app.tasks["noop"]
    for start in range(0, n, chunk):
        await task.batch_defer_async(*[{}] * min(chunk, n - start))


def worker_kwargs(settings: dict[str, Any], wait: bool) -> dict[str, Any]:
    return {
        "concurrency": settings["concurrency"],
        "wait": wait,
        "listen_notify": settings["listen_notify"],
        "delete_jobs": settings["delete_jobs"],
        "fetch_job_polling_interval": settings["fetch_job_polling_interval_s"],
        "install_signal_handlers": False,
    }


# ------------------------------------------------------------------ scenarios


def scenario_enqueue(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    install(settings)
    bulk, single = params["bulk"], params["single"]

    async def main() -> dict[str, Any]:
        app = make_app(settings)
        async with app.open_async():
            task = app.tasks["noop"]
            await task.defer_async()  # warm the pool
            t = time.perf_counter()
            ids = await task.batch_defer_async(*[{}] * bulk)
            bulk_s = time.perf_counter() - t
            assert len(ids) == bulk
            t = time.perf_counter()
            for _ in range(single):
                await task.defer_async()
            single_s = time.perf_counter() - t
        return {
            "bulk_tps": round(bulk / bulk_s, 1),
            "single_tps": round(single / single_s, 1),
            "bulk_s": round(bulk_s, 4),
            "single_s": round(single_s, 4),
        }

    metrics = run_async(main(), settings)
    rows = bl.sql_scalar(DB, "SELECT count(*) FROM procrastinate_jobs")
    metrics["verified"] = rows == bulk + single + 1
    return metrics


def _spawn(role: str, params: dict[str, Any], settings: dict[str, Any], n: int) -> bl.Children:
    return bl.Children(bl.child_argv("sc_procrastinate.py", role, params, settings), n)


def _fill(n: int, params: dict[str, Any], settings: dict[str, Any]) -> None:
    async def main() -> None:
        app = make_app(settings)
        async with app.open_async():
            await bulk_enqueue(app, n)

    bl.before_fill(DB, params, "procrastinate_jobs")
    run_async(main(), settings)
    bl.after_fill(DB, params)


def scenario_drain(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The tuned drain, and (``params["burst"]``) the burst: no ANALYZE, autovacuum off."""
    install(settings)
    n, procs = params["n"], params["procs"]
    _fill(n, params, settings)
    children = _spawn("worker-drain", params, settings, procs)
    children.wait_ready()
    go = children.go()
    metrics = bl.drain_summary(n, go, children.results())
    done = bl.sql_scalar(DB, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    metrics["verified"] = done == n and metrics["executed"] == n
    return metrics


def scenario_memory(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    install(settings)
    n = params["n"]
    _fill(n, params, settings)
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
        app = make_app(settings)
        async with app.open_async():
            probe = app.tasks["probe"]
            await asyncio.sleep(params["settle"])
            for i in range(warm + n):
                if i == warm:
                    await asyncio.sleep(params["settle"])
                t0 = time.time()
                await probe.defer_async(t0=t0, warm=i < warm)
                await asyncio.sleep(max(0.0, t0 + interval - time.time()))

    run_async(enqueue_all(), settings)
    (child,) = children.results(timeout=120)
    metrics = bl.latency_summary([start - t0 for t0, start in child["records"]])
    metrics["verified"] = metrics["samples"] == n
    return metrics


# ------------------------------------------------------------------ worker children


def child_drain(params: dict[str, Any], settings: dict[str, Any]) -> None:
    async def main() -> dict[str, Any]:
        app = make_app(settings)
        async with app.open_async():
            t_start = await asyncio.to_thread(bl.child_ready_and_wait)
            await app.run_worker_async(**worker_kwargs(settings, wait=False))
            t_end = time.time()
        import procrastinate_tasks

        return {"t_start": t_start, "t_end": t_end, "executed": procrastinate_tasks.executed}

    bl.emit(run_async(main(), settings))


def child_latency(params: dict[str, Any], settings: dict[str, Any]) -> None:
    import procrastinate_tasks as pt

    async def main() -> dict[str, Any]:
        app = make_app(settings)
        async with app.open_async():
            await asyncio.to_thread(bl.child_ready_and_wait)
            worker = asyncio.create_task(app.run_worker_async(**worker_kwargs(settings, True)))
            done = asyncio.Event()
            pt.on_probe = lambda: done.set() if len(pt.records) >= params["n"] else None
            await done.wait()
            worker.cancel()  # procrastinate's graceful stop: running jobs finish first
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            return {"records": pt.records, "executed": len(pt.records)}

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
