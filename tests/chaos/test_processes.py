"""Real worker processes on both databases: sharing work, SIGKILL, SIGTERM; and on
PostgreSQL, a listening connection killed under a running worker.

Workers are started as a user would (``python -m nightcrew worker``), each with its log
in the test's directory; a test that fails shows the logs of its workers.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from nightcrew import (
    MaintenanceTaskStatus,
    TaskOptions,
    acreate_maintenance_task,
    create_maintenance_tasks,
)
from nightcrew.store import PostgresStore, TaskStore
from nightcrew.worker import Worker
from tests.conftest import PG_ADMIN_URL, ROOT, Backend
from tests.helpers import counts_by_status, poll_until, read_task, wait_for_status, wait_until
from tests.processors import Echo, RecordRun, Sleep

S = MaintenanceTaskStatus


class Workers:
    """Worker processes of one test; any still running at its end is killed."""

    def __init__(self, backend: Backend, directory: Path) -> None:
        self.backend = backend
        self.directory = directory
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, *, concurrency: int, **env: str) -> subprocess.Popen[bytes]:
        log = self.directory / f"worker-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nightcrew", "worker", "--concurrency", str(concurrency)],
                env=self.backend.env(**env),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((proc, log))
        return proc

    def logs(self) -> str:
        """Each worker's log; a live one is asked for its threads' stacks first (SIGUSR1)."""
        live = [proc for proc, _ in self.procs if proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGUSR1)
        if live:
            time.sleep(0.5)
        return "\n".join(
            f"--- {log.name} (exit {proc.poll()}):\n{log.read_text()[-12000:]}"
            for proc, log in self.procs
        )

    def wait_started(self, *procs: subprocess.Popen[bytes], within: float = 120) -> None:
        """Until each has logged that it started: its signal handlers are in place then, so
        a stop is a clean one (on a loaded machine a worker can take seconds to import)."""
        logs = {proc: log for proc, log in self.procs}

        def started() -> bool:
            self.check_alive(*procs)
            return all("worker started" in logs[proc].read_text() for proc in procs)

        poll_until(started, what="the workers started", within=within, explain=self.logs)

    def check_alive(self, *procs: subprocess.Popen[bytes]) -> None:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"a worker exited early ({proc.returncode})\n{self.logs()}")

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker ignored signal {sig}\n{self.logs()}") from None

    def cleanup(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture
def workers(backend: Backend, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(backend, tmp_path)
    yield group
    group.cleanup()


def recorded(path: Path) -> collections.Counter[str]:
    if not path.exists():
        return collections.Counter()
    return collections.Counter(line.split()[0] for line in path.read_text().splitlines())


# ---------------------------------------------------------------- sharing the work


@pytest.mark.slow
def test_several_worker_processes_run_each_of_thousands_of_tasks_exactly_once(
    backend: Backend, store: TaskStore, workers: Workers, tmp_path: Path
) -> None:
    record = tmp_path / "runs.txt"
    procs = [workers.start(concurrency=16) for _ in range(3)]
    workers.wait_started(*procs)  # three processes share the work, not the first two up
    keys = [f"k{i}" for i in range(3000)]
    ids = create_maintenance_tasks(
        [RecordRun(path=str(record), key=k) for k in keys],
        database=store.database,
        settings=backend.settings(),
    )

    def all_done() -> bool:
        workers.check_alive(*procs)
        return counts_by_status(store)[S.COMPLETED] == len(ids)

    poll_until(all_done, what="3,000 tasks completed", within=300, explain=workers.logs)
    for proc in procs:
        assert workers.stop(proc) == 0, workers.logs()

    runs = recorded(record)
    assert set(runs) == set(keys)
    assert [k for k, n in runs.items() if n != 1] == []
    final = counts_by_status(store)
    assert final[S.COMPLETED] == len(ids)
    assert final[S.WORKING] == final[S.PENDING] == final[S.ERROR] == 0


# ---------------------------------------------------------------- crashes and signals


@pytest.mark.slow
def test_tasks_of_a_killed_worker_are_rescued_and_completed_by_another(
    backend: Backend, store: TaskStore, workers: Workers, tmp_path: Path
) -> None:
    record = tmp_path / "runs.txt"
    keys = [f"k{i}" for i in range(20)]
    ids = create_maintenance_tasks(
        [RecordRun(path=str(record), key=k, seconds=5) for k in keys],
        TaskOptions(max_attempts=3),
        database=store.database,
        settings=backend.settings(),
    )
    lease = {"NIGHTCREW_LEASE_SECONDS": "2"}
    doomed = workers.start(concurrency=10, **lease)

    def doomed_is_busy() -> bool:
        workers.check_alive(doomed)
        return counts_by_status(store)[S.WORKING] == 10

    poll_until(
        doomed_is_busy, what="the first worker running 10 tasks", within=60, explain=workers.logs
    )
    held = [i for i in ids if read_task(store, i).status is S.WORKING]
    workers.stop(doomed, signal.SIGKILL)

    rescuer = workers.start(concurrency=20, **lease)

    def all_done() -> bool:
        workers.check_alive(rescuer)
        return counts_by_status(store)[S.COMPLETED] == len(ids)

    poll_until(
        all_done, what="every task completed by the rescuer", within=120, explain=workers.logs
    )
    assert workers.stop(rescuer) == 0, workers.logs()

    final = counts_by_status(store)
    assert final[S.WORKING] == final[S.PENDING] == final[S.ERROR] == 0
    rows = {i: read_task(store, i) for i in ids}
    assert all(row.status is S.COMPLETED for row in rows.values())
    # The crash spent no attempt: each held task ran once more, as its first attempt.
    assert {i: (rows[i].attempts, rows[i].rescues) for i in held} == dict.fromkeys(held, (1, 1))
    assert set(recorded(record)) == set(keys)


@pytest.mark.slow
def test_a_task_of_a_worker_killed_at_default_settings_is_run_again_and_completes(
    backend: Backend, store: TaskStore, workers: Workers, tmp_path: Path
) -> None:
    """Issue 9's crash, as a user meets it: max_attempts 1, a 30 s lease, kill -9 mid-task."""
    record = tmp_path / "runs.txt"
    (task_id,) = create_maintenance_tasks(
        [RecordRun(path=str(record), key="k", seconds=3)],
        database=store.database,
        settings=backend.settings(),
    )
    # The suite's worker environment shortens the lease and the poll: put the defaults back.
    defaults = {"NIGHTCREW_LEASE_SECONDS": "30", "NIGHTCREW_POLL_INTERVAL": "0.5"}
    doomed = workers.start(concurrency=10, **defaults)
    poll_until(
        lambda: read_task(store, task_id).status is S.WORKING,
        what="the task running",
        within=60,
        explain=workers.logs,
    )
    workers.stop(doomed, signal.SIGKILL)
    survivor = workers.start(concurrency=10, **defaults)

    def done() -> bool:
        workers.check_alive(survivor)
        return read_task(store, task_id).status.is_final

    poll_until(
        done, what="the task run again (one lease, one rescue)", within=150, explain=workers.logs
    )
    assert workers.stop(survivor) == 0, workers.logs()
    row = read_task(store, task_id)
    assert (row.status, row.attempts, row.rescues) == (S.COMPLETED, 1, 1)
    assert recorded(record) == {"k": 1}  # the killed run never got to its end


