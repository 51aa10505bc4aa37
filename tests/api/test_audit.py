"""An audit row for every mutating call, API and CLI: actor, action, target, parameters
(secrets redacted), outcome, time, client; a refused call leaves a "refused" row."""

from __future__ import annotations

import json
from typing import Any

from nightcrew import MaintenanceTaskStatus, Pipeline, actions
from nightcrew.api import create_api
from nightcrew.values import AuditFilter, AuditRecord, Role
from tests.api.conftest import ApiEnv, actor
from tests.conftest import run_cli
from tests.helpers import claim, finish, on_own_store, set_status
from tests.processors import Echo

S = MaintenanceTaskStatus


def _latest(env: ApiEnv) -> AuditRecord:
    return actions.list_audit(env.app, AuditFilter(limit=1)).records[0]


def _mutating_operations() -> set[tuple[str, str]]:
    doc = create_api().openapi()
    return {
        (method.upper(), path)
        for path, methods in doc["paths"].items()
        for method in methods
        if method in ("post", "put", "patch", "delete")
    }


def _pipeline_with_a_failed_step(env: ApiEnv, name: str, *, fail: bool = True) -> int:
    """A pipeline ``a -> b`` whose step ``a`` ended ERROR (as a worker ends it) if ``fail``."""
    p = Pipeline(name)
    p.add(Echo(), name="b", depends_on=[p.add(Echo(), name="a")])
    pipeline_id = p.enqueue(database=env.app)
    if fail:
        claimed = on_own_store(env.app.database, claim, "audit-test/1", lease_seconds=60)
        (step,) = [c for c in claimed if c.pipeline_id == pipeline_id]
        on_own_store(env.app.database, finish, step, S.ERROR, {"error": "boom"}, None)
    return pipeline_id


def test_every_mutating_route_writes_one_audit_row(api_env: ApiEnv) -> None:
    env = api_env
    inactive = env.task(inactive=True)
    failed = env.task()
    set_status(env.app.database, failed, S.ERROR)
    broken = _pipeline_with_a_failed_step(env, "broken")
    running = _pipeline_with_a_failed_step(env, "running", fail=False)
    schedule = {"name": "audited", "processor": "tests.processors.Echo", "every": 60}
    calls: list[tuple[str, str, dict[str, Any] | None, str, str | None]] = [
        # Pipelines first: the bulk calls below would retry and cancel their steps.
        (
            "POST",
            f"/api/v1/pipelines/{broken}/steps/a/retry",
            None,
            "pipeline.retry_step",
            f"pipeline:{broken}",
        ),
        (
            "POST",
            f"/api/v1/pipelines/{running}/cancel",
            None,
            "pipeline.cancel",
            f"pipeline:{running}",
        ),
        (
            "POST",
            "/api/v1/tasks",
            {"processor": "tests.processors.Echo", "config": {"value": 2, "password": "hunter2"}},
            "task.create",
            None,
        ),
        ("POST", f"/api/v1/tasks/{inactive}/activate", None, "task.activate", f"task:{inactive}"),
        ("POST", f"/api/v1/tasks/{inactive}/cancel", None, "task.cancel", f"task:{inactive}"),
        ("POST", f"/api/v1/tasks/{failed}/retry", None, "task.retry", f"task:{failed}"),
        ("POST", "/api/v1/tasks/bulk/cancel", {"queue": "default"}, "tasks.bulk_cancel", "tasks"),
        ("POST", "/api/v1/tasks/bulk/retry", {"queue": "default"}, "tasks.bulk_retry", "tasks"),
        (
            "POST",
            "/api/v1/tokens",
            {"name": "audited", "role": "viewer"},
            "token.create",
            "token:audited",
        ),
        ("DELETE", "/api/v1/tokens/audited", None, "token.revoke", "token:audited"),
        ("POST", "/api/v1/schedules", schedule, "schedule.add", "schedule:audited"),
        ("POST", "/api/v1/schedules/audited/pause", None, "schedule.pause", "schedule:audited"),
        ("POST", "/api/v1/schedules/audited/resume", None, "schedule.resume", "schedule:audited"),
        (
            "POST",
            "/api/v1/schedules/audited/run-now",
            None,
            "schedule.run_now",
            "schedule:audited",
        ),
        ("DELETE", "/api/v1/schedules/audited", None, "schedule.delete", "schedule:audited"),
    ]
    templates = {
        (
            m,
            p.replace(f"/pipelines/{broken}/", "/pipelines/{pipeline_id}/")
            .replace(f"/pipelines/{running}/", "/pipelines/{pipeline_id}/")
            .replace("/steps/a/", "/steps/{step}/")
            .replace(f"/{inactive}/", "/{task_id}/")
            .replace(f"/{failed}/", "/{task_id}/")
            .replace("/tokens/audited", "/tokens/{name}")
            .replace("/schedules/audited", "/schedules/{name}"),
        )
        for m, p, *_ in calls
    }
    assert templates == _mutating_operations(), "a mutating route this test does not call"
    for method, path, body, action, target in calls:
        before = _latest(env).id
        response = env.client.request(method, path, json=body, headers=env.admin)
        assert response.status_code < 300, (path, response.text)
        rows = actions.list_audit(env.app, AuditFilter(limit=10)).records
        new = [r for r in rows if r.id is not None and before is not None and r.id > before]
        assert len(new) == 1, (path, new)
        row = new[0]
        assert (row.actor, row.action, row.outcome) == (actor(Role.ADMIN), action, "ok")
        assert row.client == "testclient" and row.at is not None
        if target is not None:
            assert row.target == target
        else:
            assert row.target == f"task:{response.json()['task']['id']}"
    created = actions.list_audit(env.app, AuditFilter(action="task.create")).records[0]
    assert created.parameters is not None
    assert created.parameters["config"]["password"] == "[redacted]"
    assert "hunter2" not in json.dumps(created.parameters)
    token_row = actions.list_audit(env.app, AuditFilter(action="token.create")).records[0]
    assert "nct_" not in json.dumps(token_row.parameters)


