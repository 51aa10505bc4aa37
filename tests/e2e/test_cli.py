"""The ``nightcrew`` command, run as a subprocess on both backends, as a user would run it."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest

from nightcrew import MaintenanceTaskStatus, create_maintenance_task
from nightcrew.models import utcnow
from nightcrew.store import Store, operations
from nightcrew.store import tasks as st
from nightcrew.store.plans import Plan
from tests.conftest import Backend, run_cli
from tests.processors import Echo

S = MaintenanceTaskStatus
WIDE = "200"  # COLUMNS: Rich folds table cells to 80 columns when piped


def _count(store: Store) -> int:
    return sum(store.run(operations.count_by_status()).values())


def _task(store: Store, task_id: int) -> Any:
    return store.run(operations.get_task(task_id))


def _create(backend: Backend, store: Store, **options: Any) -> int:
    task = create_maintenance_task(
        Echo(value=7), database=store.database, settings=backend.settings(), **options
    )
    return task.id


def _listed_ids(stdout: str) -> list[str]:
    return [
        line.split()[0]
        for line in stdout.splitlines()
        if line.split()[:1] != [] and line.split()[0].isdigit()
    ]


def _claim(store: Store, token: str = "test-token") -> None:
    """Put every due task in WORKING, as a worker's claim would, without running a worker."""

    def plan() -> Plan[None]:
        yield st.claim(
            store.dialect, queues=None, limit=100, token=token, now=utcnow(), lease_seconds=60
        )

    store.run(plan())


def _fail(store: Store, task_id: int, error: dict[str, Any], token: str = "test-token") -> None:
    outcome = st.Outcome(task_id=task_id, attempt=1, status=S.ERROR, info=None, error=error)

    def plan() -> Plan[None]:
        params = st.finish_params(store.dialect, token, [outcome], utcnow())
        yield st.finish_statement(store.dialect), params

    store.run(plan())


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


