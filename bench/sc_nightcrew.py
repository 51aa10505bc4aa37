"""nightcrew's side of the benchmark (runs in the project's .venv).

    python sc_nightcrew.py enqueue|drain|burst|latency|backlog|memory --params JSON --settings JSON

``drain``, ``burst`` and ``latency`` take ``"backend": "sqlite"`` in their params for the
embedded mode; everything else runs on PostgreSQL in the database ``bench_nightcrew``.
Schema made by ``nightcrew.migrate.upgrade`` (the migrations users run).

Only nightcrew's public API is used (``create_maintenance_task(s)`` and their async twins,
``Worker(settings)`` with ``run(until_idle=True)`` and ``request_stop()``, ``Settings``,
``nightcrew.migrate.upgrade``, ``MaintenanceTaskProcessor`` in ``nightcrew_processors``);
the tables are read with plain SQL (``maintenance_tasks``, its ``status``), as users see
them. One internal remains, optional: before GO a worker's first pooled connection is
opened through ``worker.database.async_engine`` when that attribute exists (`_warm`).

``burst`` is the user's path (``/work/shared/hooks/burst_at_defaults.py`` is the
reference): N tasks in one ``create_maintenance_tasks`` call, then ``python -m nightcrew
run --once`` at default settings as a subprocess, statistics not gathered.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import benchlib as bl

LIB = "nightcrew"
DB = "bench_nightcrew"
PG_URL = bl.pg_url(DB)
DEFAULTS: dict[str, Any] = {
    # Chosen with `run.py --calibrate` (see results/calibration.md).
    "concurrency": 500,  # Settings.concurrency: in-flight tasks per worker process
    "poll_interval": 0.5,  # PostgreSQL: a fallback only, LISTEN/NOTIFY wakes the worker
    "sqlite_poll_interval": 0.05,  # SQLite has no NOTIFY: polling is the wake-up
    "enqueue_api": "sync",  # create_maintenance_task(s) (sync, the origin's API) | async twins
    "loop": "uvloop",  # what `nightcrew worker` runs on by default (NIGHTCREW_EVENT_LOOP=auto)
}
PROCESSOR_MODULES = ["nightcrew_processors"]


def versions() -> dict[str, str]:
    import subprocess
    from importlib.metadata import version

    out = {
        "nightcrew": version("nightcrew"),
        "sqlalchemy": version("sqlalchemy"),
        "psycopg": version("psycopg"),
    }
    try:
        rev = subprocess.run(
            ["git", "-C", str(bl.BENCH_DIR), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        out["nightcrew_git"] = rev
    except (OSError, subprocess.CalledProcessError):
        pass
    return out


def run_async(coro: Any, settings: dict[str, Any]) -> Any:
    if settings["loop"] == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def url_for(params: dict[str, Any]) -> str:
    if params.get("backend") == "sqlite":
        return f"sqlite:///{params['sqlite_path']}"
    return PG_URL


def make_settings(params: dict[str, Any], settings: dict[str, Any]) -> Any:
    from nightcrew import Settings

    sqlite = params.get("backend") == "sqlite"
    return Settings(
        database_url=url_for(params),
        concurrency=settings["concurrency"],
        poll_interval=settings["sqlite_poll_interval"] if sqlite else settings["poll_interval"],
        processor_modules=PROCESSOR_MODULES,
    )


def install(params: dict[str, Any]) -> None:
    """A fresh database with nightcrew's schema, made the way users make it."""
    from nightcrew.migrate import upgrade

    if params.get("backend") == "sqlite":
        path = params["sqlite_path"]
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    else:
        bl.recreate_database(DB)
    upgrade(url_for(params))


def bulk_enqueue(
    params: dict[str, Any], settings: dict[str, Any], n: int, chunk: int = 20_000
) -> None:
    from nightcrew_processors import Noop

    from nightcrew import Nightcrew, create_maintenance_tasks

    with Nightcrew(make_settings(params, settings)) as app:
        for start in range(0, n, chunk):
            create_maintenance_tasks([Noop()] * min(chunk, n - start), database=app)


def sql(params: dict[str, Any], query: str) -> Any:
    """One statement on the scenario's database (PostgreSQL or the SQLite file), autocommit;
    the first column of its first row."""
    if params.get("backend") == "sqlite":
        import sqlite3

        conn = sqlite3.connect(params["sqlite_path"], isolation_level=None)
        try:
            row = conn.execute(query).fetchone()
        finally:
            conn.close()
        return None if row is None else row[0]
    return bl.sql_scalar(DB, query)


def completed(params: dict[str, Any]) -> int:
    return int(sql(params, "SELECT count(*) FROM maintenance_tasks WHERE status = 'COMPLETED'"))


