"""Run nightcrew and its peers (procrastinate, pgqueuer, oban, chancy) side by side and
write the report.

    python bench/run.py [--quick] [--repeat N] [--only enqueue,drain,...] [--set LIB.KEY=VALUE]
    python bench/run.py --calibrate [--quick]     # sweep the peers' (and nightcrew's) knobs
    python bench/run.py --report-only              # redo RESULTS.md / chart.png from results.json

Each library runs in its own interpreter (nightcrew: the project's .venv; the peers:
bench/.peers-venv, and bench/.peers312-venv for oban, which needs Python 3.12; both made by
bench/setup_peers.sh on first use) and its own fresh database.
Every scenario runs for every library in one run, libraries alternating (their order
rotates each repetition), repeated ``--repeat`` times; the report gives medians and the
ratio nightcrew / peer. Only the standard library is used here, so any Python 3.11 runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
RAW = RESULTS / "raw"
PEERS_VENV = BENCH / ".peers-venv"
PEERS_PY = PEERS_VENV / "bin" / "python"
PEERS312_PY = BENCH / ".peers312-venv" / "bin" / "python"
PROJECT_PY = REPO / ".venv" / "bin" / "python"
LIBS = ("nightcrew", "procrastinate", "pgqueuer", "oban", "chancy")
PEERS = LIBS[1:]
SCRIPTS = {lib: f"sc_{lib}.py" for lib in LIBS}
GROUPS = ("enqueue", "drain", "burst", "latency", "backlog", "sqlite", "memory")
RESULT_PREFIX = "RESULT "

LATENCY = {"interval": 0.02, "warmup": 10, "settle": 1.0}
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "enqueue": {"bulk": 20_000, "single": 2_000},
        "drain": {"n": 20_000},
        "burst": {"n": 20_000, "budget_s": 300},
        "latency": {"n": 200, **LATENCY},
        "backlog": {"small": 10_000, "large": 1_000_000, "finished": 1_000_000, "claim": 8_000},
        "sqlite_drain": {"n": 20_000},
        "memory": {"n": 100_000},
    },
    "quick": {
        "enqueue": {"bulk": 2_000, "single": 200},
        "drain": {"n": 2_000},
        "burst": {"n": 2_000, "budget_s": 60},
        "latency": {"n": 40, **LATENCY, "settle": 0.5},
        "backlog": {"small": 2_000, "large": 50_000, "finished": 50_000, "claim": 1_500},
        "sqlite_drain": {"n": 2_000},
        "memory": {"n": 10_000},
    },
}


# ------------------------------------------------------------------ cases


class Case:
    """One measurement: a scenario of one script with fixed parameters, for some libraries."""

    def __init__(
        self,
        key: str,
        group: str,
        title: str,
        scenario: str,
        params: dict[str, Any],
        libs: tuple[str, ...],
    ):
        self.key, self.group, self.title = key, group, title
        self.scenario, self.params, self.libs = scenario, params, libs


def build_cases(sizes: dict[str, Any], memory_peers: bool, libs: tuple[str, ...]) -> list[Case]:
    """Every case; ``libs`` are the libraries that can run here (nightcrew first)."""
    b = sizes["backlog"]
    burst = {**sizes["burst"], "burst": True}
    cases = [
        Case("enqueue", "enqueue", "Enqueue", "enqueue", sizes["enqueue"], LIBS),
        Case(
            "drain1",
            "drain",
            "Drain, 1 worker process",
            "drain",
            {**sizes["drain"], "procs": 1},
            LIBS,
        ),
        Case(
            "drain2",
            "drain",
            "Drain, 2 worker processes",
            "drain",
            {**sizes["drain"], "procs": 2},
            LIBS,
        ),
        Case(
            "burst1",
            "burst",
            "Burst at defaults, 1 worker process",
            "burst",
            {**burst, "procs": 1},
            LIBS,
        ),
        Case(
            "burst2",
            "burst",
            "Burst at defaults, 2 worker processes",
            "burst",
            {**burst, "procs": 2},
            LIBS,
        ),
        Case(
            "burst_sqlite1",
            "burst",
            "SQLite burst at defaults, 1 worker process",
            "burst",
            {**burst, "procs": 1, "backend": "sqlite"},
            ("nightcrew",),
        ),
        Case(
            "burst_sqlite2",
            "burst",
            "SQLite burst at defaults, 2 worker processes",
            "burst",
            {**burst, "procs": 2, "backend": "sqlite"},
            ("nightcrew",),
        ),
        Case(
            "latency", "latency", "Pickup latency (idle worker)", "latency", sizes["latency"], LIBS
        ),
        Case(
            "backlog_small",
            "backlog",
            f"Backlog: {b['small']:,} pending",
            "backlog",
            {"pending": b["small"], "finished": b["finished"], "claim": b["claim"]},
            ("nightcrew",),
        ),
        Case(
            "backlog_large",
            "backlog",
            f"Backlog: {b['large']:,} pending",
            "backlog",
            {"pending": b["large"], "finished": b["finished"], "claim": b["claim"]},
            ("nightcrew",),
        ),
        Case(
            "sqlite_drain",
            "sqlite",
            "SQLite drain, 1 worker process",
            "drain",
            {**sizes["sqlite_drain"], "procs": 1, "backend": "sqlite"},
            ("nightcrew",),
        ),
        Case(
            "sqlite_drain2",
            "sqlite",
            "SQLite drain, 2 worker processes",
            "drain",
            {**sizes["sqlite_drain"], "procs": 2, "backend": "sqlite"},
            ("nightcrew",),
        ),
        Case(
            "sqlite_latency",
            "sqlite",
            "SQLite pickup latency",
            "latency",
            {**sizes["latency"], "backend": "sqlite"},
            ("nightcrew",),
        ),
        Case(
            "memory",
            "memory",
            "Worker RSS while draining",
            "memory",
            sizes["memory"],
            LIBS if memory_peers else ("nightcrew",),
        ),
    ]
    for case in cases:
        case.libs = tuple(lib for lib in case.libs if lib in libs)
    return cases


# ------------------------------------------------------------------ running


def ensure_peers(upgrade: bool = False) -> tuple[str, ...]:
    """Make or refresh the peers' venvs (well under a second when they are complete);
    return the libraries that can run (oban is left out when no Python 3.12 is found or
    its install failed: setup_peers.sh says which)."""
    if not PEERS_PY.exists() or not PEERS312_PY.exists():
        print("creating the peers' venvs (bench/setup_peers.sh) ...", flush=True)
    cmd = ["bash", str(BENCH / "setup_peers.sh")] + (["--upgrade"] if upgrade else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench/setup_peers.sh failed:\n{proc.stdout}\n{proc.stderr}")
    last = proc.stdout.strip().splitlines()[-1]
    print("peers: " + last, flush=True)
    if "oban: unavailable" in last:
        print("warning: oban is left out of this run (see the line above)", file=sys.stderr)
        return tuple(lib for lib in LIBS if lib != "oban")
    return LIBS


def interpreter(lib: str) -> str:
    if lib == "nightcrew":
        return str(PROJECT_PY if PROJECT_PY.exists() else Path(sys.executable))
    return str(PEERS312_PY if lib == "oban" else PEERS_PY)


def run_one(lib: str, case: Case, overrides: dict[str, Any], timeout: float) -> dict[str, Any]:
    argv = [
        interpreter(lib),
        str(BENCH / SCRIPTS[lib]),
        case.scenario,
        "--params",
        json.dumps(case.params),
        "--settings",
        json.dumps(overrides),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPATH")}
    # Own process group: on a timeout the scenario and its worker children go together.
    proc = subprocess.Popen(
        argv,
        cwd=BENCH,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"{lib} {case.key}: timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{lib} {case.key} failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])  # type: ignore[no-any-return]
    raise RuntimeError(f"{lib} {case.key}: no RESULT line\n{stdout[-2000:]}\n{stderr[-2000:]}")


HEADLINE = {
    "enqueue": ("bulk_tps", "single_tps"),
    "drain": ("tps",),
    "burst": ("tps",),
    "latency": ("p50_ms", "p95_ms", "p99_ms"),
    "backlog": ("tps",),
    "memory": ("rss_start_mb", "rss_peak_mb", "rss_end_mb", "rss_growth_mb"),
}


def describe(result: dict[str, Any]) -> str:
    m = result["metrics"]
    keys = HEADLINE.get(result["scenario"], ())
    parts = [f"{k}={m[k]:,}" for k in keys if k in m]
    if not m.get("verified", True):
        parts.append("NOT VERIFIED")
    return " ".join(parts)


def run_all(
    cases: list[Case],
    repeat: int,
    overrides: dict[str, dict[str, Any]],
    timeout: float,
    raw_path: Path,
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    total = sum(len(c.libs) for c in cases) * repeat
    done = 0
    for rep in range(repeat):
        for case in cases:
            k = rep % len(case.libs)
            order = case.libs[k:] + case.libs[:k]  # alternate who goes first
            for lib in order:
                done += 1
                t = time.time()
                result = run_one(lib, case, overrides.get(lib, {}), timeout)
                result.update(case=case.key, rep=rep, wall_s=round(time.time() - t, 2))
                runs.append(result)
                with raw_path.open("a") as f:
                    f.write(json.dumps(result) + "\n")
                print(
                    f"[{done}/{total}] rep {rep + 1} {case.key:<15} {lib:<14} "
                    f"{describe(result)}  ({result['wall_s']}s)",
                    flush=True,
                )
    return runs


# ------------------------------------------------------------------ summarising


def summarise(runs: list[dict[str, Any]], cases: list[Case]) -> dict[str, Any]:
    """Median (and min / max) of every numeric metric, per case and library."""
    out: dict[str, Any] = {}
    for case in cases:
        per_lib: dict[str, Any] = {}
        for lib in case.libs:
            mine = [r for r in runs if r["case"] == case.key and r["lib"] == lib]
            if not mine:
                continue
            metrics: dict[str, Any] = {}
            for key, value in mine[0]["metrics"].items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                values = [r["metrics"][key] for r in mine if key in r["metrics"]]
                metrics[key] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "n": len(values),
                }
            # the timeline of the median run, for the memory chart
            if "rss_timeline" in mine[0]["metrics"]:
                ordered = sorted(mine, key=lambda r: r["metrics"]["rss_peak_mb"])
                metrics["rss_timeline"] = ordered[len(ordered) // 2]["metrics"]["rss_timeline"]
            per_lib[lib] = {
                "metrics": metrics,
                "verified": all(r["metrics"].get("verified", True) for r in mine),
                "settings": mine[0]["settings"],
                "versions": mine[0]["versions"],
            }
        out[case.key] = {
            "title": case.title,
            "group": case.group,
            "scenario": case.scenario,
            "params": case.params,
            "libs": per_lib,
        }
    return out


def med(summary: dict[str, Any], case: str, lib: str, metric: str) -> float | None:
    try:
        return float(summary[case]["libs"][lib]["metrics"][metric]["median"])
    except KeyError:
        return None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, checked against the medians."""
    rows: list[dict[str, Any]] = []

    def add(name: str, measured: str, ok: bool | None) -> None:
        rows.append({"target": name, "measured": measured, "met": ok})

    def fmt(x: float | None, suffix: str = "x") -> str:
        return "n/a" if x is None else f"{x:.2f}{suffix}"

    def best_peer(case: str, metric: str, pick: Any) -> tuple[float | None, str]:
        vals = {p: v for p in PEERS if (v := med(summary, case, p, metric)) is not None}
        if not vals:
            return None, "no peer"
        peer = pick(vals, key=vals.__getitem__)
        return vals[peer], peer

    # The user's path: a burst drained by `nightcrew run --once` at default settings,
    # against pgqueuer at its best (the better of its burst and its tuned drain).
    pgq = [v for c in ("burst1", "drain1") if (v := med(summary, c, "pgqueuer", "tps")) is not None]
    r = ratio(med(summary, "burst1", "nightcrew", "tps"), max(pgq) if pgq else None)
    add(
        "burst at defaults, 1 process >= 1.5x pgqueuer at its best",
        fmt(r),
        None if r is None else r >= 1.5,
    )
    for case, label in (("drain1", "1 process"), ("drain2", "2 processes")):
        nc = med(summary, case, "nightcrew", "tps")
        for peer, need in (("pgqueuer", 2.0), ("procrastinate", 10.0)):
            r = ratio(nc, med(summary, case, peer, "tps"))
            add(
                f"tuned drain ({label}) >= {need:g}x {peer}",
                fmt(r),
                None if r is None else r >= need,
            )
    r = ratio(
        med(summary, "enqueue", "nightcrew", "bulk_tps"),
        med(summary, "enqueue", "pgqueuer", "bulk_tps"),
    )
    add("bulk enqueue >= 1.5x pgqueuer", fmt(r), None if r is None else r >= 1.5)
    nc = med(summary, "enqueue", "nightcrew", "single_tps")
    best, who = best_peer("enqueue", "single_tps", max)
    r = ratio(nc, best)
    add(
        "one-at-a-time enqueue >= best peer",
        "n/a" if r is None else f"{fmt(r)} of {who}",
        None if r is None else r >= 1.0,
    )
    for metric in ("p50_ms", "p99_ms"):
        nc = med(summary, "latency", "nightcrew", metric)
        best, who = best_peer("latency", metric, min)
        ok = None if nc is None or best is None else nc <= best
        add(
            f"pickup latency {metric[:3]} <= best peer",
            "n/a" if best is None else f"{fmt(nc, ' ms')} vs {fmt(best, ' ms')} ({who})",
            ok,
        )
    r = ratio(
        med(summary, "backlog_large", "nightcrew", "tps"),
        med(summary, "backlog_small", "nightcrew", "tps"),
    )
    add("backlog: tps(large) >= 0.8x tps(small)", fmt(r), None if r is None else r >= 0.8)
    growth = med(summary, "memory", "nightcrew", "rss_growth_mb")
    settled = med(summary, "memory", "nightcrew", "rss_settled_mb")
    if growth is not None and settled is not None:
        limit = max(5.0, 0.05 * settled)
        add(
            f"worker RSS flat (end - settled <= {limit:.1f} MB)",
            fmt(growth, " MB"),
            growth <= limit,
        )
    return rows