def test_enqueue_stores_the_given_options(backend: Backend, store: Store) -> None:
    result = run_cli(
        backend,
        "enqueue",
        "tests.processors.Echo",
        "--start-at", "2030-01-31T10:00:00+02:00",
        "--delay", "30",
        "--priority", "5",
        "--queue", "reports",
        "--unique-key", "k1",
        "--max-attempts", "4",
        "--timeout", "2.5",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    task = _task(store, 1)
    assert (task.priority, task.queue, task.unique_key) == (5, "reports", "k1")
    assert (task.delay, task.max_attempts, task.timeout) == (30, 4, 2.5)
    assert task.start_at == datetime(2030, 1, 31, 8, 0, tzinfo=UTC)


def test_enqueue_accepts_z_as_utc(backend: Backend, store: Store) -> None:
    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--start-at", "2030-01-31T08:00Z")

    assert result.returncode == 0, result.stderr
    assert _task(store, 1).start_at == datetime(2030, 1, 31, 8, 0, tzinfo=UTC)


def test_enqueue_inactive_creates_an_inactive_task(backend: Backend, store: Store) -> None:
    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--inactive")

    assert result.returncode == 0, result.stderr
    assert _task(store, 1).status == S.INACTIVE


def test_enqueue_with_a_held_unique_key_adds_no_task(backend: Backend, store: Store) -> None:
    first = run_cli(backend, "enqueue", "tests.processors.Echo", "--unique-key", "nightly")
    second = run_cli(backend, "enqueue", "tests.processors.Echo", "--unique-key", "nightly")

    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    assert _count(store) == 1


BAD_ENQUEUE_INPUT = {
    "module-not-allowed": ["tests.evil_processor.Evil"],
    "not-a-class-path": ["os"],
    "unknown-class": ["tests.processors.Nope"],
    "not-a-processor": ["tests.processors.NotAProcessor"],
    "malformed-json": ["tests.processors.Echo", "--json", "{value: 1"],
    "json-not-an-object": ["tests.processors.Echo", "--json", "[1, 2]"],
    "field-of-wrong-type": ["tests.processors.Echo", "--json", '{"value": "many"}'],
    "unknown-field": ["tests.processors.Echo", "--json", '{"nope": 1}'],
    "date-not-iso": ["tests.processors.Echo", "--start-at", "tomorrow"],
    "date-without-timezone": ["tests.processors.Echo", "--start-at", "2030-01-31T08:00:00"],
    "negative-delay": ["tests.processors.Echo", "--delay", "-1"],
    "zero-max-attempts": ["tests.processors.Echo", "--max-attempts", "0"],
    "zero-timeout": ["tests.processors.Echo", "--timeout", "0"],
    "empty-queue": ["tests.processors.Echo", "--queue", ""],
    "missing-processor": [],
}


@pytest.mark.parametrize("args", BAD_ENQUEUE_INPUT.values(), ids=BAD_ENQUEUE_INPUT.keys())
def test_bad_enqueue_input_prints_one_line_and_writes_nothing(
    backend: Backend, store: Store, args: list[str]
) -> None:
    result = run_cli(backend, "enqueue", *args)

    _assert_one_error_line(result)
    assert _count(store) == 0


def test_rejected_field_is_named_in_the_error(backend: Backend) -> None:
    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--json", '{"value": "many"}')

    assert "value" in _assert_one_error_line(result)


def test_malformed_input_exits_with_usage_code(backend: Backend) -> None:
    result = run_cli(backend, "enqueue", "tests.processors.Echo", "--start-at", "2030-01-31")

    _assert_one_error_line(result)
    assert result.returncode == 2


def test_processor_modules_flag_replaces_the_allowlist(backend: Backend, store: Store) -> None:
    result = run_cli(
        backend, "--processor-modules", "nightcrew.processors", "enqueue", "tests.processors.Echo"
    )

    _assert_one_error_line(result)
    assert _count(store) == 0


def test_database_url_flag_overrides_the_environment(backend: Backend, store: Store) -> None:
    result = run_cli(
        backend,
        "--database-url", backend.url,
        "enqueue", "tests.processors.Echo",
        NIGHTCREW_DATABASE_URL="postgresql://nobody@127.0.0.1:1/nowhere",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert _count(store) == 1


# ---------------------------------------------------------------- tasks ls / show


def test_ls_filters_by_status(backend: Backend, store: Store) -> None:
    _create(backend, store)
    inactive = _create(backend, store, inactive=True)

    result = run_cli(backend, "tasks", "ls", "--status", "inactive", COLUMNS=WIDE)

    assert result.returncode == 0, result.stderr
    assert _listed_ids(result.stdout) == [str(inactive)]


def test_ls_filters_by_processor_and_queue(backend: Backend, store: Store) -> None:
    _create(backend, store, queue="reports")
    wanted = _create(backend, store, queue="mail")

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


def test_ls_pages_with_before_id(backend: Backend, store: Store) -> None:
    for _ in range(3):
        _create(backend, store)

    result = run_cli(backend, "tasks", "ls", "--limit", "2", "--before-id", "3", COLUMNS=WIDE)

    assert result.returncode == 0, result.stderr
    assert _listed_ids(result.stdout) == ["2", "1"]


def test_ls_with_an_unknown_status_is_refused(backend: Backend) -> None:
    result = run_cli(backend, "tasks", "ls", "--status", "sleeping")

    _assert_one_error_line(result)
    assert result.returncode == 2


def test_show_prints_the_error_with_its_traceback(backend: Backend, store: Store) -> None:
    task_id = _create(backend, store)
    _claim(store)
    _fail(
        store,
        task_id,
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


def test_activate_makes_an_inactive_task_pending(backend: Backend, store: Store) -> None:
    task_id = _create(backend, store, inactive=True, delay=60)

    result = run_cli(backend, "tasks", "activate", str(task_id))

    assert result.returncode == 0, result.stderr
    task = _task(store, task_id)
    assert task.status == S.PENDING
    assert task.start_at > utcnow()


def test_activate_of_a_pending_task_is_refused(backend: Backend, store: Store) -> None:
    task_id = _create(backend, store)

    result = run_cli(backend, "tasks", "activate", str(task_id))

    _assert_one_error_line(result)
    assert _task(store, task_id).status == S.PENDING


def test_cancel_cancels_a_pending_task(backend: Backend, store: Store) -> None:
    task_id = _create(backend, store)

    result = run_cli(backend, "tasks", "cancel", str(task_id))

    assert result.returncode == 0, result.stderr
    assert _task(store, task_id).status == S.CANCELLED


def test_cancel_of_a_working_task_requests_cancellation(backend: Backend, store: Store) -> None:
    task_id = _create(backend, store)
    _claim(store)

    result = run_cli(backend, "tasks", "cancel", str(task_id))

    assert result.returncode == 0, result.stderr
    task = _task(store, task_id)
    assert task.status == S.WORKING
    assert task.cancel_requested_at is not None


def test_cancel_of_a_finished_task_is_refused(backend: Backend, store: Store) -> None:
    task_id = _create(backend, store)
    run_cli(backend, "tasks", "cancel", str(task_id))

    result = run_cli(backend, "tasks", "cancel", str(task_id))

    _assert_one_error_line(result)
    assert _task(store, task_id).status == S.CANCELLED


def test_retry_makes_a_cancelled_task_pending(backend: Backend, store: Store) -> None:
    task_id = _create(backend, store)
    store.run(operations.cancel(store.dialect, task_id, utcnow()))

    result = run_cli(backend, "tasks", "retry", str(task_id))

    assert result.returncode == 0, result.stderr
    assert _task(store, task_id).status == S.PENDING


def test_retry_of_a_pending_task_is_refused(backend: Backend, store: Store) -> None:
    task_id = _create(backend, store)

    result = run_cli(backend, "tasks", "retry", str(task_id))

    _assert_one_error_line(result)
    assert _task(store, task_id).status == S.PENDING


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
