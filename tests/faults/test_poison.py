"""Poison outcomes and poison rows next to good tasks: the good ones complete, the bad ones
end ERROR with the reason, the worker keeps going; ``run --once`` exits 0 in seconds and a
``nightcrew worker`` fed the same mix still stops on SIGTERM.

Poison outcomes: a result, an exception message and a progress message holding NUL
(PostgreSQL's text and jsonb cannot hold U+0000: it is stored as U+FFFD there), a result
over ``NIGHTCREW_MAX_INFO_BYTES``, a result that is not JSON, and one PostgreSQL's jsonb
refuses outright (a lone surrogate: the finisher splits the batch and ends that task
ERROR "OutcomeNotStored"). Poison rows, written by plain SQL behind enqueue's checks: a
processor outside the allowlist, configuration that is not JSON, a NaN timeout (Infinity
on SQLite, which stores NaN as NULL), a processor module that raises on import.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from sqlalchemy import text, update

from nightcrew import MaintenanceTaskStatus
from nightcrew.app import Nightcrew
from nightcrew.store import statements as st
from tests.conftest import Backend
from tests.fault_processors import (
    HugeResult,
    Logged,
    LoneSurrogate,
    NonJsonResult,
    NulError,
    NulProgress,
    NulResult,
    read_runs,
)
from tests.faults.harness import (
    FINAL,
    all_tasks,
    app_for,
    counts,
    enqueue,
    fault_env,
    processes,
    wait_until,
)
from tests.helpers import insert_raw

S = MaintenanceTaskStatus
BROKEN_MODULE = "nc_fault_broken"
FFFD = "\ufffd"


def _poison(app: Nightcrew, backend: Backend, log: Path, tag: str) -> dict[str, int]:
    """Good tasks around every kind of poison; the ids by name (good ones: ``good-N``)."""
    ids: dict[str, int] = {}

    def good(n: int) -> None:
        for i, task_id in enumerate(
            enqueue(app, [Logged(path=str(log), key=f"{tag}-good{n}-{i}") for i in range(5)])
        ):
            ids[f"good-{n}-{i}"] = task_id

    good(0)
    outcomes = [NulResult(), NulError(), NulProgress(), HugeResult(), NonJsonResult()]
    outcomes.append(LoneSurrogate())
    for name, task_id in zip(
        ["nul_result", "nul_error", "nul_progress", "huge", "not_json", "surrogate"],
        enqueue(app, outcomes),
        strict=True,
    ):
        ids[name] = task_id
    good(1)
    db = app.database
    config = Logged(path=str(log), key=f"{tag}-row").model_dump_json()
    ids["not_allowed"] = insert_raw(db, "subprocess.Popen", '{"args": ["true"]}')
    ids["bad_json"] = insert_raw(db, Logged.class_path(), '{"path": "/tmp/x", "key": ')
    ids["bad_timeout"] = insert_raw(db, Logged.class_path(), config)
    # PostgreSQL stores NaN in a float column; SQLite stores NaN as NULL, but Infinity as is.
    bad = text("'NaN'::float8") if backend.is_postgres else text("9e999")
    with db.sync_engine.begin() as conn:
        conn.execute(update(st.T).where(st.T.c.id == ids["bad_timeout"]).values(timeout=bad))
    ids["import_raises"] = insert_raw(db, f"{BROKEN_MODULE}.Thing", "{}")
    good(2)
    return ids


def _check(backend: Backend, app: Nightcrew, ids: dict[str, int]) -> None:
    views = all_tasks(app)
    status = {name: views[i].status for name, i in ids.items()}
    info = {name: views[i].info or {} for name, i in ids.items()}
    expected = {name: S.COMPLETED for name in ids if name.startswith("good")}
    expected |= {"nul_result": S.COMPLETED, "nul_progress": S.COMPLETED}
    expected |= dict.fromkeys(
        ["nul_error", "huge", "not_json", "not_allowed", "bad_json", "bad_timeout"], S.ERROR
    )
    expected["import_raises"] = S.ERROR
    # jsonb refuses a lone surrogate; SQLite's JSON stores it.
    expected["surrogate"] = S.ERROR if backend.is_postgres else S.COMPLETED
    assert status == expected, {n: (status[n], info[n]) for n in ids if status[n] != expected[n]}

    nul = FFFD if backend.is_postgres else "\x00"
    assert info["nul_result"] == {"text": f"a{nul}b", f"{nul}key": 1}
    assert info["nul_error"]["error"] == f"broken{nul}message"
    progress = views[ids["nul_progress"]]
    # A progress message is text on both databases (SQLite used to cut it at the NUL).
    assert (progress.progress, progress.progress_message) == (100.0, f"three{FFFD}quarters")
    assert "more than the limit of 1048576" in info["huge"]["error"]
    assert "not JSON" in info["not_json"]["error"]
    assert "not in the allowed modules" in info["not_allowed"]["error"]
    assert "invalid configuration" in info["bad_json"]["error"]
    assert "stored timeout" in info["bad_timeout"]["error"]
    assert "raised on import" in info["import_raises"]["error"]
    assert "half-deployed" in info["import_raises"]["error"]
    if backend.is_postgres:
        assert info["surrogate"]["error_type"] == "OutcomeNotStored"
    for name in ("not_allowed", "bad_json", "bad_timeout", "import_raises", "huge", "not_json"):
        assert views[ids[name]].attempts == 1, name  # refused at once, not retried


def _env(backend: Backend, tmp_path: Path) -> dict[str, str]:
    (tmp_path / f"{BROKEN_MODULE}.py").write_text("raise RuntimeError('half-deployed')\n")
    env = fault_env(backend, modules=[BROKEN_MODULE])
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    return env


def test_poison_next_to_good_tasks_in_one_run_once(backend: Backend, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    env = _env(backend, tmp_path)
    with app_for(backend) as app, processes(tmp_path) as procs:
        ids = _poison(app, backend, log, "once")
        started = time.monotonic()
        runner = procs.start(["run", "--once"], env, name="run-once")
        code = runner.wait(60)
        took = time.monotonic() - started
        assert code == 0, procs.logs()
        # Seconds (~3 s idle, mostly the interpreter starting), not a wedged retry loop;
        # allow for a machine loaded by the rest of the suite.
        assert took < 30, f"run --once took {took:.1f}s"
        assert f"{len(ids)} task(s) processed" in runner.out(), runner.out()
        _check(backend, app, ids)
        assert "Traceback" not in runner.err(), runner.err()
    goods = [r for r in read_runs(log) if "-good" in r.key]
    assert len(goods) == 15 and all(r.ended is not None for r in goods)


def test_a_worker_fed_poison_keeps_going_and_stops_on_sigterm(
    backend: Backend, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    env = _env(backend, tmp_path)
    with app_for(backend) as app, processes(tmp_path) as procs:
        worker = procs.worker(env)
        ids = _poison(app, backend, log, "worker")

        def done() -> bool:
            return sum(counts(app, ids=ids.values())[s] for s in FINAL) == len(ids)

        wait_until(done, what="every task final", within=60, procs=procs)
        # Still alive and taking work: one more good task after all the poison.
        (last,) = enqueue(app, [Logged(path=str(log), key="after")])
        wait_until(
            lambda: all_tasks(app)[last].status is S.COMPLETED,
            what="a good task after the poison",
            within=30,
            procs=procs,
        )
        worker.signal(signal.SIGTERM)
        code = worker.wait(10)
        assert code == 0, procs.logs()
        _check(backend, app, ids)
