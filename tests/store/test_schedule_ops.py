"""Store conformance, schedules: every schedule operation behaves the same on both databases.

Ticks are driven with an explicit clock (``now``), so a test says exactly which ticks are
due; tasks a tick made are read back through the store's own listing by schedule name.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from nightcrew import MaintenanceTaskStatus, Schedule
from nightcrew.errors import ScheduleExists, ScheduleNotFound
from nightcrew.events import EventKind, TaskEvent
from nightcrew.models import Schedule as ScheduleRow
from nightcrew.processors import ProcessorLoader
from nightcrew.schedules.declare import define
from nightcrew.schedules.values import ScheduleDefinition
from nightcrew.store import TaskStore, ops, schedule_ops
from nightcrew.store import schedule_statements as sst
from nightcrew.values import TaskFilter, TaskView
from tests.conftest import Backend
from tests.processors import Echo
from tests.store.kit import force_status

S = MaintenanceTaskStatus
T0 = datetime(2030, 1, 1, tzinfo=UTC)
LOADER = ProcessorLoader(["tests.processors"])


def definition(name: str = "every-minute", **kwargs: Any) -> ScheduleDefinition:
    source = kwargs.pop("source", "runtime")
    kwargs.setdefault("processor", Echo(value=1))
    kwargs.setdefault("max_instances", 100)  # the tests of max_instances say so
    if not {"cron", "every", "at"} & set(kwargs):
        kwargs["every"] = 60
    return define(Schedule(name, **kwargs), LOADER, source=source)


def tasks_of(store: TaskStore, name: str) -> list[TaskView]:
    page = store.run(ops.list_tasks, TaskFilter(schedule_name=name, limit=1000))
    return sorted(page.tasks, key=lambda t: t.scheduled_for or T0)


def ticks_of(store: TaskStore, name: str) -> list[datetime]:
    return [t.scheduled_for for t in tasks_of(store, name) if t.scheduled_for is not None]


def set_row(store: TaskStore, name: str, **values: Any) -> None:
    with Session(store.database.sync_engine) as session, session.begin():
        row = session.query(ScheduleRow).filter_by(name=name).one()
        for key, value in values.items():
            setattr(row, key, value)


# ---------------------------------------------------------------- add, get, list, delete


def test_add_sets_the_first_tick_after_now(store: TaskStore) -> None:
    view = store.run(schedule_ops.add_schedule, definition(), now=T0)
    assert view.next_run_at == T0 + timedelta(minutes=1)
    assert view.anchor_at == view.next_run_at
    assert (view.enabled, view.source, view.state) == (True, "runtime", "active")
    assert store.run(schedule_ops.get_schedule, "every-minute") == view


def test_add_of_a_cron_schedule_uses_its_timezone(store: TaskStore) -> None:
    d = definition("nightly", cron="30 2 * * *", timezone="Europe/Berlin")
    view = store.run(schedule_ops.add_schedule, d, now=T0)
    assert view.next_run_at == datetime(2030, 1, 1, 1, 30, tzinfo=UTC)  # 02:30 CET
    assert view.describe_trigger() == "cron 30 2 * * * (Europe/Berlin)"


def test_add_of_a_taken_name_raises_and_changes_nothing(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(), now=T0)
    with pytest.raises(ScheduleExists):
        store.run(schedule_ops.add_schedule, definition(every=5), now=T0)
    assert store.run(schedule_ops.get_schedule, "every-minute").every_seconds == 60


def test_add_schedules_inserts_many_and_returns_the_names_that_existed(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition("b"), now=T0)
    existing = store.run(schedule_ops.add_schedules, [definition(n) for n in "abc"], now=T0)
    assert existing == ["b"]
    assert [v.name for v in store.run(schedule_ops.list_schedules)] == ["a", "b", "c"]


def test_list_pages_by_name(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedules, [definition(n) for n in "dcba"], now=T0)
    first = store.run(schedule_ops.list_schedules, limit=2)
    rest = store.run(schedule_ops.list_schedules, after=first[-1].name, limit=2)
    assert [v.name for v in first + rest] == ["a", "b", "c", "d"]


def test_get_of_an_unknown_name_raises_schedule_not_found(store: TaskStore) -> None:
    with pytest.raises(ScheduleNotFound):
        store.run(schedule_ops.get_schedule, "nope")


def test_delete_removes_the_schedule_and_keeps_its_tasks(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(), now=T0)
    store.run(schedule_ops.tick, now=T0 + timedelta(minutes=1))
    deleted = store.run(schedule_ops.delete_schedule, "every-minute")
    assert deleted.name == "every-minute"
    with pytest.raises(ScheduleNotFound):
        store.run(schedule_ops.get_schedule, "every-minute")
    assert len(tasks_of(store, "every-minute")) == 1
    with pytest.raises(ScheduleNotFound):
        store.run(schedule_ops.delete_schedule, "every-minute")


# ---------------------------------------------------------------- the tick


def test_earliest_due_is_the_first_next_run_of_the_enabled_schedules(store: TaskStore) -> None:
    assert store.run(schedule_ops.earliest_due) is None
    store.run(schedule_ops.add_schedule, definition("later", every=600), now=T0)
    store.run(schedule_ops.add_schedule, definition("sooner", every=60), now=T0)
    assert store.run(schedule_ops.earliest_due) == T0 + timedelta(minutes=1)
    store.run(schedule_ops.pause_schedule, "sooner")
    assert store.run(schedule_ops.earliest_due) == T0 + timedelta(minutes=10)


def test_a_tick_enqueues_the_due_tick_and_advances_the_schedule(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(max_attempts=3, queue="q"), now=T0)
    tick = T0 + timedelta(minutes=1)
    report = store.run(schedule_ops.tick, now=tick + timedelta(seconds=2))
    assert (report.claimed, report.enqueued, report.full) == (1, 1, False)
    (task,) = tasks_of(store, "every-minute")
    assert (task.status, task.queue, task.max_attempts) == (S.PENDING, "q", 3)
    assert (task.schedule_name, task.scheduled_for, task.start_at) == ("every-minute", tick, tick)
    assert task.processor_type == "tests.processors.Echo"
    view = store.run(schedule_ops.get_schedule, "every-minute")
    assert (view.next_run_at, view.last_run_at, view.last_task_id) == (
        tick + timedelta(minutes=1),
        tick,
        task.id,
    )
    assert view.last_task_status is S.PENDING


def test_a_tick_before_the_due_time_does_nothing(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(), now=T0)
    report = store.run(schedule_ops.tick, now=T0 + timedelta(seconds=59))
    assert report.claimed == 0
    assert tasks_of(store, "every-minute") == []


def test_a_paused_schedule_is_not_ticked(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(), now=T0)
    store.run(schedule_ops.pause_schedule, "every-minute")
    assert store.run(schedule_ops.tick, now=T0 + timedelta(hours=1)).claimed == 0


def test_a_second_insert_of_a_tick_is_refused_by_the_unique_key(store: TaskStore) -> None:
    """As after a restore of an older backup: the schedule is due again for a tick that
    already has its task; the tick is not enqueued twice, and that is recorded."""
    store.run(schedule_ops.add_schedule, definition(), now=T0)
    tick = T0 + timedelta(minutes=1)
    store.run(schedule_ops.tick, now=tick)
    set_row(store, "every-minute", next_run_at=tick)  # the clock of the row stepped back
    report = store.run(schedule_ops.tick, now=tick)
    assert (report.enqueued, report.conflicts) == (0, 1)
    assert ticks_of(store, "every-minute") == [tick]
    view = store.run(schedule_ops.get_schedule, "every-minute")
    assert view.next_run_at == tick + timedelta(minutes=1)
    assert "already had a task" in (view.last_skip_reason or "")


def test_a_tick_announces_the_tasks_it_created(store: TaskStore) -> None:
    seen: list[TaskEvent] = []
    store.events.subscribe(seen.append, [EventKind.CREATED])
    store.run(schedule_ops.add_schedule, definition(), now=T0)
    store.run(schedule_ops.tick, now=T0 + timedelta(minutes=1))
    (event,) = seen
    assert event.detail is not None and event.detail["schedule"] == "every-minute"


def test_jitter_offsets_the_start_but_not_the_tick(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(jitter=30), now=T0)
    tick = T0 + timedelta(minutes=1)
    store.run(schedule_ops.tick, now=tick, seed=7)
    (task,) = tasks_of(store, "every-minute")
    assert task.scheduled_for == tick
    assert tick < task.start_at <= tick + timedelta(seconds=30)


def test_a_one_off_runs_once_then_has_no_next_run(store: TaskStore) -> None:
    at = T0 + timedelta(hours=1)
    store.run(schedule_ops.add_schedule, definition("once", at=at), now=T0)
    store.run(schedule_ops.tick, now=at + timedelta(seconds=1))
    store.run(schedule_ops.tick, now=at + timedelta(days=1))
    assert ticks_of(store, "once") == [at]
    view = store.run(schedule_ops.get_schedule, "once")
    assert (view.next_run_at, view.state) == (None, "done")


def test_a_schedule_whose_trigger_cannot_be_read_is_stopped_with_the_reason(
    store: TaskStore,
) -> None:
    store.run(schedule_ops.add_schedule, definition("nightly", cron="0 2 * * *"), now=T0)
    set_row(store, "nightly", timezone="Nowhere/Atlantis")
    store.run(schedule_ops.tick, now=T0 + timedelta(days=1))
    view = store.run(schedule_ops.get_schedule, "nightly")
    assert view.next_run_at is None
    assert "stopped" in (view.last_skip_reason or "") and "Atlantis" in (
        view.last_skip_reason or ""
    )


def test_a_tick_pass_claims_at_most_its_batch(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedules, [definition(f"s{i}") for i in range(5)], now=T0)
    due = T0 + timedelta(minutes=1)
    first = store.run(schedule_ops.tick, now=due, limit=3)
    second = store.run(schedule_ops.tick, now=due, limit=3)
    assert (first.claimed, first.full, second.claimed, second.full) == (3, True, 2, False)


def test_concurrent_tick_passes_enqueue_every_tick_exactly_once(backend: Backend) -> None:
    """Four tickers in threads, each with its own store, small batches, all due at once."""
    from nightcrew.app import Nightcrew

    apps = [Nightcrew(backend.settings()) for _ in range(4)]
    try:
        store = apps[0].store
        names = [f"s{i:02d}" for i in range(20)]
        defs = [definition(n, every=1, coalesce=False, max_instances=1000) for n in names]
        store.run(schedule_ops.add_schedules, defs, now=T0)
        now = T0 + timedelta(seconds=30)  # 30 ticks each: 600 in all
        errors: list[BaseException] = []

        def ticker(app: Nightcrew) -> None:
            try:
                for _ in range(200):
                    report = app.store.run(schedule_ops.tick, now=now, limit=3)
                    if report.claimed == 0 and app.store.run(schedule_ops.earliest_due) > now:
                        return
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=ticker, args=(app,)) for app in apps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors
        expected = [T0 + timedelta(seconds=k) for k in range(1, 31)]
        for name in names:
            assert ticks_of(store, name) == expected
            view = store.run(schedule_ops.get_schedule, name)
            assert view.next_run_at == T0 + timedelta(seconds=31)
            assert view.last_skip_reason is None
    finally:
        for app in apps:
            app.close()


# ---------------------------------------------------------------- misfire, coalesce, max_instances


def test_ticks_older_than_the_grace_are_skipped_and_recorded(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(misfire_grace=30), now=T0)
    report = store.run(schedule_ops.tick, now=T0 + timedelta(minutes=10, seconds=10))
    assert (report.enqueued, report.misfired) == (1, 9)
    assert ticks_of(store, "every-minute") == [T0 + timedelta(minutes=10)]
    view = store.run(schedule_ops.get_schedule, "every-minute")
    assert view.misfires == 9
    assert view.last_skip_at == T0 + timedelta(minutes=10, seconds=10)
    assert (view.last_skip_reason or "").startswith("misfired: 9 tick(s)")


def test_missed_ticks_coalesce_into_one_by_default(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(), now=T0)
    store.run(schedule_ops.tick, now=T0 + timedelta(minutes=10, seconds=10))
    assert ticks_of(store, "every-minute") == [T0 + timedelta(minutes=10)]
    view = store.run(schedule_ops.get_schedule, "every-minute")
    assert (view.misfires, view.next_run_at) == (0, T0 + timedelta(minutes=11))


def test_without_coalesce_every_missed_tick_gets_its_task(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(coalesce=False, max_instances=100), now=T0)
    store.run(schedule_ops.tick, now=T0 + timedelta(minutes=10, seconds=10))
    assert ticks_of(store, "every-minute") == [T0 + timedelta(minutes=k) for k in range(1, 11)]


def test_max_instances_skips_a_tick_while_a_task_is_open_and_records_it(
    store: TaskStore,
) -> None:
    store.run(schedule_ops.add_schedule, definition(max_instances=1), now=T0)
    store.run(schedule_ops.tick, now=T0 + timedelta(minutes=1))
    (first,) = tasks_of(store, "every-minute")
    force_status(store, first.id, S.WORKING)
    report = store.run(schedule_ops.tick, now=T0 + timedelta(minutes=2))
    assert (report.enqueued, report.skipped_instances) == (0, 1)
    view = store.run(schedule_ops.get_schedule, "every-minute")
    assert view.skipped_instances == 1
    assert (view.last_skip_reason or "").startswith("max_instances: 1 tick(s)")
    assert view.next_run_at == T0 + timedelta(minutes=3)  # the skipped tick is not retried
    force_status(store, first.id, S.COMPLETED)
    store.run(schedule_ops.tick, now=T0 + timedelta(minutes=3))
    assert ticks_of(store, "every-minute") == [T0 + timedelta(minutes=k) for k in (1, 3)]


def test_max_instances_above_one_allows_that_many_open_tasks(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(max_instances=2), now=T0)
    for minute in (1, 2, 3):
        store.run(schedule_ops.tick, now=T0 + timedelta(minutes=minute))
    assert ticks_of(store, "every-minute") == [T0 + timedelta(minutes=k) for k in (1, 2)]


# ---------------------------------------------------------------- pause, resume, run now


def test_resume_goes_on_from_the_first_tick_after_now(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(), now=T0)
    paused = store.run(schedule_ops.pause_schedule, "every-minute")
    assert (paused.enabled, paused.state) == (False, "paused")
    resumed = store.run(
        schedule_ops.resume_schedule, "every-minute", now=T0 + timedelta(minutes=30, seconds=5)
    )
    assert resumed.enabled
    assert resumed.next_run_at == T0 + timedelta(minutes=31)  # on its grid, nothing caught up
    store.run(schedule_ops.tick, now=T0 + timedelta(minutes=31))
    assert ticks_of(store, "every-minute") == [T0 + timedelta(minutes=31)]


def test_pause_and_resume_of_an_unknown_name_raise(store: TaskStore) -> None:
    with pytest.raises(ScheduleNotFound):
        store.run(schedule_ops.pause_schedule, "nope")
    with pytest.raises(ScheduleNotFound):
        store.run(schedule_ops.resume_schedule, "nope")


def test_run_now_enqueues_a_task_for_now_without_moving_the_next_run(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(max_instances=1), now=T0)
    now = T0 + timedelta(seconds=20)
    task = store.run(schedule_ops.run_schedule_now, "every-minute", now=now)
    assert (task.schedule_name, task.scheduled_for, task.status) == ("every-minute", now, S.PENDING)
    view = store.run(schedule_ops.get_schedule, "every-minute")
    assert view.next_run_at == T0 + timedelta(minutes=1)
    assert (view.last_task_id, view.last_run_at) == (task.id, now)
    store.run(schedule_ops.tick, now=T0 + timedelta(minutes=1))  # max_instances is 1, but
    assert len(tasks_of(store, "every-minute")) == 1  # the run-now task is open: skipped


def test_run_now_works_on_a_paused_schedule(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(), now=T0)
    store.run(schedule_ops.pause_schedule, "every-minute")
    task = store.run(schedule_ops.run_schedule_now, "every-minute")
    assert task.schedule_name == "every-minute"
    with pytest.raises(ScheduleNotFound):
        store.run(schedule_ops.run_schedule_now, "nope")


# ---------------------------------------------------------------- sync from code


def code(name: str = "nightly", **kwargs: Any) -> ScheduleDefinition:
    kwargs.setdefault("cron", "0 2 * * *")
    return definition(name, source="code", **kwargs)


def test_sync_creates_declared_schedules(store: TaskStore) -> None:
    report = store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0)
    assert [(c.name, c.action) for c in report.changes] == [("nightly", "created")]
    view = store.run(schedule_ops.get_schedule, "nightly")
    assert (view.source, view.next_run_at) == ("code", T0 + timedelta(hours=2))
    assert view.declared_hash == code().declared_hash()


def test_sync_of_an_unchanged_declaration_writes_nothing(store: TaskStore) -> None:
    store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0)
    before = store.run(schedule_ops.get_schedule, "nightly")
    report = store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0)
    assert (report.changes, report.unchanged) == ((), 1)
    assert store.run(schedule_ops.get_schedule, "nightly") == before


def test_a_changed_trigger_goes_on_after_the_last_tick_with_no_double_run(
    store: TaskStore,
) -> None:
    """pgqueuer's issue #343: the hourly trigger's 02:00 tick is the daily one that already
    ran; it is not run again (not even tried: no conflict is recorded)."""
    store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0)
    two = T0 + timedelta(hours=2)
    store.run(schedule_ops.tick, now=two + timedelta(seconds=5))
    hourly = code(cron="0 * * * *")
    report = store.run(
        schedule_ops.sync_schedules, [hourly], retire_user=True, now=two + timedelta(seconds=30)
    )
    (change,) = report.changes
    assert change.action == "updated"
    assert "trigger cron 0 2 * * * (UTC) -> cron 0 * * * * (UTC)" in change.detail
    view = store.run(schedule_ops.get_schedule, "nightly")
    assert view.next_run_at == T0 + timedelta(hours=3)
    store.run(schedule_ops.tick, now=T0 + timedelta(hours=3, seconds=5))
    assert ticks_of(store, "nightly") == [two, T0 + timedelta(hours=3)]
    assert store.run(schedule_ops.get_schedule, "nightly").last_skip_reason is None


def test_a_changed_trigger_whose_next_tick_is_before_the_last_one_waits_for_after_it(
    store: TaskStore,
) -> None:
    """A tick that ran at 02:00 and a sync whose clock says 01:59 (another host's clock):
    the new trigger's 02:00 is still not run again."""
    store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0)
    two = T0 + timedelta(hours=2)
    store.run(schedule_ops.tick, now=two)
    store.run(
        schedule_ops.sync_schedules,
        [code(cron="0 * * * *")],
        retire_user=True,
        now=two - timedelta(minutes=1),
    )
    assert store.run(schedule_ops.get_schedule, "nightly").next_run_at == two + timedelta(hours=1)


