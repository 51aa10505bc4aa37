"""`mount_admin` inside a host FastAPI app, with the host's own rule for who is admin."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

from nightcrew import Nightcrew, create_maintenance_task
from nightcrew.api import Role, mount_admin
from nightcrew.settings import Settings
from tests.processors import Echo


@dataclass
class User:
    id: int
    admin: bool


USERS = {"alice": User(1, admin=True), "bob": User(2, admin=False)}


def host_app() -> FastAPI:
    host = FastAPI()

    @host.middleware("http")
    async def login(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.user = USERS.get(request.headers.get("x-user", ""))
        return await call_next(request)

    @host.get("/")
    def home() -> dict[str, str]:
        return {"app": "host"}

    return host


def origin_rule(request: Request) -> tuple[str, Role] | None:
    """The origin's rule: a user with ``admin = True`` is admin (others may look)."""
    user = getattr(request.state, "user", None)
    if user is None:
        return None
    return f"user:{user.id}", Role.ADMIN if user.admin else Role.VIEWER


def test_mounted_with_the_hosts_own_auth(app: Nightcrew) -> None:
    host = host_app()
    mount_admin(host, "/nightcrew", app=app, auth=origin_rule)
    task_id = create_maintenance_task(Echo(value=1), database=app).id
    with TestClient(host) as client:
        assert client.get("/").json() == {"app": "host"}
        assert client.get("/nightcrew/healthz").json() == {"status": "ok"}
        assert client.get("/nightcrew/api/v1/tasks").status_code == 401
        bob = {"x-user": "bob"}
        assert client.get("/nightcrew/api/v1/tasks", headers=bob).status_code == 200
        assert (
            client.post(f"/nightcrew/api/v1/tasks/{task_id}/cancel", headers=bob).status_code == 403
        )
        alice = {"x-user": "alice"}
        cancelled = client.post(f"/nightcrew/api/v1/tasks/{task_id}/cancel", headers=alice)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
        assert client.get("/nightcrew/api/v1/tokens", headers=alice).status_code == 200
        audit = client.get("/nightcrew/api/v1/audit", headers=alice).json()["entries"]
        assert [(e["actor"], e["outcome"]) for e in audit[:2]] == [
            ("user:1", "ok"),
            ("user:2", "refused"),
        ]
        doc = client.get("/nightcrew/api/v1/openapi.json", headers=alice).json()
        assert doc["servers"] == [{"url": "/nightcrew"}]
        # Bearer tokens mean nothing to a host that plugged in its own rule.
        assert (
            client.get(
                "/nightcrew/api/v1/tasks", headers={"Authorization": "Bearer nct_x"}
            ).status_code
            == 401
        )


def test_mounted_without_an_app_opens_one_in_the_hosts_lifespan(settings: Settings) -> None:
    host = host_app()

    async def async_rule(request: Request) -> tuple[str, str] | None:
        return ("user:async", "viewer") if request.headers.get("x-user") else None

    api = mount_admin(host, "/admin", settings=settings, auth=async_rule)
    with TestClient(host) as client:
        assert isinstance(api.state.nightcrew, Nightcrew)
        assert client.get("/admin/api/v1/stats", headers={"x-user": "x"}).status_code == 200
    assert api.state.nightcrew is None
