"""Observability's cost and reach, on PostgreSQL (stand-alone; nightcrew's public API).

    .venv/bin/python bench/observe.py                  # both parts, full sizes
    .venv/bin/python bench/observe.py --only drain --pairs 5
    .venv/bin/python bench/observe.py --only sse --clients 100

**drain**: the tuned drain (20,000 no-op tasks, one worker process at concurrency 500)
with metrics and live events on (``NIGHTCREW_METRICS`` and ``NIGHTCREW_PUBLISH_EVENTS``
true, and a listener following every event in this process, so the NOTIFYs are really
received; it takes them with ``LiveStream.batches()``, as the SSE route does, and counts
each batch) against both off, in rotating rounds in the same run: the overhead is
1 - median(on) / median(off), with a 90 % bootstrap interval (`interval`). Two more modes
in the same rounds: **read**, the listener reading every event of each batch as a
`LiveEvent` (which then are built: a batch builds its events when they are read), and
**quiet**, nobody listening (so the publishers send nothing). Each drain has a fresh
database, the tasks enqueued in bulk and ``VACUUM ANALYZE`` first; the rate is tasks /
the worker's own ``run(until_idle=True)`` time.

The same drains are also *accounted*: the CPU the features themselves used in each drain
(the worker's metrics and publisher, timed per call; the listener's thread; PostgreSQL's
backends that send and receive the events, from ``/proc/<pid>/schedstat``) against the
rest of that drain's CPU (the worker process and its PostgreSQL backends). Both are
measured in the same second, so the machine's speed, which on these shared machines
jumps by half within a second, cancels out: a steadier figure than the rate, though
not the same one (the drain leaves part of the two cores idle).

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
import gc
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


def backend_cpu() -> dict[int, tuple[str, int]]:
    """CPU nanoseconds used so far by each PostgreSQL backend of the benchmark's database
    (``/proc/<pid>/schedstat``: one host), with its ``application_name``."""
    import psycopg

    with psycopg.connect(URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    out: dict[int, tuple[str, int]] = {}
    for pid, name in rows:
        try:
            out[pid] = (name, int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    return out


def timed(function: Any, spent: list[int]) -> Any:
    """``function``, adding the CPU time of its calling thread it uses to ``spent[0]``."""

    def wrapper(*args: Any) -> Any:
        start = time.thread_time_ns()
        try:
            return function(*args)
        finally:
            spent[0] += time.thread_time_ns() - start

    return wrapper


def account_features() -> list[int]:
    """Time what metrics and live events do in the worker (nanoseconds of its threads): the
    metrics' and the publisher's bus subscribers and the publisher's encoding. Each is
    called once per emission (a claim, a batch of finishes), not per task, so the timing
    costs nothing a drain would notice. Not covered: building the store's event batches
    for the bus (0.02 µs an event, `bench/event_costs.py`) and the NOTIFY statements'
    Python side (14 a drain)."""
    from nightcrew.live.publisher import Publisher
    from nightcrew.metrics import TaskEventCollector

    spent = [0]
    TaskEventCollector.on_events = timed(TaskEventCollector.on_events, spent)  # type: ignore[method-assign]
    Publisher._on_events = timed(Publisher._on_events, spent)  # type: ignore[method-assign]
    Publisher._flush_loop = timed(Publisher._flush_loop, spent)  # type: ignore[method-assign]
    return spent


def child_drain(mode: str, concurrency: int) -> None:
    """A worker process: drain what is due, print its rate and where its CPU went."""
    from nightcrew import Worker
    from nightcrew.loop import run_loop
    from nightcrew.store.event_transport import PROBE_NAME, RECEIVER_NAME

    features = account_features()
    on = mode in ("on", "read", "quiet")
    s = settings(
        concurrency=concurrency,
        poll_interval=0.5,
        metrics=on or mode == "metrics",
        publish_events=on or mode == "publish",
    )

    async def main() -> dict[str, Any]:
        worker = Worker(s)
        worker.app.metrics.start()  # as when scraped (a worker nobody scrapes counts nothing)
        closing = worker.store.aclose
        seen: dict[str, dict[int, tuple[str, int]]] = {}

        async def aclose() -> None:  # the drain is over: its connections are still open
            seen["after"] = backend_cpu()
            await closing()

        worker.store.aclose = aclose  # type: ignore[method-assign]
        before = backend_cpu()
        t0, c0 = time.perf_counter(), time.process_time()
        await worker.run(until_idle=True)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        after = seen["after"]
        used = {pid: ns - before.get(pid, (name, 0))[1] for pid, (name, ns) in after.items()}
        events_ns = sum(
            ns for pid, ns in used.items() if after[pid][0] in (PROBE_NAME, RECEIVER_NAME)
        )
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "processed": worker.processed,
            "feature_cpu_seconds": features[0] / 1e9,
            "postgres_cpu_seconds": sum(used.values()) / 1e9,
            "postgres_events_cpu_seconds": events_ns / 1e9,
        }

    print(json.dumps(run_loop(main(), s)), flush=True)


class Listener:
    """Follows every event of the database in a thread of its own (the "on" runs' reader:
    it counts each batch; with ``read``, it reads every event of it as a `LiveEvent`)."""

    def __init__(self, read: bool = False) -> None:
        self.read = read
        self.events = 0
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        self.ready.wait(30)
        return self

    @property
    def ident(self) -> int:
        """The thread's id (its CPU clock is read from the benchmark's thread)."""
        assert self._thread.ident is not None
        return self._thread.ident

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
                        if self.read:
                            self.events += sum(1 for e in batch if e.task_id)
                        else:
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
    # The setup (migrations, an app per round) leaves this process garbage enough that a
    # full collection of it, 80 to 90 ms here, fell in the listener's thread in a third of
    # the drains: collected now, it is not counted as the listener's.
    gc.collect()
    argv = [sys.executable, __file__, "_drain", mode, str(concurrency)]

    def run() -> dict[str, Any]:
        out = subprocess.run(argv, env=env(), capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    if mode in ("on", "read"):
        with Listener(read=mode == "read") as listener:
            time.sleep(1.5)  # as a hub does: publishers notice a new receiver within 1 s
            clock = time.pthread_getcpuclockid(listener.ident)
            c0 = time.clock_gettime_ns(clock)
            result = run()
            time.sleep(0.5)  # the last events arrive
            result["listener_cpu_seconds"] = (time.clock_gettime_ns(clock) - c0) / 1e9
        result["events_received"] = listener.events
    else:
        result = run()
    result["rate"] = n / result["seconds"]
    result["cpu_us_per_task"] = result["cpu_seconds"] / n * 1e6
    listener = result.get("listener_cpu_seconds", 0.0)
    features = result["feature_cpu_seconds"] + result["postgres_events_cpu_seconds"] + listener
    total = result["cpu_seconds"] + result["postgres_cpu_seconds"] + listener
    result["accounted"] = features / (total - features)
    result["accounted_worker"] = result["feature_cpu_seconds"] / (
        result["cpu_seconds"] - result["feature_cpu_seconds"]
    )
    return result


def interval(rates: list[float], off: list[float], draws: int = 4000) -> tuple[float, float]:
    """A 90 % bootstrap interval of ``1 - median(rates) / median(off)``: the rounds of each
    mode resampled with replacement (a fixed seed, so a run's printout can be recomputed
    from its JSON). On a machine whose speed jumps by half within a second, as the shared
    ones here do, this is what tells a real overhead from a lucky or unlucky run."""
    import random

    rng = random.Random(0)
    found = sorted(
        1
        - statistics.median(rng.choices(rates, k=len(rates)))
        / statistics.median(rng.choices(off, k=len(off)))
        for _ in range(draws)
    )
    return found[int(0.05 * draws)], found[int(0.95 * draws) - 1]


MODES = {
    "off": "metrics and events off",
    "on": "metrics and events on, a listener following every event",
    "read": "the same, the listener reading each event as an object",
    "quiet": "metrics and events on, nobody listening",
}
#: Modes whose drains have a listener.
LISTENED = ("on", "read")


def part_drain(n: int, concurrency: int, pairs: int) -> dict[str, Any]:
    """Rounds of every mode (`MODES`) in rotating order; the rate is wall-clock tasks/s, the
    CPU cost the worker process's CPU time per task (all its threads): on a shared machine
    the second is the steadier measure of what the features cost."""
    print(f"drain: {n} no-op tasks, concurrency {concurrency}, {pairs} rounds; load {load()}")
    found: dict[str, dict[str, list[float]]] = {
        m: {"rate": [], "cpu": [], "accounted": [], "accounted_worker": [], "listener_ms": []}
        for m in MODES
    }
    order = list(MODES)
    for i in range(pairs):
        for mode in order[i % len(order) :] + order[: i % len(order)]:
            r = drain_once(mode, n, concurrency)
            found[mode]["rate"].append(r["rate"])
            found[mode]["cpu"].append(r["cpu_us_per_task"])
            found[mode]["accounted"].append(r["accounted"])
            found[mode]["accounted_worker"].append(r["accounted_worker"])
            found[mode]["listener_ms"].append(r.get("listener_cpu_seconds", 0.0) * 1000)
            if mode in LISTENED:
                found[mode].setdefault("received", []).append(r["events_received"])
            extra = ""
            if mode in LISTENED:
                extra = (
                    f", {r['events_received']} events received"
                    f" (listener {r['listener_cpu_seconds'] * 1000:.0f} ms CPU)"
                )
            print(
                f"  round {i + 1} {mode:>5}: {r['rate']:,.0f} tasks/s, "
                f"{r['cpu_us_per_task']:.1f} us CPU/task, features' CPU "
                f"+{r['accounted']:.1%} (worker's own +{r['accounted_worker']:.1%}){extra}"
            )
    out: dict[str, Any] = {}
    off_rate = statistics.median(found["off"]["rate"])
    off_cpu = statistics.median(found["off"]["cpu"])
    for mode, label in MODES.items():
        rate = statistics.median(found[mode]["rate"])
        cpu = statistics.median(found[mode]["cpu"])
        low, high = interval(found[mode]["rate"], found["off"]["rate"])
        out[mode] = {
            "rates": found[mode]["rate"],
            "cpu_us": found[mode]["cpu"],
            "median_rate": rate,
            "median_cpu_us": cpu,
            "rate_overhead": 1 - rate / off_rate,
            "rate_overhead_90": [low, high],
            "cpu_overhead": cpu / off_cpu - 1,
            "accounted": statistics.median(found[mode]["accounted"]),
            "accounted_worker": statistics.median(found[mode]["accounted_worker"]),
            "listener_ms": statistics.median(found[mode]["listener_ms"]),
        }
        spread = "" if mode == "off" else f", 90% interval {low:+.1%} to {high:+.1%}"
        print(
            f"  {mode:>5} ({label}): median {rate:,.0f} tasks/s ({1 - rate / off_rate:+.1%} "
            f"slower{spread}), {cpu:.1f} us CPU/task ({cpu / off_cpu - 1:+.1%})"
        )
        if mode != "off":
            print(
                f"         the features' own CPU, accounted in each drain: median "
                f"+{out[mode]['accounted']:.1%} of the rest of the drain's CPU (worker, "
                f"PostgreSQL, listener), +{out[mode]['accounted_worker']:.1%} in the worker"
            )
    for mode in LISTENED:
        received = found[mode].get("received", [])
        complete = sum(1 for r in received if r == 2 * n)
        print(
            f"  every event received (2 a task) in {complete} of {len(received)} drains"
            f" with a listener ({mode})"
        )
        out[mode]["events_complete"] = [complete, len(received)]
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
