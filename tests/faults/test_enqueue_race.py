"""32 processes enqueueing one unique key at the same moment: exactly one open task, every
caller gets it, none sees an error."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from nightcrew import MaintenanceTaskStatus
from nightcrew.models import OPEN_STATUSES
from nightcrew.store import statements as st
from tests.conftest import ROOT, Backend
from tests.faults.harness import app_for, fault_env, wait_until

S = MaintenanceTaskStatus
CALLERS = 32

#: Each caller imports everything first, says it is ready, then waits for the go file, so
#: all 32 enqueue at once rather than one import (~0.5 s) apart: ``nightcrew enqueue`` as
#: the CLI runs it (`nightcrew.cli.main`), started late.
CALLER = """
import os, sys, time
from nightcrew.cli import main
ready, go, config = sys.argv[1:4]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
main(["enqueue", "tests.fault_processors.Logged", "--json", config, "--unique-key", "k"])
"""

ENQUEUED = re.compile(r"^enqueued task (\d+):")
ALREADY = re.compile(r"^task (\d+) \(PENDING\) already holds unique key 'k'; nothing enqueued$")


@pytest.mark.slow
def test_32_processes_enqueueing_one_unique_key_at_once_make_one_task(
    backend: Backend, tmp_path: Path
) -> None:
    env = fault_env(backend)
    config = json.dumps({"path": str(tmp_path / "runs.log"), "key": "k"})
    go = tmp_path / "go"
    callers = [
        subprocess.Popen(
            [sys.executable, "-c", CALLER, str(tmp_path / f"ready-{i}"), str(go), config],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(CALLERS)
    ]
    try:
        wait_until(
            lambda: len(list(tmp_path.glob("ready-*"))) == CALLERS,
            what=f"{CALLERS} callers ready",
            within=180,
        )
        go.touch()
        started = time.monotonic()
        results = [(p.wait(timeout=120), *p.communicate()) for p in callers]
        took = time.monotonic() - started
    finally:
        for p in callers:
            if p.poll() is None:
                p.kill()
                p.wait()

    assert [(code, err) for code, _, err in results] == [(0, "")] * CALLERS, results
    created = [int(m[1]) for _, out, _ in results if (m := ENQUEUED.match(out.strip()))]
    found = [int(m[1]) for _, out, _ in results if (m := ALREADY.match(out.strip()))]
    assert len(created) + len(found) == CALLERS, results
    assert len(set(created + found)) == 1, results
    with app_for(backend) as app, app.database.sync_engine.connect() as conn:
        rows = conn.execute(select(st.T.c.id, st.T.c.status).where(st.T.c.unique_key == "k")).all()
    assert [(i, S(s)) for i, s in rows] == [(created[0] if created else found[0], S.PENDING)]
    assert all(S(s) in OPEN_STATUSES for _, s in rows)
    # Exactly one caller says it enqueued the task; the others say it already existed.
    assert len(created) == 1, f"{len(created)} callers say they enqueued it: {results}"
    print(f"\n{CALLERS} concurrent enqueues of one unique key: {took:.2f}s, one task")
