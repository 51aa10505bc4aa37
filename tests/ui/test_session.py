"""The dashboard's doors, in process on both databases: who gets in, with what cookie,
which posts are refused, and that it lives where the API lives (prefix, host auth)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import SecretStr

from nightcrew import Nightcrew, actions, create_maintenance_task
from nightcrew.api import create_api, mount_admin
from nightcrew.models import MaintenanceTaskStatus
from nightcrew.settings import Settings
from nightcrew.values import AuditFilter, Role
from tests.conftest import Backend
from tests.processors import Echo

S = MaintenanceTaskStatus


@dataclass
class UiEnv:
    app: Nightcrew
    client: TestClient
    tokens: dict[Role, str]

    def task(self, **options: object) -> int:
        return create_maintenance_task(Echo(value=1), database=self.app, **options).id  # type: ignore[arg-type]


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def sign_in(client: TestClient, token: str, prefix: str = "/ui") -> str:
    """Sign in through the form; returns the session's CSRF token."""
    page = client.get(f"{prefix}/login")
    response = client.post(
        f"{prefix}/login", data={"csrf": csrf_of(page.text), "token": token, "next": ""}
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get(f"{prefix}/tasks").text)


@pytest.fixture
def ui(backend: Backend, app: Nightcrew) -> Iterator[UiEnv]:
    tokens = {role: actions.create_token(app, f"ui-{role.value}", role)[1] for role in Role}
    with TestClient(create_api(app), follow_redirects=False) as client:
        yield UiEnv(app, client, tokens)


def test_pages_send_a_caller_without_a_session_to_the_login_form(ui: UiEnv) -> None:
    response = ui.client.get("/ui/tasks?status=ERROR")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Ftasks%3Fstatus%3DERROR"
    assert ui.client.get("/ui/live/tasks?ids=1").status_code == 401
    assert ui.client.get("/ui/overview/body").status_code == 401
    assert ui.client.get("/ui/login").status_code == 200


