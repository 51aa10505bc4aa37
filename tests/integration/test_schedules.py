"""Schedules end to end on both databases: tickers in worker processes, the DST days, the
sync from code when a worker starts, the operator actions, function processors, upkeep.

The exactly-once test runs four real ``nightcrew worker`` processes against schedules that
are hundreds of ticks behind (no coalescing), so every process's ticker competes for the
same rows at once; the DST tests drive the ticker's pass with an explicit clock.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from nightcrew import ConfigurationError, MaintenanceTaskStatus, Nightcrew, Schedule, actions
from nightcrew.models import AuditEntry, TaskDependency, utcnow
from nightcrew.models import Schedule as ScheduleRow
from nightcrew.schedules.declare import define
from nightcrew.store import TaskStore, admin_ops, ops, schedule_ops
from nightcrew.upkeep import PRUNE, Retention, cancel_stale_pending, prune_finished
from nightcrew.values import AuditFilter, AuditRecord, TaskFilter, TaskView
from nightcrew.worker import Worker
from nightcrew.worker.ticker import Ticker
from tests.conftest import ROOT, Backend
from tests.helpers import poll_until, wait_for_status, wait_until
from tests.processors import Echo, Sleep
from tests.schedule_jobs import SCHEDULE_MODULES
from tests.store.kit import add_task, add_tasks, force_status

S = MaintenanceTaskStatus
R = TypeVar("R")


def tasks_of(store: TaskStore, name: str) -> list[TaskView]:
    page = store.run(ops.list_tasks, TaskFilter(schedule_name=name, limit=1000))
    return sorted(page.tasks, key=lambda t: (t.scheduled_for or t.created_at, t.id))


def ticks_of(store: TaskStore, name: str) -> list[datetime]:
    return [t.scheduled_for for t in tasks_of(store, name) if t.scheduled_for is not None]


def set_row(store: TaskStore, name: str, **values: Any) -> None:
    with Session(store.database.sync_engine) as session, session.begin():
        row = session.query(ScheduleRow).filter_by(name=name).one()
        for key, value in values.items():
            setattr(row, key, value)


async def off_loop(call: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """A sync action from a thread, while a worker runs on this loop: a write that blocked
    the loop could wait (SQLite's busy timeout) on a transaction that needs the loop."""
    return await asyncio.to_thread(call, *args, **kwargs)


def ticker_of(worker: Worker) -> Ticker:
    return next(s for s in worker.services if isinstance(s, Ticker))


@pytest.fixture
def sched_app(backend: Backend) -> Iterator[Nightcrew]:
    """An app whose allowlist takes the schedule tests' function processors."""
    app = Nightcrew(backend.settings(processor_modules=SCHEDULE_MODULES))
    yield app
    app.close()


# ---------------------------------------------------------------- exactly once


class Workers:
    """``nightcrew worker`` processes of one test, each logging to a file; killed at the end."""

    def __init__(self, backend: Backend, directory: Path) -> None:
        self.backend = backend
        self.directory = directory
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, n: int, **env: str) -> None:
        for _ in range(n):
            log = self.directory / f"worker-{len(self.procs)}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "nightcrew", "worker", "--concurrency", "20"],
                    env=self.backend.env(**env),
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            self.procs.append((proc, log))

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name} (exit {proc.poll()}):\n{log.read_text()[-3000:]}"
            for proc, log in self.procs
        )

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture
def workers(backend: Backend, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(backend, tmp_path)
    try:
        yield group
    finally:
        group.stop()


@pytest.mark.slow
def test_exactly_one_task_per_tick_with_four_worker_processes_over_1000_ticks(
    app: Nightcrew, workers: Workers
) -> None:
    """Four 1-second schedules, each 250 ticks behind with coalescing off: 1,000 ticks due
    at once for four tickers (and more every second while they run). Every tick gets
    exactly one task: no gap, no duplicate, and the unique key never had to refuse one."""
    names = [f"second-{i}" for i in range(4)]
    start = utcnow().replace(microsecond=0) - timedelta(seconds=250)
    definitions = [
        define(
            Schedule(n, every=1, processor=Echo(value=i), coalesce=False, max_instances=100_000),
            app.loader,
        )
        for i, n in enumerate(names)
    ]
    app.store.run(schedule_ops.add_schedules, definitions, now=start)
    workers.start(4)

    def caught_up() -> bool:
        for proc, _ in workers.procs:
            if proc.poll() is not None:
                raise AssertionError(f"a worker exited\n{workers.logs()}")
        behind = utcnow() - timedelta(seconds=3)
        return all(
            (v.next_run_at or start) > behind
            for v in app.store.run(schedule_ops.list_schedules)
            if v.name in names
        )

    poll_until(caught_up, what="the tickers caught up", within=240, explain=workers.logs)
    workers.stop()
    total = 0
    for name in names:
        ticks = ticks_of(app.store, name)
        view = app.store.run(schedule_ops.get_schedule, name)
        expected = [start + timedelta(seconds=k) for k in range(1, len(ticks) + 1)]
        assert ticks == expected, f"{name}: a tick is missing or doubled"
        assert view.next_run_at == start + timedelta(seconds=len(ticks) + 1)
        assert view.last_skip_reason is None, view.last_skip_reason
        total += len(ticks)
    assert total >= 1000


# ---------------------------------------------------------------- DST


def drive(store: TaskStore, start: datetime, end: datetime, step: timedelta) -> None:
    """Run the ticker's pass every ``step`` of a clock going from ``start`` to ``end``."""
    now = start
    while now <= end:
        store.run(schedule_ops.tick, now=now)
        now += step


DST_DAYS = [
    # zone, day of the change, the two ticks expected around it (UTC)
    ("Europe/Berlin", "2024-03-31", ["2024-03-31T01:00", "2024-04-01T00:30"]),  # 03:00 CEST
    ("Europe/Berlin", "2024-10-27", ["2024-10-27T00:30", "2024-10-28T01:30"]),  # first 02:30
    ("America/New_York", "2024-03-10", ["2024-03-10T07:00", "2024-03-11T06:30"]),  # 03:00 EDT
    ("America/New_York", "2024-11-03", ["2024-11-03T07:30", "2024-11-04T07:30"]),  # 02:30 EST
]


@pytest.mark.parametrize(("zone", "day", "expected"), DST_DAYS)
def test_a_daily_0230_cron_runs_once_on_the_dst_days(
    app: Nightcrew, zone: str, day: str, expected: list[str]
) -> None:
    """The ticker's pass driven every 10 minutes through the change and the day after:
    one task on the day the clocks jump (at the first minute that exists) and one on
    the day they fall back (the first 02:30), each local day exactly once."""
    begin = datetime.fromisoformat(f"{day}T00:00").replace(tzinfo=UTC) - timedelta(hours=12)
    d = define(
        Schedule("nightly", cron="30 2 * * *", timezone=zone, processor=Echo(), max_instances=9),
        app.loader,
    )
    app.store.run(schedule_ops.add_schedule, d, now=begin)
    drive(app.store, begin, begin + timedelta(days=2), timedelta(minutes=10))
    ticks = ticks_of(app.store, "nightly")
    assert [t.strftime("%Y-%m-%dT%H:%M") for t in ticks] == expected
    local_days = [t.astimezone(ZoneInfo(zone)).date() for t in ticks]
    assert len(set(local_days)) == len(local_days) == 2


# ---------------------------------------------------------------- misfire, coalesce, max_instances


async def test_a_worker_skips_ticks_older_than_the_grace_and_records_them(
    backend: Backend, app: Nightcrew
) -> None:
    actions.add_schedule(app, "late", Echo(), every=60, misfire_grace=120)
    set_row(app.store, "late", next_run_at=utcnow() - timedelta(minutes=30))
    async with running_worker(backend) as (_worker, task):
        await wait_until(lambda: ticks_of(app.store, "late"), what="a task", worker=task)
    view = app.store.run(schedule_ops.get_schedule, "late")
    (tick,) = ticks_of(app.store, "late")
    assert utcnow() - tick < timedelta(minutes=2, seconds=30)  # the latest tick within grace
    assert view.misfires >= 27
    assert (view.last_skip_reason or "").startswith("misfired")


async def test_a_worker_coalesces_missed_ticks_into_one(backend: Backend, app: Nightcrew) -> None:
    actions.add_schedule(app, "behind", Echo(), every=60)
    set_row(app.store, "behind", next_run_at=utcnow() - timedelta(minutes=30))
    async with running_worker(backend) as (_worker, task):
        await wait_until(lambda: ticks_of(app.store, "behind"), what="a task", worker=task)
        await asyncio.sleep(1)
    assert len(ticks_of(app.store, "behind")) == 1
    view = app.store.run(schedule_ops.get_schedule, "behind")
    assert view.misfires == 0 and view.next_run_at is not None and view.next_run_at > utcnow()


async def test_max_instances_skips_ticks_while_the_task_still_runs(
    backend: Backend, app: Nightcrew
) -> None:
    actions.add_schedule(app, "slow", Sleep(seconds=3), every=1)
    async with running_worker(backend) as (_worker, task):
        await wait_until(
            lambda: app.store.run(schedule_ops.get_schedule, "slow").skipped_instances >= 2,
            what="ticks skipped while the task runs",
            worker=task,
        )
    tasks = tasks_of(app.store, "slow")
    assert len(tasks) <= 2
    view = app.store.run(schedule_ops.get_schedule, "slow")
    assert (view.last_skip_reason or "").startswith("max_instances")


# ---------------------------------------------------------------- workers sync at start


def running_worker(backend: Backend, **settings: Any) -> Any:
    from tests.helpers import running_worker as helper

    settings.setdefault("processor_modules", SCHEDULE_MODULES)
    return helper(backend, **settings)


async def test_a_worker_syncs_the_declared_schedules_when_it_starts(
    backend: Backend, sched_app: Nightcrew
) -> None:
    async with running_worker(backend, schedules="tests.schedule_jobs:SCHEDULES") as (w, task):
        ticker = ticker_of(w)
        await wait_until(lambda: ticker.synced is not None, what="the sync", worker=task)
    assert ticker.synced is not None
    assert sorted(ticker.synced.names("created")) == [
        "harvest",
        "nightcrew.prune",
        "nightcrew.prune-dead-workers",
        "refresh",
    ]
    harvest = actions.get_schedule(sched_app, "harvest")
    assert (harvest.source, harvest.describe_trigger()) == (
        "code",
        "cron 0 2 * * * (Europe/Berlin)",
    )


async def test_sync_from_code_creates_changes_and_disables(
    backend: Backend, sched_app: Nightcrew
) -> None:
    """Three deploys: the first creates, the second changes a trigger and a processor's
    configuration (updated, not doubled), the third drops one (disabled, kept)."""
    reports = []
    for version in ("SCHEDULES", "SCHEDULES_CHANGED", "SCHEDULES_SHRUNK"):
        async with running_worker(backend, schedules=f"tests.schedule_jobs:{version}") as (w, t):
            ticker = ticker_of(w)
            await wait_until(lambda tk=ticker: tk.synced is not None, what="the sync", worker=t)
            reports.append(ticker.synced)
    first, second, third = reports
    assert first is not None and second is not None and third is not None
    assert sorted(first.names("created")) == [
        "harvest",
        "nightcrew.prune",
        "nightcrew.prune-dead-workers",
        "refresh",
    ]
    assert sorted(second.names("updated")) == ["harvest", "refresh"]
    assert third.names("retired") == ["refresh"]
    refresh = actions.get_schedule(sched_app, "refresh")
    assert (refresh.state, refresh.processor_json) == ("retired", '{"days":14}')
    harvest = actions.get_schedule(sched_app, "harvest")
    assert harvest.describe_trigger() == "cron 0 * * * * (Europe/Berlin)"
    mine = [s for s in actions.list_schedules(sched_app) if not s.name.startswith("nightcrew.")]
    assert len(mine) == 2


def test_a_worker_refuses_to_start_with_a_bad_schedules_setting(backend: Backend) -> None:
    with pytest.raises(ConfigurationError, match=r"NIGHTCREW_SCHEDULES=tests\.schedule_jobs:NOPE"):
        Worker(backend.settings(schedules="tests.schedule_jobs:NOPE"))
    with pytest.raises(ConfigurationError, match="not in the allowed modules"):
        Worker(backend.settings(schedules="tests.schedule_jobs:SCHEDULES"))


# ---------------------------------------------------------------- function processors


async def test_a_worker_runs_a_function_processor_on_a_schedule(
    backend: Backend, sched_app: Nightcrew
) -> None:
    async with running_worker(backend, schedules="tests.schedule_jobs:EVERY_SECOND") as (_w, t):

        def completed() -> list[TaskView]:
            return [x for x in tasks_of(sched_app.store, "every-second") if x.status is S.COMPLETED]

        done = await wait_until(completed, what="a completed tick", worker=t)
    assert done[0].info == {"platform": "tick", "harvested": 3}
    assert done[0].processor_type == "tests.schedule_jobs.harvest"


async def test_run_now_of_a_sync_function_processor_that_takes_its_task(
    backend: Backend, sched_app: Nightcrew
) -> None:
    from tests.schedule_jobs import refresh

    actions.add_schedule(sched_app, "refresh-now", refresh(days=3), cron="0 0 1 1 *")
    task = actions.run_schedule_now(sched_app, "refresh-now")
    async with running_worker(backend) as (_w, t):
        row = await wait_for_status(sched_app.store, task.id, S.COMPLETED, S.ERROR, worker=t)
    assert row.info == {"days": 3, "task_id": task.id, "schedule": "refresh"}


# ---------------------------------------------------------------- operator actions


async def test_pause_resume_run_now_and_delete_with_a_running_worker(
    backend: Backend, app: Nightcrew
) -> None:
    actions.add_schedule(app, "often", Echo(value=5), every=1, max_instances=50)
    async with running_worker(backend) as (_worker, task):
        await wait_until(lambda: ticks_of(app.store, "often"), what="a tick", worker=task)
        paused = await off_loop(actions.pause_schedule, app, "often", actor="ops")
        assert paused.state == "paused"
        await asyncio.sleep(0.5)  # a pass in flight when it was paused has committed
        count = len(ticks_of(app.store, "often"))
        await asyncio.sleep(2.5)
        assert len(ticks_of(app.store, "often")) == count  # no tick while paused
        now_task = await off_loop(actions.run_schedule_now, app, "often", actor="ops")
        await wait_for_status(app.store, now_task.id, S.COMPLETED, worker=task)
        assert actions.get_schedule(app, "often").state == "paused"
        resumed = await off_loop(actions.resume_schedule, app, "often", actor="ops")
        assert resumed.next_run_at is not None and resumed.next_run_at > utcnow() - timedelta(1)
        await wait_until(
            lambda: len(ticks_of(app.store, "often")) > count + 1, what="ticks again", worker=task
        )
        await off_loop(actions.delete_schedule, app, "often", actor="ops")
        await asyncio.sleep(0.5)
        kept = len(tasks_of(app.store, "often"))
        await asyncio.sleep(2)
        assert len(tasks_of(app.store, "often")) == kept  # deleted: no more ticks, tasks kept
    audited = {e.action for e in actions.list_audit(app).records}
    assert {"schedule.add", "schedule.pause", "schedule.resume", "schedule.run_now"} <= audited
    assert "schedule.delete" in audited


async def test_a_drain_runs_the_ticks_due_when_it_starts(app: Nightcrew) -> None:
    # What `nightcrew run --once` does: a tick due at its start is enqueued and run by it.
    actions.add_schedule(app, "due-at-deploy", Echo(value=7), every=3600)
    set_row(app.store, "due-at-deploy", next_run_at=utcnow() - timedelta(seconds=1))

    await asyncio.wait_for(Worker(app=app).run(until_idle=True), 60)

    (task,) = tasks_of(app.store, "due-at-deploy")
    assert task.status is S.COMPLETED


async def test_a_drain_waits_for_the_tickers_first_look_not_for_its_time_limit(
    app: Nightcrew, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nightcrew.worker import supervisor

    monkeypatch.setattr(supervisor, "FIRST_TICKS_TIMEOUT", 3600.0)
    await asyncio.wait_for(Worker(app=app).run(until_idle=True), 60)


def test_add_refuses_a_one_off_in_the_past_and_a_taken_name(app: Nightcrew) -> None:
    with pytest.raises(ConfigurationError, match="in the past"):
        actions.add_schedule(app, "once", Echo(), at=utcnow() - timedelta(minutes=1))
    actions.add_schedule(app, "once", Echo(), at=utcnow() + timedelta(days=1))
    from nightcrew.errors import ScheduleExists

    with pytest.raises(ScheduleExists):
        actions.add_schedule(app, "once", Echo(), every=60)


def test_add_from_a_class_path_checks_the_configuration(app: Nightcrew) -> None:
    view = actions.add_schedule(app, "by-path", "tests.processors.Echo", '{"value": 4}', every=60)
    assert view.processor_json == '{"value":4,"label":""}'
    from nightcrew import InvalidProcessorConfig, ProcessorNotAllowed

    with pytest.raises(ProcessorNotAllowed):
        actions.add_schedule(app, "evil", "os.system", '{"command": "true"}', every=60)
    with pytest.raises(InvalidProcessorConfig):
        actions.add_schedule(app, "bad", "tests.processors.Echo", '{"value": "x"}', every=60)
    assert [v.name for v in actions.list_schedules(app)] == ["by-path"]


# ---------------------------------------------------------------- the ticker itself


async def test_an_idle_ticker_makes_one_query_per_poll_interval(
    backend: Backend, app: Nightcrew
) -> None:
    """1,000 schedules, none due: the ticker only reads the earliest next run, once per poll."""
    definitions = [
        define(Schedule(f"s{i:04d}", every=3600, processor=Echo()), app.loader) for i in range(1000)
    ]
    app.store.run(schedule_ops.add_schedules, definitions)
    async with running_worker(backend, poll_interval=0.2) as (worker, task):
        ticker = ticker_of(worker)
        await wait_until(lambda: ticker.synced is not None, what="the sync", worker=task)
        await asyncio.sleep(0.5)
        probes, started = ticker.probes, time.monotonic()
        await asyncio.sleep(3)
        rate = (ticker.probes - probes) / (time.monotonic() - started)
    assert ticker.passes == 0
    assert rate <= 1 / 0.2 + 1


async def test_a_schedule_notify_wakes_the_ticker_before_its_poll(
    backend: Backend, app: Nightcrew
) -> None:
    if not backend.is_postgres:
        pytest.skip("SQLite has no notifications: its tickers poll")
    async with running_worker(backend, poll_interval=20) as (worker, task):
        ticker = ticker_of(worker)
        await wait_until(lambda: worker.listening and ticker.synced, what="listening", worker=task)
        await asyncio.sleep(0.5)  # the ticker has probed and sleeps for its 20 s poll
        await off_loop(actions.add_schedule, app, "soon", Echo(), every=2)
        (tick,) = await wait_until(
            lambda: ticks_of(app.store, "soon"), what="the first tick", within=10, worker=task
        )
        (created,) = tasks_of(app.store, "soon")
    assert created.created_at - tick < timedelta(seconds=3)


# ---------------------------------------------------------------- upkeep


def aged(store: TaskStore, status: MaintenanceTaskStatus, days: float) -> int:
    task = add_task(store)
    values: dict[str, Any] = {"updated_at": utcnow() - timedelta(days=days)}
    if status.is_final:
        values["finished_at"] = values["updated_at"]
    force_status(store, task.id, status, **values)
    return task.id


async def test_prune_in_batches_leaves_recent_and_unfinished_tasks_alone(store: TaskStore) -> None:
    old = [aged(store, S.COMPLETED, 40) for _ in range(5)]
    old += [aged(store, S.ERROR, 100), aged(store, S.CANCELLED, 100)]
    kept = [
        aged(store, S.COMPLETED, 10),
        aged(store, S.ERROR, 40),
        aged(store, S.CANCELLED, 40),
        aged(store, S.PENDING, 400),
        aged(store, S.WORKING, 400),
        aged(store, S.INACTIVE, 400),
    ]
    needed = aged(store, S.COMPLETED, 40)  # an open task still depends on it
    dependent = add_task(store).id
    with Session(store.database.sync_engine) as session, session.begin():
        session.add(TaskDependency(depends_on=needed, task_id=dependent))
    report = await prune_finished(store, Retention(), batch_size=2, pause=0)
    assert report.deleted == {"COMPLETED": 5, "ERROR": 1, "CANCELLED": 1}
    assert report.batches >= 3 + 1 + 1
    remaining = {t.id for t in store.run(ops.list_tasks, TaskFilter(limit=1000)).tasks}
    assert remaining.isdisjoint(old)
    assert set(kept) | {needed, dependent} <= remaining


async def test_prune_of_a_status_with_zero_retention_keeps_it(store: TaskStore) -> None:
    ids = [aged(store, S.ERROR, 1000)]
    report = await prune_finished(store, Retention(error_days=0), pause=0)
    assert report.deleted == {"COMPLETED": 0, "CANCELLED": 0}
    assert store.run(ops.get_task, ids[0]).status is S.ERROR


def audit_row(store: TaskStore, days_old: float) -> int:
    record = store.run(admin_ops.record_audit, AuditRecord("op", "cancel", "task 1", None, "ok"))
    assert record.id is not None
    with Session(store.database.sync_engine) as session, session.begin():
        at = utcnow() - timedelta(days=days_old)
        session.execute(update(AuditEntry).where(AuditEntry.id == record.id).values(at=at))
    return record.id


def audit_ids(store: TaskStore) -> set[int]:
    page = store.run(admin_ops.list_audit, AuditFilter(limit=1000))
    return {r.id for r in page.records if r.id is not None}


async def test_the_audit_log_is_kept_forever_unless_a_retention_is_set(store: TaskStore) -> None:
    old = [audit_row(store, 400) for _ in range(3)]
    recent = audit_row(store, 10)
    report = await prune_finished(store, Retention(), pause=0)
    assert report.audit == 0
    assert audit_ids(store) == {*old, recent}
    report = await prune_finished(store, Retention(audit_days=365), batch_size=2, pause=0)
    assert report.audit == 3
    assert report.as_info()["audit"] == 3
    assert audit_ids(store) == {recent}


async def test_the_prune_schedule_runs_as_a_task_in_a_worker_on_the_workers_database(
    backend: Backend, app: Nightcrew, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The environment names another database: the prune must work on the worker's own.
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("NIGHTCREW_DATABASE_URL", f"sqlite:///{elsewhere}")
    old = aged(app.store, S.COMPLETED, 45)
    async with running_worker(backend) as (worker, task):
        ticker = ticker_of(worker)
        await wait_until(lambda: ticker.synced is not None, what="the sync", worker=task)
        run = await off_loop(actions.run_schedule_now, app, PRUNE)
        row = await wait_for_status(app.store, run.id, S.COMPLETED, S.ERROR, worker=task)
    assert row.status is S.COMPLETED, row.error
    assert row.info is not None and row.info["deleted"]["COMPLETED"] == 1
    assert old not in {t.id for t in app.store.run(ops.list_tasks, TaskFilter()).tasks}
    assert not elsewhere.exists()


async def test_stale_pending_tasks_are_cancelled_and_others_kept(store: TaskStore) -> None:
    now = utcnow()
    stale = add_task(store).id
    force_status(
        store,
        stale,
        S.PENDING,
        updated_at=now - timedelta(hours=5),
        start_at=now - timedelta(hours=5),
    )
    recent = add_task(store).id
    future = add_task(store, start_at=now + timedelta(days=1)).id
    waiting = add_task(store).id
    force_status(
        store,
        waiting,
        S.PENDING,
        updated_at=now - timedelta(hours=5),
        start_at=now - timedelta(hours=5),
        waiting_on=1,
    )
    assert await cancel_stale_pending(store, 240) == [stale]
    row = store.run(ops.get_task, stale)
    assert row.status is S.CANCELLED
    assert row.info == {
        "cancelled": True,
        "error": "cancelled by upkeep: PENDING and due for more than 240 minutes",
    }
    for task_id in (recent, future, waiting):
        assert store.run(ops.get_task, task_id).status is S.PENDING


def test_a_prune_of_many_rows_takes_many_short_batches(store: TaskStore) -> None:
    ids = add_tasks(store, 250)
    with Session(store.database.sync_engine) as session, session.begin():
        from nightcrew.models import MaintenanceTask

        session.query(MaintenanceTask).filter(MaintenanceTask.id.in_(ids)).update(
            {"status": S.COMPLETED, "updated_at": utcnow() - timedelta(days=31)},
            synchronize_session=False,
        )
    report = asyncio.run(prune_finished(store, Retention(), batch_size=100, pause=0.01))
    assert (report.deleted["COMPLETED"], report.batches) == (250, 3 + 1 + 1 + 1)