def analyze(params: dict[str, Any]) -> None:
    if params.get("backend") == "sqlite":
        sql(params, "ANALYZE")
    else:
        bl.sql_exec(DB, "VACUUM ANALYZE maintenance_tasks")


# ------------------------------------------------------------------ scenarios


def scenario_enqueue(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    from nightcrew_processors import Noop

    from nightcrew import (
        Nightcrew,
        acreate_maintenance_task,
        acreate_maintenance_tasks,
        create_maintenance_task,
        create_maintenance_tasks,
    )

    install(params)
    bulk, single = params["bulk"], params["single"]
    # One app for the run, as an application keeps one: its engines and pools are reused.
    app = Nightcrew(make_settings(params, settings))

    if settings["enqueue_api"] == "async":

        async def main() -> tuple[float, float]:
            await acreate_maintenance_task(Noop(), database=app)  # warm
            t = time.perf_counter()
            ids = await acreate_maintenance_tasks([Noop()] * bulk, database=app)
            bulk_s = time.perf_counter() - t
            assert len(ids) == bulk
            t = time.perf_counter()
            for _ in range(single):
                await acreate_maintenance_task(Noop(), database=app)
            return bulk_s, time.perf_counter() - t

        bulk_s, single_s = run_async(main(), settings)
        run_async(app.aclose(), settings)
    else:
        create_maintenance_task(Noop(), database=app)  # warm the engine's pool
        t = time.perf_counter()
        ids = create_maintenance_tasks([Noop()] * bulk, database=app)
        bulk_s = time.perf_counter() - t
        assert len(ids) == bulk
        t = time.perf_counter()
        for _ in range(single):
            create_maintenance_task(Noop(), database=app)
        single_s = time.perf_counter() - t
        app.close()
    rows = bl.sql_scalar(DB, "SELECT count(*) FROM maintenance_tasks")
    return {
        "bulk_tps": round(bulk / bulk_s, 1),
        "single_tps": round(single / single_s, 1),
        "bulk_s": round(bulk_s, 4),
        "single_s": round(single_s, 4),
        "verified": rows == bulk + single + 1,
    }


def _spawn(role: str, params: dict[str, Any], settings: dict[str, Any], n: int) -> bl.Children:
    return bl.Children(bl.child_argv("sc_nightcrew.py", role, params, settings), n)


def scenario_drain(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    install(params)
    n, procs = params["n"], params["procs"]
    bulk_enqueue(params, settings, n)
    analyze(params)
    children = _spawn("worker-drain", params, settings, procs)
    children.wait_ready()
    go = children.go()
    metrics = bl.drain_summary(n, go, children.results())
    metrics["verified"] = completed(params) == n and metrics["executed"] == n
    return metrics


def scenario_burst(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The user's path: ``params["n"]`` tasks in one ``create_maintenance_tasks`` call, then
    ``params["procs"]`` x ``python -m nightcrew run --once`` at once, default settings.

    As ``/work/shared/hooks/burst_at_defaults.py`` measures it: autovacuum off on the
    table and no ANALYZE (statistics not yet gathered, as in the first minute after a
    burst), only ``NIGHTCREW_DATABASE_URL`` and ``NIGHTCREW_PROCESSOR_MODULES`` set, the
    time from spawn to exit minus the interpreter's start-up (``python -m nightcrew
    --version``, here the fastest of three, as many at once as workers). A drain slower
    than ``params["budget_s"]`` is cut there and measured by what it finished. The
    benchmark's ``settings`` (its tuned ones) are not used.
    """
    from nightcrew_processors import Noop

    from nightcrew import Settings, create_maintenance_tasks

    install(params)
    n, procs = params["n"], params["procs"]
    url = url_for(params)
    if params.get("backend") != "sqlite":
        bl.disable_autovacuum(DB, "maintenance_tasks")
    create_maintenance_tasks(
        [Noop() for _ in range(n)],
        settings=Settings(database_url=url, processor_modules=PROCESSOR_MODULES),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTCREW_")}
    env.update(
        NIGHTCREW_DATABASE_URL=url,
        NIGHTCREW_PROCESSOR_MODULES=",".join(PROCESSOR_MODULES),
        PYTHONPATH=os.pathsep.join(p for p in (str(bl.BENCH_DIR), env.get("PYTHONPATH")) if p),
    )
    nc = [sys.executable, "-m", "nightcrew"]

    def timed(args: list[str], timeout: float, check: bool = True) -> tuple[float, bool]:
        """Run ``procs`` x ``nightcrew ARGS`` at once: seconds until the last exits, and
        whether all exited in time (and, with ``check``, with status 0)."""
        t0 = time.perf_counter()
        running = [
            subprocess.Popen(
                nc + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            for _ in range(procs)
        ]
        ok = True
        for proc in running:
            try:
                _, err = proc.communicate(timeout=max(0.0, t0 + timeout - time.perf_counter()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                ok = False
                continue
            if check and proc.returncode != 0:
                raise RuntimeError(f"nightcrew {' '.join(args)} exited {proc.returncode}:\n{err}")
        return time.perf_counter() - t0, ok

    # The reference's start-up probe, its exit status unchecked as there: where the CLI
    # has no --version it exits 2 after importing itself, which is still the start-up.
    # The fastest of three: the least noisy estimate, and it subtracts the least.
    startup = min(timed(["--version"], 60, check=False)[0] for _ in range(3))
    raw, in_time = timed(["run", "--once"], params["budget_s"])
    took = max(raw - startup, 1e-3)
    done = completed(params)
    return {
        "tasks": n,
        "processes": procs,
        "completed": done,
        "elapsed_s": round(took, 4),
        "tps": round(done / took, 1),
        "raw_s": round(raw, 4),
        "startup_s": round(startup, 4),
        # a start-up longer than the run itself is noise (a busy machine): not a result
        "verified": in_time and done == n and raw > startup,
    }


def scenario_memory(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    install(params)
    n = params["n"]
    bulk_enqueue(params, settings, n)
    analyze(params)
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
    metrics["verified"] = completed(params) == n and metrics["executed"] == n
    return metrics


def scenario_latency(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    from nightcrew_processors import Probe

    from nightcrew import Nightcrew, acreate_maintenance_task, create_maintenance_task

    install(params)
    n, interval, warm = params["n"], params["interval"], params["warmup"]
    s = make_settings(params, settings)
    app = Nightcrew(s)  # one app for the run, as an application keeps one
    children = _spawn("worker-latency", params, settings, 1)
    children.wait_ready()
    children.go()

    def pace(t0: float) -> float:
        return max(0.0, t0 + interval - time.time())

    if settings["enqueue_api"] == "async":

        async def main() -> None:
            await asyncio.sleep(params["settle"])
            for i in range(warm + n):
                if i == warm:
                    await asyncio.sleep(params["settle"])
                t0 = time.time()
                await acreate_maintenance_task(Probe(t0=t0, warm=i < warm), database=app)
                await asyncio.sleep(pace(t0))

        run_async(main(), settings)
        run_async(app.aclose(), settings)
    else:
        time.sleep(params["settle"])
        for i in range(warm + n):
            if i == warm:
                time.sleep(params["settle"])
            t0 = time.time()
            create_maintenance_task(Probe(t0=t0, warm=i < warm), database=app)
            time.sleep(pace(t0))
        app.close()
    (child,) = children.results(timeout=120)
    metrics = bl.latency_summary([start - t0 for t0, start in child["records"]])
    metrics["verified"] = metrics["samples"] == n
    return metrics


def scenario_backlog(params: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Claim throughput with ``pending`` due tasks and ``finished`` completed ones in the table.

    The rows are copies of one task made through the API (so every column is what the
    current schema expects), multiplied by ``INSERT ... SELECT generate_series``.
    """
    from nightcrew_processors import Count

    from nightcrew import create_maintenance_task

    install(params)
    pending, finished, claim = params["pending"], params["finished"], params["claim"]
    s = make_settings(params, settings)
    template = create_maintenance_task(Count(), database=s.database_url, settings=s).id
    cols = [
        c
        for (c,) in _rows(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'maintenance_tasks' AND column_name <> 'id' "
            "ORDER BY ordinal_position"
        )
    ]
    done_overrides = {
        "status": "'COMPLETED'",
        "attempts": "1",
        "started_at": "now()",
        "finished_at": "now()",
        "updated_at": "now()",
        "info": "'{}'",
    }
    col_list = ", ".join(cols)
    done_select = ", ".join(done_overrides.get(c, f"t.{c}") for c in cols)
    plain_select = ", ".join(f"t.{c}" for c in cols)
    t = time.perf_counter()
    bl.sql_exec(
        DB,
        f"INSERT INTO maintenance_tasks ({col_list}) SELECT {done_select} "
        f"FROM maintenance_tasks t CROSS JOIN generate_series(1, {finished}) "
        f"WHERE t.id = {template}",
        f"INSERT INTO maintenance_tasks ({col_list}) SELECT {plain_select} "
        f"FROM maintenance_tasks t CROSS JOIN generate_series(1, {pending - 1}) "
        f"WHERE t.id = {template}",
        "VACUUM ANALYZE maintenance_tasks",
    )
    build_s = time.perf_counter() - t
    counts = dict(_rows("SELECT status, count(*) FROM maintenance_tasks GROUP BY status"))
    children = _spawn("worker-count", params, settings, 1)
    children.wait_ready()
    go = children.go()
    (child,) = children.results()
    elapsed = child["t_claimed"] - child["t_start"]
    return {
        "pending": pending,
        "finished": finished,
        "claimed": child["executed"],
        "elapsed_s": round(elapsed, 4),
        "tps": round(claim / elapsed, 1),
        "build_s": round(build_s, 2),
        "go_lag_ms": round((child["t_start"] - go) * 1000, 2),
        "verified": counts.get("PENDING") == pending
        and counts.get("COMPLETED") == finished
        and child["executed"] >= claim,
    }


def _rows(query: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(bl.pg_url(DB), autocommit=True) as conn:
        return [tuple(r) for r in conn.execute(query).fetchall()]


# ------------------------------------------------------------------ worker children


async def _warm(worker: Any) -> None:
    """Open the worker's first pooled connection before GO, as the peers do (they connect
    before their run loop starts). ``worker.database.async_engine`` is not public API: if
    a refactor moves it, the worker connects after GO instead (its time then includes
    connecting, a little against nightcrew)."""
    from sqlalchemy import text

    engine = getattr(getattr(worker, "database", None), "async_engine", None)
    if engine is None:
        return
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def child_drain(params: dict[str, Any], settings: dict[str, Any]) -> None:
    import nightcrew_processors as procs

    from nightcrew import Worker

    async def main() -> dict[str, Any]:
        worker = Worker(make_settings(params, settings))
        await _warm(worker)
        t_start = await asyncio.to_thread(bl.child_ready_and_wait)
        c0 = time.process_time()
        await worker.run(until_idle=True)
        cpu = time.process_time() - c0
        return {"t_start": t_start, "t_end": time.time(), "executed": procs.executed, "cpu_s": cpu}

    bl.emit(run_async(main(), settings))


def child_latency(params: dict[str, Any], settings: dict[str, Any]) -> None:
    import nightcrew_processors as procs

    from nightcrew import Worker

    async def main() -> dict[str, Any]:
        worker = Worker(make_settings(params, settings))
        await _warm(worker)
        await asyncio.to_thread(bl.child_ready_and_wait)

        def on_record() -> None:
            if len(procs.records) >= params["n"]:
                worker.request_stop()

        procs.on_record = on_record
        await worker.run()
        return {"records": procs.records, "executed": len(procs.records)}

    bl.emit(run_async(main(), settings))


def child_count(params: dict[str, Any], settings: dict[str, Any]) -> None:
    import nightcrew_processors as procs

    from nightcrew import Worker

    claimed_at: list[float] = []

    async def main() -> dict[str, Any]:
        worker = Worker(make_settings(params, settings))
        await _warm(worker)
        t_start = await asyncio.to_thread(bl.child_ready_and_wait)

        def on_record() -> None:
            if procs.counted == params["claim"]:
                claimed_at.append(procs.last_counted_at)
                worker.request_stop()

        procs.on_record = on_record
        await worker.run()
        return {
            "t_start": t_start,
            "t_claimed": claimed_at[0] if claimed_at else time.time(),
            "t_end": time.time(),
            "executed": procs.counted,
        }

    bl.emit(run_async(main(), settings))


SCENARIOS = {
    "enqueue": scenario_enqueue,
    "drain": scenario_drain,
    "burst": scenario_burst,
    "latency": scenario_latency,
    "backlog": scenario_backlog,
    "memory": scenario_memory,
}
CHILDREN = {
    "worker-drain": child_drain,
    "worker-latency": child_latency,
    "worker-count": child_count,
}


def main() -> None:
    ns = bl.scenario_args()
    settings = {**DEFAULTS, **ns.settings}
    params = dict(ns.params)
    tmpdir = None
    if params.get("backend") == "sqlite" and "sqlite_path" not in params:
        tmpdir = tempfile.mkdtemp(prefix="nightcrew-bench-")
        params["sqlite_path"] = os.path.join(tmpdir, "bench.db")
    try:
        if ns.scenario in CHILDREN:
            CHILDREN[ns.scenario](params, settings)
            return
        metrics = SCENARIOS[ns.scenario](params, settings)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    params.pop("sqlite_path", None)
    bl.emit(
        {
            "lib": LIB,
            "scenario": ns.scenario,
            "params": params,
            "settings": settings,
            "versions": versions(),
            "metrics": metrics,
        }
    )


if __name__ == "__main__":
    main()
