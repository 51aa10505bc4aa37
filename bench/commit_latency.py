"""How long one committed INSERT takes on this machine, with and without waiting for the disk.

    .venv/bin/python bench/commit_latency.py [--n 300] [--gap 0.02]

Plain psycopg, no job library: N single-row INSERTs in autocommit, ``--gap`` seconds apart
(the cadence of the pickup-latency scenario), first with ``synchronous_commit = on`` (every
commit waits for its WAL flush, as every library's enqueue does), then ``off``. The worst
values show the disk's flush stalls, which land in whichever library's measurement is
running at the time: they are what makes p99 pickup latency noisy here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import benchlib as bl
import psycopg

DB = "bench_commit"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--gap", type=float, default=0.02)
    args = ap.parse_args()
    bl.recreate_database(DB)
    with psycopg.connect(bl.pg_url(DB), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, payload text)")
        for mode in ("on", "off"):
            conn.execute(f"SET synchronous_commit = {mode}")
            times = []
            for _ in range(args.n):
                started = time.perf_counter()
                conn.execute("INSERT INTO t (payload) VALUES ('{}') RETURNING id").fetchone()
                times.append((time.perf_counter() - started) * 1000)
                time.sleep(args.gap)
            times.sort()
            p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
            print(
                f"synchronous_commit={mode:3}: p50 {statistics.median(times):.2f} ms, "
                f"p99 {p99:.2f} ms, worst {times[-1]:.1f} ms over {args.n} commits"
            )


if __name__ == "__main__":
    main()
