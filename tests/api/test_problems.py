"""Bad input is a 4xx with an RFC 9457 problem+json body, never a 500, and writes nothing:
no task, and no "ok" audit row (a refused action leaves a "refused" one)."""

from __future__ import annotations

from typing import Any

import pytest

from nightcrew import actions
from nightcrew.api import PROBLEM_JSON
from nightcrew.values import AuditFilter
from tests.api.conftest import ApiEnv
from tests.helpers import task_count

ECHO = "tests.processors.Echo"


def _written(env: ApiEnv) -> tuple[int, int]:
    ok = actions.list_audit(env.app, AuditFilter(outcome="ok", limit=1000)).records
    return task_count(env.app.store), len(ok)


def assert_problem(response: Any, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:nightcrew:problem:")
    assert body["title"]
    if slug is not None:
        assert body["type"] == f"urn:nightcrew:problem:{slug}"
    return body


CREATE_REFUSALS = [
    pytest.param(
        {"processor": ECHO, "config": {"value": "seven"}},
        422,
        "invalid-configuration",
        id="config fails validation",
    ),
    pytest.param(
        {"processor": "tests.processors.NoSuchThing"},
        422,
        "processor-not-allowed",
        id="unknown processor",
    ),
    pytest.param(
        {"processor": "os.system"}, 422, "processor-not-allowed", id="outside the allowlist"
    ),
    pytest.param(
        {"processor": "tests.processors.NotAProcessor"},
        422,
        "processor-not-allowed",
        id="not a processor",
    ),
    pytest.param(
        {"processor": "tests.processors.StrictEcho", "config": {"valu": 1}},
        422,
        "invalid-configuration",
        id="strict processor, unknown key",
    ),
    pytest.param({"processor": ECHO, "priority": "high"}, 422, "invalid-request", id="wrong type"),
    pytest.param(
        {"processor": ECHO, "config": [1, 2]}, 422, "invalid-request", id="config not an object"
    ),
    pytest.param(
        {"processor": ECHO, "priority": 2**40}, 422, "invalid-request", id="priority out of range"
    ),
    pytest.param({"processor": ECHO, "qeue": "x"}, 422, "invalid-request", id="unknown option"),
    pytest.param(
        {"processor": ECHO, "start_in": 5, "start_at": "2030-01-01T00:00:00Z"},
        422,
        "invalid-request",
        id="start_at and start_in",
    ),
    pytest.param(
        {"processor": ECHO, "start_at": "0001-01-01T00:00:00+05:00"},
        422,
        "invalid-request",
        id="a time UTC cannot hold",
    ),
    pytest.param({"processor": ECHO, "queue": "a\x00b"}, 422, "invalid-request", id="NUL in text"),
    pytest.param(
        {"processor": ECHO, "config": {"label": "a\x00b"}},
        422,
        "invalid-request",
        id="NUL in the configuration",
    ),
    pytest.param(
        {"processor": ECHO, "config": {"label": "x" * 70_000}},
        413,
        "payload-too-large",
        id="configuration over its bound",
    ),
]


@pytest.mark.parametrize(("body", "status", "slug"), CREATE_REFUSALS)
def test_a_refused_create_is_a_problem_and_writes_no_task(
    api_env: ApiEnv, body: dict[str, Any], status: int, slug: str
) -> None:
    before = _written(api_env)
    response = api_env.client.post("/api/v1/tasks", json=body, headers=api_env.operator)
    assert_problem(response, status, slug)
    assert _written(api_env) == before


def test_malformed_json_is_400(api_env: ApiEnv) -> None:
    before = _written(api_env)
    for text in (b'{"processor": ', b"{'processor': 1}", b"[" * 100_000):
        response = api_env.client.post(
            "/api/v1/tasks",
            content=text,
            headers={**api_env.operator, "Content-Type": "application/json"},
        )
        assert_problem(response, 400)
    assert _written(api_env) == before


def test_an_oversized_body_is_413_before_it_is_read(api_env: ApiEnv) -> None:
    before = _written(api_env)
    big = b'{"processor": "tests.processors.Echo", "config": {"label": "' + b"x" * 2_000_000
    response = api_env.client.post(
        "/api/v1/tasks",
        content=big + b'"}}',
        headers={**api_env.operator, "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "body-too-large")

    def chunks() -> Any:  # no Content-Length: the bound holds as the body streams in
        yield big[:1_000_000]
        yield big[1_000_000:]
        yield b'"}}'

    response = api_env.client.post(
        "/api/v1/tasks",
        content=chunks(),
        headers={**api_env.operator, "Content-Type": "application/json"},
    )
    assert_problem(response, 413)
    assert _written(api_env) == before


def test_an_unknown_id_is_404(api_env: ApiEnv) -> None:
    for method, path in (
        ("GET", "/api/v1/tasks/999999"),
        ("POST", "/api/v1/tasks/999999/cancel"),
        ("POST", "/api/v1/tasks/999999/retry"),
        ("POST", "/api/v1/tasks/999999/activate"),
    ):
        response = api_env.client.request(method, path, headers=api_env.operator)
        assert_problem(response, 404, "task-not-found")
    assert_problem(
        api_env.client.delete("/api/v1/tokens/nobody", headers=api_env.admin),
        404,
        "token-not-found",
    )


def test_a_transition_the_status_forbids_is_409_and_changes_nothing(api_env: ApiEnv) -> None:
    task_id = api_env.task()
    before = actions.get(api_env.app, task_id)
    for verb in ("retry", "activate"):
        response = api_env.client.post(f"/api/v1/tasks/{task_id}/{verb}", headers=api_env.operator)
        body = assert_problem(response, 409, "invalid-transition")
        assert "PENDING" in body["detail"]
    assert actions.get(api_env.app, task_id) == before


@pytest.mark.parametrize(
    "query",
    [
        "limit=1001",
        "limit=0",
        "limit=ten",
        "status=DONE",
        "cursor=-5",
        "cursor=abc",
        "cursor=9999999999999999999",
        "pipeline=0",
        "created_after=yesterday",
        "queue=",
    ],
)
def test_bad_listing_parameters_are_422(api_env: ApiEnv, query: str) -> None:
    response = api_env.client.get(f"/api/v1/tasks?{query}", headers=api_env.viewer)
    assert_problem(response, 422)


def test_a_path_id_out_of_range_is_422(api_env: ApiEnv) -> None:
    for path in ("/api/v1/tasks/0", "/api/v1/tasks/99999999999999999999", "/api/v1/tasks/x"):
        assert_problem(api_env.client.get(path, headers=api_env.viewer), 422)


def test_a_bulk_action_needs_a_criterion(api_env: ApiEnv) -> None:
    api_env.task()
    response = api_env.client.post("/api/v1/tasks/bulk/cancel", json={}, headers=api_env.operator)
    assert_problem(response, 422)
    response = api_env.client.post(
        "/api/v1/tasks/bulk/cancel",
        json={"queue": "default", "limit": 5000},
        headers=api_env.operator,
    )
    assert_problem(response, 422)


def test_unknown_routes_and_methods_are_problems_too(api_env: ApiEnv) -> None:
    assert_problem(api_env.client.get("/api/v1/nothing", headers=api_env.viewer), 404)
    assert_problem(api_env.client.put("/api/v1/tasks", headers=api_env.viewer), 405)


def test_token_requests_are_checked(api_env: ApiEnv) -> None:
    for body in ({"name": "", "role": "admin"}, {"name": "x", "role": "root"}, {"name": "a b"}):
        assert_problem(api_env.client.post("/api/v1/tokens", json=body, headers=api_env.admin), 422)
    ok = api_env.client.post(
        "/api/v1/tokens", json={"name": "twice", "role": "viewer"}, headers=api_env.admin
    )
    assert ok.status_code == 201
    again = api_env.client.post(
        "/api/v1/tokens", json={"name": "twice", "role": "viewer"}, headers=api_env.admin
    )
    assert_problem(again, 409, "token-name-taken")