# ------------------------------------------------------------------ report


def num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def cell(summary: dict[str, Any], case: str, lib: str, metric: str, digits: int) -> str:
    try:
        m = summary[case]["libs"][lib]["metrics"][metric]
    except KeyError:
        return "—"
    text = num(m["median"], digits)
    if m["n"] > 1 and m["median"]:
        spread = (m["max"] - m["min"]) / 2 / abs(m["median"]) * 100
        text += f" ±{spread:.0f}%"
    if not summary[case]["libs"][lib]["verified"]:
        text += " (unverified!)"
    return text


def ratio_cell(
    summary: dict[str, Any], case: str, peer: str, metric: str, peer_case: str | None = None
) -> str:
    """nightcrew's median over the peer's (of ``peer_case`` when given: the SQLite bursts
    are compared with the peers' PostgreSQL bursts)."""
    r = ratio(
        med(summary, case, "nightcrew", metric), med(summary, peer_case or case, peer, metric)
    )
    return "—" if r is None else f"{r:.2f}"


#: The SQLite bursts, nightcrew alone, are compared with the peers' PostgreSQL bursts.
PEER_CASE = {"burst_sqlite1": "burst1", "burst_sqlite2": "burst2"}


SETTING_NOTES = {
    "nightcrew": "sync `create_maintenance_tasks` (one `INSERT ... SELECT ... FROM "
    "json_array_elements(...)`) and `create_maintenance_task` (SQLAlchemy, psycopg 3); "
    "`Worker(settings).run(until_idle=True)` (claims and finishes straight on psycopg 3, "
    "the rest through SQLAlchemy); a no-op processor (`nightcrew_processors.Noop`); uvloop "
    "(what `nightcrew worker` runs on by default). The burst rows use none of this: "
    "`python -m nightcrew run --once` with only `NIGHTCREW_DATABASE_URL` and "
    "`NIGHTCREW_PROCESSOR_MODULES` set, so `Settings()` defaults (concurrency 10, "
    "poll interval 0.5 s, event loop auto)",
    "procrastinate": "`PsycopgConnector` (psycopg 3, C build, pool); `batch_defer_async` and "
    "`defer_async`; `run_worker_async(wait=False)` with async tasks; LISTEN/NOTIFY on; "
    "stdlib asyncio (its CLI's loop)",
    "pgqueuer": "asyncpg (`AsyncpgDriver`; `AsyncpgPoolDriver` with `driver=asyncpg-pool`); "
    "`Queries.enqueue` with lists (bulk) and scalars (single); "
    "`PgQueuer.run(mode=drain)`; uvloop (as `pgq run` and its own benchmark use); "
    "tables installed by `pgq install` (durable)",
    "oban": "the Python port (`pip install oban`, Python 3.12 in its own venv); psycopg 3 "
    "pool from `Oban.create_pool`; `enqueue_many` (bulk) and `enqueue` (single); "
    "`Oban(pool, queues={queue: limit})` with async `@worker` classes, one node name per "
    "process; uvloop (what `oban start` runs on); schema by `oban install`; no drain mode: "
    "a drain ends when every job is `completed` in the table",
    "chancy": "psycopg 3 pool; `push_many` (bulk, its batches of 1,000 jobs per "
    "transaction) and `push` (single); a queue on the `AsyncExecutor` with "
    "`eager_polling`, async jobs; default plugins; logger at WARNING (its INFO logs a line "
    "per job); stdlib asyncio (its CLI's loop); schema by `migrate()`; no drain mode: a "
    "drain ends when every job is `succeeded` in the table, which its workers write in "
    "batches every `send_outgoing_interval`",
}


