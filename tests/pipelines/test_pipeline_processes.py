"""Many worker processes draining a wide, layered pipeline: no step starts before all its
dependencies finished, judged from the steps' own clocks (each records when its body
started and ended) and from the times the workers wrote."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from nightcrew import MaintenanceTaskStatus, Nightcrew, Pipeline, PipelineStatus, actions
from tests.conftest import ROOT, Backend
from tests.processors import Timed

S = MaintenanceTaskStatus


@pytest.mark.slow
def test_worker_processes_never_start_a_step_before_its_dependencies(backend: Backend) -> None:
    p = Pipeline("layers")
    root = p.add(Timed(seconds=0.01), name="root")
    middle = [p.add(Timed(seconds=0.02), name=f"m{i}", depends_on=[root]) for i in range(40)]
    lower = [
        p.add(Timed(seconds=0.01), name=f"l{i}", depends_on=[middle[i], middle[(i + 1) % 40]])
        for i in range(40)
    ]
    p.add(Timed(seconds=0.0), name="last", depends_on=lower)
    with Nightcrew(backend.settings()) as app:
        pipeline_id = p.enqueue(database=app)

    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "nightcrew", "run", "--once", "--concurrency", "8"],
            env=backend.env(),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    deadline = time.monotonic() + 120
    with Nightcrew(backend.settings()) as app:
        while (
            actions.get_pipeline(app, pipeline_id).pipeline.status is not PipelineStatus.COMPLETED
        ):
            assert time.monotonic() < deadline, "the pipeline did not complete"
            if all(w.poll() is not None for w in workers):  # all drained: run them again
                workers = [
                    subprocess.Popen(
                        [sys.executable, "-m", "nightcrew", "run", "--once"],
                        env=backend.env(),
                        cwd=ROOT,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                ]
            time.sleep(0.2)
        detail = actions.get_pipeline(app, pipeline_id)
    for w in workers:
        w.wait(60)

    steps = {s.id: s for s in detail.steps}
    assert {s.status for s in steps.values()} == {S.COMPLETED}
    assert len({s.lease_token for s in steps.values()}) >= 1
    for dependency, dependent in detail.edges:
        before, after = steps[dependency], steps[dependent]
        assert before.info is not None and after.info is not None
        assert after.info["started"] >= before.info["ended"], (before.step_name, after.step_name)
        assert before.finished_at is not None and after.started_at is not None
        assert after.started_at >= before.finished_at, (before.step_name, after.step_name)
