"""Schedules and upkeep on PostgreSQL: the figures of issue 10, printed.

    .venv/bin/python bench/schedules.py              # all three scenarios
    .venv/bin/python bench/schedules.py --only due   # due | idle | prune
    .venv/bin/python bench/schedules.py --json out.json

Each scenario gets a database of its own (``bench_schedules``, dropped and created again on
``BENCH_PG``, default ``postgresql://postgres@127.0.0.1:5432``), migrated with ``nightcrew
db upgrade``'s code. Workers are real ``python -m nightcrew worker`` processes at default
settings but for their concurrency.

- **due**: 10,000 schedules (every hour, a no-op processor) whose ``next_run_at`` is the
  same whole second a few seconds ahead, and 4 worker processes already running. Every
  schedule must get exactly one task (the unique (schedule, tick) key, and a check that
  each schedule's ``next_run_at`` moved one interval). The lag of a tick is its task's
  ``created_at`` (taken by the ticking worker just before the insert) minus its
  ``scheduled_for``; p50/p99/max are reported, and when the last task became visible to
  a poller (every 20 ms) as an upper bound including the commit.
- **idle**: 1,000 schedules, none due for a day, and one worker for 10 s. Counted inside
  the worker process (``--child-idle``; pg_stat_statements needs a server restart to load,
  so it is not used): every statement the worker sends through SQLAlchemy (an event on
  its engines: the ticker's, the registry's...), every hot-path statement (a wrapper
  around the store's raw-driver ``_fetch``: claims, heartbeats, rescues), and the
  ticker's own counters; and, from the server, the bench database's committed
  transactions (``pg_stat_database.xact_commit``) over the same time.
- **prune**: 1,000,000 COMPLETED tasks 60 days old; three drains of 50,000 no-op tasks
  each by one worker process (concurrency 200) without pruning, then three more while
  `nightcrew.upkeep.prune_finished` (1,000 rows per statement, at least 50 ms and twice
  the last batch's time between, the defaults) deletes the million. Reported: the drains'
  rates, the ratio of the medians, and the prune's rows/s during the drains and over its
  whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from benchlib import (  # noqa: E402
    latency_summary,
    pg_url,
    recreate_database,
    sql_exec,
    sql_scalar,
)

DB = "bench_schedules"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def fresh_database() -> str:
    from nightcrew.migrate import upgrade

    recreate_database(DB)
    url = pg_url(DB)
    upgrade(url)
    return url


def worker_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTCREW_")}
    env["NIGHTCREW_DATABASE_URL"] = url
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def start_workers(
    url: str, n: int, concurrency: int, logs: Path, queues: str | None = None
) -> list[subprocess.Popen[bytes]]:
    procs = []
    extra = ["--queues", queues] if queues else []
    for i in range(n):
        with open(logs / f"worker-{i}.log", "wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "nightcrew",
                        "worker",
                        "--concurrency",
                        str(concurrency),
                        *extra,
                    ],
                    env=worker_env(url),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def add_schedules(url: str, n: int, first_run: datetime | None) -> None:
    """``n`` hourly no-op schedules; with ``first_run``, all due at that instant."""
    from nightcrew import Nightcrew, Schedule, Settings
    from nightcrew.processors import Noop
    from nightcrew.schedules.declare import define
    from nightcrew.store import schedule_ops

    with Nightcrew(Settings(database_url=url)) as app:
        definitions = [
            define(Schedule(f"bench-{i:05d}", every=3600, processor=Noop()), app.loader)
            for i in range(n)
        ]
        for start in range(0, n, 2000):
            app.store.run(schedule_ops.add_schedules, definitions[start : start + 2000])
    if first_run is not None:
        sql_exec(
            DB,
            f"UPDATE nightcrew_schedules SET next_run_at = '{first_run.isoformat()}' "
            "WHERE name LIKE 'bench-%'",
        )
    sql_exec(DB, "VACUUM ANALYZE")


# ---------------------------------------------------------------- due


def scenario_due(
    logs: Path, *, run_tasks: bool, schedules: int = 10_000, workers: int = 4
) -> dict[str, Any]:
    """``run_tasks`` False: the workers serve another queue, so they only tick (the cost of
    ticking alone); True: they also run the 10,000 tasks as they appear (a real worker)."""
    url = fresh_database()
    what = "ticking and running the tasks" if run_tasks else "ticking only"
    log(f"due: {schedules} schedules, {workers} worker processes {what}; load {loadavg()}")
    tick = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    add_schedules(url, schedules, tick)
    procs = start_workers(url, workers, 50, logs, None if run_tasks else "elsewhere")
    import psycopg

    seen_all: float | None = None
    load_at_tick = ""
    try:
        with psycopg.connect(pg_url(DB), autocommit=True) as conn:
            while datetime.now(UTC) < tick:
                time.sleep(0.01)
            load_at_tick = loadavg()
            deadline = time.time() + 120
            while time.time() < deadline:
                (count,) = conn.execute(
                    "SELECT count(*) FROM maintenance_tasks WHERE schedule_name IS NOT NULL"
                ).fetchone() or (0,)
                if count >= schedules:
                    seen_all = time.time() - tick.timestamp()
                    break
                time.sleep(0.02)
            time.sleep(1)  # any second task for a tick would have been written by now
            rows = conn.execute(
                "SELECT schedule_name, scheduled_for, created_at FROM maintenance_tasks "
                "WHERE schedule_name LIKE 'bench-%'"
            ).fetchall()
            advanced = conn.execute(
                "SELECT count(*) FROM nightcrew_schedules WHERE name LIKE 'bench-%%' "
                "AND next_run_at = %s AND last_task_id IS NOT NULL",
                (tick + timedelta(hours=1),),
            ).fetchone()
    finally:
        stop_workers(procs)
    names = [r[0] for r in rows]
    lags = [(r[2] - r[1]).total_seconds() for r in rows]
    summary = latency_summary(lags)
    result = {
        "schedules": schedules,
        "workers": workers,
        "workers_run_the_tasks": run_tasks,
        "tasks": len(rows),
        "distinct_schedules": len(set(names)),
        "exactly_once": len(rows) == len(set(names)) == schedules,
        "schedules_advanced": advanced[0] if advanced else 0,
        "ticks_all_at": tick.isoformat(),
        "lag_p50_s": round(summary["p50_ms"] / 1000, 3),
        "lag_p99_s": round(summary["p99_ms"] / 1000, 3),
        "lag_max_s": round(summary["max_ms"] / 1000, 3),
        "last_visible_after_s": None if seen_all is None else round(seen_all, 3),
        "load_at_tick": load_at_tick,
    }
    log(f"due: {json.dumps(result)}")
    return result


# ---------------------------------------------------------------- idle


def child_idle(url: str, seconds: float) -> None:
    """Run in a process of its own: one worker, counting what it sends."""
    from sqlalchemy import event

    from nightcrew import Settings, Worker
    from nightcrew.worker.ticker import Ticker

    worker = Worker(Settings(database_url=url), concurrency=10)
    counts: dict[str, int] = {"sqlalchemy": 0}
    engines = [worker.app.database.sync_engine, worker.app.database.sync_autocommit_engine]
    engines += [
        worker.app.database.async_engine.sync_engine,
        worker.app.database.async_autocommit_engine.sync_engine,
    ]
    for engine in {id(e): e for e in engines}.values():

        @event.listens_for(engine, "before_cursor_execute")
        def _count(*_: Any) -> None:
            counts["sqlalchemy"] += 1

    fetch = worker.store._fetch

    async def counted(role: str, sql: str, params: dict[str, Any]) -> list[Any]:
        key = f"hot:{role}"
        counts[key] = counts.get(key, 0) + 1
        return await fetch(role, sql, params)

    worker.store._fetch = counted  # type: ignore[method-assign]
    ticker = next(s for s in worker.services if isinstance(s, Ticker))

    async def main() -> dict[str, Any]:
        running = asyncio.create_task(worker.run())
        while ticker.synced is None:  # noqa: ASYNC110 - a counter of another service
            await asyncio.sleep(0.05)
        await asyncio.sleep(2)  # start-up done (sync, first rescue, registry)
        before = dict(counts)
        probes, passes = ticker.probes, ticker.passes
        xacts = sql_scalar(DB, f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{DB}'")
        started = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - started
        after, probes_after = dict(counts), ticker.probes
        await asyncio.sleep(1.2)  # server statistics are flushed within a second
        xacts_after = sql_scalar(
            DB, f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{DB}'"
        )
        worker.request_stop()
        await running
        sent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        return {
            "seconds": round(elapsed, 2),
            "poll_interval": worker.settings.poll_interval,
            "ticker_queries_per_s": round((probes_after - probes) / elapsed, 2),
            "ticker_passes": ticker.passes - passes,
            "worker_statements_per_s": round(sum(sent.values()) / elapsed, 2),
            "by_kind_per_s": {k: round(v / elapsed, 2) for k, v in sorted(sent.items())},
            # Over the window and the 1.2 s after it; less this bench's own two reads.
            "server_transactions_per_s": round((xacts_after - xacts - 2) / (elapsed + 1.2), 2),
        }

    print("RESULT " + json.dumps(asyncio.run(main())), flush=True)


def scenario_idle(seconds: float = 10.0) -> dict[str, Any]:
    url = fresh_database()
    log(f"idle: 1000 schedules none due, one worker, {seconds:g} s; load {loadavg()}")
    add_schedules(url, 1000, datetime.now(UTC) + timedelta(days=1))
    out = subprocess.run(
        [sys.executable, __file__, "--child-idle", url, str(seconds)],
        env=worker_env(url),
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"idle child failed:\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result["load_after"] = loadavg()
    log(f"idle: {json.dumps(result)}")
    return result


# ---------------------------------------------------------------- prune


def fill_finished(n: int) -> None:
    sql_exec(
        DB,
        "INSERT INTO maintenance_tasks (status, processor_type, processor_json, queue, "
        "priority, delay, start_at, attempts, max_attempts, waiting_on, created_at, "
        "updated_at, started_at, finished_at, info) "
        "SELECT 'COMPLETED', 'nightcrew.processors.Noop', '{}', 'default', 0, 0, "
        "now() - interval '61 days', 1, 1, 0, now() - interval '61 days', "
        "now() - interval '60 days' + g * interval '1 ms', now() - interval '60 days', "
        "now() - interval '60 days', '{}' "
        f"FROM generate_series(1, {n}) AS g",
        "VACUUM ANALYZE maintenance_tasks",
    )


def enqueue(url: str, n: int) -> tuple[int, int]:
    from nightcrew import Nightcrew, Settings, create_maintenance_tasks
    from nightcrew.processors import Noop

    with Nightcrew(Settings(database_url=url)) as app:
        ids: list[int] = []
        for _ in range(0, n, 10_000):
            ids += create_maintenance_tasks([Noop() for _ in range(10_000)], database=app)
    return min(ids), max(ids)


def drain(url: str, n: int, logs: Path, name: str) -> tuple[float, float, float]:
    """Enqueue ``n`` no-op tasks, drain them with one worker; (rate, start, end) epochs."""
    first, last = enqueue(url, n)
    (proc,) = start_workers(url, 1, 200, logs)
    import psycopg

    try:
        with psycopg.connect(pg_url(DB), autocommit=True) as conn:
            deadline = time.time() + 600
            while time.time() < deadline:
                (done,) = conn.execute(
                    "SELECT count(*) FROM maintenance_tasks WHERE id BETWEEN %s AND %s "
                    "AND status = 'COMPLETED'",
                    (first, last),
                ).fetchone() or (0,)
                if done >= n:
                    break
                time.sleep(0.05)
            began, ended = conn.execute(
                "SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)) "
                "FROM maintenance_tasks WHERE id BETWEEN %s AND %s",
                (first, last),
            ).fetchone() or (0, 0)
    finally:
        stop_workers([proc])
    began, ended = float(began), float(ended)
    rate = n / (ended - began)
    log(f"prune: drain {name}: {n} tasks in {ended - began:.2f} s = {rate:.0f}/s")
    return rate, began, ended


def scenario_prune(
    logs: Path, finished: int = 1_000_000, tasks: int = 50_000, rounds: int = 3
) -> dict[str, Any]:
    url = fresh_database()
    log(f"prune: filling {finished} finished tasks; load {loadavg()}")
    fill_finished(finished)
    # One drain lasts about two seconds, so one pair of them is at the mercy of a noisy
    # second: three drains alone, then three while the prune runs, and the medians.
    alone = [drain(url, tasks, logs, f"alone {i + 1}")[0] for i in range(rounds)]
    baseline = statistics.median(alone)
    sql_exec(DB, "VACUUM ANALYZE maintenance_tasks")

    from nightcrew import Nightcrew, Settings
    from nightcrew.upkeep import Retention, prune_finished

    progress: list[tuple[float, int]] = []

    async def pruning() -> Any:
        async with Nightcrew(Settings(database_url=url)) as app:
            started = time.time()
            report = await prune_finished(app.store, Retention())  # the defaults
            return report, started, time.time()

    holder: dict[str, Any] = {}

    def run_prune() -> None:
        holder["result"] = asyncio.run(pruning())

    import threading

    def watch() -> None:
        # How many old rows are left, read cheaply: the fill gave them ids 1..finished in
        # updated_at order, and the prune deletes oldest first, so the oldest remaining
        # row's id says it. (A count(*) here was a parallel sequential scan of the
        # million-row table twice a second, which slowed the drain more than the prune did.)
        import psycopg

        with psycopg.connect(pg_url(DB), autocommit=True) as conn:
            while "result" not in holder:
                row = conn.execute(
                    "SELECT id, updated_at < now() - interval '30 days' FROM maintenance_tasks "
                    "WHERE status = 'COMPLETED' ORDER BY updated_at LIMIT 1"
                ).fetchone()
                left = finished - int(row[0]) + 1 if row and row[1] else 0
                progress.append((time.time(), left))
                time.sleep(0.25)

    pruner = threading.Thread(target=run_prune)
    watcher = threading.Thread(target=watch)
    log(f"prune: pruning {finished} rows while a drain runs; load {loadavg()}")
    pruner.start()
    watcher.start()
    time.sleep(1)  # the prune is under way when the drain starts
    windows = []
    for i in range(rounds):
        if "result" in holder:
            break  # the prune is over: no more drains "while pruning"
        windows.append(drain(url, tasks, logs, f"while pruning {i + 1}"))
    pruner.join()
    watcher.join()
    report, p_started, p_ended = holder["result"]
    if windows and p_ended < windows[-1][2]:
        windows.pop()  # the prune ended during that drain
    if not windows:
        raise SystemExit("prune: the prune ended before a drain could run beside it")

    def remaining_at(moment: float) -> int:
        best = min(progress, key=lambda p: abs(p[0] - moment))
        return best[1]

    with_prune = statistics.median(w[0] for w in windows)
    during = sum(remaining_at(b) - remaining_at(e) for _, b, e in windows)
    drained = sum(e - b for _, b, e in windows)
    result = {
        "finished_rows": finished,
        "drain_tasks": tasks,
        "drain_rates_alone_per_s": [round(r) for r in alone],
        "drain_rates_while_pruning_per_s": [round(w[0]) for w in windows],
        "drain_rate_alone_per_s": round(baseline),
        "drain_rate_while_pruning_per_s": round(with_prune),
        "drain_ratio": round(with_prune / baseline, 3),
        "pruned": report.total,
        "prune_batches": report.batches,
        "prune_seconds": round(p_ended - p_started, 2),
        "prune_rows_per_s_overall": round(report.total / (p_ended - p_started)),
        "prune_rows_per_s_during_drain": round(during / drained) if drained > 0 else None,
        "load_after": loadavg(),
    }
    log(f"prune: {json.dumps(result)}")
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-idle":
        child_idle(sys.argv[2], float(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", choices=["due", "idle", "prune"], action="append")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--logs", type=Path, default=Path("/tmp/nightcrew-bench-schedules"))
    args = ap.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    chosen = args.only or ["due", "idle", "prune"]
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "load_at_start": loadavg(),
    }
    if "due" in chosen:
        results["due_ticking_only"] = scenario_due(args.logs, run_tasks=False)
        results["due"] = scenario_due(args.logs, run_tasks=True)
    if "idle" in chosen:
        results["idle"] = scenario_idle()
    if "prune" in chosen:
        results["prune"] = scenario_prune(args.logs)
    results["load_at_end"] = loadavg()
    print()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