def write_report(summary: dict[str, Any], meta: dict[str, Any], out: Path) -> None:
    lines: list[str] = []
    w = lines.append
    mode = "quick (smoke-test sizes: numbers are not meaningful)" if meta["quick"] else "full"
    libs = [lib for lib in LIBS if any(lib in c["libs"] for c in summary.values())]
    peers = [p for p in libs if p != "nightcrew"]
    w("# Benchmark: nightcrew vs " + ", ".join(peers))
    w("")
    w(
        f"Run {meta['finished']} with `{meta['command']}`: {mode}; each scenario repeated "
        f"{meta['repeat']} times with the libraries alternating; the table gives the median "
        "(± half the min-max range). Ratios are nightcrew / peer: above 1 is better for "
        "throughput, below 1 is better for latency and memory."
    )
    w("")
    w("## Machine")
    w("")
    mi = meta["machine"]
    w("| | |")
    w("|---|---|")
    w(f"| cores (`nproc`) | {mi.get('nproc')} |")
    w(f"| CPU | {mi.get('cpu', '?')} |")
    w(f"| memory | {mi.get('mem_gb', '?')} GB |")
    w(f"| PostgreSQL | {mi.get('postgres')} (local, same host) |")
    for key in (
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "shared_buffers",
        "wal_level",
        "max_connections",
    ):
        w(f"| `{key}` | {mi.get(key)} |")
    w(f"| Python | {mi.get('python')} |")
    w(f"| load average before / after | {meta['load_before']} / {meta['load_after']} |")
    w(f"| nightcrew revision | {meta.get('nightcrew_git', '?')} |")
    w("")

    w("## Side by side")
    w("")
    w(
        "| Scenario | Metric | "
        + " | ".join(libs)
        + " | "
        + " | ".join(f"nightcrew / {p}" for p in peers)
        + " |"
    )
    w("|---|---|" + "---:|" * (len(libs) + len(peers)))
    rows = [
        ("enqueue", "bulk_tps", "bulk enqueue, tasks/s", 0),
        ("enqueue", "single_tps", "one-at-a-time enqueue, tasks/s", 0),
        ("drain1", "tps", "tasks/s", 0),
        ("drain2", "tps", "tasks/s", 0),
        ("burst1", "tps", "tasks/s (nightcrew: `run --once` at defaults)", 0),
        ("burst2", "tps", "tasks/s (nightcrew: 2 x `run --once` at defaults)", 0),
        ("burst_sqlite1", "tps", "tasks/s (ratios: vs the peers' PostgreSQL burst)", 0),
        ("burst_sqlite2", "tps", "tasks/s (ratios: vs the peers' PostgreSQL burst)", 0),
        ("latency", "p50_ms", "enqueue-to-start p50, ms", 1),
        ("latency", "p95_ms", "enqueue-to-start p95, ms", 1),
        ("latency", "p99_ms", "enqueue-to-start p99, ms", 1),
        ("memory", "rss_peak_mb", "peak RSS, MB", 1),
    ]
    for case, metric, label, digits in rows:
        if case not in summary:
            continue
        if case == "memory" and len(summary[case]["libs"]) == 1:
            continue
        title = summary[case]["title"]
        if case == "enqueue":
            title = (
                f"Enqueue ({summary[case]['params']['bulk']:,} bulk / "
                f"{summary[case]['params']['single']:,} single)"
            )
        elif case in ("drain1", "drain2") or case.startswith("burst"):
            title += f" ({summary[case]['params']['n']:,} no-op tasks)"
        elif case == "latency":
            p = summary[case]["params"]
            title += f" ({p['n']} tasks, {p['interval'] * 1000:.0f} ms apart)"
        w(
            f"| {title} | {label} | "
            + " | ".join(cell(summary, case, lib, metric, digits) for lib in libs)
            + " | "
            + " | ".join(ratio_cell(summary, case, p, metric, PEER_CASE.get(case)) for p in peers)
            + " |"
        )
    w("")

    w("## nightcrew alone")
    w("")
    w("| Scenario | Metric | nightcrew |")
    w("|---|---|---:|")
    for case, metric, label, digits in (
        ("backlog_small", "tps", "claim throughput, tasks/s", 0),
        ("backlog_large", "tps", "claim throughput, tasks/s", 0),
        ("sqlite_drain", "tps", "tasks/s", 0),
        ("sqlite_drain2", "tps", "tasks/s", 0),
        ("sqlite_latency", "p50_ms", "enqueue-to-start p50, ms", 1),
        ("sqlite_latency", "p95_ms", "enqueue-to-start p95, ms", 1),
        ("sqlite_latency", "p99_ms", "enqueue-to-start p99, ms", 1),
        ("memory", "rss_start_mb", "RSS before the drain, MB", 1),
        ("memory", "rss_settled_mb", "RSS after 10% of the drain, MB", 1),
        ("memory", "rss_peak_mb", "peak RSS, MB", 1),
        ("memory", "rss_end_mb", "RSS at the end, MB", 1),
        ("memory", "rss_growth_mb", "end - after 10%, MB", 2),
        ("memory", "tps", "drain throughput, tasks/s", 0),
    ):
        if case not in summary:
            continue
        title = summary[case]["title"]
        p = summary[case]["params"]
        if case.startswith("backlog"):
            title += f" + {p['finished']:,} finished (first {p['claim']:,} claims)"
        elif case in ("sqlite_drain", "sqlite_drain2", "memory"):
            title += f" ({p['n']:,} no-op tasks)"
        w(f"| {title} | {label} | {cell(summary, case, 'nightcrew', metric, digits)} |")
    w("")

    tg = targets(summary)
    if tg:
        w("## Targets (from the issue)")
        w("")
        w("| Target | Measured | Met |")
        w("|---|---|:-:|")
        for t in tg:
            met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
            w(f"| {t['target']} | {t['measured']} | {met} |")
        w("")

    w("## Settings used")
    w("")
    for lib in libs:
        found = next((c["libs"][lib] for c in summary.values() if lib in c["libs"]), None)
        if found is None:
            continue
        versions = ", ".join(f"{k} {v}" for k, v in found["versions"].items())
        settings = ", ".join(f"`{k}={v}`" for k, v in found["settings"].items())
        w(f"- **{lib}** ({versions}): {SETTING_NOTES[lib]}. Settings: {settings}.")
    w("")
    w("## Method")
    w("")
    w(
        "- Each library has its own database (`bench_nightcrew`, `bench_procrastinate`, "
        "`bench_pgqueuer`, `bench_oban`, `bench_chancy`), dropped and created again before "
        "every scenario run, with the schema each library documents (nightcrew's "
        "migrations, procrastinate's `apply_schema`, `pgq install`, `oban install`, "
        "chancy's `migrate()`)."
    )
    w(
        "- Enqueue: the time of the enqueue calls only, after one warm-up enqueue has opened "
        "the connection. Bulk is one call with all tasks; single is a loop of awaited calls."
    )
    w(
        "- Drain: tasks are enqueued first (not timed); the worker processes connect, say "
        "they are ready, and are released together; throughput is tasks / (last worker "
        "finished - first worker started). Every task's execution is counted in the workers "
        "and checked against the database afterwards. oban and chancy have no mode that "
        "stops once the queue is empty: their drain ends when the benchmark, counting "
        "finished jobs in the table every 2% of the elapsed time (10-250 ms), first sees "
        "every job's completion committed (so within about 2%); then it stops their "
        "workers."
    )
    w(
        "- Burst at defaults (the user's path): N tasks enqueued in one transaction (nightcrew: "
        "one `create_maintenance_tasks` call), autovacuum off on the job table and no "
        "`VACUUM`/`ANALYZE` (statistics not yet gathered, as in the first minute after a "
        "burst), then drained at once. nightcrew: `python -m nightcrew run --once` as a "
        "subprocess (two at the same time for 2 processes) with only "
        "`NIGHTCREW_DATABASE_URL` and `NIGHTCREW_PROCESSOR_MODULES` set, timed from spawn "
        "to exit minus the interpreter start-up (the fastest of three `python -m nightcrew "
        "--version`, as many at once as workers), so connecting, the rescue pass and "
        "LISTEN are in its time. The peers: the same conditions, their own bulk enqueue, "
        "their best settings, timed as their tuned drain (already connected workers "
        "released by GO), which leaves their start-up out. SQLite: nightcrew alone on a "
        "fresh file; its ratios are against the peers' PostgreSQL bursts."
    )
    w(
        "- Pickup latency: an idle worker in its own process; tasks enqueued one at a time "
        "at a fixed 20 ms cadence (after a few unmeasured warm-up tasks); latency is "
        "`time.time()` in the task body minus `time.time()` taken in the enqueuer just before "
        "its enqueue call (same host clock)."
    )
    w(
        "- Backlog (nightcrew only): one task is created through the API, then copied with "
        "`INSERT ... SELECT ... generate_series` into the finished and pending rows, then "
        "`VACUUM ANALYZE`; throughput is the first N claims of one worker process."
    )
    w(
        "- Memory: the worker process's RSS sampled from outside (`/proc/PID/status`) every "
        '100 ms while it drains; "settled" is the RSS once 10% of the drain time has passed.'
    )
    w("- SQLite: nightcrew's embedded mode on a fresh file (WAL); no peer runs there.")
    w(
        "- Settings: each library's dequeue batch / concurrency is the best of a sweep "
        "(`run.py --calibrate`, see `calibration.md` beside this file when present); "
        "logging prints nothing per task for any library (left unconfigured; chancy's own "
        "default logger, which logs every job at INFO, set to WARNING). oban runs on "
        "Python 3.12 (it needs it), the others on the project's Python."
    )
    w("")
    if meta.get("chart"):
        w("![benchmark chart](chart.png)")
        w("")
    out.write_text("\n".join(lines))