def test_a_changed_processor_applies_from_the_next_tick(store: TaskStore) -> None:
    store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0)
    store.run(schedule_ops.tick, now=T0 + timedelta(hours=2))
    changed = code(processor=Echo(value=2), max_attempts=4)
    (change,) = store.run(schedule_ops.sync_schedules, [changed], retire_user=True, now=T0).changes
    assert change.detail == "processor, max_attempts"
    view = store.run(schedule_ops.get_schedule, "nightly")
    assert view.next_run_at == T0 + timedelta(days=1, hours=2)  # the trigger did not change
    store.run(schedule_ops.tick, now=T0 + timedelta(days=1, hours=2))
    first, second = tasks_of(store, "nightly")
    assert (first.processor_json, second.processor_json) == (
        '{"value":1,"label":""}',
        '{"value":2,"label":""}',
    )
    assert second.max_attempts == 4


def test_a_schedule_removed_from_code_is_disabled_not_deleted(store: TaskStore) -> None:
    store.run(schedule_ops.sync_schedules, [code(), code("other")], retire_user=True, now=T0)
    report = store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0)
    assert [(c.name, c.action) for c in report.changes] == [("other", "retired")]
    view = store.run(schedule_ops.get_schedule, "other")
    assert (view.enabled, view.state, view.declared_hash) == (False, "retired", None)
    again = store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0)
    assert again.changes == ()


