"""``nightcrew demo`` as a newcomer runs it, and the example processor it is built on.

The demo is checked against the database it leaves behind, not only against what it
prints: every user that could be upgraded is at the current version, every corrupt user
shows up in exactly the ERROR task that holds it, and no task is left unfinished.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from nightcrew import (
    InvalidProcessorConfig,
    MaintenanceTaskStatus,
    Nightcrew,
    ProcessorLoader,
    actions,
)
from nightcrew.demo import (
    CURRENT_USER_SETTINGS_VERSION,
    CorruptSettings,
    UpgradeSummary,
    UserVersionUpgradeProcessor,
    create_table,
    enqueue_upgrades,
    seed_users,
    upgrade_settings,
    user_settings,
)
from nightcrew.store import Database
from nightcrew.values import TaskView
from nightcrew.worker import Worker
from tests.conftest import TEST_MODULES, Backend

S = MaintenanceTaskStatus
CLASS_PATH = UserVersionUpgradeProcessor.class_path()


def run_demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the demo with a hostile environment: it must use its own settings only."""
    env = dict(os.environ)
    env.update(
        COLUMNS="200",  # Rich folds table cells to 80 columns when piped
        NIGHTCREW_DATABASE_URL="postgresql://nobody@127.0.0.1:1/not-this-one",
        NIGHTCREW_PROCESSOR_MODULES="nightcrew.processors",
        NIGHTCREW_LEASE_SECONDS="0.001",
    )
    return subprocess.run(
        [sys.executable, "-m", "nightcrew", "demo", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def summary_number(stdout: str, label: str) -> int:
    match = re.search(rf"^\W*{re.escape(label)}\W+(\d+)", stdout, re.MULTILINE)
    assert match, f"no {label!r} row in the summary:\n{stdout}"
    return int(match.group(1))


def read_users(url: str) -> dict[str, tuple[int, str]]:
    database = Database(url)
    try:
        with database.sync_engine.connect() as conn:
            rows = conn.execute(
                select(
                    user_settings.c.user_id,
                    user_settings.c.user_version,
                    user_settings.c.settings_json,
                )
            ).all()
    finally:
        database.dispose()
    return {row.user_id: (row.user_version, row.settings_json) for row in rows}


def read_tasks(url: str) -> tuple[dict[S, int], list[TaskView]]:
    with Nightcrew(database_url=url) as app:
        page = actions.list_tasks(app, limit=1000)
        assert page.next_before_id is None, "more tasks than one page holds"
        return actions.count(app), list(page.tasks)


def is_corrupt(version: int, settings_json: str) -> bool:
    try:
        upgrade_settings(settings_json, version)
    except CorruptSettings:
        return True
    return False


def check_outcome(
    url: str, *, users: int, corrupt: int, one_task_per_user: bool = True
) -> tuple[dict[S, int], set[str]]:
    """Check users and tasks against each other; return the task counts and corrupt ids."""
    table = read_users(url)
    assert len(table) == users
    outdated = {u for u, (v, _) in table.items() if v < CURRENT_USER_SETTINGS_VERSION}
    broken = {u for u, (v, text) in table.items() if is_corrupt(v, text)}
    assert len(broken) == corrupt
    # Every user that could be upgraded was; only the corrupt ones are left behind.
    assert outdated == broken
    for user_id, (version, text) in table.items():
        if user_id not in broken:
            assert version == CURRENT_USER_SETTINGS_VERSION
            settings = json.loads(text)
            assert settings["theme"]["contrast"] == "normal"
            assert set(settings["llm"]) == {"provider", "model"}

    counts, tasks = read_tasks(url)
    assert counts[S.PENDING] == counts[S.WORKING] == 0, counts
    assert sum(counts.values()) == counts[S.COMPLETED] + counts[S.ERROR]
    covered: list[str] = []
    summaries = [t for t in tasks if t.processor_type == UpgradeSummary.class_path()]
    tasks = [t for t in tasks if t not in summaries]
    # The fan-in step after the batches, when the demo ran them as a pipeline.
    assert len(summaries) <= 1
    for summary in summaries:
        assert summary.status == S.COMPLETED
        assert summary.info["batches"] == len(tasks)
        assert summary.info["failed_batches"] == sum(t.status == S.ERROR for t in tasks)
    for task in tasks:
        assert task.processor_type == CLASS_PATH
        ids = json.loads(task.processor_json)["user_ids"]
        assert 1 <= len(ids) <= 100
        covered += ids
        bad = broken.intersection(ids)
        if bad:
            assert task.status == S.ERROR, task
            error = task.info["error"]
            assert f"{len(bad)} of {len(ids)} users not upgraded" in error
            assert all(user_id in error for user_id in bad)
            assert f"{len(ids) - len(bad)} upgraded" in error
        else:
            assert task.status == S.COMPLETED, task
            assert task.info["upgraded"] == len(ids)
            assert task.info["failed"] == 0
    if one_task_per_user:  # each user outdated at enqueue time is in exactly one task
        assert len(covered) == len(set(covered))
    assert set(covered) >= broken
    return counts, broken


def test_demo_upgrades_everyone_but_the_corrupt_users(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = run_demo(tmp_path, "--users", "500", "--corrupt", "3", "--database-url", url)
    assert result.returncode == 0, result.stdout + result.stderr

    counts, broken = check_outcome(url, users=500, corrupt=3)
    # The seeding spreads corrupt users over distinct tasks: three ERROR tasks.
    assert counts[S.ERROR] == 3
    assert "pipeline 1: PARTIAL_SUCCESS" in result.stdout
    assert "summary step, from its dependencies' results:" in result.stdout
    out = result.stdout
    assert summary_number(out, "COMPLETED") == counts[S.COMPLETED] > 0
    assert summary_number(out, "ERROR") == counts[S.ERROR]
    assert summary_number(out, "tasks") == sum(counts.values())
    assert summary_number(out, "users") == 500
    assert summary_number(out, "not upgraded") == 3
    upgraded = summary_number(out, f"upgraded to v{CURRENT_USER_SETTINGS_VERSION}")
    already = summary_number(out, "already current")
    assert upgraded + already + 3 == 500
    assert (
        f"demo finished: {sum(counts.values())} tasks, {counts[S.COMPLETED]} COMPLETED, "
        f"{counts[S.ERROR]} ERROR" in out
    )
    for user_id in broken:  # the ERROR tasks are listed with their reasons
        assert user_id in out
    assert not (tmp_path / "nightcrew-demo.db").exists()  # only the file it was given


def test_demo_runs_again_on_its_own_file(tmp_path: Path) -> None:
    """The default file is replaced on each run, so running the README command twice works."""
    for _ in range(2):
        result = run_demo(tmp_path, "--users", "150", "--workers", "2", "--work-ms", "0")
        assert result.returncode == 0, result.stdout + result.stderr
    check_outcome(f"sqlite:///{tmp_path / 'nightcrew-demo.db'}", users=150, corrupt=1)


def test_demo_refuses_to_delete_a_database_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "app.db"
    with sqlite3.connect(precious) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    result = run_demo(tmp_path, "--users", "10", "--database-url", f"sqlite:///{precious}")
    assert result.returncode == 1
    assert "refusing to delete" in result.stderr and "orders" in result.stderr
    with sqlite3.connect(precious) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("orders",)]


def test_demo_refuses_postgresql(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--database-url", "postgresql://nobody@127.0.0.1:1/db")
    assert result.returncode == 1
    assert result.stderr.startswith("error: the demo creates a fresh SQLite file")


# ---------------------------------------------------------------- the processor itself


def test_processor_refuses_more_than_100_user_ids() -> None:
    ids = [f"u{i}" for i in range(101)]
    with pytest.raises(ValidationError, match="at most 100 user ids per task, got 101"):
        UserVersionUpgradeProcessor(user_ids=ids)
    with pytest.raises(ValidationError, match="at least one user id"):
        UserVersionUpgradeProcessor(user_ids=[])
    assert len(UserVersionUpgradeProcessor(user_ids=ids[:100]).user_ids) == 100


def test_a_stored_task_with_101_user_ids_fails_to_load() -> None:
    """A row written by hand (or by an older version) is refused when a worker loads it."""
    loader = ProcessorLoader(["nightcrew.demo"])
    payload = json.dumps({"user_ids": [f"u{i}" for i in range(101)]})
    with pytest.raises(InvalidProcessorConfig, match="at most 100 user ids per task"):
        loader.load(CLASS_PATH, payload)


def test_upgrade_settings_steps_and_corruption() -> None:
    v1 = json.dumps({"theme": "dark", "llm": "openai/gpt-4o", "language": "en"})
    upgraded = json.loads(upgrade_settings(v1, 1))
    assert upgraded == {
        "theme": {"mode": "dark", "contrast": "normal"},
        "llm": {"provider": "openai", "model": "gpt-4o"},
        "language": "en",
        "confirmation_mode": False,
    }
    for bad, reason in [
        ('{"theme": "da', "not valid JSON"),
        ("[1, 2]", "JSON list, not an object"),
        (json.dumps({"theme": "dark", "llm": 42}), "'llm' should be"),
    ]:
        with pytest.raises(CorruptSettings, match=reason):
            upgrade_settings(bad, 1)


async def test_enqueue_and_run_on_each_backend(backend: Backend) -> None:
    """The processor's SQL on PostgreSQL and SQLite: a worker in this process, no CLI."""
    create_table(backend.url)
    report = seed_users(backend.url, 250, corrupt=2, seed=3)
    settings = backend.settings(processor_modules=[*TEST_MODULES, "nightcrew.demo"])
    task_ids = enqueue_upgrades(backend.url, settings=settings)
    assert len(task_ids) == -(-report.outdated // 100)

    await Worker(settings, concurrency=4).run(until_idle=True)

    counts, broken = check_outcome(backend.url, users=250, corrupt=2)
    assert broken == set(report.corrupt_user_ids)
    assert counts[S.ERROR] == 2
    # A second pass finds only the corrupt users and fails on them again, truthfully.
    again = enqueue_upgrades(backend.url, settings=settings)
    assert len(again) == 1
    await Worker(settings, concurrency=4).run(until_idle=True)
    counts, _ = check_outcome(backend.url, users=250, corrupt=2, one_task_per_user=False)
    assert counts[S.ERROR] == 3