def test_a_refused_action_leaves_a_refused_row(api_env: ApiEnv) -> None:
    task_id = api_env.task()
    response = api_env.client.post(f"/api/v1/tasks/{task_id}/retry", headers=api_env.operator)
    assert response.status_code == 409
    row = _latest(api_env)
    assert (row.action, row.target, row.outcome) == ("task.retry", f"task:{task_id}", "refused")
    assert "PENDING" in (row.detail or "")

    response = api_env.client.post(
        "/api/v1/tasks", json={"processor": "os.system"}, headers=api_env.operator
    )
    assert response.status_code == 422
    row = _latest(api_env)
    assert (row.action, row.outcome) == ("task.create", "refused")


def test_a_role_too_low_for_a_mutation_is_recorded(api_env: ApiEnv) -> None:
    task_id = api_env.task()
    response = api_env.client.post(f"/api/v1/tasks/{task_id}/cancel", headers=api_env.viewer)
    assert response.status_code == 403
    row = _latest(api_env)
    assert (row.actor, row.action, row.outcome) == (actor(Role.VIEWER), "task.cancel", "refused")
    assert row.target == f"task:{task_id}"


def test_the_audit_route_filters_and_pages(api_env: ApiEnv) -> None:
    ids = [api_env.task() for _ in range(3)]
    for task_id in ids:
        api_env.client.post(f"/api/v1/tasks/{task_id}/cancel", headers=api_env.operator)
    api_env.client.post(f"/api/v1/tasks/{ids[0]}/cancel", headers=api_env.operator)  # refused
    h = api_env.viewer
    page = api_env.client.get(
        "/api/v1/audit", params={"action": "task.cancel", "limit": 2}, headers=h
    ).json()
    assert len(page["entries"]) == 2 and page["next_cursor"]
    rest = api_env.client.get(
        "/api/v1/audit",
        params={"action": "task.cancel", "cursor": page["next_cursor"]},
        headers=h,
    ).json()
    assert len(page["entries"]) + len(rest["entries"]) == 4
    refused = api_env.client.get("/api/v1/audit", params={"outcome": "refused"}, headers=h).json()
    assert [e["target"] for e in refused["entries"]] == [f"task:{ids[0]}"]
    mine = api_env.client.get(
        "/api/v1/audit", params={"actor": actor(Role.OPERATOR)}, headers=h
    ).json()
    assert len(mine["entries"]) == 4


def test_cli_mutations_are_audited(api_env: ApiEnv) -> None:
    env = api_env
    backend = env.backend
    staged = env.task(inactive=True)
    steps = [
        (("enqueue", "tests.processors.Echo", "--json", '{"value": 1}'), "task.create"),
        (("tasks", "activate", str(staged)), "task.activate"),
        (("tasks", "cancel", str(staged)), "task.cancel"),
        (("tasks", "retry", str(staged)), "task.retry"),
        (("tokens", "create", "--name", "from-cli", "--role", "operator"), "token.create"),
        (("tokens", "revoke", "from-cli"), "token.revoke"),
    ]
    for args, action in steps:
        result = run_cli(backend, *args)
        assert result.returncode == 0, result.stderr
        row = _latest(env)
        assert row.action == action and row.outcome == "ok"
        assert row.actor.startswith("cli") and row.client is None
    refused = run_cli(backend, "tasks", "activate", str(staged))
    assert refused.returncode == 1
    row = _latest(env)
    assert (row.action, row.outcome) == ("task.activate", "refused")

    listed = run_cli(backend, "audit", "ls", "--json", "--limit", "3")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)["entries"]
    assert [e["action"] for e in entries] == ["task.activate", "token.revoke", "token.create"]
    table = run_cli(backend, "audit", "ls", "--outcome", "refused", COLUMNS="200")
    assert "task.activate" in table.stdout and "token.revoke" not in table.stdout
