"""The ``nightcrew`` command, run as a subprocess on both backends, as a user would run it."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nightcrew import MaintenanceTaskStatus, Nightcrew, actions, create_maintenance_task
from nightcrew.models import utcnow
from nightcrew.values import ClaimedTask, TaskView
from tests.conftest import Backend, run_cli
from tests.helpers import claim, finish, on_own_store, read_task, set_status, task_count
from tests.processors import Echo, SyncEcho

S = MaintenanceTaskStatus
WIDE = "200"  # COLUMNS: Rich folds table cells to 80 columns when piped


def _task(app: Nightcrew, task_id: int) -> TaskView:
    return read_task(app.store, task_id)


def _create(app: Nightcrew, **options: Any) -> int:
    return create_maintenance_task(Echo(value=7), database=app, **options).id


def _listed_ids(stdout: str) -> list[str]:
    return [
        line.split()[0]
        for line in stdout.splitlines()
        if line.split()[:1] != [] and line.split()[0].isdigit()
    ]


def _claim(app: Nightcrew) -> list[ClaimedTask]:
    """Put every due task in WORKING, as a worker's claim would, without running a worker."""
    return on_own_store(app.database, claim, "cli-test/1", lease_seconds=60)


def _fail(app: Nightcrew, claimed: ClaimedTask, error: dict[str, Any]) -> None:
    """End a claimed run ERROR, as its worker would."""
    assert on_own_store(app.database, finish, claimed, S.ERROR, None, error) == [claimed.id]


def _assert_one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# ---------------------------------------------------------------- enqueue


def test_enqueue_then_ls_lists_the_task(backend: Backend) -> None:
    enqueued = run_cli(backend, "enqueue", "tests.processors.Echo", "--json", '{"value": 3}')
    assert enqueued.returncode == 0, enqueued.stderr

    listed = run_cli(backend, "tasks", "ls", COLUMNS=WIDE)

    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if "Echo" in line]
    assert row.split()[:3] == ["1", "PENDING", "Echo"]


def test_enqueue_then_show_prints_the_configuration(backend: Backend) -> None:
    run_cli(backend, "enqueue", "tests.processors.Echo", "--json", '{"value": 3, "label": "hi"}')

    shown = run_cli(backend, "tasks", "show", "1", COLUMNS=WIDE)

    assert shown.returncode == 0, shown.stderr
    assert "tests.processors.Echo" in shown.stdout
    config = shown.stdout.split("\nconfig\n", 1)[1].split("\ninfo\n", 1)[0]
    assert json.loads(config) == {"value": 3, "label": "hi"}


def test_enqueue_stores_the_given_options(backend: Backend, app: Nightcrew) -> None:
    result = run_cli(
        backend,
        "enqueue",
        "tests.processors.Echo",
        "--start-at", "2030-01-31T10:00:00+02:00",
        "--priority", "5",
        "--queue", "reports",
        "--unique-key", "k1",
        "--max-attempts", "4",
        "--timeout", "2.5",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    task = _task(app, 1)
    assert (task.priority, task.queue, task.unique_key) == (5, "reports", "k1")
    assert (task.max_attempts, task.timeout) == (4, 2.5)
    assert task.start_at == datetime(2030, 1, 31, 8, 0, tzinfo=UTC)


def test_enqueue_with_start_in_is_due_that_many_seconds_from_now(
    backend: Backend, app: Nightcrew
) -> None:
    before = utcnow()
    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--start-in", "30")

    assert result.returncode == 0, result.stderr
    task = _task(app, 1)
    assert before + timedelta(seconds=30) <= task.start_at <= utcnow() + timedelta(seconds=30)


def test_enqueue_stores_the_delay_without_postponing_the_start(
    backend: Backend, app: Nightcrew
) -> None:
    before = utcnow()
    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--delay", "30")

    assert result.returncode == 0, result.stderr
    task = _task(app, 1)
    assert task.delay == 30
    assert before <= task.start_at <= utcnow()


def test_start_at_together_with_start_in_is_a_usage_error(backend: Backend, app: Nightcrew) -> None:
    result = run_cli(
        backend,
        "enqueue", "tests.processors.Echo",
        "--start-at", "2030-01-31T08:00Z",
        "--start-in", "30",
    )  # fmt: skip

    assert "--start-in" in _assert_one_error_line(result)
    assert result.returncode == 2
    assert task_count(app.store) == 0


def test_enqueue_reads_the_configuration_from_a_file(
    backend: Backend, app: Nightcrew, tmp_path: Path
) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"value": 11, "label": "from a file"}')

    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--json", f"@{config}")

    assert result.returncode == 0, result.stderr
    assert json.loads(_task(app, 1).processor_json) == {"value": 11, "label": "from a file"}


