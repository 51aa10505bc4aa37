"""The origin's own database, adopted by one ``db upgrade`` and drained by ``run --once``.

The table is made by the origin's migration 059 (DDL written in `tests.origin_schema`), its
rows written as the origin writes them — plain SQL like migration 060 (one PENDING task per
batch of users, ``delay = 1``), an INACTIVE task, a WORKING row its runner left behind two
hours ago, configurations with fields the processor does not declare — and then the user
runs nightcrew's two commands, as a subprocess, with default settings.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nightcrew import Nightcrew, actions
from nightcrew.models import MaintenanceTaskStatus
from tests.conftest import Backend, run_cli
from tests.migration_helpers import run_all
from tests.origin_schema import origin_ddl

S = MaintenanceTaskStatus
PROCESSOR = "tests.processors.OriginUpgrade"
SPACING = 1  # seconds: migration 060 wrote 10; the test keeps it short


def _time(dialect: str, when: datetime) -> str:
    naive = when.astimezone(UTC).replace(tzinfo=None)
    if dialect == "sqlite":
        return f"'{naive.strftime('%Y-%m-%d %H:%M:%S.%f')}'"
    return f"TIMESTAMP '{naive.isoformat(sep=' ')}'"


def origin_rows(dialect: str, runs: Path) -> list[str]:
    now = datetime.now(UTC) - timedelta(minutes=5)
    rows = []
    for n, users in enumerate((["u1", "u2"], ["u3"], ["u4"])):
        config = json.dumps({"user_ids": users, "path": str(runs), "batch": n, "note": "extra"})
        when = _time(dialect, now + timedelta(seconds=n))
        rows.append(
            "INSERT INTO maintenance_tasks "
            "(status, processor_type, processor_json, delay, created_at, updated_at) "
            f"VALUES ('PENDING', '{PROCESSOR}', '{config}', {SPACING}, {when}, {when})"
        )
    staged = json.dumps({"user_ids": ["staged"], "path": str(runs)})
    rows.append(
        "INSERT INTO maintenance_tasks (status, processor_type, processor_json, delay) "
        f"VALUES ('INACTIVE', '{PROCESSOR}', '{staged}', 0)"
    )
    left = _time(dialect, datetime.now(UTC) - timedelta(hours=2))
    rows.append(
        "INSERT INTO maintenance_tasks "
        "(status, processor_type, processor_json, delay, started_at, created_at, updated_at) "
        f"VALUES ('WORKING', '{PROCESSOR}', '{staged}', 0, {left}, {left}, {left})"
    )
    return rows


@pytest.fixture
def origin_database(empty_backend: Backend, tmp_path: Path) -> tuple[Backend, Path]:
    runs = tmp_path / "runs.txt"
    dialect = "postgresql" if empty_backend.is_postgres else "sqlite"
    run_all(empty_backend.url, [*origin_ddl(dialect), *origin_rows(dialect, runs)])
    return empty_backend, runs


@pytest.mark.slow
def test_the_origins_database_is_adopted_and_drained_with_its_semantics(
    origin_database: tuple[Backend, Path],
) -> None:
    backend, runs = origin_database
    upgraded = run_cli(backend, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    drained = run_cli(backend, "run", "--once", NIGHTCREW_POLL_INTERVAL="0.5")
    assert drained.returncode == 0, drained.stderr

    with Nightcrew(backend.settings()) as app:
        tasks = {t.id: t for t in actions.list_tasks(app, limit=100).tasks}
    by_status = sorted((t.id, t.status) for t in tasks.values())
    assert by_status == [
        (1, S.COMPLETED),
        (2, S.COMPLETED),
        (3, S.COMPLETED),
        (4, S.INACTIVE),  # never run until activated
        (5, S.ERROR),  # left WORKING by the origin's runner two hours ago
    ]
    assert tasks[5].error is not None and tasks[5].error["type"] == "StaleWorking"
    assert tasks[1].info == {"upgraded": 2}
    assert json.loads(tasks[1].processor_json)["note"] == "extra"  # kept, ignored

    lines = [line.split() for line in runs.read_text().splitlines()]
    assert [line[0] for line in lines] == ["u1", "u3", "u4"]  # oldest created_at first
    for (_, _, ended), (_, started, _) in itertools.pairwise(lines):
        assert float(started) - float(ended) >= SPACING - 0.05  # the origin's pause
