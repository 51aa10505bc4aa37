"""Tasks, stats and processors over HTTP, on both databases: what each route returns."""

from __future__ import annotations

from datetime import timedelta

from nightcrew import MaintenanceTaskStatus, actions
from nightcrew.models import utcnow
from nightcrew.values import Role
from tests.api.conftest import ApiEnv, actor
from tests.helpers import claim, finish, on_own_store, set_status

S = MaintenanceTaskStatus
ECHO = "tests.processors.Echo"


def test_create_validates_and_warns_about_unknown_keys(api_env: ApiEnv) -> None:
    response = api_env.client.post(
        "/api/v1/tasks",
        json={"processor": ECHO, "config": {"value": 3, "valeu": 4}, "queue": "q1", "priority": 5},
        headers=api_env.operator,
    )
    assert response.status_code == 201
    body = response.json()
    assert body["created"] is True
    assert len(body["warnings"]) == 1 and "'valeu'" in body["warnings"][0]
    task = body["task"]
    assert (task["status"], task["queue"], task["priority"]) == ("PENDING", "q1", 5)
    assert task["config"] == {"value": 3, "label": "", "valeu": 4}
    stored = actions.get(api_env.app, task["id"])
    assert stored.processor_type == ECHO and stored.queue == "q1"


def test_create_with_options_as_in_python(api_env: ApiEnv) -> None:
    response = api_env.client.post(
        "/api/v1/tasks",
        json={
            "processor": ECHO,
            "inactive": True,
            "start_in": 3600,
            "max_attempts": 3,
            "timeout": 9.5,
            "delay": 2,
        },
        headers=api_env.operator,
    )
    task = response.json()["task"]
    assert task["status"] == "INACTIVE"
    assert (task["max_attempts"], task["timeout"], task["delay"]) == (3, 9.5, 2)
    stored = actions.get(api_env.app, task["id"])
    assert stored.start_at > utcnow() + timedelta(minutes=59)


def test_a_held_unique_key_returns_the_holder_with_200(api_env: ApiEnv) -> None:
    body = {"processor": ECHO, "unique_key": "nightly"}
    first = api_env.client.post("/api/v1/tasks", json=body, headers=api_env.operator)
    second = api_env.client.post("/api/v1/tasks", json=body, headers=api_env.operator)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["created"] is False
    assert second.json()["task"]["id"] == first.json()["task"]["id"]


def test_list_filters_and_cursor(api_env: ApiEnv) -> None:
    ids = [api_env.task(queue="a" if i % 2 else "b") for i in range(7)]
    set_status(api_env.app.database, ids[0], S.ERROR)
    client, h = api_env.client, api_env.viewer

    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/tasks", params=params, headers=h).json()
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)

    by_queue = client.get("/api/v1/tasks", params={"queue": "a"}, headers=h).json()["tasks"]
    assert {t["queue"] for t in by_queue} == {"a"} and len(by_queue) == 3
    errors = client.get("/api/v1/tasks", params={"status": "ERROR"}, headers=h).json()["tasks"]
    assert [t["id"] for t in errors] == [ids[0]]
    both = client.get(
        "/api/v1/tasks", params=[("status", "ERROR"), ("status", "PENDING")], headers=h
    ).json()["tasks"]
    assert len(both) == 7
    named = client.get("/api/v1/tasks", params={"processor": "Echo"}, headers=h).json()["tasks"]
    assert len(named) == 7
    later = (utcnow() + timedelta(hours=1)).isoformat()
    assert (
        client.get("/api/v1/tasks", params={"created_after": later}, headers=h).json()["tasks"]
        == []
    )
    assert (
        len(
            client.get("/api/v1/tasks", params={"created_before": later}, headers=h).json()["tasks"]
        )
        == 7
    )
    assert client.get("/api/v1/tasks", params={"schedule": "nightly"}, headers=h).json() == {
        "tasks": [],
        "next_cursor": None,
    }
    assert client.get("/api/v1/tasks", params={"pipeline": 5}, headers=h).json()["tasks"] == []


def test_show_has_config_outcome_attempts_and_timeline(api_env: ApiEnv) -> None:
    task_id = api_env.task()
    (claimed,) = on_own_store(api_env.app.database, claim, "api-test/1", lease_seconds=60)
    error = {"type": "RuntimeError", "message": "boom", "traceback": "Traceback ...\nboom"}
    on_own_store(api_env.app.database, finish, claimed, S.ERROR, {"error": "boom"}, error)
    body = api_env.client.get(f"/api/v1/tasks/{task_id}", headers=api_env.viewer).json()
    assert body["status"] == "ERROR"
    assert body["config"] == {"value": 1, "label": ""}
    assert body["info"] == {"error": "boom"}
    assert body["error"] == error
    assert (body["attempts"], body["max_attempts"], body["rescues"]) == (1, 1, 0)
    timeline = body["timeline"]
    assert timeline["created_at"] <= timeline["started_at"] <= timeline["finished_at"]
    assert timeline["waited_seconds"] >= 0 and timeline["ran_seconds"] >= 0
    assert body["progress_detail"] == {"percent": None, "message": None}


