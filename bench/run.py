"""Run nightcrew, procrastinate and pgqueuer side by side and write the report.

    python bench/run.py [--quick] [--repeat N] [--only enqueue,drain,...] [--set LIB.KEY=VALUE]
    python bench/run.py --calibrate [--quick]     # sweep the peers' (and nightcrew's) knobs
    python bench/run.py --report-only              # redo RESULTS.md / chart.png from results.json

Each library runs in its own interpreter (nightcrew: the project's .venv; the peers:
bench/.peers-venv, made by bench/setup_peers.sh on first use) and its own fresh database.
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
PROJECT_PY = REPO / ".venv" / "bin" / "python"
LIBS = ("nightcrew", "procrastinate", "pgqueuer")
PEERS = ("procrastinate", "pgqueuer")
SCRIPTS = {lib: f"sc_{lib}.py" for lib in LIBS}
GROUPS = ("enqueue", "drain", "latency", "backlog", "sqlite", "memory")
RESULT_PREFIX = "RESULT "

LATENCY = {"interval": 0.02, "warmup": 10, "settle": 1.0}
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "enqueue": {"bulk": 20_000, "single": 2_000},
        "drain": {"n": 20_000},
        "latency": {"n": 200, **LATENCY},
        "backlog": {"small": 10_000, "large": 1_000_000, "finished": 1_000_000, "claim": 8_000},
        "sqlite_drain": {"n": 20_000},
        "memory": {"n": 100_000},
    },
    "quick": {
        "enqueue": {"bulk": 2_000, "single": 200},
        "drain": {"n": 2_000},
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


def build_cases(sizes: dict[str, Any], memory_peers: bool) -> list[Case]:
    b = sizes["backlog"]
    return [
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


# ------------------------------------------------------------------ running


def ensure_peers(upgrade: bool = False) -> None:
    """Make or refresh bench/.peers-venv (a few seconds when it is already complete)."""
    if not PEERS_PY.exists():
        print("creating bench/.peers-venv (procrastinate, pgqueuer, matplotlib) ...", flush=True)
    cmd = ["bash", str(BENCH / "setup_peers.sh")] + (["--upgrade"] if upgrade else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench/setup_peers.sh failed:\n{proc.stdout}\n{proc.stderr}")
    print("peers: " + proc.stdout.strip().splitlines()[-1], flush=True)


def interpreter(lib: str) -> str:
    if lib == "nightcrew":
        return str(PROJECT_PY if PROJECT_PY.exists() else Path(sys.executable))
    return str(PEERS_PY)


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

    for case, label in (("drain1", "1 process"), ("drain2", "2 processes")):
        nc = med(summary, case, "nightcrew", "tps")
        for peer, need in (("pgqueuer", 1.5), ("procrastinate", 10.0)):
            r = ratio(nc, med(summary, case, peer, "tps"))
            add(f"drain ({label}) >= {need:g}x {peer}", fmt(r), None if r is None else r >= need)
    r = ratio(
        med(summary, "enqueue", "nightcrew", "bulk_tps"),
        med(summary, "enqueue", "pgqueuer", "bulk_tps"),
    )
    add("bulk enqueue >= 1.5x pgqueuer", fmt(r), None if r is None else r >= 1.5)
    for metric in ("p50_ms", "p99_ms"):
        nc = med(summary, "latency", "nightcrew", metric)
        peers = [v for p in PEERS if (v := med(summary, "latency", p, metric)) is not None]
        best = min(peers) if peers else None
        ok = None if nc is None or best is None else nc <= best
        add(
            f"pickup latency {metric[:3]} <= best peer",
            f"{fmt(nc, ' ms')} vs {fmt(best, ' ms')}",
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


def ratio_cell(summary: dict[str, Any], case: str, peer: str, metric: str) -> str:
    r = ratio(med(summary, case, "nightcrew", metric), med(summary, case, peer, metric))
    return "—" if r is None else f"{r:.2f}"


SETTING_NOTES = {
    "nightcrew": "sync `create_maintenance_tasks` (one `INSERT ... SELECT ... FROM "
    "json_array_elements(...)`) and `create_maintenance_task` (SQLAlchemy, psycopg 3); "
    "`Worker(settings).run(until_idle=True)` (claims and finishes straight on psycopg 3, "
    "the rest through SQLAlchemy); built-in `nightcrew.processors.Noop`; uvloop (what "
    "`nightcrew worker` runs on by default)",
    "procrastinate": "`PsycopgConnector` (psycopg 3, C build, pool); `batch_defer_async` and "
    "`defer_async`; `run_worker_async(wait=False)` with async tasks; LISTEN/NOTIFY on; "
    "stdlib asyncio (its CLI's loop)",
    "pgqueuer": "asyncpg (`AsyncpgDriver`; `AsyncpgPoolDriver` with `driver=asyncpg-pool`); "
    "`Queries.enqueue` with lists (bulk) and scalars (single); "
    "`PgQueuer.run(mode=drain)`; uvloop (as `pgq run` and its own benchmark use); "
    "tables installed by `pgq install` (durable)",
}


def write_report(summary: dict[str, Any], meta: dict[str, Any], out: Path) -> None:
    lines: list[str] = []
    w = lines.append
    mode = "quick (smoke-test sizes: numbers are not meaningful)" if meta["quick"] else "full"
    w("# Benchmark: nightcrew vs procrastinate vs pgqueuer")
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
        "| Scenario | Metric | nightcrew | procrastinate | pgqueuer "
        "| nightcrew / procrastinate | nightcrew / pgqueuer |"
    )
    w("|---|---|---:|---:|---:|---:|---:|")
    rows = [
        ("enqueue", "bulk_tps", "bulk enqueue, tasks/s", 0),
        ("enqueue", "single_tps", "one-at-a-time enqueue, tasks/s", 0),
        ("drain1", "tps", "tasks/s", 0),
        ("drain2", "tps", "tasks/s", 0),
        ("latency", "p50_ms", "enqueue-to-start p50, ms", 1),
        ("latency", "p95_ms", "enqueue-to-start p95, ms", 1),
        ("latency", "p99_ms", "enqueue-to-start p99, ms", 1),
        ("memory", "rss_peak_mb", "peak RSS, MB", 1),
    ]
    for case, metric, label, digits in rows:
        if case not in summary:
            continue
        libs = summary[case]["libs"]
        if case == "memory" and len(libs) == 1:
            continue
        title = summary[case]["title"]
        if case == "enqueue":
            title = (
                f"Enqueue ({summary[case]['params']['bulk']:,} bulk / "
                f"{summary[case]['params']['single']:,} single)"
            )
        elif case in ("drain1", "drain2"):
            title += f" ({summary[case]['params']['n']:,} no-op tasks)"
        elif case == "latency":
            p = summary[case]["params"]
            title += f" ({p['n']} tasks, {p['interval'] * 1000:.0f} ms apart)"
        w(
            f"| {title} | {label} | "
            + " | ".join(cell(summary, case, lib, metric, digits) for lib in LIBS)
            + " | "
            + " | ".join(ratio_cell(summary, case, p, metric) for p in PEERS)
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
    for lib in LIBS:
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
        "`bench_pgqueuer`), dropped and created again before every scenario run, with the "
        "schema each library documents (nightcrew's migrations, procrastinate's "
        "`apply_schema`, `pgq install`)."
    )
    w(
        "- Enqueue: the time of the enqueue calls only, after one warm-up enqueue has opened "
        "the connection. Bulk is one call with all tasks; single is a loop of awaited calls."
    )
    w(
        "- Drain: tasks are enqueued first (not timed); the worker processes connect, say "
        "they are ready, and are released together; throughput is tasks / (last worker "
        "finished - first worker started). Every task's execution is counted in the workers "
        "and checked against the database afterwards."
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
        "logging is left unconfigured for all three (nothing printed per task)."
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
        keys = HEADLINE.get(
            {
                "sqlite_drain": "drain",
                "sqlite_drain2": "drain",
                "sqlite_latency": "latency",
                "backlog_small": "backlog",
                "backlog_large": "backlog",
                "drain1": "drain",
                "drain2": "drain",
            }.get(case, case),
            (),
        )
        for key in keys:
            vals = "  ".join(
                f"{lib}={num(med(summary, case, lib, key), 1)}" for lib in LIBS if lib in libs
            )
            ratios = "  ".join(
                f"nc/{p[:5]}={ratio_cell(summary, case, p, key)}" for p in PEERS if p in libs
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
}


def calibrate(n: int, repeat: int, timeout: float, libs: list[str]) -> None:
    """Drain throughput of ``n`` tasks for each candidate setting (1 and 2 processes).

    Prints a table and keeps it, per library, in bench/results/calibration.json and .md
    (a later ``--calibrate-libs X`` replaces X's section only). The chosen values go into
    each ``sc_<lib>.py``'s ``DEFAULTS`` by hand; the report says what was used.
    """
    store = RESULTS / "calibration.json"
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
    RESULTS.mkdir(exist_ok=True)
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
    (RESULTS / "calibration.md").write_text("\n".join(lines))
    print(f"\nwrote {RESULTS / 'calibration.md'}")


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
    ap.add_argument("--calibrate-libs", default="pgqueuer,procrastinate,nightcrew")
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

    ensure_peers(args.upgrade_peers)
    sizes = SIZES["quick" if args.quick else "full"]
    repeat = args.repeat or (1 if args.quick else 3)
    if args.calibrate:
        n = args.calibrate_n or sizes["drain"]["n"]
        calibrate(n, repeat, args.timeout, args.calibrate_libs.split(","))
        return

    only = {g.strip() for g in args.only.split(",") if g.strip()}
    unknown = only - set(GROUPS)
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)}; choose from {GROUPS}")
    cases = [c for c in build_cases(sizes, args.memory_peers) if not only or c.group in only]
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