def test_enqueue_with_an_unknown_field_warns_and_keeps_it(backend: Backend, app: Nightcrew) -> None:
    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--json", '{"nope": 1}')

    assert result.returncode == 0, result.stderr
    (warning,) = result.stderr.strip().splitlines()
    assert warning.startswith("warning: ")
    assert "'nope'" in warning
    assert json.loads(_task(app, 1).processor_json) == {"value": 0, "label": "", "nope": 1}


def test_enqueue_with_only_known_fields_warns_about_nothing(backend: Backend) -> None:
    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--json", '{"value": 1}')

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_enqueue_of_a_strict_processor_with_an_unknown_field_is_refused(
    backend: Backend, app: Nightcrew
) -> None:
    result = run_cli(backend, "enqueue", "tests.processors.StrictEcho", "--json", '{"nope": 1}')

    assert "nope" in _assert_one_error_line(result)
    assert task_count(app.store) == 0


def test_enqueue_accepts_z_as_utc(backend: Backend, app: Nightcrew) -> None:
    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--start-at", "2030-01-31T08:00Z")

    assert result.returncode == 0, result.stderr
    assert _task(app, 1).start_at == datetime(2030, 1, 31, 8, 0, tzinfo=UTC)


def test_enqueue_inactive_creates_an_inactive_task(backend: Backend, app: Nightcrew) -> None:
    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--inactive")

    assert result.returncode == 0, result.stderr
    assert _task(app, 1).status == S.INACTIVE


def test_enqueue_with_a_held_unique_key_adds_no_task(backend: Backend, app: Nightcrew) -> None:
    first = run_cli(backend, "enqueue", "tests.processors.Echo", "--unique-key", "nightly")
    second = run_cli(backend, "enqueue", "tests.processors.Echo", "--unique-key", "nightly")

    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    assert task_count(app.store) == 1


BAD_ENQUEUE_INPUT = {
    "module-not-allowed": ["tests.evil_processor.Evil"],
    "not-a-class-path": ["os"],
    "unknown-class": ["tests.processors.Nope"],
    "not-a-processor": ["tests.processors.NotAProcessor"],
    "malformed-json": ["tests.processors.Echo", "--json", "{value: 1"],
    "json-not-an-object": ["tests.processors.Echo", "--json", "[1, 2]"],
    "field-of-wrong-type": ["tests.processors.Echo", "--json", '{"value": "many"}'],
    "date-not-iso": ["tests.processors.Echo", "--start-at", "tomorrow"],
    "date-without-timezone": ["tests.processors.Echo", "--start-at", "2030-01-31T08:00:00"],
    "negative-delay": ["tests.processors.Echo", "--delay", "-1"],
    "negative-start-in": ["tests.processors.Echo", "--start-in", "-1"],
    "zero-max-attempts": ["tests.processors.Echo", "--max-attempts", "0"],
    "zero-timeout": ["tests.processors.Echo", "--timeout", "0"],
    "empty-queue": ["tests.processors.Echo", "--queue", ""],
    "missing-processor": [],
}


@pytest.mark.parametrize("args", BAD_ENQUEUE_INPUT.values(), ids=BAD_ENQUEUE_INPUT.keys())
def test_bad_enqueue_input_prints_one_line_and_writes_nothing(
    backend: Backend, app: Nightcrew, args: list[str]
) -> None:
    result = run_cli(backend, "enqueue", *args)

    _assert_one_error_line(result)
    assert task_count(app.store) == 0


def test_rejected_field_is_named_in_the_error(backend: Backend) -> None:
    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--json", '{"value": "many"}')

    assert "value" in _assert_one_error_line(result)


def test_malformed_input_exits_with_usage_code(backend: Backend) -> None:
    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--start-at", "2030-01-31")

    _assert_one_error_line(result)
    assert result.returncode == 2


def test_processor_modules_flag_replaces_the_allowlist(backend: Backend, app: Nightcrew) -> None:
    result = run_cli(
        backend, "--processor-modules", "nightcrew.processors", "enqueue", "tests.processors.Echo"
    )

    _assert_one_error_line(result)
    assert task_count(app.store) == 0


