"""Helpers shared by the scenario scripts of every library.

Imported by ``sc_nightcrew.py`` (project venv), ``sc_procrastinate.py``,
``sc_pgqueuer.py``, ``sc_chancy.py`` (``bench/.peers-venv``) and ``sc_oban.py``
(``bench/.peers312-venv``), so it needs only the standard library and psycopg 3, which
every environment has.

Protocol between a scenario script and the driver (``run.py``): the script prints any
number of lines and, last, one line ``RESULT {json}``. Worker children spawned by a
scenario speak the same way with their parent: ``READY`` when set up, then they wait for
``GO`` on stdin, then they print ``RESULT {json}``. Children of libraries without a
"stop when the queue is empty" mode (oban, chancy) run until their parent, which watches
the database, sends ``STOP``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
#: Server part of every benchmark database URL (no database name).
PG_SERVER = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
RESULT_PREFIX = "RESULT "


def pg_url(dbname: str) -> str:
    return f"{PG_SERVER.rstrip('/')}/{dbname}"


def recreate_database(dbname: str) -> None:
    """Drop (forcing out stray sessions) and create ``dbname``: every run starts fresh."""
    import psycopg

    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')


def drop_database(dbname: str) -> None:
    import psycopg

    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def sql_scalar(dbname: str, query: str) -> Any:
    import psycopg

    with psycopg.connect(pg_url(dbname), autocommit=True) as conn:
        row = conn.execute(query).fetchone()
        return None if row is None else row[0]


def sql_exec(dbname: str, *queries: str) -> None:
    import psycopg

    with psycopg.connect(pg_url(dbname), autocommit=True) as conn:
        for query in queries:
            conn.execute(query)


def disable_autovacuum(dbname: str, *tables: str) -> None:
    """The burst scenarios: no statistics gathered behind the benchmark's back."""
    sql_exec(dbname, *(f"ALTER TABLE {t} SET (autovacuum_enabled = false)" for t in tables))


def before_fill(dbname: str, params: dict[str, Any], *tables: str) -> None:
    """Before a drain's tasks are enqueued: a burst (``params["burst"]``) turns autovacuum
    off on the library's job tables, as the burst at defaults does for nightcrew's."""
    if params.get("burst"):
        disable_autovacuum(dbname, *tables)


def after_fill(dbname: str, params: dict[str, Any]) -> None:
    """After a drain's tasks are enqueued: the tuned drain gathers statistics first
    (``VACUUM ANALYZE``); a burst drains at once, statistics not yet gathered."""
    if not params.get("burst"):
        sql_exec(dbname, "VACUUM ANALYZE")


def wait_for_count(dbname: str, query: str, n: int, timeout: float) -> float:
    """Poll ``query`` (a count) until it reaches ``n``; return the ``time.time()`` it did.

    How the drains of oban and chancy, which have no drain-and-exit mode, are timed: the
    end is when every task's completion is committed, seen from outside. The polls are 2%
    of the elapsed time apart (10 to 250 ms), so the end is seen within about 2% while the
    count, which reads the whole table, takes little from the drain it watches.
    """
    import psycopg

    started = time.time()
    with psycopg.connect(pg_url(dbname), autocommit=True) as conn:
        while True:
            row = conn.execute(query).fetchone()
            now = time.time()
            if row is not None and row[0] >= n:
                return now
            if now - started > timeout:
                raise RuntimeError(f"only {row[0] if row else 0} of {n} done after {timeout:.0f}s")
            time.sleep(min(max(0.01, 0.02 * (now - started)), 0.25))


def machine_info() -> dict[str, Any]:
    """What the report says about the machine: cores, memory, PostgreSQL and its settings."""
    import platform

    import psycopg

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["mem_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        info["postgres"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        for name in (
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "shared_buffers",
            "max_connections",
            "wal_level",
        ):
            info[name] = conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
    return info


# ------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (the same as numpy's default), p in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    ms = [x * 1000 for x in latencies_s]
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
        "samples": len(ms),
    }


# ------------------------------------------------------------------ result protocol


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])  # type: ignore[no-any-return]
    raise RuntimeError("no RESULT line in output:\n" + stdout[-3000:])


def child_ready_and_wait() -> float:
    """In a worker child: say READY, block until the parent says GO; return the GO time."""
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    _expect("GO")
    return time.time()


def child_wait_stop() -> None:
    """In a worker child released by GO: block until the parent says STOP."""
    _expect("STOP")


def _expect(word: str) -> None:
    line = sys.stdin.readline()
    if line.strip() != word:
        raise SystemExit(f"expected {word}, got {line!r}")