def test_the_session_cookie_is_signed_httponly_samesite_strict_and_holds_no_token(
    ui: UiEnv,
) -> None:
    page = ui.client.get("/ui/login")
    response = ui.client.post(
        "/ui/login",
        data={"csrf": csrf_of(page.text), "token": ui.tokens[Role.VIEWER], "next": "/ui/audit"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/audit"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http here; https pages get Secure
    assert ui.tokens[Role.VIEWER] not in cookie
    assert ui.client.get("/ui/").status_code == 200
    # A cookie changed by hand is no session at all.
    value = ui.client.cookies.get("nightcrew_ui") or ""
    ui.client.cookies.set("nightcrew_ui", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert ui.client.get("/ui/").status_code == 303


def test_a_wrong_token_is_refused_at_the_login_form(ui: UiEnv) -> None:
    page = ui.client.get("/ui/login")
    response = ui.client.post(
        "/ui/login", data={"csrf": csrf_of(page.text), "token": "nct_nope", "next": ""}
    )
    assert response.status_code == 401
    assert "not valid" in response.text
    assert ui.client.get("/ui/").status_code == 303


def test_a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    ui: UiEnv,
) -> None:
    task_id = ui.task()
    sign_in(ui.client, ui.tokens[Role.OPERATOR])
    for data in ({}, {"csrf": "forged"}):
        response = ui.client.post(f"/ui/tasks/{task_id}/cancel", data=data)
        assert response.status_code == 403
        assert "CSRF" in response.text
    assert actions.get(ui.app, task_id).status is S.PENDING
    # The login form is protected as well (no login CSRF).
    response = ui.client.post(
        "/ui/login", data={"csrf": "forged", "token": ui.tokens[Role.ADMIN], "next": ""}
    )
    assert response.status_code == 403


def test_an_operators_action_is_audited_with_the_caller_and_its_address(ui: UiEnv) -> None:
    task_id = ui.task()
    csrf = sign_in(ui.client, ui.tokens[Role.OPERATOR])
    response = ui.client.post(
        f"/ui/tasks/{task_id}/cancel", data={"csrf": csrf, "next": "/ui/tasks"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/tasks"
    assert actions.get(ui.app, task_id).status is S.CANCELLED
    assert "Cancelled (or asked to stop): 1 task" in ui.client.get("/ui/tasks").text
    entries = actions.list_audit(ui.app, AuditFilter(actor="token:ui-operator")).records
    by_action = {e.action: e for e in entries}
    assert by_action["task.cancel"].target == f"task:{task_id}"
    assert by_action["task.cancel"].client == "testclient"
    assert by_action["ui.login"].outcome == "ok"


def test_a_viewers_post_is_refused_with_403_and_recorded_as_refused(ui: UiEnv) -> None:
    task_id = ui.task()
    csrf = sign_in(ui.client, ui.tokens[Role.VIEWER])
    assert "Cancel task" not in ui.client.get(f"/ui/tasks/{task_id}").text
    response = ui.client.post(f"/ui/tasks/{task_id}/cancel", data={"csrf": csrf})
    assert response.status_code == 403
    assert "needs the operator role" in response.text
    assert actions.get(ui.app, task_id).status is S.PENDING
    (entry,) = actions.list_audit(
        ui.app, AuditFilter(actor="token:ui-viewer", outcome="refused")
    ).records
    assert (entry.action, entry.target) == ("task.cancel", f"task:{task_id}")


def test_a_revoked_token_ends_its_dashboard_session(ui: UiEnv) -> None:
    sign_in(ui.client, ui.tokens[Role.OPERATOR])
    assert ui.client.get("/ui/").status_code == 200
    actions.revoke_token(ui.app, "ui-operator")
    assert ui.client.get("/ui/").status_code == 303


def test_signing_out_ends_the_session(ui: UiEnv) -> None:
    csrf = sign_in(ui.client, ui.tokens[Role.VIEWER])
    response = ui.client.post("/ui/logout", data={"csrf": csrf})
    assert response.status_code == 303
    assert ui.client.get("/ui/").status_code == 303


def test_bad_page_parameters_show_a_page_never_a_problem_document(ui: UiEnv) -> None:
    sign_in(ui.client, ui.tokens[Role.VIEWER])
    response = ui.client.get("/ui/tasks?cursor=abc&status=NOPE&pipeline=-1")
    assert response.status_code == 200
    response = ui.client.get("/ui/tasks/abc")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert ui.client.get("/ui/tasks/99999").status_code == 404
    assert ui.client.get("/ui/pipelines/99999").status_code == 404
    assert ui.client.get("/ui/processors/os.system").status_code == 404


def test_pages_allow_only_their_own_scripts_and_styles(ui: UiEnv) -> None:
    sign_in(ui.client, ui.tokens[Role.OPERATOR])
    ui.task()
    for path in ("/ui/", "/ui/tasks", "/ui/audit", "/ui/processors", "/ui/schedules"):
        response = ui.client.get(path)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe" not in policy
        assert "frame-ancestors 'none'" in policy
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", response.text), path
        assert " style=" not in response.text, path


def test_the_vendored_scripts_are_served_from_the_package(ui: UiEnv) -> None:
    response = ui.client.get("/ui/static/vendor/htmx-2.0.11.min.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert "immutable" in response.headers["cache-control"]
    assert ui.client.get("/ui/static/vendor/htmx-ext-sse-2.2.4.min.js").status_code == 200
    assert ui.client.get("/ui/static/app.css").status_code == 200
    assert ui.client.get("/ui/static/vendor/README.md").status_code == 404
    assert ui.client.get("/ui/static/../session.py").status_code == 404


def test_a_hosts_own_auth_rule_signs_callers_in_to_the_dashboard(
    backend: Backend, app: Nightcrew
) -> None:
    def host_auth(request: Request) -> tuple[str, Role] | None:
        user = request.headers.get("x-user")
        return None if user is None else (f"user:{user}", Role.OPERATOR)

    task_id = create_maintenance_task(Echo(), database=app).id
    with TestClient(create_api(app, auth=host_auth), follow_redirects=False) as client:
        assert client.get("/ui/").status_code == 303
        assert "through the application that hosts it" in client.get("/ui/login").text
        headers = {"x-user": "ann"}
        page = client.get("/ui/tasks", headers=headers)
        assert page.status_code == 200
        response = client.post(
            f"/ui/tasks/{task_id}/cancel", data={"csrf": csrf_of(page.text)}, headers=headers
        )
        assert response.status_code == 303
    assert actions.get(app, task_id).status is S.CANCELLED
    (entry,) = actions.list_audit(app, AuditFilter(action="task.cancel")).records
    assert entry.actor == "user:ann"


def test_mount_admin_serves_the_dashboard_under_its_prefix(
    backend: Backend, app: Nightcrew
) -> None:
    _, token = actions.create_token(app, "host-viewer", Role.VIEWER)
    host = FastAPI()
    mount_admin(host, "/nightcrew", app=app)
    with TestClient(host, follow_redirects=False) as client:
        page = client.get("/nightcrew/ui/login")
        assert 'href="/nightcrew/ui/static/app.css"' in page.text
        response = client.post(
            "/nightcrew/ui/login", data={"csrf": csrf_of(page.text), "token": token, "next": ""}
        )
        assert response.headers["location"] == "/nightcrew/ui/"
        assert "Path=/nightcrew/ui" in response.headers["set-cookie"]
        overview = client.get("/nightcrew/ui/")
        assert overview.status_code == 200
        assert 'href="/nightcrew/ui/tasks"' in overview.text


def test_every_process_on_a_database_shares_the_generated_session_key(
    backend: Backend, settings: Settings
) -> None:
    with Nightcrew(settings) as first, Nightcrew(settings) as second:
        _, token = actions.create_token(first, "shared", Role.VIEWER)
        with TestClient(create_api(first), follow_redirects=False) as one:
            sign_in(one, token)
            cookie = one.cookies.get("nightcrew_ui") or ""
        with TestClient(create_api(second), follow_redirects=False) as two:
            two.cookies.set("nightcrew_ui", cookie)
            assert two.get("/ui/").status_code == 200
        configured = settings.model_copy(update={"ui_secret": SecretStr("k" * 40)})
        with (
            Nightcrew(configured) as third,
            TestClient(create_api(third), follow_redirects=False) as other,
        ):
            other.cookies.set("nightcrew_ui", cookie)
            assert other.get("/ui/").status_code == 303  # signed with another key


def test_pipeline_actions_from_the_dashboard_are_audited(ui: UiEnv) -> None:
    from nightcrew.pipelines import Pipeline

    p = Pipeline("audited")
    first = p.add(Echo(value=1), name="first")
    p.add(Echo(value=2), name="second", depends_on=[first])
    pipeline_id = p.enqueue(database=ui.app)
    csrf = sign_in(ui.client, ui.tokens[Role.OPERATOR])
    page = ui.client.get(f"/ui/pipelines/{pipeline_id}")
    assert page.text.count('class="node ') == 2
    response = ui.client.post(f"/ui/pipelines/{pipeline_id}/cancel", data={"csrf": csrf})
    assert response.status_code == 303
    assert actions.get_pipeline(ui.app, pipeline_id).pipeline.status == "CANCELLED"
    response = ui.client.post(
        f"/ui/pipelines/{pipeline_id}/retry", data={"csrf": csrf, "step": "second"}
    )
    assert response.status_code == 303
    entries = actions.list_audit(ui.app, AuditFilter(target=f"pipeline:{pipeline_id}")).records
    assert [(e.action, e.outcome, e.client) for e in reversed(entries)] == [
        ("pipeline.cancel", "ok", "testclient"),
        ("pipeline.retry_step", "ok", "testclient"),
    ]
    assert actions.get_pipeline(ui.app, pipeline_id).pipeline.status in ("PENDING", "WORKING")
