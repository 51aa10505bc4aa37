"""Schedules over HTTP, on both databases: list, show, add, pause, resume, run now and
delete; what each returns, the problems bad input gets, and the audit rows mutations leave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nightcrew import actions
from nightcrew.models import utcnow
from nightcrew.values import AuditFilter, AuditRecord, Role
from tests.api.conftest import ApiEnv, actor
from tests.api.test_problems import assert_problem
from tests.helpers import task_count

ECHO = "tests.processors.Echo"
URL = "/api/v1/schedules"


def _add(env: ApiEnv, name: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "processor": ECHO, "every": 3600, **fields}
    response = env.client.post(URL, json=body, headers=env.operator)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _latest(env: ApiEnv) -> AuditRecord:
    return actions.list_audit(env.app, AuditFilter(limit=1)).records[0]


def _ok_rows(env: ApiEnv) -> int:
    return len(actions.list_audit(env.app, AuditFilter(outcome="ok", limit=1000)).records)


def _names(env: ApiEnv) -> list[str]:
    return [v.name for v in actions.list_schedules(env.app)]


def test_add_cron_in_a_timezone_returns_201_with_the_schedule(api_env: ApiEnv) -> None:
    response = api_env.client.post(
        URL,
        json={
            "name": "nightly-report",
            "processor": ECHO,
            "config": {"value": 7},
            "cron": "0 2 * * *",
            "timezone": "Europe/Berlin",
            "queue": "reports",
            "priority": 5,
            "max_attempts": 3,
            "timeout": 30,
            "misfire_grace": "15m",
            "coalesce": False,
            "max_instances": 2,
            "jitter": 10,
        },
        headers=api_env.operator,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["warnings"] == []
    schedule = body["schedule"]
    assert (schedule["name"], schedule["state"], schedule["source"]) == (
        "nightly-report",
        "active",
        "runtime",
    )
    assert schedule["trigger"] == "cron 0 2 * * * (Europe/Berlin)"
    assert (schedule["trigger_kind"], schedule["cron"], schedule["timezone"]) == (
        "cron",
        "0 2 * * *",
        "Europe/Berlin",
    )
    assert (schedule["processor"], schedule["processor_name"]) == (ECHO, "Echo")
    assert schedule["config"] == {"value": 7, "label": ""}
    assert (schedule["queue"], schedule["priority"], schedule["max_attempts"]) == ("reports", 5, 3)
    assert (schedule["timeout"], schedule["misfire_grace_seconds"]) == (30.0, 900.0)
    assert (schedule["coalesce"], schedule["max_instances"], schedule["jitter_seconds"]) == (
        False,
        2,
        10.0,
    )
    next_run = datetime.fromisoformat(schedule["next_run_at"])
    assert utcnow() < next_run <= utcnow() + timedelta(days=1, hours=1)
    stored = actions.get_schedule(api_env.app, "nightly-report")
    assert stored.queue == "reports" and stored.timezone == "Europe/Berlin"


def test_add_warns_about_configuration_keys_the_processor_does_not_declare(
    api_env: ApiEnv,
) -> None:
    body = _add(api_env, "typo", config={"value": 1, "valeu": 2})
    assert len(body["warnings"]) == 1 and "'valeu'" in body["warnings"][0]
    assert body["schedule"]["config"] == {"value": 1, "label": "", "valeu": 2}


def test_every_takes_seconds_or_a_duration(api_env: ApiEnv) -> None:
    seconds = _add(api_env, "every-90", every=90)["schedule"]
    text = _add(api_env, "every-6h", every="6h")["schedule"]
    assert (seconds["trigger_kind"], seconds["every_seconds"]) == ("interval", 90)
    assert (text["every_seconds"], text["trigger"]) == (21600, "every 6h")
    assert text["anchor_at"] == text["next_run_at"]


def test_at_adds_a_one_off(api_env: ApiEnv) -> None:
    when = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    schedule = _add(api_env, "once", every=None, at=when.isoformat())["schedule"]
    assert schedule["trigger_kind"] == "date"
    assert datetime.fromisoformat(schedule["run_at"]) == when
    assert datetime.fromisoformat(schedule["next_run_at"]) == when


def test_add_is_audited_with_the_caller_and_address(api_env: ApiEnv) -> None:
    _add(api_env, "audited", cron="*/5 * * * *", every=None)
    row = _latest(api_env)
    assert (row.actor, row.action, row.target, row.outcome) == (
        actor(Role.OPERATOR),
        "schedule.add",
        "schedule:audited",
        "ok",
    )
    assert row.client == "testclient"
    assert row.parameters is not None and row.parameters["cron"] == "*/5 * * * *"


def test_a_taken_name_is_409_and_leaves_the_first_schedule(api_env: ApiEnv) -> None:
    _add(api_env, "taken", every=60)
    before = actions.get_schedule(api_env.app, "taken")
    ok = _ok_rows(api_env)
    response = api_env.client.post(
        URL, json={"name": "taken", "processor": ECHO, "every": 120}, headers=api_env.operator
    )
    assert_problem(response, 409, "schedule-exists")
    assert actions.get_schedule(api_env.app, "taken") == before
    assert _ok_rows(api_env) == ok
    row = _latest(api_env)
    assert (row.action, row.target, row.outcome) == ("schedule.add", "schedule:taken", "refused")


PAST = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

ADD_REFUSALS = [
    pytest.param({"every": None}, 422, "invalid-schedule", id="no trigger"),
    pytest.param({"cron": "0 2 * * *"}, 422, "invalid-schedule", id="two triggers"),
    pytest.param({"every": None, "cron": "99 2 * * *"}, 422, "invalid-schedule", id="bad cron"),
    pytest.param(
        {"every": None, "cron": "* * * * * *"}, 422, "invalid-schedule", id="six cron fields"
    ),
    pytest.param(
        {"every": None, "cron": "0 2 * * *", "timezone": "Mars/Olympus"},
        422,
        "invalid-schedule",
        id="unknown timezone",
    ),
    pytest.param({"timezone": "UTC"}, 422, "invalid-schedule", id="timezone without cron"),
    pytest.param({"every": None, "at": PAST}, 422, "invalid-schedule", id="one-off in the past"),
    pytest.param({"every": "1h30"}, 422, "invalid-schedule", id="unreadable duration"),
    pytest.param({"every": "0s"}, 422, "invalid-schedule", id="zero duration"),
    pytest.param({"misfire_grace": "soon"}, 422, "invalid-request", id="grace not a duration"),
    pytest.param({"name": "nightcrew.mine"}, 422, "invalid-schedule", id="reserved name"),
    pytest.param({"name": "has space"}, 422, "invalid-request", id="name with a space"),
    pytest.param({"every": 0}, 422, "invalid-request", id="every zero seconds"),
    pytest.param({"every": 1.5}, 422, "invalid-request", id="every fractional seconds"),
    pytest.param({"every": True}, 422, "invalid-request", id="every a boolean"),
    pytest.param({"every": 10**12}, 422, "invalid-request", id="every over its bound"),
    pytest.param({"every": "999999999d"}, 422, "invalid-request", id="duration over its bound"),
    pytest.param({"jitter": 10**9}, 422, "invalid-request", id="jitter over its bound"),
    pytest.param({"misfire_grace": 1e300}, 422, "invalid-request", id="grace over its bound"),
    pytest.param({"max_instances": 0}, 422, "invalid-request", id="max_instances zero"),
    pytest.param(
        {"every": None, "at": "9999-12-31T23:00:00Z"}, 422, "invalid-request", id="at too late"
    ),
    pytest.param(
        {"every": None, "at": "0001-01-01T00:00:00+05:00"},
        422,
        "invalid-request",
        id="at UTC cannot hold",
    ),
    pytest.param({"config": {"value": "seven"}}, 422, "invalid-configuration", id="bad config"),
    pytest.param(
        {"processor": "os.system"}, 422, "processor-not-allowed", id="outside the allowlist"
    ),
    pytest.param(
        {"processor": "tests.processors.StrictEcho", "config": {"valu": 1}},
        422,
        "invalid-configuration",
        id="strict processor, unknown key",
    ),
    pytest.param({"config": {"label": "a\x00b"}}, 422, "invalid-request", id="NUL in config"),
    pytest.param({"qeue": "x"}, 422, "invalid-request", id="unknown option"),
    pytest.param(
        {"config": {"label": "x" * 70_000}}, 413, "payload-too-large", id="config over its bound"
    ),
]


@pytest.mark.parametrize(("fields", "status", "slug"), ADD_REFUSALS)
def test_a_refused_add_is_a_problem_and_writes_no_schedule(
    api_env: ApiEnv, fields: dict[str, Any], status: int, slug: str
) -> None:
    ok = _ok_rows(api_env)
    body = {"name": "refused", "processor": ECHO, "every": 60, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    response = api_env.client.post(URL, json=body, headers=api_env.operator)
    assert_problem(response, status, slug)
    assert _names(api_env) == []
    assert _ok_rows(api_env) == ok


def test_infinity_in_the_configuration_is_422(api_env: ApiEnv) -> None:
    text = (
        b'{"name": "inf", "processor": "%s", "every": 60, "config": {"x": Infinity}}'
        % ECHO.encode()
    )
    response = api_env.client.post(
        URL, content=text, headers={**api_env.operator, "Content-Type": "application/json"}
    )
    assert_problem(response, 422, "invalid-request")
    assert _names(api_env) == []


def test_a_refused_trigger_leaves_a_refused_audit_row(api_env: ApiEnv) -> None:
    response = api_env.client.post(
        URL,
        json={"name": "bad-cron", "processor": ECHO, "cron": "0 25 * * *"},
        headers=api_env.operator,
    )
    body = assert_problem(response, 422, "invalid-schedule")
    assert "cron" in body["detail"]
    row = _latest(api_env)
    assert (row.action, row.target, row.outcome) == (
        "schedule.add",
        "schedule:bad-cron",
        "refused",
    )


def test_list_pages_by_name(api_env: ApiEnv) -> None:
    names = [f"s-{i:02d}" for i in range(7)]
    for name in reversed(names):
        _add(api_env, name)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = api_env.client.get(URL, params=params, headers=api_env.viewer).json()
        assert len(page["schedules"]) <= 3
        seen += [s["name"] for s in page["schedules"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names


def test_list_filters_by_enabled_and_source(api_env: ApiEnv) -> None:
    _add(api_env, "running")
    _add(api_env, "paused")
    actions.pause_schedule(api_env.app, "paused")
    actions.sync_schedules(api_env.app)  # nightcrew's upkeep schedules: source "code"
    client, h = api_env.client, api_env.viewer

    def names(**params: Any) -> list[str]:
        response = client.get(URL, params={"limit": 1000, **params}, headers=h)
        assert response.status_code == 200, response.text
        return [s["name"] for s in response.json()["schedules"]]

    assert names(source="runtime") == ["paused", "running"]
    code = names(source="code")
    assert code and all(n.startswith("nightcrew.") for n in code)
    assert names(source="runtime", enabled="false") == ["paused"]
    assert names(source="runtime", enabled="true") == ["running"]
    assert "paused" not in names(enabled="true") and set(code) <= set(names(enabled="true"))


def test_list_items_carry_the_last_task_status(api_env: ApiEnv) -> None:
    _add(api_env, "ran")
    task = actions.run_schedule_now(api_env.app, "ran")
    (item,) = api_env.client.get(URL, headers=api_env.viewer).json()["schedules"]
    assert (item["last_task_id"], item["last_task_status"]) == (task.id, "PENDING")
    assert "config" not in item


def test_show_returns_the_schedule(api_env: ApiEnv) -> None:
    _add(api_env, "shown", config={"value": 4}, every="2h")
    response = api_env.client.get(f"{URL}/shown", headers=api_env.viewer)
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["trigger"], body["config"]) == (
        "shown",
        "every 2h",
        {"value": 4, "label": ""},
    )
    assert body["last_task_id"] is None and body["last_task_status"] is None


def test_pause_then_resume(api_env: ApiEnv) -> None:
    _add(api_env, "toggled")
    paused = api_env.client.post(f"{URL}/toggled/pause", headers=api_env.operator)
    assert paused.status_code == 200
    assert (paused.json()["state"], paused.json()["enabled"]) == ("paused", False)
    assert actions.get_schedule(api_env.app, "toggled").enabled is False
    resumed = api_env.client.post(f"{URL}/toggled/resume", headers=api_env.operator)
    assert resumed.status_code == 200
    assert (resumed.json()["state"], resumed.json()["enabled"]) == ("active", True)
    assert datetime.fromisoformat(resumed.json()["next_run_at"]) > utcnow()


def test_pause_and_resume_are_audited(api_env: ApiEnv) -> None:
    _add(api_env, "toggled")
    for verb in ("pause", "resume"):
        api_env.client.post(f"{URL}/toggled/{verb}", headers=api_env.operator)
        row = _latest(api_env)
        assert (row.actor, row.action, row.target, row.outcome) == (
            actor(Role.OPERATOR),
            f"schedule.{verb}",
            "schedule:toggled",
            "ok",
        )
        assert row.client == "testclient"


def test_run_now_returns_the_new_task_and_keeps_the_next_run(api_env: ApiEnv) -> None:
    before = _add(api_env, "now", config={"value": 9})["schedule"]
    response = api_env.client.post(f"{URL}/now/run-now", headers=api_env.operator)
    assert response.status_code == 201, response.text
    task = response.json()
    assert (task["status"], task["schedule_name"], task["config"]["value"]) == (
        "PENDING",
        "now",
        9,
    )
    assert task["scheduled_for"] is not None
    assert actions.get(api_env.app, task["id"]).schedule_name == "now"
    after = actions.get_schedule(api_env.app, "now")
    assert after.last_task_id == task["id"]
    assert after.next_run_at == datetime.fromisoformat(before["next_run_at"])
    row = _latest(api_env)
    assert (row.action, row.target, row.outcome) == ("schedule.run_now", "schedule:now", "ok")


def test_run_now_works_on_a_paused_schedule(api_env: ApiEnv) -> None:
    _add(api_env, "paused")
    actions.pause_schedule(api_env.app, "paused")
    response = api_env.client.post(f"{URL}/paused/run-now", headers=api_env.operator)
    assert response.status_code == 201
    assert actions.get_schedule(api_env.app, "paused").enabled is False


def test_delete_returns_the_schedule_and_keeps_its_tasks(api_env: ApiEnv) -> None:
    _add(api_env, "doomed")
    task = actions.run_schedule_now(api_env.app, "doomed")
    response = api_env.client.delete(f"{URL}/doomed", headers=api_env.operator)
    assert response.status_code == 200
    assert response.json()["name"] == "doomed"
    assert _names(api_env) == []
    assert actions.get(api_env.app, task.id).schedule_name == "doomed"
    row = _latest(api_env)
    assert (row.action, row.target, row.outcome) == ("schedule.delete", "schedule:doomed", "ok")
    assert_problem(api_env.client.get(f"{URL}/doomed", headers=api_env.viewer), 404)


def test_an_unknown_name_is_404_everywhere(api_env: ApiEnv) -> None:
    assert_problem(
        api_env.client.get(f"{URL}/nobody", headers=api_env.viewer), 404, "schedule-not-found"
    )
    for method, path, action in (
        ("POST", f"{URL}/nobody/pause", "schedule.pause"),
        ("POST", f"{URL}/nobody/resume", "schedule.resume"),
        ("POST", f"{URL}/nobody/run-now", "schedule.run_now"),
        ("DELETE", f"{URL}/nobody", "schedule.delete"),
    ):
        tasks_before = task_count(api_env.app.store)
        response = api_env.client.request(method, path, headers=api_env.operator)
        assert_problem(response, 404, "schedule-not-found")
        assert task_count(api_env.app.store) == tasks_before
        row = _latest(api_env)
        assert (row.action, row.target, row.outcome) == (action, "schedule:nobody", "refused")


def test_a_name_with_a_slash_is_reached_by_its_path(api_env: ApiEnv) -> None:
    _add(api_env, "reports/daily")
    _add(api_env, "reports")
    shown = api_env.client.get(f"{URL}/reports/daily", headers=api_env.viewer)
    assert (shown.status_code, shown.json()["name"]) == (200, "reports/daily")
    paused = api_env.client.post(f"{URL}/reports/daily/pause", headers=api_env.operator)
    assert (paused.status_code, paused.json()["name"]) == (200, "reports/daily")
    assert actions.get_schedule(api_env.app, "reports/daily").enabled is False
    assert actions.get_schedule(api_env.app, "reports").enabled is True


def test_a_viewer_cannot_add_and_the_refusal_is_recorded(api_env: ApiEnv) -> None:
    response = api_env.client.post(
        URL, json={"name": "nope", "processor": ECHO, "every": 60}, headers=api_env.viewer
    )
    assert_problem(response, 403)
    assert _names(api_env) == []
    row = _latest(api_env)
    assert (row.actor, row.action, row.outcome) == (actor(Role.VIEWER), "schedule.add", "refused")


def test_a_viewer_cannot_pause(api_env: ApiEnv) -> None:
    _add(api_env, "kept")
    response = api_env.client.post(f"{URL}/kept/pause", headers=api_env.viewer)
    assert_problem(response, 403)
    assert actions.get_schedule(api_env.app, "kept").enabled is True
    row = _latest(api_env)
    assert (row.action, row.target, row.outcome) == ("schedule.pause", "schedule:kept", "refused")


@pytest.mark.parametrize(
    "query",
    ["limit=1001", "limit=0", "source=elsewhere", "enabled=maybe", "cursor=", "cursor=a%20b"],
)
def test_bad_listing_parameters_are_422(api_env: ApiEnv, query: str) -> None:
    assert_problem(api_env.client.get(f"{URL}?{query}", headers=api_env.viewer), 422)


def test_a_bad_name_in_the_path_is_422(api_env: ApiEnv) -> None:
    for path in (f"{URL}/-leading-dash", f"{URL}/{'x' * 201}", f"{URL}/a%00b/pause"):
        response = api_env.client.request(
            "POST" if path.endswith("/pause") else "GET", path, headers=api_env.operator
        )
        assert_problem(response, 422)
