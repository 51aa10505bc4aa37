"""Draw bench/results/chart.png from results.json (runs in bench/.peers-venv: matplotlib).

python chart.py results.json chart.png
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LIBS = ("nightcrew", "procrastinate", "pgqueuer", "oban", "chancy")
COLORS = {
    "nightcrew": "#1b7f5f",
    "procrastinate": "#8a8a8a",
    "pgqueuer": "#4a73b5",
    "oban": "#c9822b",
    "chancy": "#8e5ea2",
}


def metric(summary: dict[str, Any], case: str, lib: str, key: str) -> float | None:
    try:
        return float(summary[case]["libs"][lib]["metrics"][key]["median"])
    except (KeyError, TypeError):
        return None


def grouped(
    ax: Any,
    summary: dict[str, Any],
    groups: list[tuple[str, str, str]],
    ylabel: str,
    log: bool = False,
    higher_better: bool = True,
) -> None:
    """Bars: one group per (case, metric), one bar per library, ratios above peers."""
    present = [lib for lib in LIBS if any(metric(summary, c, lib, k) for c, k, _ in groups)]
    width = 0.8 / max(len(present), 1)
    drawn = False
    for gi, (case, key, _label) in enumerate(groups):
        nc = metric(summary, case, "nightcrew", key)
        for li, lib in enumerate(present):
            v = metric(summary, case, lib, key)
            if v is None:
                continue
            x = gi + (li - (len(present) - 1) / 2) * width
            ax.bar(x, v, width, color=COLORS[lib], label=lib if gi == 0 else None)
            drawn = True
            text = f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"
            if lib != "nightcrew" and nc and v:
                text += f"\n{nc / v:.2f}x"
            ax.annotate(
                text,
                (x, v),
                ha="center",
                va="bottom",
                fontsize=5.5,
                xytext=(0, 1),
                textcoords="offset points",
            )
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[2] for g in groups], fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.25)
    if drawn:
        ax.legend(fontsize=7, loc="upper right")
    note = "higher is better" if higher_better else "lower is better"
    ax.text(0.01, 0.98, note, transform=ax.transAxes, fontsize=7, va="top", color="#555")


def single(ax: Any, summary: dict[str, Any], bars: list[tuple[str, str, str]], ylabel: str) -> None:
    for i, (case, key, _label) in enumerate(bars):
        v = metric(summary, case, "nightcrew", key)
        if v is None:
            continue
        ax.bar(i, v, 0.6, color=COLORS["nightcrew"])
        ax.annotate(
            f"{v:,.0f}" if v >= 100 else f"{v:,.1f}",
            (i, v),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 1),
            textcoords="offset points",
        )
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([b[2] for b in bars], fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.margins(y=0.2)


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        data = json.load(f)
    summary, meta = data["summary"], data["meta"]
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    (a1, a2, a7, a3), (a4, a5, a6, a8) = axes

    grouped(
        a1,
        summary,
        [("enqueue", "bulk_tps", "bulk"), ("enqueue", "single_tps", "one at a time")],
        "tasks/s (log)",
        log=True,
    )
    a1.set_title("Enqueue", fontsize=10)
    grouped(
        a2,
        summary,
        [("drain1", "tps", "1 process"), ("drain2", "tps", "2 processes")],
        "tasks/s (log)",
        log=True,
    )
    a2.set_title("Drain no-op tasks (tuned)", fontsize=10)
    grouped(
        a7,
        summary,
        [("burst1", "tps", "1 process"), ("burst2", "tps", "2 processes")],
        "tasks/s (log)",
        log=True,
    )
    a7.set_title("Burst: nightcrew `run --once` at defaults, peers at their best", fontsize=9)
    single(
        a8,
        summary,
        [
            ("burst_sqlite1", "tps", "1 process"),
            ("burst_sqlite2", "tps", "2 processes"),
        ],
        "tasks/s",
    )
    a8.set_title("nightcrew on SQLite: burst at defaults", fontsize=10)
    grouped(
        a3,
        summary,
        [("latency", "p50_ms", "p50"), ("latency", "p95_ms", "p95"), ("latency", "p99_ms", "p99")],
        "ms",
        higher_better=False,
    )
    a3.set_title("Pickup latency, idle worker (enqueue to start)", fontsize=10)

    b = summary.get("backlog_small", {}).get("params", {})
    bl = summary.get("backlog_large", {}).get("params", {})
    single(
        a4,
        summary,
        [
            ("backlog_small", "tps", f"{b.get('pending', 0):,} pending"),
            ("backlog_large", "tps", f"{bl.get('pending', 0):,} pending"),
        ],
        "claims/s",
    )
    a4.set_title(f"nightcrew backlog (+{b.get('finished', 0):,} finished rows)", fontsize=10)

    single(
        a5,
        summary,
        [("sqlite_drain", "tps", "drain, 1 proc"), ("sqlite_drain2", "tps", "drain, 2 procs")],
        "tasks/s",
    )
    a5.set_title("nightcrew on SQLite", fontsize=10)
    twin = a5.twinx()
    lat = [
        metric(summary, "sqlite_latency", "nightcrew", k) for k in ("p50_ms", "p95_ms", "p99_ms")
    ]
    if all(v is not None for v in lat):
        xs = [2, 2.3, 2.6]
        twin.bar(xs, lat, 0.25, color="#9ccfb8")
        for x, v, lab in zip(xs, lat, ("p50", "p95", "p99"), strict=True):
            twin.annotate(
                f"{lab}\n{v:.0f} ms",
                (x, v),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 1),
                textcoords="offset points",
            )
        twin.set_ylabel("pickup latency, ms", fontsize=8)
        twin.margins(y=0.25)
        a5.set_xlim(-0.5, 3.0)

    mem = summary.get("memory", {}).get("libs", {})
    top = 0.0
    for lib in LIBS:
        tl = mem.get(lib, {}).get("metrics", {}).get("rss_timeline")
        if tl:
            a6.plot(
                [p[0] * 100 for p in tl],
                [p[1] for p in tl],
                color=COLORS[lib],
                label=lib,
                marker=".",
                markersize=3,
            )
            top = max(top, *(p[1] for p in tl))
            peak = metric(summary, "memory", lib, "rss_peak_mb")
            growth = metric(summary, "memory", lib, "rss_growth_mb")
            if peak is not None and growth is not None:
                a6.annotate(
                    f"peak {peak:.1f} MB, growth {growth:+.1f} MB",
                    (100, tl[-1][1]),
                    ha="right",
                    va="bottom",
                    fontsize=7,
                    color=COLORS[lib],
                    xytext=(0, 3),
                    textcoords="offset points",
                )
    n = summary.get("memory", {}).get("params", {}).get("n", 0)
    a6.set_title(f"Worker RSS while draining {n:,} tasks", fontsize=10)
    a6.set_xlabel("% of drain time", fontsize=8)
    a6.set_ylabel("RSS, MB", fontsize=8)
    a6.set_ylim(0, max(top * 1.25, 1.0))
    if mem:
        a6.legend(fontsize=7)

    m = meta["machine"]
    fig.suptitle(
        "nightcrew vs "
        + ", ".join(lib for lib in LIBS[1:] if any(lib in c["libs"] for c in summary.values()))
        + f" — median of {meta['repeat']} "
        f"{'(QUICK smoke run) ' if meta['quick'] else ''}| {m.get('nproc')} cores, "
        f"PostgreSQL {str(m.get('postgres', '')).split()[0]}, fsync={m.get('fsync')}, "
        f"synchronous_commit={m.get('synchronous_commit')}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main()
