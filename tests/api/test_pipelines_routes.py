"""Pipelines over HTTP, on both databases: list, show, cancel and retry a step; what each
returns, the problems bad input gets, and the audit rows mutations leave."""

from __future__ import annotations

from nightcrew import MaintenanceTaskStatus, Pipeline, PipelineStatus, actions
from nightcrew.values import AuditFilter, AuditRecord, Role
from tests.api.conftest import ApiEnv, actor
from tests.api.test_problems import assert_problem
from tests.helpers import claim, finish, on_own_store
from tests.processors import Echo

S = MaintenanceTaskStatus
PS = PipelineStatus
URL = "/api/v1/pipelines"


def _chain(env: ApiEnv, name: str = "chain", first: str = "extract") -> int:
    """A pipeline ``first -> load -> report``."""
    p = Pipeline(name)
    a = p.add(Echo(value=1), name=first)
    b = p.add(Echo(value=2), name="load", depends_on=[a])
    p.add(Echo(value=3), name="report", depends_on=[b])
    return p.enqueue(database=env.app)


def _fail_first_step(env: ApiEnv, pipeline_id: int) -> int:
    """Claim the pipeline's one claimable step and end it ERROR, as a worker would."""
    claimed = on_own_store(env.app.database, claim, "api-test/1", lease_seconds=60)
    (step,) = [c for c in claimed if c.pipeline_id == pipeline_id]
    on_own_store(env.app.database, finish, step, S.ERROR, {"error": "boom"}, {"type": "Boom"})
    return step.id


def _latest(env: ApiEnv) -> AuditRecord:
    return actions.list_audit(env.app, AuditFilter(limit=1)).records[0]


def _steps(env: ApiEnv, pipeline_id: int) -> dict[str, MaintenanceTaskStatus]:
    detail = actions.get_pipeline(env.app, pipeline_id)
    return {str(s.step_name): s.status for s in detail.steps}


