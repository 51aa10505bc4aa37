"""The README's "Use it in your app", step by step, as a newcomer pastes it.

A fresh directory with ``myapp/maintenance.py``, the two variables, then the commands as
subprocesses of the installed ``nightcrew`` (no PYTHONPATH: the command must find the
processor module in the directory it runs from).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROCESSOR = """from nightcrew import MaintenanceTask, MaintenanceTaskProcessor

class Greet(MaintenanceTaskProcessor):
    name: str

    async def __call__(self, task: MaintenanceTask) -> dict:
        return {"greeting": f"hello {self.name}"}
"""

ENQUEUE = """from nightcrew import Nightcrew, create_maintenance_task
from myapp.maintenance import Greet

with Nightcrew() as app:                 # settings from NIGHTCREW_*; keep one per process
    task = create_maintenance_task(Greet(name="Ada"), database=app)
    print(task.id, task.status)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "maintenance.py").write_text(PROCESSOR)
    (tmp_path / "enqueue.py").write_text(ENQUEUE)
    return tmp_path


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTCREW_")}
    env.pop("PYTHONPATH", None)
    env.update(
        NIGHTCREW_DATABASE_URL="sqlite:///./app.db",
        NIGHTCREW_PROCESSOR_MODULES="myapp.maintenance",
    )
    nightcrew = Path(sys.executable).parent / "nightcrew"
    command = [str(nightcrew), *args] if args[0] != "python" else [sys.executable, *args[1:]]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60)


def test_the_quickstart_works_as_pasted(project: Path) -> None:
    assert run(project, "db", "upgrade").returncode == 0
    enqueued = run(project, "python", "enqueue.py")
    assert enqueued.returncode == 0, enqueued.stderr
    assert enqueued.stdout.split() == ["1", "PENDING"]
    cli = run(project, "enqueue", "myapp.maintenance.Greet", "--json", '{"name": "Ada"}')
    assert cli.returncode == 0, cli.stderr

    drained = run(project, "run", "--once")
    assert drained.returncode == 0, drained.stderr
    assert "2 task(s) processed" in drained.stdout

    shown = run(project, "tasks", "show", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    task = json.loads(shown.stdout)
    assert (task["status"], task["info"]) == ("COMPLETED", {"greeting": "hello Ada"})
    listed = run(project, "tasks", "ls")
    assert listed.returncode == 0 and "Greet" in listed.stdout
