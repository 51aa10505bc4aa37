"""Observability's cost and reach, on PostgreSQL (stand-alone; nightcrew's public API).

    .venv/bin/python bench/observe.py                  # both parts, full sizes
    .venv/bin/python bench/observe.py --only drain --pairs 5
    .venv/bin/python bench/observe.py --only sse --clients 100

**drain**: the tuned drain (20,000 no-op tasks, one worker process at concurrency 500)
with metrics and live events on (``NIGHTCREW_METRICS`` and ``NIGHTCREW_PUBLISH_EVENTS``
true, and a listener following every event in this process, so the NOTIFYs are really
received; it reads them with ``LiveStream.batches()``, as the SSE route does) against
both off, in alternating pairs (on/off, then off/on, ...) in the same run: the overhead is
1 - median(on) / median(off). Each drain has a fresh database, the tasks enqueued in bulk
and ``VACUUM ANALYZE`` first; the rate is tasks / the worker's own
``run(until_idle=True)`` time.

**sse**: ``nightcrew serve`` (a real uvicorn) with ``--clients`` Server-Sent Events clients,
each following one task that reports progress every 0.1 s (a worker process of their own),
while another worker process drains 20,000 no-op tasks. A report's message is the
``time.time()`` it was made; a client's delay is when it parsed the event minus that (one
host, one clock). Delays are counted for reports made while the drain ran.

The machine is shared: the load average is printed before and after each part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PG_SERVER = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB = "bench_observe"
URL = f"{PG_SERVER.rstrip('/')}/{DB}"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fresh_database() -> None:
    import psycopg

    from nightcrew.migrate import upgrade

    with psycopg.connect(f"{PG_SERVER.rstrip('/')}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    upgrade(URL)


def settings(**values: Any) -> Any:
    from nightcrew import Settings

    return Settings(database_url=URL, processor_modules=["observe_tasks"], **values)


def enqueue_nothing(n: int) -> None:
    from observe_tasks import Nothing

    from nightcrew import Nightcrew, create_maintenance_tasks

    with Nightcrew(settings()) as app:
        for start in range(0, n, 20_000):
            create_maintenance_tasks([Nothing()] * min(20_000, n - start), database=app)


def vacuum() -> None:
    import psycopg

    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(ROOT / "src"), out.get("PYTHONPATH", "")])
    out["NIGHTCREW_DATABASE_URL"] = URL
    out["NIGHTCREW_PROCESSOR_MODULES"] = "observe_tasks"
    out.update(extra)
    return out


# ---------------------------------------------------------------- drain


def child_drain(mode: str, concurrency: int) -> None:
    """A worker process: drain what is due, print its rate."""
    from nightcrew import Worker
    from nightcrew.loop import run_loop

    on = mode in ("on", "quiet")
    s = settings(
        concurrency=concurrency,
        poll_interval=0.5,
        metrics=on or mode == "metrics",
        publish_events=on or mode == "publish",
    )

    async def main() -> dict[str, Any]:
        worker = Worker(s)
        worker.app.metrics.start()  # as when scraped (a worker nobody scrapes counts nothing)
        t0, c0 = time.perf_counter(), time.process_time()
        await worker.run(until_idle=True)
        return {
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
            "processed": worker.processed,
        }

    print(json.dumps(run_loop(main(), s)), flush=True)


class Listener:
    """Follows every event of the database in a thread of its own (the "on" runs' reader)."""

    def __init__(self) -> None:
        self.events = 0
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        self.ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from nightcrew import Nightcrew
        from nightcrew.events import stream

        async def main() -> None:
            async with Nightcrew(settings()) as app, stream(app) as events:

                async def follow() -> None:  # a batch at a time, as the SSE route reads
                    async for batch in events.batches():
                        self.events += len(batch)

                # Not a timeout around each anext: a cancelled anext closes the stream.
                following = asyncio.create_task(follow())
                self.ready.set()
                # The stop flag is a threading.Event (set from the benchmark's thread).
                stopped = asyncio.ensure_future(asyncio.to_thread(self._stop.wait))
                await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)

        asyncio.run(main())


