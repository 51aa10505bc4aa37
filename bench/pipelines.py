"""Pipelines, measured: a wide fan-out with a fan-in, a long chain's hand-off, building.

    .venv/bin/python bench/pipelines.py [--steps 10000] [--chain 200]

On a fresh PostgreSQL database each time (and SQLite for the wide drain), nightcrew alone:

- wide: 10,000 independent steps plus one fan-in step, drained by one worker at
  concurrency 500, against a plain drain of 10,000 tasks in the same run (target: the
  pipeline at >= 0.7x the plain rate);
- chain: 200 steps each depending on the previous, one idle worker at default settings:
  the hand-off from one step's finish to the next step's start (its ``finished_at`` to the
  next one's ``started_at``), p50 and p99 (target p50 <= 5 ms on PostgreSQL);
- build: building and enqueueing a 10,000-step pipeline, steps/s, against one bulk enqueue
  of 10,000 tasks.

Prints one line per figure and the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from nightcrew import Nightcrew, Pipeline, Settings, Worker, actions, create_maintenance_tasks
from nightcrew.migrate import upgrade
from nightcrew.processors import Noop

ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432") + "/postgres"


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            upgrade(url)
            yield url
        return
    name = f"bench_pipelines_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def settings(url: str, **extra: object) -> Settings:
    return Settings(database_url=url, processor_modules=["nightcrew.processors"], **extra)  # type: ignore[arg-type]


async def drain(app: Nightcrew, concurrency: int) -> float:
    worker = Worker(app=app, concurrency=concurrency)
    started = time.perf_counter()
    await worker.run(until_idle=True)
    return time.perf_counter() - started


def wide(kind: str, steps: int) -> None:
    with database(kind) as url, Nightcrew(settings(url)) as app:
        create_maintenance_tasks([Noop() for _ in range(steps)], database=app)
        plain = asyncio.run(drain(app, 500))
    with database(kind) as url, Nightcrew(settings(url)) as app:
        p = Pipeline("wide")
        fan = [p.add(Noop(), name=f"s{i}") for i in range(steps)]
        p.add(Noop(), name="fan-in", depends_on=fan)
        pipeline_id = p.enqueue(database=app)
        took = asyncio.run(drain(app, 500))
        status = actions.get_pipeline(app, pipeline_id).pipeline.status
    plain_rate, rate = steps / plain, (steps + 1) / took
    print(
        f"{kind} wide: {steps:,} steps + fan-in drained at {rate:,.0f} steps/s; plain drain "
        f"{plain_rate:,.0f} tasks/s; ratio {rate / plain_rate:.2f} (target >= 0.7); {status}"
    )


def chain(length: int) -> None:
    with database("postgresql") as url, Nightcrew(settings(url)) as app:
        p = Pipeline("chain")
        previous = p.add(Noop(), name="c0")
        for i in range(1, length):
            previous = p.add(Noop(), name=f"c{i}", depends_on=[previous])
        pipeline_id = p.enqueue(database=app)
        asyncio.run(drain(app, Settings().concurrency))
        steps = sorted(actions.get_pipeline(app, pipeline_id).steps, key=lambda s: s.id)
    gaps = [
        (after.started_at - before.finished_at).total_seconds() * 1000
        for before, after in itertools.pairwise(steps)
        if before.finished_at and after.started_at
    ]
    gaps.sort()
    p99 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))]
    print(
        f"postgresql chain: {length} steps, hand-off finish -> next start p50 "
        f"{statistics.median(gaps):.2f} ms, p99 {p99:.2f} ms (target p50 <= 5 ms)"
    )


def build(steps: int) -> None:
    with database("postgresql") as url, Nightcrew(settings(url)) as app:
        t = time.perf_counter()
        create_maintenance_tasks([Noop() for _ in range(steps)], database=app)
        bulk = steps / (time.perf_counter() - t)
        t = time.perf_counter()
        p = Pipeline("build")
        fan = [p.add(Noop(), name=f"s{i}") for i in range(steps)]
        p.add(Noop(), name="fan-in", depends_on=fan)
        p.enqueue(database=app)
        rate = (steps + 1) / (time.perf_counter() - t)
    print(
        f"postgresql build: a {steps:,}-step pipeline built and enqueued at {rate:,.0f} "
        f"steps/s; bulk enqueue of {steps:,} tasks {bulk:,.0f} tasks/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--chain", type=int, default=200)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for kind in ("postgresql", "sqlite"):
        wide(kind, args.steps)
    chain(args.chain)
    build(args.steps)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