def test_without_the_apps_schedules_a_sync_leaves_their_rows_alone(store: TaskStore) -> None:
    store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0)
    report = store.run(schedule_ops.sync_schedules, [], retire_user=False, now=T0)
    assert report.changes == ()
    assert store.run(schedule_ops.get_schedule, "nightly").enabled


def test_upkeep_rows_no_longer_declared_are_always_retired(store: TaskStore) -> None:
    prune = code("nightcrew.prune", cron="17 3 * * *", _reserved=True)
    store.run(schedule_ops.sync_schedules, [prune], retire_user=False, now=T0)
    report = store.run(schedule_ops.sync_schedules, [], retire_user=False, now=T0)
    assert [(c.name, c.action) for c in report.changes] == [("nightcrew.prune", "retired")]


def test_a_schedule_declared_again_is_enabled_from_now_on(store: TaskStore) -> None:
    store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0)
    store.run(schedule_ops.sync_schedules, [], retire_user=True, now=T0)
    later = T0 + timedelta(days=10, hours=1)
    (change,) = store.run(
        schedule_ops.sync_schedules, [code()], retire_user=True, now=later
    ).changes
    assert change.action == "updated" and change.detail.startswith("declared again")
    view = store.run(schedule_ops.get_schedule, "nightly")
    assert view.enabled
    assert view.next_run_at == T0 + timedelta(days=10, hours=2)  # no catch-up of the 10 days


