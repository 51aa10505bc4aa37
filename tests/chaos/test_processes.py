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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from nightcrew import (
    MaintenanceTaskStatus,
    TaskOptions,
    acreate_maintenance_task,
    create_maintenance_tasks,
)
from nightcrew.store import Database, Store, operations
from nightcrew.worker import Worker
from tests.conftest import PG_ADMIN_URL, ROOT, Backend
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
        return "\n".join(
            f"--- {log.name} (exit {proc.poll()}):\n{log.read_text()[-4000:]}"
            for proc, log in self.procs
        )

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


def counts(store: Store) -> dict[MaintenanceTaskStatus, int]:
    return store.run(operations.count_by_status())


def wait_until(
    check: Callable[[], Any], *, what: str, within: float, workers: Workers | None = None
) -> Any:
    """Poll ``check`` until truthy; fail after ``within`` seconds, with the workers' logs."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            logs = workers.logs() if workers else ""
            raise AssertionError(f"not within {within:g}s: {what}\n{logs}")
        time.sleep(0.1)


def recorded(path: Path) -> collections.Counter[str]:
    if not path.exists():
        return collections.Counter()
    return collections.Counter(line.split()[0] for line in path.read_text().splitlines())


# ---------------------------------------------------------------- sharing the work


@pytest.mark.slow
def test_several_worker_processes_run_each_of_thousands_of_tasks_exactly_once(
    backend: Backend, store: Store, workers: Workers, tmp_path: Path
) -> None:
    record = tmp_path / "runs.txt"
    procs = [workers.start(concurrency=16) for _ in range(3)]
    keys = [f"k{i}" for i in range(3000)]
    ids = create_maintenance_tasks(
        [RecordRun(path=str(record), key=k) for k in keys],
        database=store.database,
        settings=backend.settings(),
    )

    def all_done() -> bool:
        workers.check_alive(*procs)
        return counts(store)[S.COMPLETED] == len(ids)

    wait_until(all_done, what="3,000 tasks completed", within=300, workers=workers)
    for proc in procs:
        assert workers.stop(proc) == 0, workers.logs()

    runs = recorded(record)
    assert set(runs) == set(keys)
    assert [k for k, n in runs.items() if n != 1] == []
    final = counts(store)
    assert final[S.COMPLETED] == len(ids)
    assert final[S.WORKING] == final[S.PENDING] == final[S.ERROR] == 0


# ---------------------------------------------------------------- crashes and signals


@pytest.mark.slow
def test_tasks_of_a_killed_worker_are_rescued_and_completed_by_another(
    backend: Backend, store: Store, workers: Workers, tmp_path: Path
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
        return counts(store)[S.WORKING] == 10

    wait_until(doomed_is_busy, what="the first worker running 10 tasks", within=60, workers=workers)
    held = [i for i in ids if store.run(operations.get_task(i)).status is S.WORKING]
    workers.stop(doomed, signal.SIGKILL)

    rescuer = workers.start(concurrency=20, **lease)

    def all_done() -> bool:
        workers.check_alive(rescuer)
        return counts(store)[S.COMPLETED] == len(ids)

    wait_until(all_done, what="every task completed by the rescuer", within=120, workers=workers)
    assert workers.stop(rescuer) == 0, workers.logs()

    final = counts(store)
    assert final[S.WORKING] == final[S.PENDING] == final[S.ERROR] == 0
    rows = {i: store.run(operations.get_task(i)) for i in ids}
    assert all(row.status is S.COMPLETED for row in rows.values())
    assert {i: rows[i].attempts for i in held} == dict.fromkeys(held, 2)
    assert set(recorded(record)) == set(keys)


@pytest.mark.slow
def test_sigterm_lets_in_flight_tasks_finish_and_claims_no_more(
    backend: Backend, store: Store, workers: Workers, tmp_path: Path
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
        return counts(store)[S.WORKING] == 4

    wait_until(busy, what="4 tasks running", within=60, workers=workers)
    in_flight = [i for i in ids if store.run(operations.get_task(i)).status is S.WORKING]
    assert workers.stop(proc, signal.SIGTERM) == 0, workers.logs()

    statuses = {i: store.run(operations.get_task(i)).status for i in ids}
    assert {statuses[i] for i in in_flight} == {S.COMPLETED}
    waiting = [i for i in ids if i not in in_flight]
    assert {statuses[i] for i in waiting} == {S.PENDING}
    assert all(store.run(operations.get_task(i)).attempts == 0 for i in waiting)
    assert sum(recorded(record).values()) == 4


@pytest.mark.slow
def test_sigterm_past_the_grace_period_hands_in_flight_tasks_back_pending(
    backend: Backend, store: Store, workers: Workers
) -> None:
    ids = create_maintenance_tasks(
        [Sleep(seconds=600) for _ in range(3)],
        database=store.database,
        settings=backend.settings(),
    )
    proc = workers.start(concurrency=3, NIGHTCREW_SHUTDOWN_GRACE_SECONDS="0.5")

    def busy() -> bool:
        workers.check_alive(proc)
        return counts(store)[S.WORKING] == 3

    wait_until(busy, what="3 tasks running", within=60, workers=workers)
    assert workers.stop(proc, signal.SIGTERM) == 0, workers.logs()

    for task_id in ids:
        row = store.run(operations.get_task(task_id))
        assert row.status is S.PENDING
        assert row.attempts == 0
        assert row.lease_token is None and row.finished_at is None


# ---------------------------------------------------------------- PostgreSQL wake-ups


async def test_a_dropped_listen_connection_is_recovered(
    backend: Backend, adatabase: Database
) -> None:
    if not backend.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL only")
    # A 30 s poll: within the deadlines below, only a NOTIFY can wake the worker.
    settings = backend.settings(poll_interval=30)
    worker = Worker(settings, concurrency=2)
    running = asyncio.create_task(worker.run())

    async def until(check: Callable[[], Any], what: str, within: float) -> Any:
        deadline = time.monotonic() + within
        while not check():
            if running.done():
                running.result()
                raise AssertionError(f"worker stopped while waiting for {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within:g}s: {what}")
            await asyncio.sleep(0.02)

    try:
        await until(lambda: worker.listening and worker.listener_pid, "listening", 30)
        first_pid = worker.listener_pid
        async with await psycopg.AsyncConnection.connect(PG_ADMIN_URL, autocommit=True) as admin:
            cur = await admin.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
            assert (await cur.fetchone()) == (True,)

        await until(
            lambda: worker.listening and worker.listener_pid not in (None, first_pid),
            "listening again on a new connection",
            30,
        )
        task = await acreate_maintenance_task(Echo(value=4), database=adatabase, settings=settings)

        async def completed() -> bool:
            row = await Store(adatabase).arun(operations.get_task(task.id))
            return row.status is S.COMPLETED

        deadline = time.monotonic() + 5
        while not await completed():
            assert time.monotonic() < deadline, "task not picked up: the worker is not woken"
            assert not running.done()
            await asyncio.sleep(0.02)
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, 60)


async def test_dropped_claim_and_finish_connections_are_replaced(
    backend: Backend, adatabase: Database
) -> None:
    if not backend.is_postgres:
        pytest.skip("the dedicated claim and finish connections are PostgreSQL only")
    from nightcrew.store.hotpath import PsycopgHotPath

    settings = backend.settings()
    worker = Worker(settings, concurrency=2)
    assert isinstance(worker.hot, PsycopgHotPath)
    running = asyncio.create_task(worker.run())

    async def run_one(value: int) -> None:
        task = await acreate_maintenance_task(
            Echo(value=value), database=adatabase, settings=settings
        )
        deadline = time.monotonic() + 30
        while (await Store(adatabase).arun(operations.get_task(task.id))).status is not S.COMPLETED:
            assert time.monotonic() < deadline, f"task {task.id} not completed"
            assert not running.done(), "worker stopped"
            await asyncio.sleep(0.02)

    try:
        await run_one(1)
        deadline = time.monotonic() + 10
        while set(worker.hot.backend_pids) != {"claim", "finish"}:
            assert time.monotonic() < deadline, worker.hot.backend_pids
            await asyncio.sleep(0.02)
        killed = worker.hot.backend_pids
        async with await psycopg.AsyncConnection.connect(PG_ADMIN_URL, autocommit=True) as admin:
            for pid in killed.values():
                cur = await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                assert (await cur.fetchone()) == (True,)

        await run_one(2)
        await run_one(3)

        assert not set(worker.hot.backend_pids.values()) & set(killed.values())
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, 60)
