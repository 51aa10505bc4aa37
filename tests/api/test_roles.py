"""The role x route matrix, generated from the OpenAPI document: every route but /healthz
refuses a missing or unknown token (401), and each role is let in or refused (403) as the
route's ``x-required-role`` says, which is what the route itself enforces."""

from __future__ import annotations

from typing import Any

from nightcrew.api import create_api
from nightcrew.values import Role
from tests.api.conftest import ApiEnv

#: Bodies that pass validation, so "allowed" means the route's own answer (2xx, 404, 409).
BODIES: dict[str, dict[str, Any]] = {
    "/api/v1/tasks": {"processor": "tests.processors.Echo", "config": {"value": 1}},
    "/api/v1/tasks/bulk/cancel": {"queue": "no-such-queue"},
    "/api/v1/tasks/bulk/retry": {"queue": "no-such-queue"},
    "/api/v1/tokens": {"name": "matrix", "role": "viewer"},
    "/api/v1/schedules": {"name": "matrix", "processor": "tests.processors.Echo", "every": 60},
}


def operations() -> list[tuple[str, str, Role | None]]:
    """(method, path, required role) of every documented operation."""
    doc = create_api().openapi()
    found = []
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            role = operation.get("x-required-role")
            found.append((method.upper(), path, None if role is None else Role(role)))
    return found


def test_every_route_but_health_declares_a_role() -> None:
    ops = operations()
    assert len(ops) >= 12
    assert [(m, p) for m, p, role in ops if role is None] == [("GET", "/healthz")]


def _call(env: ApiEnv, method: str, path: str, headers: dict[str, str], n: int) -> int:
    task_id = env.task()
    url = (
        path.replace("{task_id}", str(task_id))
        .replace("{name}", "no-such-name")
        .replace("{pipeline_id}", "999999")
        .replace("{step}", "no-such-step")
    )
    body = dict(BODIES.get(path, {}))
    if path in ("/api/v1/tokens", "/api/v1/schedules"):
        body["name"] = f"matrix-{n}"
    response = env.client.request(method, url, headers=headers, json=body or None)
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
    return response.status_code


def test_the_role_matrix(api_env: ApiEnv) -> None:
    wrong: list[str] = []
    n = 0
    for method, path, needed in operations():
        if needed is None:
            continue
        for label, headers in (
            ("no token", {}),
            ("unknown token", {"Authorization": "Bearer nct_" + "x" * 43}),
            ("not bearer", {"Authorization": f"Basic {api_env.tokens[Role.ADMIN]}"}),
        ):
            status = _call(api_env, method, path, headers, n)
            if status != 401:
                wrong.append(f"{method} {path} with {label}: {status}, wanted 401")
        for role in Role:
            n += 1
            status = _call(api_env, method, path, api_env.auth(role), n)
            allowed = role.allows(needed)
            if allowed and status in (401, 403):
                wrong.append(f"{method} {path} as {role}: {status}, wanted it let in")
            if not allowed and status != 403:
                wrong.append(f"{method} {path} as {role}: {status}, wanted 403")
    assert not wrong, "\n".join(wrong)


def test_the_openapi_document_needs_a_viewer(api_env: ApiEnv) -> None:
    assert api_env.client.get("/api/v1/openapi.json").status_code == 401
    doc = api_env.client.get("/api/v1/openapi.json", headers=api_env.viewer)
    assert doc.status_code == 200
    assert doc.json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_health_needs_no_token_and_says_nothing_else(api_env: ApiEnv) -> None:
    response = api_env.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_a_revoked_token_is_refused_at_once(api_env: ApiEnv) -> None:
    from nightcrew import actions

    assert api_env.client.get("/api/v1/tasks", headers=api_env.viewer).status_code == 200
    actions.revoke_token(api_env.app, "test-viewer")
    assert api_env.client.get("/api/v1/tasks", headers=api_env.viewer).status_code == 401