def test_database_url_flag_overrides_the_environment(backend: Backend, app: Nightcrew) -> None:
    result = run_cli(
        backend,
        "--database-url", backend.url,
        "enqueue", "tests.processors.Echo",
        NIGHTCREW_DATABASE_URL="postgresql://nobody@127.0.0.1:1/nowhere",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert task_count(app.store) == 1


# ---------------------------------------------------------------- tasks ls / show


def test_ls_filters_by_status(backend: Backend, app: Nightcrew) -> None:
    _create(app)
    inactive = _create(app, inactive=True)

    result = run_cli(backend, "tasks", "ls", "--status", "inactive", COLUMNS=WIDE)

    assert result.returncode == 0, result.stderr
    assert _listed_ids(result.stdout) == [str(inactive)]


def test_ls_filters_by_processor_and_queue(backend: Backend, app: Nightcrew) -> None:
    _create(app, queue="reports")
    wanted = _create(app, queue="mail")

    result = run_cli(
        backend,
        "tasks",
        "ls",
        "--processor",
        "tests.processors.Echo",
        "--queue",
        "mail",
        COLUMNS=WIDE,
    )

    assert result.returncode == 0, result.stderr
    assert _listed_ids(result.stdout) == [str(wanted)]


def test_ls_pages_with_before_id(backend: Backend, app: Nightcrew) -> None:
    for _ in range(3):
        _create(app)

    result = run_cli(backend, "tasks", "ls", "--limit", "2", "--before-id", "3", COLUMNS=WIDE)

    assert result.returncode == 0, result.stderr
    assert _listed_ids(result.stdout) == ["2", "1"]


def test_ls_filters_by_the_short_processor_name_it_shows(backend: Backend, app: Nightcrew) -> None:
    wanted = _create(app)
    create_maintenance_task(SyncEcho(), database=app)

    result = run_cli(backend, "tasks", "ls", "--processor", "Echo", COLUMNS=WIDE)

    assert result.returncode == 0, result.stderr
    assert _listed_ids(result.stdout) == [str(wanted)]


def test_ls_names_the_next_page_only_when_there_is_one(backend: Backend, app: Nightcrew) -> None:
    for _ in range(3):
        _create(app)

    first = run_cli(backend, "tasks", "ls", "--limit", "2", COLUMNS=WIDE)
    last = run_cli(backend, "tasks", "ls", "--limit", "2", "--before-id", "2", COLUMNS=WIDE)

    assert "next page: --before-id 2" in first.stdout
    assert _listed_ids(last.stdout) == ["1"]
    assert "next page" not in last.stdout


def test_ls_json_lists_the_tasks_and_the_next_page(backend: Backend, app: Nightcrew) -> None:
    for _ in range(3):
        _create(app)

    result = run_cli(backend, "tasks", "ls", "--limit", "2", "--json")

    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [t["id"] for t in listed["tasks"]] == [3, 2]
    assert listed["tasks"][0]["config"] == {"value": 7, "label": ""}
    assert listed["next_before_id"] == 2


def test_show_json_prints_every_column(backend: Backend, app: Nightcrew) -> None:
    task_id = _create(app, queue="mail")

    result = run_cli(backend, "tasks", "show", str(task_id), "--json")

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["id"], shown["status"], shown["queue"]) == (task_id, "PENDING", "mail")
    assert (shown["attempts"], shown["rescues"]) == (0, 0)
    assert shown["config"] == {"value": 7, "label": ""}


def test_show_lists_how_often_the_task_was_rescued(backend: Backend, app: Nightcrew) -> None:
    task_id = _create(app)
    set_status(app.database, task_id, S.PENDING, rescues=2)

    result = run_cli(backend, "tasks", "show", str(task_id), COLUMNS=WIDE)

    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("rescues")]
    assert line.split() == ["rescues", "2"]


def test_ls_with_an_unknown_status_is_refused(backend: Backend) -> None:
    result = run_cli(backend, "tasks", "ls", "--status", "sleeping")

    _assert_one_error_line(result)
    assert result.returncode == 2


def test_show_prints_the_error_with_its_traceback(backend: Backend, app: Nightcrew) -> None:
    task_id = _create(app)
    (claimed,) = _claim(app)
    _fail(
        app,
        claimed,
        {"type": "RuntimeError", "message": "disk full", "traceback": "Traceback: line 42"},
    )

    result = run_cli(backend, "tasks", "show", str(task_id), COLUMNS=WIDE)

    assert result.returncode == 0, result.stderr
    error = result.stdout.split("\nerror\n", 1)[1]
    assert "RuntimeError: disk full" in error
    assert "Traceback: line 42" in error


