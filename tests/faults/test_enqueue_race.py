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

#: One process imports nightcrew (a second and a half of CPU on this machine), then forks
#: the 32 callers: each waits for the go file, then runs ``nightcrew enqueue`` as the CLI
#: does (`nightcrew.cli.main`), on connections of its own, made after the fork. So all 32
#: enqueue at once, and the test does not pay 32 imports.
CALLERS_SCRIPT = """
import json, os, sys, time
from nightcrew.cli import main
# What a first enqueue would import (half its time): imported once, before the fork.
import psycopg, sqlalchemy.dialects.postgresql.psycopg, sqlalchemy.dialects.sqlite.pysqlite
import tests.fault_processors
out_dir, go, config, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
children = []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        for fd, name in ((1, f"{i}.out"), (2, f"{i}.err")):
            os.dup2(os.open(os.path.join(out_dir, name), os.O_WRONLY | os.O_CREAT), fd)
        while not os.path.exists(go):
            time.sleep(0.001)
        code = 0
        try:
            main(["enqueue", "tests.fault_processors.Logged", "--json", config,
                  "--unique-key", "k"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    children.append(pid)
open(os.path.join(out_dir, "ready"), "w").close()
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
with open(os.path.join(out_dir, "codes.json"), "w") as f:
    json.dump(codes, f)
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
    out = tmp_path / "callers"
    out.mkdir()
    spawner = subprocess.Popen(
        [sys.executable, "-c", CALLERS_SCRIPT, str(out), str(go), config, str(CALLERS)],
        env=env,
        cwd=ROOT,
    )
    try:
        wait_until(lambda: (out / "ready").exists(), what="the callers ready", within=120)
        go.touch()
        started = time.monotonic()
        spawner.wait(timeout=120)
        took = time.monotonic() - started
    finally:
        if spawner.poll() is None:
            spawner.kill()
            spawner.wait()
    codes = json.loads((out / "codes.json").read_text())
    results = [
        (codes[i], (out / f"{i}.out").read_text(), (out / f"{i}.err").read_text())
        for i in range(CALLERS)
    ]
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