@pytest.mark.slow
def test_sigterm_lets_in_flight_tasks_finish_and_claims_no_more(
    backend: Backend, store: TaskStore, workers: Workers, tmp_path: Path
) -> None:
    record = tmp_path / "runs.txt"
    ids = create_maintenance_tasks(
        [RecordRun(path=str(record), key=f"k{i}", seconds=2) for i in range(8)],
        database=store.database,
        settings=backend.settings(),
    )
    proc = workers.start(concurrency=4)

    def busy() -> bool:
        workers.check_alive(proc)
        return counts_by_status(store)[S.WORKING] == 4

    poll_until(busy, what="4 tasks running", within=60, explain=workers.logs)
    in_flight = [i for i in ids if read_task(store, i).status is S.WORKING]
    assert workers.stop(proc, signal.SIGTERM) == 0, workers.logs()

    statuses = {i: read_task(store, i).status for i in ids}
    assert {statuses[i] for i in in_flight} == {S.COMPLETED}
    waiting = [i for i in ids if i not in in_flight]
    assert {statuses[i] for i in waiting} == {S.PENDING}
    assert all(read_task(store, i).attempts == 0 for i in waiting)
    assert sum(recorded(record).values()) == 4


@pytest.mark.slow
def test_sigterm_past_the_grace_period_hands_in_flight_tasks_back_pending(
    backend: Backend, store: TaskStore, workers: Workers
) -> None:
    ids = create_maintenance_tasks(
        [Sleep(seconds=600) for _ in range(3)],
        database=store.database,
        settings=backend.settings(),
    )
    proc = workers.start(concurrency=3, NIGHTCREW_SHUTDOWN_GRACE_SECONDS="0.5")

    def busy() -> bool:
        workers.check_alive(proc)
        return counts_by_status(store)[S.WORKING] == 3

    poll_until(busy, what="3 tasks running", within=60, explain=workers.logs)
    assert workers.stop(proc, signal.SIGTERM) == 0, workers.logs()

    for task_id in ids:
        row = read_task(store, task_id)
        assert row.status is S.PENDING
        assert row.attempts == 0
        assert row.lease_token is None and row.finished_at is None


