"""Signals to real workers: SIGTERM twice skips the grace period and hands running tasks
back; SIGSTOP past the lease, then SIGCONT: the task was rescued and run by another worker,
and the stopped worker's late outcome is rejected and logged at WARNING."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from nightcrew import MaintenanceTaskStatus
from tests.conftest import Backend
from tests.fault_processors import Logged, SyncLogged, read_runs
from tests.faults.harness import (
    app_for,
    enqueue,
    fault_env,
    log_time,
    processes,
    task,
    wait_until,
)

S = MaintenanceTaskStatus


@pytest.mark.slow
@pytest.mark.parametrize("processor", [Logged, SyncLogged], ids=["async", "sync"])
def test_a_second_sigterm_stops_at_once_and_hands_running_tasks_back(
    backend: Backend, tmp_path: Path, processor: type[Logged] | type[SyncLogged]
) -> None:
    log = tmp_path / "runs.log"
    # Default settings: among them the 30 s grace period the second signal must skip.
    env = fault_env(backend)
    with app_for(backend) as app, processes(tmp_path) as procs:
        ids = enqueue(app, [processor(path=str(log), key=f"k{i}", seconds=600) for i in range(2)])
        worker = procs.worker(env, concurrency=2)
        wait_until(
            lambda: len(read_runs(log)) == 2, what="both tasks running", within=60, procs=procs
        )

        worker.signal(signal.SIGTERM)
        # The first signal drains: the tasks run on in the grace period, the worker waits.
        assert worker.wait(1.5) is None, procs.logs()
        second = time.time()
        worker.signal(signal.SIGTERM)
        code = worker.wait(10)
        exited = time.time() - second
        assert code is not None, f"still running 10 s after the second SIGTERM\n{procs.logs()}"
        assert code == 0, procs.logs()
        # The worker itself is done within a second (its own log says when), and the process
        # is gone soon after: what follows "worker stopped" is the interpreter's teardown,
        # ~0.15 s on an idle machine, up to ~1 s on a 2-core one running the suite with -n 4.
        stopped = log_time(worker.err(), "worker stopped") - second
        assert stopped <= 1.0, f"worker stopped {stopped:.2f}s after the second SIGTERM"
        assert exited <= 2.0, f"exited {exited:.2f}s after the second SIGTERM\n{procs.logs()}"

        for task_id in ids:
            view = task(app, task_id)
            assert view.status is S.PENDING, view
            assert (view.attempts, view.rescues) == (0, 0)
            assert view.lease_token is None and view.lease_expires_at is None
            assert view.finished_at is None
        assert [r.ended for r in read_runs(log)] == [None, None]