def test_an_operators_pause_holds_across_syncs_until_the_code_says_otherwise(
    store: TaskStore,
) -> None:
    store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0)
    store.run(schedule_ops.pause_schedule, "nightly")
    store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0)
    assert not store.run(schedule_ops.get_schedule, "nightly").enabled
    store.run(schedule_ops.sync_schedules, [code(max_attempts=3)], retire_user=True, now=T0)
    assert not store.run(schedule_ops.get_schedule, "nightly").enabled
    store.run(schedule_ops.sync_schedules, [code(max_attempts=3, enabled=False)], retire_user=True)
    store.run(schedule_ops.sync_schedules, [code(max_attempts=3)], retire_user=True, now=T0)
    assert store.run(schedule_ops.get_schedule, "nightly").enabled  # the code said enabled


def test_sync_adopts_a_runtime_schedule_of_the_same_name(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition("nightly", cron="0 2 * * *"), now=T0)
    (change,) = store.run(schedule_ops.sync_schedules, [code()], retire_user=True, now=T0).changes
    assert change.action == "adopted"
    assert store.run(schedule_ops.get_schedule, "nightly").source == "code"


def test_runtime_schedules_are_never_retired_by_a_sync(store: TaskStore) -> None:
    store.run(schedule_ops.add_schedule, definition(), now=T0)
    assert store.run(schedule_ops.sync_schedules, [], retire_user=True, now=T0).changes == ()
    assert store.run(schedule_ops.get_schedule, "every-minute").enabled