class Children:
    """Worker processes started together, released together, and read back together."""

    def __init__(self, argv: list[str], count: int, env: dict[str, str] | None = None):
        self.procs = [
            subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(count)
        ]
        self._stderr: list[list[str]] = [[] for _ in self.procs]
        self._threads = [
            threading.Thread(target=self._pump_stderr, args=(p, buf), daemon=True)
            for p, buf in zip(self.procs, self._stderr, strict=True)
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump_stderr(proc: subprocess.Popen[str], buf: list[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            buf.append(line)
            del buf[:-200]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        for i, proc in enumerate(self.procs):
            assert proc.stdout is not None
            while True:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"worker child exited before READY:\n{self.stderr(i)}")
                if line.strip() == "READY":
                    break
                if time.time() > deadline:
                    raise RuntimeError("worker child not READY in time")

    def go(self) -> float:
        now = time.time()
        self._say("GO")
        return now

    def stop(self) -> None:
        self._say("STOP")

    def _say(self, word: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(word + "\n")
            proc.stdin.flush()

    def results(self, timeout: float = 3600.0) -> list[dict[str, Any]]:
        out = []
        for i, proc in enumerate(self.procs):
            try:
                stdout, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(f"worker child timed out:\n{self.stderr(i)}") from None
            if proc.returncode != 0:
                raise RuntimeError(
                    f"worker child failed (exit {proc.returncode}):\n"
                    f"{self.stderr(i)}\n{stdout[-2000:]}"
                )
            out.append(parse_result(stdout))
        return out

    def stderr(self, i: int) -> str:
        return "".join(self._stderr[i])[-4000:]

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()


def release_and_watch(
    children: Children, dbname: str, done_query: str, n: int, timeout: float = 3600.0
) -> tuple[float, float, list[dict[str, Any]]]:
    """GO, wait until ``done_query`` counts ``n`` committed completions, then STOP.

    For libraries whose workers do not exit once the queue is empty: returns the GO time,
    the time the last completion was seen committed, and the children's results.
    """
    go = children.go()
    try:
        t_end = wait_for_count(dbname, done_query, n, timeout)
    finally:
        children.stop()
    return go, t_end, children.results()


def drain_summary(
    n: int, go: float, children: list[dict[str, Any]], t_end: float | None = None
) -> dict[str, Any]:
    """Throughput of workers released at ``go``: n / (last end - first start).

    ``t_end``, when given, is the end seen from outside (`wait_for_count`) instead of the
    children's own.
    """
    start = min(c["t_start"] for c in children)
    end = t_end if t_end is not None else max(c["t_end"] for c in children)
    elapsed = end - start
    return {
        "tasks": n,
        "processes": len(children),
        "elapsed_s": round(elapsed, 4),
        "tps": round(n / elapsed, 1) if elapsed > 0 else float("inf"),
        "executed": sum(c["executed"] for c in children),
        "go_lag_ms": round((start - go) * 1000, 2),
        # The workers' own CPU time while draining, where a child reports it (``cpu_s``).
        "worker_cpu_s": (
            round(sum(c["cpu_s"] for c in children), 4)
            if all("cpu_s" in c for c in children)
            else None
        ),
    }


# ------------------------------------------------------------------ memory


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples a process's RSS from outside (``/proc/PID/status``) every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rss = rss_bytes(self.pid)
            if rss is None:
                break
            self.samples.append((time.time(), rss))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def rss_summary(
    samples: list[tuple[float, int]], t_start: float, t_end: float, points: int = 21
) -> dict[str, Any]:
    """Start / peak / end RSS over the drain, and a downsampled timeline for the chart.

    ``settled`` is the RSS once 10% of the drain time has passed (caches, pools and the
    first batch are warm by then); ``growth`` is end minus settled: the part that would
    grow with the number of tasks processed.
    """
    mb = 1024 * 1024
    during = [(t, r) for t, r in samples if t_start <= t <= t_end] or samples
    before = [r for t, r in samples if t < t_start]
    start_rss = before[-1] if before else during[0][1]
    span = max(t_end - t_start, 1e-9)
    settled_at = t_start + 0.1 * span
    settled = next((r for t, r in during if t >= settled_at), during[0][1])
    end_rss = during[-1][1]
    timeline = []
    for i in range(points):
        target = t_start + span * i / (points - 1)
        nearest = min(during, key=lambda s: abs(s[0] - target))
        timeline.append([round(i / (points - 1), 3), round(nearest[1] / mb, 2)])
    return {
        "rss_start_mb": round(start_rss / mb, 2),
        "rss_settled_mb": round(settled / mb, 2),
        "rss_peak_mb": round(max(r for _, r in during) / mb, 2),
        "rss_end_mb": round(end_rss / mb, 2),
        "rss_growth_mb": round((end_rss - settled) / mb, 2),
        "rss_samples": len(during),
        "rss_timeline": timeline,
    }


# ------------------------------------------------------------------ CLI


Scenario = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def script_main(
    lib: str,
    defaults: dict[str, Any],
    scenarios: dict[str, Scenario],
    children: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]],
    versions: Callable[[], dict[str, str]],
) -> None:
    """A peer script's ``main``: run the scenario (or the worker child) named on the
    command line with ``defaults`` updated by ``--settings``; print its RESULT line."""
    ns = scenario_args()
    settings = {**defaults, **ns.settings}
    unknown = set(ns.settings) - set(defaults)
    if unknown:
        raise SystemExit(f"{lib}: unknown settings {sorted(unknown)}")
    if ns.scenario in children:
        children[ns.scenario](ns.params, settings)
        return
    metrics = scenarios[ns.scenario](ns.params, settings)
    emit(
        {
            "lib": lib,
            "scenario": ns.scenario,
            "params": ns.params,
            "settings": settings,
            "versions": versions(),
            "metrics": metrics,
        }
    )


def scenario_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario")
    parser.add_argument("--params", default="{}", help="JSON object of scenario parameters")
    parser.add_argument("--settings", default="{}", help="JSON object of library settings")
    ns = parser.parse_args(argv)
    ns.params = json.loads(ns.params)
    ns.settings = json.loads(ns.settings)
    return ns


def child_argv(
    script: str, role: str, params: dict[str, Any], settings: dict[str, Any]
) -> list[str]:
    return [
        sys.executable,
        str(BENCH_DIR / script),
        role,
        "--params",
        json.dumps(params),
        "--settings",
        json.dumps(settings),
    ]


if __name__ == "__main__":
    if sys.argv[1:] == ["info"]:
        print(json.dumps(machine_info()))
    else:
        raise SystemExit("usage: benchlib.py info")