def test_cancel_retry_activate(api_env: ApiEnv) -> None:
    client, h = api_env.client, api_env.operator
    task_id = api_env.task(inactive=True)
    assert client.post(f"/api/v1/tasks/{task_id}/activate", headers=h).json()["status"] == "PENDING"
    assert client.post(f"/api/v1/tasks/{task_id}/cancel", headers=h).json()["status"] == "CANCELLED"
    retried = client.post(f"/api/v1/tasks/{task_id}/retry", headers=h).json()
    assert (retried["status"], retried["attempts"]) == ("PENDING", 0)


def test_bulk_cancel_and_retry_by_filter(api_env: ApiEnv) -> None:
    client, h = api_env.client, api_env.operator
    mine = [api_env.task(queue="bulk") for _ in range(5)]
    other = api_env.task(queue="other")
    first = client.post(
        "/api/v1/tasks/bulk/cancel", json={"queue": "bulk", "limit": 3}, headers=h
    ).json()
    assert len(first["changed"]) == 3 and first["more"] is True
    rest = client.post("/api/v1/tasks/bulk/cancel", json={"queue": "bulk"}, headers=h).json()
    assert sorted(first["changed"] + rest["changed"]) == mine and rest["more"] is False
    assert actions.get(api_env.app, other).status == S.PENDING
    retried = client.post(
        "/api/v1/tasks/bulk/retry", json={"status": ["CANCELLED"], "queue": "bulk"}, headers=h
    ).json()
    assert sorted(retried["changed"]) == mine
    assert {actions.get(api_env.app, i).status for i in mine} == {S.PENDING}


def test_bulk_cancel_asks_working_tasks_once(api_env: ApiEnv) -> None:
    task_id = api_env.task(queue="busy")
    set_status(api_env.app.database, task_id, S.WORKING)
    client, h = api_env.client, api_env.operator
    first = client.post("/api/v1/tasks/bulk/cancel", json={"queue": "busy"}, headers=h).json()
    assert first == {"changed": [task_id], "skipped": [], "more": False}
    again = client.post("/api/v1/tasks/bulk/cancel", json={"queue": "busy"}, headers=h).json()
    assert again == {"changed": [], "skipped": [], "more": False}


def test_stats(api_env: ApiEnv) -> None:
    api_env.task(queue="q")
    api_env.task(queue="q", start_in=3600)
    done = api_env.task(queue="r")
    for claimed in on_own_store(api_env.app.database, claim, "api-test/2", lease_seconds=60):
        if claimed.id == done:
            on_own_store(api_env.app.database, finish, claimed, S.COMPLETED, {})
    body = api_env.client.get("/api/v1/stats", headers=api_env.viewer).json()
    assert sum(body["by_status"].values()) == 3
    assert sum(body["by_queue"]["q"].values()) == 2
    assert sum(body["by_processor"][ECHO].values()) == 3
    assert body["oldest_pending_seconds"] is None or body["oldest_pending_seconds"] >= 0
    finished = sum(m["completed"] for m in body["finished_per_minute"])
    assert finished == body["by_status"]["COMPLETED"] == 1


def test_processors_lists_the_allowed_classes_with_their_schema(api_env: ApiEnv) -> None:
    body = api_env.client.get("/api/v1/processors", headers=api_env.viewer).json()
    by_path = {p["class_path"]: p for p in body["processors"]}
    assert {ECHO, "tests.processors.StrictEcho", "nightcrew.processors.Noop"} <= set(by_path)
    assert "tests.processors.NotAProcessor" not in by_path
    echo = by_path[ECHO]
    assert set(echo["json_schema"]["properties"]) == {"value", "label"}
    assert echo["strict"] is False and by_path["tests.processors.StrictEcho"]["strict"] is True
    assert echo["doc"].startswith("Returns its configuration")
    assert all(
        p["class_path"].startswith(("tests.processors.", "nightcrew.processors."))
        for p in body["processors"]
    )


def test_an_actor_is_the_token_name(api_env: ApiEnv) -> None:
    task_id = api_env.task()
    api_env.client.post(f"/api/v1/tasks/{task_id}/cancel", headers=api_env.operator)
    (row,) = actions.list_audit(api_env.app).records[:1]
    assert row.actor == actor(Role.OPERATOR)


def test_a_wildcard_in_a_processor_name_is_only_that_character(api_env: ApiEnv) -> None:
    task_id = api_env.task()
    client, h = api_env.client, api_env.operator
    assert client.get("/api/v1/tasks", params={"processor": "%"}, headers=h).json()["tasks"] == []
    assert (
        client.get("/api/v1/tasks", params={"processor": "Ech_"}, headers=h).json()["tasks"] == []
    )
    cancelled = client.post("/api/v1/tasks/bulk/cancel", json={"processor": "%"}, headers=h).json()
    assert cancelled["changed"] == []
    assert actions.get(api_env.app, task_id).status == S.PENDING
