"""``run --once`` (and ``nightcrew worker``) on a database it cannot use.

What cannot heal (no schema) ends at once: one ``error: ...`` line, exit 1, ``--detach``
included (it checks before it returns). What can (a server that does not answer) is
retried with backoff, one log line per retry and no traceback, and ``run --once`` gives up
with exit 1 after its bounded retries: `nightcrew.worker.claimer.GIVE_UP_SECONDS` (30 s) is
a constant, not a setting, so the test waits it out and is marked slow.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from nightcrew.worker.claimer import GIVE_UP_SECONDS
from tests.conftest import Backend
from tests.faults.harness import Proc, fault_env, processes

SCHEMA_MISSING = "(run 'nightcrew db upgrade' to create the schema)"


def _no_schema(empty_backend: Backend, tmp_path: Path) -> Backend:
    """PostgreSQL: an empty schema of its own; SQLite: a file that does not exist yet."""
    if empty_backend.is_postgres:
        return empty_backend
    return Backend("sqlite", f"sqlite:///{tmp_path / 'noschema.db'}")


def _error_lines(proc: Proc) -> list[str]:
    return [line for line in proc.err().splitlines() if line.startswith("error:")]


def _ends_with_one_error(proc: Proc, *words: str) -> str:
    """The process's one ``error:`` line (its last line), without any traceback."""
    err = proc.err()
    assert "Traceback" not in err, err
    errors = _error_lines(proc)
    assert len(errors) == 1, err
    assert err.rstrip().splitlines()[-1] == errors[0]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize(
    "command",
    [["run", "--once"], ["run", "--once", "--detach"], ["worker"]],
    ids=["run-once", "detach", "worker"],
)
def test_no_schema_fails_at_once_with_one_error_line(
    empty_backend: Backend, tmp_path: Path, command: list[str]
) -> None:
    backend = _no_schema(empty_backend, tmp_path)
    log_file = tmp_path / "detached.log"
    if "--detach" in command:
        command = [*command, "--log-file", str(log_file)]
    with processes(tmp_path) as procs:
        started = time.monotonic()
        proc = procs.start(command, fault_env(backend), name="runner")
        code = proc.wait(30)
        took = time.monotonic() - started
    assert code == 1, proc.err()
    # Seconds, not a retry loop: ~2 s idle, most of it the interpreter starting; allow for
    # a machine loaded by the rest of the suite.
    assert took < 30, f"{took:.1f}s"
    _ends_with_one_error(proc, "no such table" if not backend.is_postgres else "does not exist")
    assert SCHEMA_MISSING in _error_lines(proc)[0]
    assert "runner started" not in proc.out()
    assert not log_file.exists()  # --detach started nothing


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unreachable() -> Backend:
    return Backend("postgresql", f"postgresql://postgres@127.0.0.1:{_closed_port()}/test")


def test_an_unreachable_server_fails_detach_at_once(tmp_path: Path) -> None:
    log_file = tmp_path / "detached.log"
    command = ["run", "--once", "--detach", "--log-file", str(log_file)]
    with processes(tmp_path) as procs:
        proc = procs.start(command, fault_env(_unreachable()), name="runner")
        code = proc.wait(30)
    assert code == 1, proc.err()
    _ends_with_one_error(proc, "Connection refused")
    assert not log_file.exists()


RETRY = re.compile(r"^\S+Z WARNING nightcrew\.worker claim failed, retrying in [\d.]+ s: .+$")


@pytest.mark.slow
def test_run_once_on_an_unreachable_server_retries_then_exits_non_zero(tmp_path: Path) -> None:
    with processes(tmp_path) as procs:
        started = time.monotonic()
        proc = procs.start(["run", "--once"], fault_env(_unreachable()), name="runner")
        code = proc.wait(GIVE_UP_SECONDS + 60)
        took = time.monotonic() - started
    assert code == 1, proc.err()
    assert GIVE_UP_SECONDS <= took < GIVE_UP_SECONDS + 20, f"{took:.1f}s"
    _ends_with_one_error(proc, "Connection refused")
    lines = proc.err().splitlines()
    retries = [line for line in lines if RETRY.match(line)]
    # Backoff from 50 ms doubling to 1 s: about one line a second over the 30 s.
    assert GIVE_UP_SECONDS * 0.6 <= len(retries) <= GIVE_UP_SECONDS + 10, proc.err()
    # Every line is a log line or the final error: one line per retry, nothing else.
    assert all(re.match(r"^\S+Z [A-Z]+ nightcrew", line) for line in lines[:-1]), proc.err()
    assert "run --once finished" not in proc.out()
