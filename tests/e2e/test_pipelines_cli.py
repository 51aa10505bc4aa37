"""``nightcrew pipelines ...`` as a user runs it: list, show (with the graph), cancel, retry."""

from __future__ import annotations

import json

from nightcrew import Nightcrew, Pipeline, create_maintenance_task
from tests.conftest import Backend, run_cli
from tests.processors import Boom, Echo


def make_pipeline(backend: Backend, *, failing: bool = False) -> int:
    with Nightcrew(backend.settings()) as app:
        p = Pipeline("cli")
        first = p.add(Boom() if failing else Echo(), name="first")
        p.add(Echo(), name="second", depends_on=[first])
        return p.enqueue(database=app)


def test_pipelines_ls_lists_them_as_json(backend: Backend) -> None:
    pipeline_id = make_pipeline(backend)
    result = run_cli(backend, "pipelines", "ls", "--json")
    assert result.returncode == 0, result.stderr
    (listed,) = json.loads(result.stdout)["pipelines"]
    assert (listed["id"], listed["name"], listed["status"]) == (pipeline_id, "cli", "PENDING")


def test_pipelines_show_draws_the_graph(backend: Backend) -> None:
    pipeline_id = make_pipeline(backend)
    result = run_cli(backend, "pipelines", "show", str(pipeline_id))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    graph = lines[lines.index("graph:") + 1 :]
    assert graph[0].strip().startswith("first [PENDING]")
    assert graph[1].startswith("    second [PENDING]")  # indented under its dependency


def test_pipelines_cancel_and_an_unknown_id(backend: Backend) -> None:
    pipeline_id = make_pipeline(backend)
    result = run_cli(backend, "pipelines", "cancel", str(pipeline_id))
    assert result.returncode == 0, result.stderr
    assert f"pipeline {pipeline_id} is now CANCELLED" in result.stdout
    missing = run_cli(backend, "pipelines", "show", "999999")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: no pipeline with id 999999")


def test_pipelines_retry_runs_a_failed_step_again(backend: Backend) -> None:
    pipeline_id = make_pipeline(backend, failing=True)
    assert run_cli(backend, "run", "--once").returncode == 0
    result = run_cli(backend, "pipelines", "retry", str(pipeline_id), "--step", "first")
    assert result.returncode == 0, result.stderr
    shown = json.loads(run_cli(backend, "pipelines", "show", str(pipeline_id), "--json").stdout)
    assert shown["pipeline"]["status"] == "WORKING"
    assert {s["step_name"]: s["status"] for s in shown["steps"]} == {
        "first": "PENDING",
        "second": "PENDING",
    }


def test_tasks_ls_lists_one_pipelines_steps(backend: Backend) -> None:
    pipeline_id = make_pipeline(backend)
    make_pipeline(backend)  # another pipeline's steps are left out
    with Nightcrew(backend.settings()) as app:
        create_maintenance_task(Echo(), database=app)  # and so is a plain task

    result = run_cli(backend, "tasks", "ls", "--pipeline", str(pipeline_id), "--json")

    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)["tasks"]
    assert len(listed) == 2
    assert {t["pipeline_id"] for t in listed} == {pipeline_id}
