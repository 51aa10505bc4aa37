"""What the fault tests share: real nightcrew processes at default settings, their logs,
waiting for the database to reach a state, and the server connections of a process.

Processes are started as a user would (``python -m nightcrew ...``) with the backend's
environment *without* the test suite's tuning (`tests.conftest.Backend.env` shortens the
poll interval and the lease for the engine tests): a fault test runs at nightcrew's
defaults unless it says why not, next to the setting it changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from nightcrew import MaintenanceTaskProcessor, MaintenanceTaskStatus, TaskOptions
from nightcrew.app import Nightcrew
from nightcrew.enqueue import create_maintenance_tasks
from nightcrew.settings import Settings
from nightcrew.store import ops
from nightcrew.store import statements as st
from nightcrew.store.database import READ_ONLY
from nightcrew.values import TaskFilter, TaskView
from tests.conftest import ROOT, TEST_MODULES, Backend
from tests.fault_processors import MODULE

S = MaintenanceTaskStatus
FAULT_MODULES = [*TEST_MODULES, MODULE]
FINAL = (S.COMPLETED, S.ERROR, S.CANCELLED)

#: The only ``NIGHTCREW_*`` variables a fault process inherits: where the database is and
#: which modules processors may come from. Everything else is nightcrew's default.
_KEPT = ("NIGHTCREW_DATABASE_URL",)


def fault_env(backend: Backend, *, modules: Sequence[str] = (), **extra: str) -> dict[str, str]:
    """The environment of a nightcrew process on ``backend`` at default settings.

    ``modules`` are allowlisted besides the suite's; ``extra`` sets variables (a test that
    changes a setting says why where it does).
    """
    env = {k: v for k, v in backend.env().items() if not k.startswith("NIGHTCREW_") or k in _KEPT}
    env["NIGHTCREW_PROCESSOR_MODULES"] = ",".join([*FAULT_MODULES, *modules])
    env.update(extra)
    return env


def app_for(backend: Backend, **settings: Any) -> Nightcrew:
    """The test's own view of the database (reads, enqueues) with the fault allowlist."""
    values: dict[str, Any] = {"database_url": backend.url, "processor_modules": FAULT_MODULES}
    values.update(settings)
    return Nightcrew(Settings(**values))


def enqueue(
    app: Nightcrew, processors: Sequence[MaintenanceTaskProcessor], **options: Any
) -> list[int]:
    """Create tasks in one insert, as an application would; their ids in order."""
    ids: list[int] = []
    for start in range(0, len(processors), 1000):
        chunk = processors[start : start + 1000]
        ids += create_maintenance_tasks(chunk, TaskOptions(**options), database=app)
    return ids


def counts(
    app: Nightcrew, *, processor: str | None = None, ids: Collection[int] | None = None
) -> dict[MaintenanceTaskStatus, int]:
    """Tasks by status: of one processor class, or of some ids, or all.

    A worker at default settings also runs nightcrew's own upkeep schedules, whose tasks
    would otherwise be counted with a test's.
    """
    if processor is None and ids is None:
        return app.store.run(ops.count_by_status)
    stmt = select(st.T.c.status, func.count()).group_by(st.T.c.status)
    if processor is not None:
        stmt = stmt.where(st.T.c.processor_type == processor)
    if ids is not None:
        stmt = stmt.where(st.T.c.id.in_(list(ids)))
    found = dict.fromkeys(MaintenanceTaskStatus, 0)
    # Read-only: on SQLite a plain transaction begins IMMEDIATE, taking the write lock
    # the workers' claims and finishes wait for.
    with app.database.sync_engine.connect().execution_options(**READ_ONLY) as conn:
        for status, n in conn.execute(stmt):
            found[MaintenanceTaskStatus(status)] = int(n)
    return found


def task(app: Nightcrew, task_id: int) -> TaskView:
    return app.store.run(ops.get_task, task_id)


def all_tasks(app: Nightcrew) -> dict[int, TaskView]:
    """Every task, by id (read page by page through the store)."""
    found: dict[int, TaskView] = {}
    before: int | None = None
    while True:
        page = app.store.run(ops.list_tasks, TaskFilter(before_id=before, limit=ops.MAX_PAGE))
        found.update((t.id, t) for t in page.tasks)
        if page.next_before_id is None:
            return found
        before = page.next_before_id


