"""Where a tuned drain's CPU goes: the workers' own, and PostgreSQL's, per task.

    .venv/bin/python bench/cpu_split.py              # 3 rounds of nightcrew and pgqueuer,
    .venv/bin/python bench/cpu_split.py --rounds 5   # 1 and 2 worker processes each

The drains are `./dev bench`'s tuned drains (`sc_nightcrew.scenario_drain` and
`sc_pgqueuer.scenario_drain`, 20,000 no-op tasks, each library at its benchmark settings,
pgqueuer in bench/.peers-venv), run here one at a time in rotating order. For each it
reports tasks/s, the worker processes' CPU time from the start signal to their end
(``time.process_time()`` in each child, so imports and connecting are left out), and the
CPU time every ``postgres`` process of this host used over the same span (from
``/proc/<pid>/stat``: the backends, the WAL writer, the checkpointer...). This is a
measure for a local PostgreSQL on the benchmark's own machine, where both share the cores:
on two cores, the two sums per task bound the rate any number of worker processes reaches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = {
    "nightcrew": ROOT / ".venv" / "bin" / "python",
    "pgqueuer": BENCH / ".peers-venv" / "bin" / "python",
}
N = 20_000


def postgres_cpu_seconds() -> float:
    """CPU time (user + system, children included) of every ``postgres`` process here."""
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if not f.read().startswith("postgres"):
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        ticks += sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def one(lib: str, procs: int) -> None:
    """In the library's own interpreter: one drain, its figures as a JSON line."""
    sys.path.insert(0, str(BENCH))
    import benchlib as bl

    marks: dict[str, float] = {}
    go, summary = bl.Children.go, bl.drain_summary

    # The scenario is the benchmark's own; only its start signal and its summary are
    # wrapped, to read PostgreSQL's CPU time at the same two moments.
    def timed_go(self: Any) -> float:
        marks["pg"] = postgres_cpu_seconds()
        return go(self)

    def timed_summary(n: int, at: float, children: list[dict[str, Any]], *a: Any) -> Any:
        marks["pg"] = postgres_cpu_seconds() - marks["pg"]
        return summary(n, at, children, *a)

    bl.Children.go = timed_go  # type: ignore[method-assign]
    bl.drain_summary = timed_summary
    if lib == "nightcrew":
        import sc_nightcrew as sc

        params: dict[str, Any] = {"n": N, "procs": procs, "backend": "postgresql"}
    else:
        import sc_pgqueuer as sc  # type: ignore[no-redef]

        params = {"n": N, "procs": procs}
    result = sc.scenario_drain(params, dict(sc.DEFAULTS))
    result["pg_cpu_s"] = marks["pg"]
    print(json.dumps(result), flush=True)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "_one":
        one(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cases = [(lib, procs) for procs in (1, 2) for lib in ("nightcrew", "pgqueuer")]
    found: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in cases}
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for r in range(args.rounds):
        for lib, procs in cases[r % len(cases) :] + cases[: r % len(cases)]:
            out = subprocess.run(
                [str(PYTHON[lib]), __file__, "_one", lib, str(procs)],
                capture_output=True,
                text=True,
                timeout=600,
                cwd=BENCH,
            )
            if out.returncode != 0:
                raise SystemExit(f"{lib} x{procs} failed:\n{out.stderr[-3000:]}")
            m = json.loads(out.stdout.strip().splitlines()[-1])
            row = {
                "tps": m["tps"],
                "worker_us": m["worker_cpu_s"] / N * 1e6,
                "pg_us": m["pg_cpu_s"] / N * 1e6,
            }
            found[(lib, procs)].append(row)
            print(
                f"  round {r + 1} {lib:>9} x{procs}: {row['tps']:>8,.0f} tasks/s, "
                f"worker {row['worker_us']:5.1f} us/task, PostgreSQL {row['pg_us']:5.1f} us/task"
            )
    print("medians:")
    for lib, procs in cases:
        rows = found[(lib, procs)]
        tps = statistics.median(r["tps"] for r in rows)
        w = statistics.median(r["worker_us"] for r in rows)
        pg = statistics.median(r["pg_us"] for r in rows)
        cores = tps * (w + pg) / 1e6
        print(
            f"  {lib:>9} x{procs}: {tps:>8,.0f} tasks/s, worker {w:5.1f} + PostgreSQL {pg:5.1f}"
            f" = {w + pg:5.1f} us/task, {cores:.2f} cores busy"
        )
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
