"""One-at-a-time enqueue against the floor under it: a bare psycopg INSERT and commit.

    .venv/bin/python bench/single_enqueue.py               # 5 alternating rounds of 2,000
    .venv/bin/python bench/single_enqueue.py --rounds 9

Each round times, in rotating order, 2,000 of each into a fresh database on the local
PostgreSQL: ``nightcrew``, `create_maintenance_task` (one committed transaction each, the
application's one-task-per-request path); ``psycopg``, a one-row INSERT of the same row and
parameters on one autocommit psycopg connection (one round trip and one commit, the least a
durable enqueue can be); ``pooled``, that INSERT on a connection borrowed from nightcrew's own
autocommit pool for each call, as `create_maintenance_task` borrows one. All wait for the same
WAL flush at each commit: ``pooled`` minus ``psycopg`` is the pool's cost per call, and
``nightcrew`` minus ``pooled`` the rest of nightcrew's. Medians of the rounds, calls/s and µs
of CPU per call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "src")]

SERVER = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
DB = "bench_single_enqueue"
URL = f"{SERVER}/{DB}"
N = 2_000
#: The row nightcrew writes, its values sent as parameters as nightcrew sends them.
ROW = (
    "INSERT INTO maintenance_tasks (status, processor_type, processor_json, queue, priority, "
    "delay, start_at, attempts, max_attempts, waiting_on, created_at, updated_at, rescues) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)


def fresh() -> None:
    import psycopg

    from nightcrew.migrate import upgrade

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    upgrade(URL)


def timed(fn: object) -> tuple[float, float]:
    """(calls/s, µs of CPU per call) of N calls of ``fn``."""
    assert callable(fn)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(N):
        fn()
    return N / (time.perf_counter() - t0), (time.process_time() - c0) / N * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import psycopg
    from nightcrew_processors import Noop

    from nightcrew import Nightcrew, Settings, create_maintenance_task

    fresh()
    found: dict[str, list[tuple[float, float]]] = {"nightcrew": [], "pooled": [], "psycopg": []}
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with (
        Nightcrew(Settings(database_url=URL, processor_modules=["nightcrew_processors"])) as app,
        psycopg.connect(URL, autocommit=True) as conn,
    ):

        def nightcrew_call() -> None:
            create_maintenance_task(Noop(), database=app)

        def values() -> tuple[object, ...]:
            now = datetime.now(UTC)
            return ("PENDING", "nightcrew_processors.Noop", "{}", "default", 0, 0, now, 0, 1, 0,
                    now, now, 0)  # fmt: skip

        def psycopg_call() -> None:  # autocommit: the INSERT is its own transaction
            conn.execute(ROW, values()).fetchone()

        pool = app.store.database.sync_autocommit_engine

        def pooled_call() -> None:  # the same, on a connection borrowed from nightcrew's pool
            raw = pool.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute(ROW, values())
                cursor.fetchone()
                cursor.close()
            finally:
                raw.close()

        for _ in range(10):  # connections open, statements prepared
            nightcrew_call(), pooled_call(), psycopg_call()
        order = [("nightcrew", nightcrew_call), ("pooled", pooled_call), ("psycopg", psycopg_call)]
        for r in range(args.rounds):
            for name, fn in order[r % 3 :] + order[: r % 3]:
                rate, cpu = timed(fn)
                found[name].append((rate, cpu))
                print(f"  round {r + 1} {name:>9}: {rate:7,.0f} calls/s, {cpu:5.0f} us CPU/call")
    for name, rows in found.items():
        rate = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(f"  median {name:>9}: {rate:7,.0f} calls/s, {cpu:5.0f} us CPU/call")
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
