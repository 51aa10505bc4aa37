"""``nightcrew schedules ...`` as a user runs it (subprocesses), on both databases, and the
seed-004 example run from ``examples/`` as its README says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import timedelta

import pytest

from nightcrew.models import utcnow
from tests.conftest import ROOT, TEST_MODULES, Backend, run_cli

WIDE = "200"
JOBS = {"NIGHTCREW_PROCESSOR_MODULES": ",".join([*TEST_MODULES, "tests.schedule_jobs"])}


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one ``error:`` line and no traceback."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_add_lists_and_shows_a_cron_schedule(backend: Backend) -> None:
    added = ok(
        run_cli(
            backend,
            "schedules",
            "add",
            "nightly",
            "tests.processors.Echo",
            "--json",
            '{"value": 3}',
            "--cron",
            "30 2 * * *",
            "--timezone",
            "Europe/Berlin",
        )
    )
    assert added.startswith("added schedule nightly: cron 30 2 * * * (Europe/Berlin), next run ")
    listed = ok(run_cli(backend, "schedules", "ls", COLUMNS=WIDE))
    assert "nightly" in listed and "cron 30 2 * * * (Europe/Berlin)" in listed
    assert "active" in listed
    shown = ok(run_cli(backend, "schedules", "show", "nightly", COLUMNS=WIDE))
    assert "tests.processors.Echo" in shown and '{"value":3,"label":""}' in shown
    data = json.loads(ok(run_cli(backend, "schedules", "show", "nightly", "--json")))
    assert (data["name"], data["state"], data["source"]) == ("nightly", "active", "runtime")
    assert data["config"] == {"value": 3, "label": ""}
    assert data["trigger"] == "cron 30 2 * * * (Europe/Berlin)"
    page = json.loads(ok(run_cli(backend, "schedules", "ls", "--json")))
    assert [s["name"] for s in page["schedules"]] == ["nightly"]
    assert page["next_after"] is None


def test_ls_fits_80_columns(backend: Backend) -> None:
    ok(
        run_cli(
            backend,
            "schedules",
            "add",
            "a-rather-long-schedule-name-for-the-nightly-job",
            "tests.processors.Echo",
            "--cron",
            "30 2 * * *",
            "--timezone",
            "America/Argentina/Buenos_Aires",
        )
    )
    listed = ok(run_cli(backend, "schedules", "ls", COLUMNS="80"))
    lines = listed.splitlines()
    assert len(lines) == 2
    assert all(len(line.rstrip()) <= 80 for line in lines)
    assert lines[1].rstrip().endswith("active")


def test_add_takes_every_at_and_the_task_options(backend: Backend) -> None:
    ok(
        run_cli(
            backend,
            "schedules",
            "add",
            "often",
            "tests.processors.Echo",
            "--every",
            "15m",
            "--queue",
            "reports",
            "--priority",
            "5",
            "--max-attempts",
            "3",
            "--timeout",
            "60",
            "--misfire-grace",
            "5m",
            "--no-coalesce",
            "--max-instances",
            "2",
            "--jitter",
            "10",
        )
    )
    at = (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    once = ok(run_cli(backend, "schedules", "add", "once", "tests.processors.Echo", "--at", at))
    assert "once at " in once
    data = json.loads(ok(run_cli(backend, "schedules", "show", "often", "--json")))
    assert data["trigger"] == "every 15m"
    assert (data["queue"], data["priority"], data["max_attempts"], data["timeout"]) == (
        "reports",
        5,
        3,
        60.0,
    )
    assert (data["misfire_grace_seconds"], data["coalesce"], data["max_instances"]) == (
        300.0,
        False,
        2,
    )
    assert data["jitter_seconds"] == 10.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give exactly one of cron, every or at"),
        (("--cron", "0 2 * * *", "--every", "1h"), "give exactly one of cron, every or at"),
        (("--cron", "0 25 * * *"), "invalid cron expression"),
        (("--every", "90x"), "invalid duration"),
        (("--every", "1h", "--timezone", "UTC"), "timezone applies to a cron trigger only"),
        (("--at", "2001-01-01T00:00Z"), "is in the past"),
        (("--at", "tomorrow"), "invalid date"),
        (("--at", "2030-01-31T08:00:00"), "has no timezone"),
        (("--every", "1h", "--json", '{"value": "x"}'), "invalid configuration"),
        (("--every", "1h", "--misfire-grace", "-5"), "negative"),
    ],
)
def test_add_refuses_bad_input_with_one_error_line(
    backend: Backend, args: tuple[str, ...], message: str
) -> None:
    line = one_error(run_cli(backend, "schedules", "add", "bad", "tests.processors.Echo", *args))
    assert message in line
    assert ok(run_cli(backend, "schedules", "ls")) == "no schedules\n"


def test_add_refuses_a_processor_outside_the_allowlist_a_reserved_and_a_taken_name(
    backend: Backend,
) -> None:
    assert "not in the allowed modules" in one_error(
        run_cli(backend, "schedules", "add", "x", "os.system", "--every", "1h")
    )
    assert "nightcrew's own" in one_error(
        run_cli(
            backend, "schedules", "add", "nightcrew.x", "tests.processors.Echo", "--every", "1h"
        )
    )
    ok(run_cli(backend, "schedules", "add", "x", "tests.processors.Echo", "--every", "1h"))
    assert "exists already" in one_error(
        run_cli(backend, "schedules", "add", "x", "tests.processors.Echo", "--every", "2h")
    )


@pytest.mark.parametrize("command", ["show", "pause", "resume", "run-now", "delete"])
def test_an_unknown_schedule_is_one_error_line(backend: Backend, command: str) -> None:
    assert "no schedule named 'nope'" in one_error(run_cli(backend, "schedules", command, "nope"))


def test_pause_resume_run_now_and_delete(backend: Backend) -> None:
    ok(run_cli(backend, "schedules", "add", "job", "tests.processors.Echo", "--every", "1h"))
    assert ok(run_cli(backend, "schedules", "pause", "job")) == "schedule job paused\n"
    assert json.loads(ok(run_cli(backend, "schedules", "show", "job", "--json")))["state"] == (
        "paused"
    )
    assert "paused" in ok(run_cli(backend, "schedules", "ls", COLUMNS=WIDE))
    resumed = ok(run_cli(backend, "schedules", "resume", "job"))
    assert resumed.startswith("schedule job resumed, next run ")
    ran = ok(run_cli(backend, "schedules", "run-now", "job"))
    assert ran == "enqueued task 1 for schedule job on queue 'default'\n"
    data = json.loads(ok(run_cli(backend, "schedules", "show", "job", "--json")))
    assert (data["last_task_id"], data["last_task_status"]) == (1, "PENDING")
    task = json.loads(ok(run_cli(backend, "tasks", "show", "1", "--json")))
    assert task["schedule_name"] == "job" and task["scheduled_for"] is not None
    assert ok(run_cli(backend, "schedules", "delete", "job")).startswith("deleted schedule job")
    assert ok(run_cli(backend, "schedules", "ls")) == "no schedules\n"
    assert json.loads(ok(run_cli(backend, "tasks", "show", "1", "--json")))["id"] == 1


def test_tasks_show_and_ls_name_the_schedule_and_the_tick(backend: Backend) -> None:
    ok(run_cli(backend, "schedules", "add", "job", "tests.processors.Echo", "--every", "1h"))
    ok(run_cli(backend, "schedules", "run-now", "job"))
    shown = ok(run_cli(backend, "tasks", "show", "1", COLUMNS=WIDE))
    assert "schedule_name" in shown and "job" in shown and "scheduled_for" in shown
    wide = ok(run_cli(backend, "tasks", "ls", COLUMNS="120"))
    assert "schedule" in wide.splitlines()[0] and "tick UTC" in wide.splitlines()[0]
    narrow = ok(run_cli(backend, "tasks", "ls", COLUMNS="80"))
    assert all(len(line.rstrip()) <= 80 for line in narrow.splitlines())
    assert "schedule and tick: tasks show ID" in narrow


def test_tasks_ls_lists_the_tasks_one_schedule_made(backend: Backend) -> None:
    for name in ("job", "other"):
        ok(run_cli(backend, "schedules", "add", name, "tests.processors.Echo", "--every", "1h"))
        ok(run_cli(backend, "schedules", "run-now", name))
    ok(run_cli(backend, "schedules", "run-now", "job"))

    listed = json.loads(ok(run_cli(backend, "tasks", "ls", "--schedule", "job", "--json")))

    assert [t["schedule_name"] for t in listed["tasks"]] == ["job", "job"]


def test_sync_says_what_it_created_changed_and_disabled(backend: Backend) -> None:
    first = ok(
        run_cli(
            backend,
            "schedules",
            "sync",
            NIGHTCREW_SCHEDULES="tests.schedule_jobs:SCHEDULES",
            **JOBS,
        )
    )
    assert "created harvest: first run " in first
    assert "created refresh: first run " in first
    assert "created nightcrew.prune: first run " in first
    again = ok(
        run_cli(
            backend,
            "schedules",
            "sync",
            NIGHTCREW_SCHEDULES="tests.schedule_jobs:SCHEDULES",
            **JOBS,
        )
    )
    assert re.fullmatch(r"\d+ unchanged\n", again)  # the code's two and the upkeep's
    changed = ok(
        run_cli(
            backend,
            "schedules",
            "sync",
            "--schedules",
            "tests.schedule_jobs:SCHEDULES_CHANGED",
            **JOBS,
        )
    )
    assert "updated harvest: trigger cron 0 2 * * * (Europe/Berlin) -> cron 0 * * * *" in changed
    assert "updated refresh: processor" in changed
    shrunk = ok(
        run_cli(
            backend,
            "schedules",
            "sync",
            NIGHTCREW_SCHEDULES="tests.schedule_jobs:SCHEDULES_SHRUNK",
            **JOBS,
        )
    )
    assert "disabled refresh: no longer declared in code (kept with its history)" in shrunk
    assert "retired" in ok(run_cli(backend, "schedules", "ls", COLUMNS=WIDE, **JOBS))
    data = json.loads(
        ok(
            run_cli(
                backend,
                "schedules",
                "sync",
                "--json",
                NIGHTCREW_SCHEDULES="tests.schedule_jobs:NONE",
                **JOBS,
            )
        )
    )
    assert [c["name"] for c in data["changes"] if c["action"] == "retired"] == ["harvest"]


def test_sync_without_the_setting_syncs_upkeep_only_and_says_so(backend: Backend) -> None:
    code = "tests.schedule_jobs:SCHEDULES"
    ok(run_cli(backend, "schedules", "sync", NIGHTCREW_SCHEDULES=code, **JOBS))
    with_code = ok(run_cli(backend, "schedules", "sync", NIGHTCREW_SCHEDULES=code, **JOBS))
    result = run_cli(backend, "schedules", "sync", **JOBS)
    assert result.returncode == 0
    assert result.stderr.startswith("warning: NIGHTCREW_SCHEDULES is not set")
    # Only the upkeep's schedules were looked at: the code's two are neither changed nor
    # counted, and stay enabled.
    assert re.fullmatch(r"\d+ unchanged\n", result.stdout)
    assert int(result.stdout.split()[0]) == int(with_code.split()[0]) - 2
    data = json.loads(ok(run_cli(backend, "schedules", "show", "harvest", "--json", **JOBS)))
    assert data["state"] == "active"


def test_sync_of_a_bad_setting_is_one_error_line(backend: Backend) -> None:
    line = one_error(
        run_cli(backend, "schedules", "sync", "--schedules", "tests.schedule_jobs:NOPE")
    )
    assert "has no attribute 'NOPE'" in line
    line = one_error(run_cli(backend, "schedules", "sync", NIGHTCREW_SCHEDULES="no colon"))
    assert "module:ATTR" in line


def test_delete_of_a_code_schedule_warns_that_the_next_sync_brings_it_back(
    backend: Backend,
) -> None:
    ok(
        run_cli(
            backend,
            "schedules",
            "sync",
            NIGHTCREW_SCHEDULES="tests.schedule_jobs:SCHEDULES",
            **JOBS,
        )
    )
    result = run_cli(backend, "schedules", "delete", "harvest", **JOBS)
    assert result.returncode == 0
    assert result.stdout == "deleted schedule harvest (its tasks are kept)\n"
    assert result.stderr.startswith("warning: harvest is declared in code")


@pytest.mark.slow
def test_the_seed004_example_syncs_and_runs_from_the_examples_directory(backend: Backend) -> None:
    env = backend.env(
        NIGHTCREW_SCHEDULES="seed004_schedules:SCHEDULES",
        NIGHTCREW_PROCESSOR_MODULES="seed004_schedules",
        PYTHONPATH="",
    )

    def nightcrew(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "nightcrew", *args],
            env=env,
            cwd=ROOT / "examples",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    synced = nightcrew("schedules", "sync")
    for name in (
        "daily_social_harvest",
        "refresh_stale_servers",
        "recalculate_health_scores",
        "cleanup_stale_servers",
        "warmup_cache",
    ):
        assert f"created {name}: first run " in synced
    listed = json.loads(nightcrew("schedules", "ls", "--json"))["schedules"]
    triggers = {s["name"]: s["trigger"] for s in listed}
    assert triggers["daily_social_harvest"] == "cron 0 2 * * * (Europe/Berlin)"
    assert triggers["refresh_stale_servers"] == "every 6h"
    assert triggers["cleanup_stale_servers"] == "cron 0 4 * * sun (Europe/Berlin)"
    nightcrew("schedules", "run-now", "daily_social_harvest")
    nightcrew("schedules", "run-now", "cleanup_stale_servers")
    assert "2 task(s) processed" in nightcrew("run", "--once")
    tasks = json.loads(nightcrew("tasks", "ls", "--json"))["tasks"]
    assert {t["status"] for t in tasks} == {"COMPLETED"}
    harvest = next(t for t in tasks if t["schedule_name"] == "daily_social_harvest")
    assert harvest["info"]["total"] == 60
