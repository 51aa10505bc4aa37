"""SIGKILL of random workers during a 5,000-task drain: nothing lost, nothing stuck, and
every task that ran twice was held by a worker at the moment it was killed.

Runs are counted from the processors' own execution log (`tests.fault_processors.Logged`),
not from nightcrew's status column. The figures are printed, and written as JSON to the
path in ``NIGHTCREW_FAULT_REPORT`` when it is set.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections import defaultdict
from pathlib import Path

import pytest

from nightcrew import MaintenanceTaskStatus
from tests.conftest import Backend
from tests.fault_processors import Logged, Run, read_runs
from tests.faults.harness import (
    FINAL,
    Proc,
    all_tasks,
    app_for,
    counts,
    enqueue,
    fault_env,
    processes,
    report,
)

S = MaintenanceTaskStatus

TASKS = 5000
WORKERS = 4
CONCURRENCY = 8
#: Each run sleeps this long, so a kill always finds runs in flight (32 slots: ~160 tasks/s).
TASK_SECONDS = 0.2
#: Changed from the defaults (as is the poison budget, below). At the default 30 s
#: lease every kill would leave its tasks waiting 30 s (plus up to 15 s for a rescuer's
#: next look) and the drain would take many minutes; what this test is about is the
#: rescue path itself, which a 5 s lease exercises the same way, six times as often.
LEASE_SECONDS = 5
#: Seconds between kills, drawn at random in this range; at most this many kills (on a
#: loaded machine the drain slows, and more kills would only slow it further).
KILL_EVERY = (2.0, 4.0)
MAX_KILLS = 20
DRAIN_DEADLINE = 240.0
LOGGED = Logged.class_path()


class Tail:
    """The pids that started runs so far, read from the execution log as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.seen: set[int] = set()

    def pids(self) -> set[int]:
        if self.path.exists():
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            self.offset += len(complete)
            self.seen.update(int(line.split()[1]) for line in complete.splitlines())
        return self.seen


@pytest.mark.slow
def test_sigkill_of_random_workers_during_a_drain_loses_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    seed = int(os.environ.get("NIGHTCREW_FAULT_SEED", str(random.randrange(10**6))))
    rng = random.Random(seed)
    log = tmp_path / "runs.log"
    # The test itself kills a task's worker again and again (up to 20 kills); the poison
    # budget is for a task that kills its worker, which none here does, so it is set out of
    # reach of the test's own kills (the default, 3, is tested in tests/store).
    env = fault_env(backend, NIGHTCREW_LEASE_SECONDS=str(LEASE_SECONDS), NIGHTCREW_MAX_RESCUES="25")
    keys = [f"k{i}" for i in range(TASKS)]
    with app_for(backend) as app, processes(tmp_path) as procs:
        ids = enqueue(app, [Logged(path=str(log), key=k, seconds=TASK_SECONDS) for k in keys])
        key_of = dict(zip(ids, keys, strict=True))
        live: list[Proc] = [procs.worker(env, concurrency=CONCURRENCY) for _ in range(WORKERS)]
        killed: list[Proc] = []
        running = Tail(log)
        started = time.time()
        next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
        while True:
            now = counts(app, processor=LOGGED)
            if sum(now[s] for s in FINAL) == TASKS:
                finished = time.time()
                break
            procs.check_alive(*live)
            if time.time() - started > DRAIN_DEADLINE:
                raise AssertionError(
                    f"drain not done in {DRAIN_DEADLINE:g}s: {now}\n{procs.logs()}"
                )
            # Kill while tasks still wait to be claimed (the last kill falls in the drain's
            # tail), and only a worker that runs tasks: one still starting up (seconds, on
            # a loaded machine) holds nothing, and killing it proves nothing.
            if time.monotonic() >= next_kill and now[S.PENDING] > 0 and len(killed) < MAX_KILLS:
                ran = running.pids()
                ripe = [p for p in live if p.pid in ran]
                if ripe:
                    victim = rng.choice(ripe)
                    procs.kill(victim)
                    killed.append(victim)
                    live.remove(victim)
                    live.append(procs.worker(env, concurrency=CONCURRENCY))
                next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
            time.sleep(0.2)
        for proc in live:
            assert procs.stop(proc) == 0, procs.logs()
        final = counts(app, processor=LOGGED)
        views = all_tasks(app)

    runs = read_runs(log)
    by_key: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_key[run.key].append(run)
    death = {p.pid: p.killed_at for p in killed}
    assert all(t is not None for t in death.values())

    # No task lost: every task created is there, COMPLETED, by a run that ended.
    missing = [i for i in ids if i not in views]
    not_completed = {
        i: views[i].status.value for i in ids if i in views and views[i].status is not S.COMPLETED
    }
    stuck = final[S.PENDING] + final[S.WORKING]
    never_ran = [k for k in keys if not any(r.ended is not None for r in by_key[k])]
    assert (missing, not_completed, stuck, never_ran) == ([], {}, 0, [])
    # Each stored result is that of a run of its own task that ended.
    for task_id in ids:
        info = views[task_id].info or {}
        key = key_of[task_id]
        assert info.get("key") == key
        assert info.get("pid") in {r.pid for r in by_key[key] if r.ended is not None}

    # Every run but the last of a task belongs to a worker killed while it held the task:
    # its pid is a killed worker's, it started before that worker died, and the next run
    # started only after (the task was rescued once the dead worker's lease expired).
    cut_short = ended_unstored = 0
    unexplained = []
    doubles = {k: rs for k, rs in by_key.items() if len(rs) > 1}
    for key, rs in doubles.items():
        for first, then in itertools.pairwise(rs):
            died = death.get(first.pid)
            if died is None or not first.started < died < then.started:
                unexplained.append((key, first, then, died))
            elif first.ended is None:
                cut_short += 1  # killed mid-run
            else:
                ended_unstored += 1  # ended, killed before its outcome was written
    assert unexplained == []
    double_runs = sum(len(rs) - 1 for rs in doubles.values())

    figures = {
        "database": backend.name,
        "seed": seed,
        "tasks": TASKS,
        "workers": WORKERS,
        "concurrency": CONCURRENCY,
        "task_seconds": TASK_SECONDS,
        "lease_seconds": LEASE_SECONDS,
        "kills": len(killed),
        "lost": len(missing) + len(not_completed),
        "stuck": stuck,
        "runs": len(runs),
        "double_runs": double_runs,
        "double_runs_killed_mid_run": cut_short,
        "double_runs_killed_before_outcome_written": ended_unstored,
        "double_runs_unexplained": len(unexplained),
        "max_runs_of_one_task": max(len(rs) for rs in by_key.values()),
        "drain_seconds": round(finished - started, 2),
        "recovery_seconds_after_last_kill": round(finished - killed[-1].killed_at, 2)  # type: ignore[operator]
        if killed
        else None,
    }
    report(f"sigkill_drain_{backend.name}", figures)
    assert len(killed) >= 5, f"too few kills to mean anything: {figures}"