# ---------------------------------------------------------------- PostgreSQL wake-ups


async def test_a_dropped_listen_connection_is_recovered(
    backend: Backend, astore: TaskStore
) -> None:
    if not backend.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL only")
    # A 30 s poll: within the deadlines below, only a NOTIFY can wake the worker.
    settings = backend.settings(poll_interval=30)
    worker = Worker(settings, concurrency=2)
    running = asyncio.create_task(worker.run())

    try:
        await wait_until(
            lambda: worker.listening and worker.waker.listener_pid,
            what="listening",
            worker=running,
        )
        first_pid = worker.waker.listener_pid
        async with await psycopg.AsyncConnection.connect(PG_ADMIN_URL, autocommit=True) as admin:
            cur = await admin.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
            assert (await cur.fetchone()) == (True,)

        await wait_until(
            lambda: worker.listening and worker.waker.listener_pid not in (None, first_pid),
            what="listening again on a new connection",
            worker=running,
        )
        task = await acreate_maintenance_task(
            Echo(value=4), database=astore.database, settings=settings
        )

        # Not picked up within 5 s: the worker was not woken (it polls every 30 s).
        await wait_for_status(astore, task.id, S.COMPLETED, within=5, worker=running)
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, 60)


async def test_dropped_claim_and_finish_connections_are_replaced(
    backend: Backend, astore: TaskStore
) -> None:
    if not backend.is_postgres:
        pytest.skip("the dedicated claim and finish connections are PostgreSQL only")
    settings = backend.settings()
    worker = Worker(settings, concurrency=2)
    hot = worker.store
    assert isinstance(hot, PostgresStore)
    running = asyncio.create_task(worker.run())

    async def run_one(value: int) -> None:
        task = await acreate_maintenance_task(
            Echo(value=value), database=astore.database, settings=settings
        )
        await wait_for_status(astore, task.id, S.COMPLETED, worker=running)

    try:
        await run_one(1)
        await wait_until(
            lambda: {"claim", "finish"} <= set(hot.backend_pids),
            what="claim and finish connections open",
            within=10,
            worker=running,
        )
        killed = {role: hot.backend_pids[role] for role in ("claim", "finish")}
        async with await psycopg.AsyncConnection.connect(PG_ADMIN_URL, autocommit=True) as admin:
            for pid in killed.values():
                cur = await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                assert (await cur.fetchone()) == (True,)

        await run_one(2)
        await run_one(3)

        replaced = {role: hot.backend_pids.get(role) for role in killed}
        assert not set(replaced.values()) & set(killed.values()), (killed, replaced)
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, 60)
