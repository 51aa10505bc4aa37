"""Processors of the fault suite (``tests/faults``).

The `Logged` processors keep an execution log of their own: one line when a run starts and
one when it ends, each with the pid of the worker process and the task's key, so a test
counts runs (and tells which process ran what, and which runs never ended) independently of
nightcrew's status column. Each line is one ``write`` on a file opened with ``O_APPEND``:
lines of concurrent processes never interleave.

The poison processors return or raise what a database may refuse: NUL characters, a result
over the size limit, values that are not JSON, a lone surrogate.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nightcrew import MaintenanceTask, MaintenanceTaskProcessor

#: The allowlist entry of this module (the fault tests add it to the workers' modules).
MODULE = __name__


def write_line(path: str, event: str, key: str, task_id: int) -> None:
    """Append ``<event> <pid> <key> <task id> <epoch>`` to the execution log, atomically."""
    line = f"{event} {os.getpid()} {key} {task_id} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class Logged(MaintenanceTaskProcessor):
    """Logs its start, sleeps ``seconds`` (on the event loop), logs its end."""

    path: str
    key: str
    seconds: float = 0.0

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        write_line(self.path, "start", self.key, task.id)
        if self.seconds:
            await asyncio.sleep(self.seconds)
        write_line(self.path, "end", self.key, task.id)
        return {"key": self.key, "pid": os.getpid()}


class SyncLogged(MaintenanceTaskProcessor):
    """`Logged` with a plain ``def``: it sleeps in a worker thread, which cannot be cancelled."""

    path: str
    key: str
    seconds: float = 0.0

    def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        write_line(self.path, "start", self.key, task.id)
        if self.seconds:
            time.sleep(self.seconds)
        write_line(self.path, "end", self.key, task.id)
        return {"key": self.key, "pid": os.getpid()}


# ---------------------------------------------------------------- poison outcomes


class NulResult(MaintenanceTaskProcessor):
    """Returns a result holding a NUL character (PostgreSQL's jsonb cannot store one)."""

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        return {"text": "a\x00b", "\x00key": 1}


class NulError(MaintenanceTaskProcessor):
    """Raises with a NUL character in its message."""

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        raise RuntimeError("broken\x00message")


class NulProgress(MaintenanceTaskProcessor):
    """Reports progress with a NUL character in its message, waits for it to be written."""

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        from nightcrew import report_progress

        await report_progress(50.0, "half\x00way")
        await asyncio.sleep(0.6)  # a few progress flushes (every 0.25 s)
        await report_progress(75.0, "three\x00quarters")
        return {"done": True}


class HugeResult(MaintenanceTaskProcessor):
    """Returns a result of ``size`` bytes (over ``NIGHTCREW_MAX_INFO_BYTES``)."""

    size: int = 2 * 1024 * 1024

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        return {"blob": "x" * self.size}


class NonJsonResult(MaintenanceTaskProcessor):
    """Returns a value JSON cannot encode."""

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        return {"when": {1, 2, 3}, "what": object()}


class LoneSurrogate(MaintenanceTaskProcessor):
    """Returns a string with a lone surrogate: valid JSON text, refused by PostgreSQL's jsonb."""

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        return {"text": "a\ud800b"}


# ---------------------------------------------------------------- reading the log


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a task, as its processor logged it."""

    key: str
    task_id: int
    pid: int
    started: float
    ended: float | None  # None: the run never logged its end (killed, or cut short)


def read_runs(path: str | Path) -> list[Run]:
    """Every run in an execution log, in the order they started.

    A start line is paired with the next end line of the same key and pid.
    """
    path = Path(path)
    if not path.exists():
        return []
    runs: list[dict[str, Any]] = []
    open_runs: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        event, pid, key, task_id, when = line.split()
        slot = (key, int(pid))
        if event == "start":
            run = {"key": key, "task_id": int(task_id), "pid": int(pid), "started": float(when)}
            run["ended"] = None
            runs.append(run)
            open_runs[slot] = run
        else:
            open_runs.pop(slot)["ended"] = float(when)
    runs.sort(key=lambda r: r["started"])
    return [Run(**r) for r in runs]