def make_chart(summary_path: Path, png: Path) -> bool:
    proc = subprocess.run(
        [str(PEERS_PY), str(BENCH / "chart.py"), str(summary_path), str(png)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        print("chart failed:\n" + proc.stderr[-3000:], file=sys.stderr)
        return False
    return True


def print_summary(summary: dict[str, Any]) -> None:
    print("\nmedians (ratio = nightcrew / peer):")
    for case, data in summary.items():
        libs = data["libs"]
        # results.json files written before "scenario" was kept name it by the case key
        legacy = {"sqlite_drain": "drain", "sqlite_drain2": "drain", "drain1": "drain"}
        legacy.update(drain2="drain", sqlite_latency="latency")
        legacy.update(backlog_small="backlog", backlog_large="backlog")
        scenario = data.get("scenario") or legacy.get(case, case)
        peer_case = PEER_CASE.get(case)
        peers = [p for p in PEERS if p in summary.get(peer_case or case, {}).get("libs", {})]
        for key in HEADLINE.get(scenario, ()):
            vals = "  ".join(
                f"{lib}={num(med(summary, case, lib, key), 1)}" for lib in LIBS if lib in libs
            )
            ratios = "  ".join(
                f"nc/{p[:5]}={ratio_cell(summary, case, p, key, peer_case)}" for p in peers
            )
            print(f"  {case:<15} {key:<14} {vals}  {ratios}")
    for t in targets(summary):
        met = "n/a" if t["met"] is None else ("ok" if t["met"] else "MISSED")
        print(f"  target: {t['target']:<48} {t['measured']:<24} {met}")


# ------------------------------------------------------------------ calibration


CALIBRATION: dict[str, list[dict[str, Any]]] = {
    "pgqueuer": [
        {"driver": d, "batch_size": b}
        for d in ("asyncpg", "asyncpg-pool")
        for b in (10, 50, 100, 200, 500)
    ],
    "procrastinate": [
        {"concurrency": c, "pool_max": p}
        for c, p in ((1, 4), (10, 10), (30, 10), (30, 30), (100, 20))
    ],
    "nightcrew": [{"concurrency": c} for c in (10, 50, 100, 200, 500, 1000)],
    "oban": [{"queue_limit": c} for c in (10, 20, 50, 100, 200, 500)],
    "chancy": [
        {"concurrency": c, "send_outgoing_interval": i} for i in (1, 0.1) for c in (50, 200, 1000)
    ],
}


def calibrate(n: int, repeat: int, timeout: float, libs: list[str], where: Path) -> None:
    """Drain throughput of ``n`` tasks for each candidate setting (1 and 2 processes).

    Prints a table and keeps it, per library, in ``where``/calibration.json and .md
    (bench/results for a full-size sweep; a later ``--calibrate-libs X`` replaces X's
    section only). The chosen values go into each ``sc_<lib>.py``'s ``DEFAULTS`` by hand;
    the report says what was used.
    """
    store = where / "calibration.json"
    saved: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    for lib in libs:
        print(f"\n== {lib}")
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        rows = []
        for cand in CALIBRATION[lib]:
            tps = []
            for procs in (1, 2):
                case = Case("cal", "drain", "cal", "drain", {"n": n, "procs": procs}, (lib,))
                vals = [run_one(lib, case, cand, timeout)["metrics"]["tps"] for _ in range(repeat)]
                tps.append(statistics.median(vals))
            rows.append({"settings": cand, "drain1": tps[0], "drain2": tps[1]})
            print(
                f"  {json.dumps(cand):<45} drain1={tps[0]:>9,.0f}  drain2={tps[1]:>9,.0f}",
                flush=True,
            )
        best = max(rows, key=lambda r: r["drain1"] + r["drain2"])
        print(f"  best (sum of both): {json.dumps(best['settings'])}")
        saved[lib] = {
            "when": f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
            "n": n,
            "repeat": repeat,
            "load_before": load,
            "rows": rows,
            "best": best["settings"],
        }
    where.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps(saved, indent=1))
    lines = [
        "# Calibration of drain settings",
        "",
        "`python bench/run.py --calibrate [--calibrate-n N] [--repeat R]`: median "
        "tasks/s draining N no-op tasks with each candidate setting; the best by the "
        "sum of both columns is what `sc_<lib>.py`'s `DEFAULTS` use.",
        "",
    ]
    for lib, data in saved.items():
        lines += [
            f"## {lib}",
            "",
            f"{data['when']}, {data['n']:,} tasks, median of {data['repeat']}, "
            f"load average before {data['load_before']}.",
            "",
            "| settings | 1 process | 2 processes |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| `{json.dumps(r['settings'])}` | {r['drain1']:,.0f} | {r['drain2']:,.0f} |"
            for r in data["rows"]
        ]
        lines += ["", f"Best: `{json.dumps(data['best'])}`", ""]
    (where / "calibration.md").write_text("\n".join(lines))
    print(f"\nwrote {where / 'calibration.md'}")


# ------------------------------------------------------------------ main


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, value = item.partition("=")
        lib, _, name = key.partition(".")
        if lib not in LIBS or not name or not _:
            raise SystemExit(f"--set wants LIB.KEY=VALUE with LIB in {LIBS}, got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(lib, {})[name] = parsed
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions (default 3; quick 1)")
    ap.add_argument("--only", default="", help=f"comma-separated groups of {', '.join(GROUPS)}")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="LIB.KEY=VALUE",
        help="override a library setting, e.g. pgqueuer.batch_size=50",
    )
    ap.add_argument(
        "--memory-peers",
        action="store_true",
        help="also measure the peers' worker RSS (slow for procrastinate)",
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per scenario run")
    ap.add_argument("--calibrate", action="store_true", help="sweep drain settings and stop")
    ap.add_argument("--calibrate-libs", default="pgqueuer,procrastinate,oban,chancy,nightcrew")
    ap.add_argument(
        "--calibrate-n",
        type=int,
        default=None,
        help="tasks per calibration drain (default: the drain size)",
    )
    ap.add_argument("--upgrade-peers", action="store_true", help="re-resolve peer versions")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite RESULTS.md and chart.png from OUT/results.json",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where RESULTS.md, chart.png and results.json go (default: "
        "bench/results for a full run of everything, else bench/results/raw/quick "
        "or bench/results/raw/partial, which git ignores)",
    )
    args = ap.parse_args()

    if args.out is not None:
        out_dir = args.out.resolve()
    elif args.quick:
        out_dir = RAW / "quick"
    elif args.only and not args.report_only:
        out_dir = RAW / "partial"
    else:
        out_dir = RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    RAW.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "results.json"
    if args.report_only:
        data = json.loads(summary_path.read_text())
        chart = make_chart(summary_path, out_dir / "chart.png")
        write_report(data["summary"], {**data["meta"], "chart": chart}, out_dir / "RESULTS.md")
        print_summary(data["summary"])
        return

    available = ensure_peers(args.upgrade_peers)
    sizes = SIZES["quick" if args.quick else "full"]
    repeat = args.repeat or (1 if args.quick else 3)
    if args.calibrate:
        n = args.calibrate_n or sizes["drain"]["n"]
        libs = [lib for lib in args.calibrate_libs.split(",") if lib in available]
        calibrate(n, repeat, args.timeout, libs, out_dir if args.quick else RESULTS)
        return

    only = {g.strip() for g in args.only.split(",") if g.strip()}
    unknown = only - set(GROUPS)
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)}; choose from {GROUPS}")
    cases = [
        c
        for c in build_cases(sizes, args.memory_peers, available)
        if (not only or c.group in only) and c.libs
    ]
    overrides = parse_overrides(args.set)

    info = subprocess.run(
        [interpreter("nightcrew"), str(BENCH / "benchlib.py"), "info"],
        capture_output=True,
        text=True,
        check=True,
        cwd=BENCH,
    )
    machine = json.loads(info.stdout)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print(
            f"warning: load average {load_before}: other work is running; numbers will be noisy",
            file=sys.stderr,
        )
    started = datetime.now(UTC)
    raw_path = RAW / f"runs-{started:%Y%m%dT%H%M%S}.jsonl"
    print(
        f"{len(cases)} scenarios x {repeat} repetitions; raw results in "
        f"{raw_path.relative_to(REPO)}",
        flush=True,
    )
    runs = run_all(cases, repeat, overrides, args.timeout, raw_path)
    summary = summarise(runs, cases)
    git = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command.strip(),
        "quick": args.quick,
        "repeat": repeat,
        "machine": machine,
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "nightcrew_git": git,
    }
    summary_path.write_text(json.dumps({"meta": meta, "summary": summary}, indent=1))
    chart = make_chart(summary_path, out_dir / "chart.png")
    write_report(summary, {**meta, "chart": chart}, out_dir / "RESULTS.md")
    print_summary(summary)
    print(f"\nwrote {out_dir / 'RESULTS.md'}" + (f" and {out_dir / 'chart.png'}" if chart else ""))


if __name__ == "__main__":
    main()
