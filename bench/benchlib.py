"""Helpers shared by the scenario scripts of every library.

Imported by ``sc_nightcrew.py`` (project venv) and ``sc_procrastinate.py`` /
``sc_pgqueuer.py`` (``bench/.peers-venv``), so it needs only the standard library and
psycopg 3, which both environments have.

Protocol between a scenario script and the driver (``run.py``): the script prints any
number of lines and, last, one line ``RESULT {json}``. Worker children spawned by a
scenario speak the same way with their parent: ``READY`` when set up, then they wait for
``GO`` on stdin, then they print ``RESULT {json}``.
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
from collections.abc import Sequence
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
    line = sys.stdin.readline()
    if line.strip() != "GO":
        raise SystemExit(f"expected GO, got {line!r}")
    return time.time()


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
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("GO\n")
            proc.stdin.flush()
        return now

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


def drain_summary(n: int, go: float, children: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput of workers released at ``go``: n / (last end - first start)."""
    start = min(c["t_start"] for c in children)
    end = max(c["t_end"] for c in children)
    elapsed = end - start
    return {
        "tasks": n,
        "processes": len(children),
        "elapsed_s": round(elapsed, 4),
        "tps": round(n / elapsed, 1) if elapsed > 0 else float("inf"),
        "executed": sum(c["executed"] for c in children),
        "go_lag_ms": round((start - go) * 1000, 2),
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