def test_concurrent_syncs_create_each_schedule_once(backend: Backend) -> None:
    from nightcrew.app import Nightcrew

    apps = [Nightcrew(backend.settings()) for _ in range(4)]
    reports: list[Any] = []
    try:
        defs = [code(f"s{i}") for i in range(30)]

        def sync(app: Nightcrew) -> None:
            reports.append(app.store.run(schedule_ops.sync_schedules, defs, retire_user=True))

        threads = [threading.Thread(target=sync, args=(app,)) for app in apps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        created = [c.name for r in reports for c in r.changes if c.action == "created"]
        assert sorted(created) == sorted(d.name for d in defs)
        assert sorted(r.unchanged for r in reports) == [0, 30, 30, 30]
    finally:
        for app in apps:
            app.close()


# ---------------------------------------------------------------- plans


def test_the_ticker_statements_walk_their_indexes_without_statistics(
    store: TaskStore, backend: Backend
) -> None:
    """On SQLite the statements name their indexes (``INDEXED BY``: a plan without them is
    an error); on PostgreSQL the plan of a never-analyzed table of 3,000 schedules uses
    the due index and the schedule's open-task index."""
    store.run(schedule_ops.add_schedules, [definition(f"s{i:04d}") for i in range(3000)], now=T0)
    store.run(schedule_ops.tick, now=T0 + timedelta(minutes=1), limit=10)
    if not backend.is_postgres:
        assert store.run(schedule_ops.earliest_due) is not None
        return
    due = sst.claim_due_statement("postgresql").element.text
    earliest = sst.earliest_due_statement("postgresql").element.text
    with store.database.sync_engine.connect() as conn:
        plan = "\n".join(
            r[0] for r in conn.execute(text(f"EXPLAIN {due}"), {"now": T0, "limit": 500})
        )
        first = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {earliest}")))
    assert "ix_nightcrew_schedules_due" in plan
    assert "ix_maintenance_tasks_schedule_open" in plan
    assert "ix_nightcrew_schedules_due" in first