def drain_once(mode: str, n: int, concurrency: int) -> dict[str, Any]:
    fresh_database()
    enqueue_nothing(n)
    vacuum()
    argv = [sys.executable, __file__, "_drain", mode, str(concurrency)]

    def run() -> dict[str, Any]:
        out = subprocess.run(argv, env=env(), capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    if mode == "on":
        with Listener() as listener:
            time.sleep(1.5)  # as a hub does: publishers notice a new receiver within 1 s
            result = run()
            time.sleep(0.5)
        result["events_received"] = listener.events
    else:
        result = run()
    result["rate"] = n / result["seconds"]
    result["cpu_us_per_task"] = result["cpu_seconds"] / n * 1e6
    return result


MODES = {
    "off": "metrics and events off",
    "on": "metrics and events on, a listener following every event",
    "quiet": "metrics and events on, nobody listening",
}


def part_drain(n: int, concurrency: int, pairs: int) -> dict[str, Any]:
    """Rounds of (on, quiet, off) in rotating order; the rate is wall-clock tasks/s, the
    CPU cost the worker process's CPU time per task (all its threads): on a shared machine
    the second is the steadier measure of what the features cost."""
    print(f"drain: {n} no-op tasks, concurrency {concurrency}, {pairs} rounds; load {load()}")
    found: dict[str, dict[str, list[float]]] = {m: {"rate": [], "cpu": []} for m in MODES}
    order = list(MODES)
    for i in range(pairs):
        for mode in order[i % 3 :] + order[: i % 3]:
            r = drain_once(mode, n, concurrency)
            found[mode]["rate"].append(r["rate"])
            found[mode]["cpu"].append(r["cpu_us_per_task"])
            extra = f", {r['events_received']} events received" if mode == "on" else ""
            print(
                f"  round {i + 1} {mode:>5}: {r['rate']:,.0f} tasks/s, "
                f"{r['cpu_us_per_task']:.1f} us CPU/task{extra}"
            )
    out: dict[str, Any] = {}
    off_rate = statistics.median(found["off"]["rate"])
    off_cpu = statistics.median(found["off"]["cpu"])
    for mode, label in MODES.items():
        rate = statistics.median(found[mode]["rate"])
        cpu = statistics.median(found[mode]["cpu"])
        out[mode] = {
            "rates": found[mode]["rate"],
            "cpu_us": found[mode]["cpu"],
            "median_rate": rate,
            "median_cpu_us": cpu,
            "rate_overhead": 1 - rate / off_rate,
            "cpu_overhead": cpu / off_cpu - 1,
        }
        print(
            f"  {mode:>5} ({label}): median {rate:,.0f} tasks/s ({1 - rate / off_rate:+.1%} "
            f"slower), {cpu:.1f} us CPU/task ({cpu / off_cpu - 1:+.1%})"
        )
    print(f"  load {load()}")
    return out


# ---------------------------------------------------------------- sse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def follow(
    url: str, token: str, task_id: int, delays: list[tuple[float, float]], stop: asyncio.Event
) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    params = {"task": str(task_id), "kind": "progress"}
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(None)) as client,
        client.stream("GET", f"{url}/api/v1/events", params=params, headers=headers) as r,
    ):
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                now = time.time()
                data = json.loads(line[6:])
                made = float(data["message"])
                delays.append((made, now - made))
            if stop.is_set():
                return


def part_sse(clients: int, n: int, concurrency: int) -> dict[str, Any]:
    from observe_tasks import Ticker

    from nightcrew import Nightcrew, actions, create_maintenance_task

    print(f"sse: {clients} clients, progress every 0.1 s, while {n} tasks drain; load {load()}")
    fresh_database()
    with Nightcrew(settings()) as app:
        _, token = actions.create_token(app, f"bench-{secrets.token_hex(3)}", "viewer")
        seconds = 25.0
        ids = [
            create_maintenance_task(
                Ticker(seconds=seconds, interval=0.1), database=app, queue="progress", inactive=True
            ).id
            for _ in range(clients)
        ]
    enqueue_nothing(n)
    vacuum()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "nightcrew", "serve", "--port", str(port), "--log-level", "warning"],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress_worker = drain_worker = None
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(server.stderr.read() if server.stderr else "no server")
            time.sleep(0.1)
        delays: list[tuple[float, float]] = []
        window: dict[str, float] = {}

        async def main() -> None:
            nonlocal progress_worker, drain_worker
            stop = asyncio.Event()
            followers = [
                asyncio.create_task(follow(url, token, task_id, delays, stop)) for task_id in ids
            ]
            await asyncio.sleep(2.0)  # every client connected and subscribed
            progress_worker = subprocess.Popen(  # noqa: ASYNC220 - started once, returns at once
                [sys.executable, "-m", "nightcrew", "worker", "-q", "progress", "-c", str(clients)],
                env=env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            with Nightcrew(settings()) as app:
                for task_id in ids:
                    actions.activate(app, task_id, actor="bench")
            await asyncio.sleep(3.0)  # reports flowing before the drain starts
            window["start"] = time.time()
            drain = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "_drain",
                "on",
                str(concurrency),
                env=env(),
                stdout=subprocess.DEVNULL,
            )
            await drain.wait()
            window["end"] = time.time()
            await asyncio.sleep(1.0)
            stop.set()
            for f in followers:
                f.cancel()
            await asyncio.gather(*followers, return_exceptions=True)

        asyncio.run(main())
    finally:
        for proc in (progress_worker, server):
            if proc is not None:
                proc.send_signal(signal.SIGINT)
        for proc in (progress_worker, server):
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    during = sorted(d for made, d in delays if window["start"] <= made <= window["end"])
    if not during:
        raise RuntimeError("no progress event received during the drain")

    def pct(p: float) -> float:
        return during[min(len(during) - 1, int(p * len(during)))] * 1000

    result = {
        "clients": clients,
        "events": len(during),
        "drain_seconds": window["end"] - window["start"],
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": during[-1] * 1000,
    }
    print(
        f"  {result['events']} progress events during a {result['drain_seconds']:.1f} s drain: "
        f"p50 {result['p50_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms, "
        f"p99 {result['p99_ms']:.0f} ms, max {result['max_ms']:.0f} ms; load {load()}"
    )
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_drain":
        sys.path.insert(0, str(BENCH))
        child_drain(sys.argv[2], int(sys.argv[3]))
        return
    sys.path.insert(0, str(BENCH))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="drain,sse")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    parts = set(args.only.split(","))
    out: dict[str, Any] = {"load_before": load()}
    if "drain" in parts:
        out["drain"] = part_drain(args.n, args.concurrency, args.pairs)
    if "sse" in parts:
        out["sse"] = part_sse(args.clients, args.n, args.concurrency)
    out["load_after"] = load()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
