"""Bulk enqueue rate of nightcrew alone, on PostgreSQL and on SQLite.

    .venv/bin/python bench/bulk_insert.py [--n 10000] [--repeat 5]

One ``create_maintenance_tasks`` call of N no-op tasks into a fresh schema on each
database (PostgreSQL: the database ``bench_bulk`` on ``BENCH_PG``; SQLite: a file in a
temporary directory, WAL), after one warm-up enqueue; prints the median seconds and
tasks/s of the repetitions. The side-by-side comparison with the peers is ``run.py``'s
enqueue scenario; this one exists for the embedded database, where no peer runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import benchlib as bl

from nightcrew import Database, Settings, create_maintenance_task, create_maintenance_tasks
from nightcrew.migrate import upgrade
from nightcrew.processors import Noop

DB = "bench_bulk"


def measure(url: str, n: int) -> float:
    upgrade(url)
    settings = Settings(database_url=url)
    database = Database(url)
    try:
        create_maintenance_task(Noop(), database=database, settings=settings)  # warm up
        processors = [Noop() for _ in range(n)]
        started = time.perf_counter()
        ids = create_maintenance_tasks(processors, database=database, settings=settings)
        elapsed = time.perf_counter() - started
    finally:
        database.dispose()
    assert len(ids) == n
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    results: dict[str, list[float]] = {"postgresql": [], "sqlite": []}
    for _ in range(args.repeat):
        bl.recreate_database(DB)
        results["postgresql"].append(measure(bl.pg_url(DB), args.n))
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"].append(measure(f"sqlite:///{Path(tmp) / 'bulk.db'}", args.n))
    for name, times in results.items():
        median = statistics.median(times)
        print(
            f"{name:10} {args.n:,} tasks in one call: median {median:.3f} s "
            f"({args.n / median:,.0f} tasks/s) over {args.repeat} runs "
            f"[{', '.join(f'{t:.3f}' for t in times)}]"
        )


if __name__ == "__main__":
    main()