def report(name: str, figures: dict[str, Any]) -> None:
    """Print a fault test's figures, and add them under ``name`` to the JSON file named by
    ``NIGHTCREW_FAULT_REPORT`` when it is set (one file collects every test's)."""
    print(f"\n{name}: {json.dumps(figures, indent=2)}")
    path = os.environ.get("NIGHTCREW_FAULT_REPORT")
    if path:
        target = Path(path)
        with open(target, "a+") as f:  # one writer at a time, also under pytest-xdist
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            text = f.read()
            existing = json.loads(text) if text.strip() else {}
            existing[name] = figures
            f.seek(0)
            f.truncate()
            f.write(json.dumps(existing, indent=2) + "\n")


# ---------------------------------------------------------------- processes


@dataclass(eq=False)
class Proc:
    """One nightcrew process of a test: its stdout and stderr go to files of their own."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    started: float = field(default_factory=time.time)
    #: When the test killed it (``time.time()`` once it was reaped), if it did.
    killed_at: float | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def out(self) -> str:
        return self.stdout.read_text(errors="replace") if self.stdout.exists() else ""

    def err(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    def signal(self, sig: int) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it is still running after ``timeout`` seconds."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


class Procs:
    """The processes of one test; whatever still runs at its end is killed (only those)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.all: list[Proc] = []

    def start(self, args: Sequence[str], env: dict[str, str], *, name: str = "") -> Proc:
        name = name or f"{args[0]}-{len(self.all)}"
        stdout = self.directory / f"{name}.out"
        stderr = self.directory / f"{name}.err"
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "nightcrew", *args],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        proc = Proc(name, popen, stdout, stderr)
        self.all.append(proc)
        return proc

    def worker(self, env: dict[str, str], *, concurrency: int = 10, name: str = "") -> Proc:
        """``nightcrew worker --concurrency N``."""
        count = sum(1 for p in self.all if p.name.startswith("worker"))
        return self.start(
            ["worker", "--concurrency", str(concurrency)], env, name=name or f"worker-{count}"
        )

    def kill(self, proc: Proc) -> float:
        """SIGKILL and reap; returns when it was dead."""
        proc.popen.kill()
        proc.popen.wait(timeout=30)
        proc.killed_at = time.time()
        return proc.killed_at

    def stop(self, proc: Proc, *, within: float = 60.0) -> int:
        """SIGTERM and wait for the exit code (failing with the logs if it hangs)."""
        proc.signal(signal.SIGTERM)
        code = proc.wait(within)
        if code is None:
            raise AssertionError(f"{proc.name} ignored SIGTERM for {within:g}s\n{self.logs()}")
        return code

    def check_alive(self, *procs: Proc) -> None:
        for proc in procs or [p for p in self.all if p.killed_at is None]:
            if not proc.alive and proc.killed_at is None:
                raise AssertionError(
                    f"{proc.name} exited early ({proc.popen.returncode})\n{self.logs()}"
                )

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for p in self.all:
            code = p.popen.poll()
            parts.append(f"--- {p.name} pid {p.pid} (exit {code}):\n{p.err()[-tail:]}")
        return "\n".join(parts)

    def cleanup(self) -> None:
        for proc in self.all:
            if proc.alive:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGCONT)  # a stopped one cannot die otherwise
                proc.popen.kill()
                proc.popen.wait(timeout=30)


@contextlib.contextmanager
def processes(directory: Path) -> Iterator[Procs]:
    group = Procs(directory)
    try:
        yield group
    finally:
        group.cleanup()


def wait_until(
    check: Callable[[], Any],
    *,
    what: str,
    within: float,
    procs: Procs | None = None,
    every: float = 0.05,
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds with
    the processes' logs. Workers that died on their own fail it at once."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if procs is not None:
            procs.check_alive()
        if time.monotonic() > deadline:
            logs = procs.logs() if procs else ""
            raise AssertionError(f"not within {within:g}s: {what}\n{logs}")
        time.sleep(every)


def log_time(log: str, message: str) -> float:
    """The epoch of the first line of a nightcrew log holding ``message``."""
    for line in log.splitlines():
        if message in line:
            stamp = line.split(" ", 1)[0].rstrip("Z")
            return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()
    raise AssertionError(f"no log line with {message!r} in:\n{log[-3000:]}")


# ---------------------------------------------------------------- a process's server connections


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def client_ports(pid: int, server_port: int) -> set[int]:
    """Local TCP ports of ``pid``'s open connections to ``server_port`` (Linux /proc).

    pg_stat_activity's ``client_port`` of a backend is one of these exactly when the
    backend serves this process: that tells a test's own connections from those of the
    other tests sharing the server.
    """
    inodes = _socket_inodes(pid)
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], int(parts[9])
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