def test_show_of_an_unknown_task_is_refused(backend: Backend) -> None:
    result = run_cli(backend, "tasks", "show", "999")

    _assert_one_error_line(result)


# ---------------------------------------------------------------- transitions


def test_activate_makes_an_inactive_task_pending_and_due_now(
    backend: Backend, app: Nightcrew
) -> None:
    task_id = _create(app, inactive=True)
    before = utcnow()

    result = run_cli(backend, "tasks", "activate", str(task_id))

    assert result.returncode == 0, result.stderr
    task = _task(app, task_id)
    assert task.status == S.PENDING
    assert before <= task.start_at <= utcnow()


def test_activate_keeps_a_start_at_that_is_later(backend: Backend, app: Nightcrew) -> None:
    task_id = _create(app, inactive=True, start_in=60)
    start_at = _task(app, task_id).start_at

    result = run_cli(backend, "tasks", "activate", str(task_id))

    assert result.returncode == 0, result.stderr
    task = _task(app, task_id)
    assert (task.status, task.start_at) == (S.PENDING, start_at)


def test_activate_of_a_pending_task_is_refused(backend: Backend, app: Nightcrew) -> None:
    task_id = _create(app)

    result = run_cli(backend, "tasks", "activate", str(task_id))

    _assert_one_error_line(result)
    assert _task(app, task_id).status == S.PENDING


def test_cancel_cancels_a_pending_task(backend: Backend, app: Nightcrew) -> None:
    task_id = _create(app)

    result = run_cli(backend, "tasks", "cancel", str(task_id))

    assert result.returncode == 0, result.stderr
    assert _task(app, task_id).status == S.CANCELLED


def test_cancel_of_a_working_task_requests_cancellation(backend: Backend, app: Nightcrew) -> None:
    task_id = _create(app)
    _claim(app)

    result = run_cli(backend, "tasks", "cancel", str(task_id))

    assert result.returncode == 0, result.stderr
    task = _task(app, task_id)
    assert task.status == S.WORKING
    assert task.cancel_requested_at is not None


def test_cancel_of_a_finished_task_is_refused(backend: Backend, app: Nightcrew) -> None:
    task_id = _create(app)
    run_cli(backend, "tasks", "cancel", str(task_id))

    result = run_cli(backend, "tasks", "cancel", str(task_id))

    _assert_one_error_line(result)
    assert _task(app, task_id).status == S.CANCELLED


def test_retry_makes_a_cancelled_task_pending(backend: Backend, app: Nightcrew) -> None:
    task_id = _create(app)
    actions.cancel(app, task_id)

    result = run_cli(backend, "tasks", "retry", str(task_id))

    assert result.returncode == 0, result.stderr
    assert _task(app, task_id).status == S.PENDING


def test_retry_of_a_pending_task_is_refused(backend: Backend, app: Nightcrew) -> None:
    task_id = _create(app)

    result = run_cli(backend, "tasks", "retry", str(task_id))

    _assert_one_error_line(result)
    assert _task(app, task_id).status == S.PENDING


def test_transition_of_an_unknown_task_is_refused(backend: Backend) -> None:
    result = run_cli(backend, "tasks", "cancel", "999")

    _assert_one_error_line(result)


# ---------------------------------------------------------------- schema


def test_db_upgrade_creates_the_schema(empty_backend: Backend) -> None:
    upgraded = run_cli(empty_backend, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr

    listed = run_cli(empty_backend, "tasks", "ls")

    assert listed.returncode == 0, listed.stderr


def test_missing_schema_is_one_error_line(empty_backend: Backend) -> None:
    result = run_cli(empty_backend, "tasks", "ls")

    assert "db upgrade" in _assert_one_error_line(result)


def test_help_lists_the_commands(backend: Backend) -> None:
    result = run_cli(backend, "--help", COLUMNS=WIDE)

    assert result.returncode == 0, result.stderr
    for command in ("db", "enqueue", "tasks"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["worker", "run"])
def test_an_unknown_log_level_is_a_usage_error(backend: Backend, command: str) -> None:
    args = [command, "--once"] if command == "run" else [command]
    result = run_cli(backend, *args, "--log-level", "loud")

    assert "--log-level" in _assert_one_error_line(result)
    assert result.returncode == 2