def test_list_pages_newest_first(api_env: ApiEnv) -> None:
    ids = [_chain(api_env, f"p{i}") for i in range(5)]
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api_env.client.get(URL, params=params, headers=api_env.viewer).json()
        assert len(page["pipelines"]) <= 2
        seen += [p["id"] for p in page["pipelines"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)


def test_list_filters_by_status(api_env: ApiEnv) -> None:
    kept = _chain(api_env, "kept")
    cancelled = _chain(api_env, "cancelled")
    actions.cancel_pipeline(api_env.app, cancelled)
    client, h = api_env.client, api_env.viewer
    only = client.get(URL, params={"status": "CANCELLED"}, headers=h).json()["pipelines"]
    assert [p["id"] for p in only] == [cancelled]
    both = client.get(URL, params=[("status", "PENDING"), ("status", "CANCELLED")], headers=h)
    assert [p["id"] for p in both.json()["pipelines"]] == [cancelled, kept]
    item = next(p for p in both.json()["pipelines"] if p["id"] == kept)
    assert (item["name"], item["status"], item["steps"], item["steps_open"]) == (
        "kept",
        "PENDING",
        3,
        3,
    )


def test_show_returns_the_pipeline_its_steps_and_edges(api_env: ApiEnv) -> None:
    pipeline_id = _chain(api_env)
    response = api_env.client.get(f"{URL}/{pipeline_id}", headers=api_env.viewer)
    assert response.status_code == 200
    body = response.json()
    assert (body["pipeline"]["id"], body["pipeline"]["name"]) == (pipeline_id, "chain")
    steps = {s["step_name"]: s for s in body["steps"]}
    assert set(steps) == {"extract", "load", "report"}
    assert all(s["pipeline_id"] == pipeline_id for s in body["steps"])
    assert steps["extract"]["processor"] == "tests.processors.Echo"
    edges = {(e["depends_on"], e["task_id"]) for e in body["edges"]}
    assert edges == {
        (steps["extract"]["id"], steps["load"]["id"]),
        (steps["load"]["id"], steps["report"]["id"]),
    }
    # Each step is the task GET /tasks lists: the same fields.
    listed = api_env.client.get(
        "/api/v1/tasks", params={"pipeline": pipeline_id}, headers=api_env.viewer
    ).json()["tasks"]
    assert {t["id"]: t for t in listed} == {s["id"]: s for s in body["steps"]}


def test_cancel_cancels_the_waiting_steps(api_env: ApiEnv) -> None:
    pipeline_id = _chain(api_env)
    response = api_env.client.post(f"{URL}/{pipeline_id}/cancel", headers=api_env.operator)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "CANCELLED"
    assert response.json()["finished_at"] is not None
    assert set(_steps(api_env, pipeline_id).values()) == {S.CANCELLED}


def test_cancel_is_audited(api_env: ApiEnv) -> None:
    pipeline_id = _chain(api_env)
    api_env.client.post(f"{URL}/{pipeline_id}/cancel", headers=api_env.operator)
    row = _latest(api_env)
    assert (row.actor, row.action, row.target, row.outcome) == (
        actor(Role.OPERATOR),
        "pipeline.cancel",
        f"pipeline:{pipeline_id}",
        "ok",
    )
    assert row.client == "testclient"


def test_cancelling_a_finished_pipeline_is_409_and_changes_nothing(api_env: ApiEnv) -> None:
    pipeline_id = _chain(api_env)
    actions.cancel_pipeline(api_env.app, pipeline_id)
    before = actions.get_pipeline(api_env.app, pipeline_id)
    response = api_env.client.post(f"{URL}/{pipeline_id}/cancel", headers=api_env.operator)
    assert_problem(response, 409, "invalid-transition")
    assert actions.get_pipeline(api_env.app, pipeline_id) == before
    row = _latest(api_env)
    assert (row.action, row.outcome) == ("pipeline.cancel", "refused")


def test_retrying_a_failed_step_rearms_its_dependents_and_reopens(api_env: ApiEnv) -> None:
    pipeline_id = _chain(api_env)
    step_id = _fail_first_step(api_env, pipeline_id)
    assert actions.get_pipeline(api_env.app, pipeline_id).pipeline.status is PS.ERROR
    assert _steps(api_env, pipeline_id) == {
        "extract": S.ERROR,
        "load": S.CANCELLED,
        "report": S.CANCELLED,
    }
    response = api_env.client.post(
        f"{URL}/{pipeline_id}/steps/extract/retry", headers=api_env.operator
    )
    assert response.status_code == 200, response.text
    task = response.json()
    assert (task["id"], task["status"], task["step_name"]) == (step_id, "PENDING", "extract")
    assert _steps(api_env, pipeline_id) == {
        "extract": S.PENDING,
        "load": S.PENDING,
        "report": S.PENDING,
    }
    assert actions.get_pipeline(api_env.app, pipeline_id).pipeline.status not in (
        PS.ERROR,
        PS.CANCELLED,
    )


def test_retry_step_is_audited_with_the_step(api_env: ApiEnv) -> None:
    pipeline_id = _chain(api_env)
    _fail_first_step(api_env, pipeline_id)
    api_env.client.post(f"{URL}/{pipeline_id}/steps/extract/retry", headers=api_env.operator)
    row = _latest(api_env)
    assert (row.actor, row.action, row.target, row.outcome) == (
        actor(Role.OPERATOR),
        "pipeline.retry_step",
        f"pipeline:{pipeline_id}",
        "ok",
    )
    assert row.parameters == {"step": "extract"}


def test_retrying_a_step_that_did_not_fail_is_409(api_env: ApiEnv) -> None:
    pipeline_id = _chain(api_env)
    before = actions.get_pipeline(api_env.app, pipeline_id)
    response = api_env.client.post(
        f"{URL}/{pipeline_id}/steps/extract/retry", headers=api_env.operator
    )
    assert_problem(response, 409, "invalid-transition")
    assert actions.get_pipeline(api_env.app, pipeline_id) == before
    row = _latest(api_env)
    assert (row.action, row.outcome) == ("pipeline.retry_step", "refused")


def test_retrying_a_step_the_pipeline_lacks_is_404(api_env: ApiEnv) -> None:
    pipeline_id = _chain(api_env)
    response = api_env.client.post(
        f"{URL}/{pipeline_id}/steps/no-such-step/retry", headers=api_env.operator
    )
    body = assert_problem(response, 404, "task-not-found")
    assert "no-such-step" in body["detail"]


def test_a_step_name_with_a_slash_is_reached_by_its_path(api_env: ApiEnv) -> None:
    pipeline_id = _chain(api_env, first="stage/extract")
    _fail_first_step(api_env, pipeline_id)
    response = api_env.client.post(
        f"{URL}/{pipeline_id}/steps/stage/extract/retry", headers=api_env.operator
    )
    assert response.status_code == 200, response.text
    assert response.json()["step_name"] == "stage/extract"


def test_an_unknown_pipeline_is_404_everywhere(api_env: ApiEnv) -> None:
    assert_problem(
        api_env.client.get(f"{URL}/999999", headers=api_env.viewer), 404, "pipeline-not-found"
    )
    for path, action in (
        (f"{URL}/999999/cancel", "pipeline.cancel"),
        (f"{URL}/999999/steps/extract/retry", "pipeline.retry_step"),
    ):
        response = api_env.client.post(path, headers=api_env.operator)
        assert_problem(response, 404, "pipeline-not-found")
        row = _latest(api_env)
        assert (row.action, row.target, row.outcome) == (action, "pipeline:999999", "refused")


def test_a_viewer_cannot_cancel_and_the_refusal_is_recorded(api_env: ApiEnv) -> None:
    pipeline_id = _chain(api_env)
    response = api_env.client.post(f"{URL}/{pipeline_id}/cancel", headers=api_env.viewer)
    assert_problem(response, 403)
    assert actions.get_pipeline(api_env.app, pipeline_id).pipeline.status is PS.PENDING
    row = _latest(api_env)
    assert (row.actor, row.action, row.target, row.outcome) == (
        actor(Role.VIEWER),
        "pipeline.cancel",
        f"pipeline:{pipeline_id}",
        "refused",
    )


def test_bad_listing_parameters_are_422(api_env: ApiEnv) -> None:
    for query in ("limit=1001", "limit=0", "status=DONE", "cursor=abc", "cursor=-1"):
        assert_problem(api_env.client.get(f"{URL}?{query}", headers=api_env.viewer), 422)


def test_a_bad_id_or_step_in_the_path_is_422(api_env: ApiEnv) -> None:
    for method, path in (
        ("GET", f"{URL}/0"),
        ("GET", f"{URL}/x"),
        ("GET", f"{URL}/99999999999999999999"),
        ("POST", f"{URL}/0/cancel"),
        ("POST", f"{URL}/1/steps/a%00b/retry"),
        ("POST", f"{URL}/1/steps/{'x' * 201}/retry"),
    ):
        response = api_env.client.request(method, path, headers=api_env.operator)
        assert_problem(response, 422)
