"""Store conformance, operations: every op behaves the same on PostgreSQL and SQLite.

Each test drives one operation through `TaskStore.run` (sync); a few run the same op through
`arun` to pin that both paths are one implementation. Tasks are put in a status the way the
engine would (a claim makes one WORKING) or, for statuses only a worker writes, through the
ORM (`tests.store.kit.force_status`).
"""

from __future__ import annotations

from datetime import UTC, timedelta

import psycopg
import pytest

from nightcrew import (
    InvalidTransition,
    MaintenanceTaskStatus,
    Nightcrew,
    SchemaMissing,
    TaskNotFound,
    TaskOptions,
)
from nightcrew.enqueue import build_rows
from nightcrew.events import EventKind, TaskEvent
from nightcrew.models import utcnow
from nightcrew.store import TaskStore, ops
from nightcrew.values import TaskFilter
from tests.conftest import PG_ADMIN_URL, Backend
from tests.processors import Echo
from tests.store.kit import LOADER, add_task, add_tasks, claim_ids, force_status

S = MaintenanceTaskStatus
FINAL = [S.COMPLETED, S.ERROR, S.CANCELLED]


def events_of(store: TaskStore) -> list[TaskEvent]:
    seen: list[TaskEvent] = []
    store.events.subscribe(seen.append)
    return seen


# ---------------------------------------------------------------- insert, get, list, count


def test_insert_tasks_returns_ids_in_the_order_of_the_rows(store: TaskStore) -> None:
    ids = add_tasks(store, 5)
    assert ids == sorted(ids)
    values = [store.run(ops.get_task, i).processor_json for i in ids]
    assert values == [f'{{"value":{n},"label":""}}' for n in range(5)]


def test_insert_one_returns_the_stored_task(store: TaskStore) -> None:
    task = add_task(store, value=7)
    assert task.status is S.PENDING
    assert task.start_at.tzinfo is UTC
    assert store.run(ops.get_task, task.id) == task


def test_enqueue_one_stores_what_insert_one_would(store: TaskStore) -> None:
    (row,) = build_rows([Echo(value=3)], TaskOptions(queue="q", priority=2), LOADER, utcnow())
    task = store.enqueue_one(row)
    stored = store.run(ops.get_task, task.id)
    assert stored == task
    assert (stored.queue, stored.priority, stored.rescues) == ("q", 2, 0)


def test_enqueue_one_announces_the_created_task(store: TaskStore) -> None:
    seen = events_of(store)
    (row,) = build_rows([Echo()], TaskOptions(), LOADER, utcnow())
    task = store.enqueue_one(row)
    assert [(e.kind, e.task_id) for e in seen] == [(EventKind.CREATED, task.id)]


def test_get_of_an_unknown_id_raises_task_not_found(store: TaskStore) -> None:
    with pytest.raises(TaskNotFound):
        store.run(ops.get_task, 999_999)


def test_list_is_newest_first_and_pages_by_cursor(store: TaskStore) -> None:
    ids = add_tasks(store, 5)
    first = store.run(ops.list_tasks, TaskFilter(limit=2))
    assert [t.id for t in first.tasks] == ids[::-1][:2]
    second = store.run(ops.list_tasks, TaskFilter(limit=2, before_id=first.next_before_id))
    assert [t.id for t in second.tasks] == ids[::-1][2:4]


def test_list_gives_no_next_cursor_on_the_last_page(store: TaskStore) -> None:
    add_tasks(store, 4)
    assert store.run(ops.list_tasks, TaskFilter(limit=4)).next_before_id is None
    assert store.run(ops.list_tasks, TaskFilter(limit=3)).next_before_id is not None


def test_list_filters_by_status_queue_and_processor(store: TaskStore) -> None:
    a = add_task(store, queue="mail")
    b = add_task(store)
    force_status(store, b.id, S.COMPLETED)

    def ids(**f: object) -> list[int]:
        return [t.id for t in store.run(ops.list_tasks, TaskFilter(**f)).tasks]  # type: ignore[arg-type]

    assert ids(statuses=(S.COMPLETED,)) == [b.id]
    assert ids(queue="mail") == [a.id]
    assert ids(processor="tests.processors.Echo") == [b.id, a.id]
    assert ids(processor="Echo") == [b.id, a.id]
    assert ids(processor="Boom") == []


def test_count_by_status_has_every_status(store: TaskStore) -> None:
    add_tasks(store, 3)
    counts = store.run(ops.count_by_status)
    assert set(counts) == set(S)
    assert counts[S.PENDING] == 3
    assert counts[S.ERROR] == 0


async def test_arun_runs_the_same_operations(astore: TaskStore) -> None:
    ids = add_tasks(astore, 2)
    page = await astore.arun(ops.list_tasks, TaskFilter())
    assert sorted(t.id for t in page.tasks) == ids
    cancelled = await astore.arun(ops.cancel, ids[0])
    assert cancelled.status is S.CANCELLED


# ---------------------------------------------------------------- activate


def test_activate_makes_an_inactive_task_pending_due_now(store: TaskStore) -> None:
    task = add_task(store, inactive=True)
    before = utcnow()
    activated = store.run(ops.activate, task.id)
    assert activated.status is S.PENDING
    assert before <= activated.start_at <= utcnow()


@pytest.mark.parametrize("status", [S.PENDING, S.WORKING, *FINAL])
def test_activate_refuses_a_task_that_is_not_inactive(store: TaskStore, status: S) -> None:
    task = add_task(store)
    force_status(store, task.id, status)
    with pytest.raises(InvalidTransition):
        store.run(ops.activate, task.id)
    assert store.run(ops.get_task, task.id).status is status


def test_activate_of_an_unknown_id_raises_task_not_found(store: TaskStore) -> None:
    with pytest.raises(TaskNotFound):
        store.run(ops.activate, 999_999)


# ---------------------------------------------------------------- cancel


@pytest.mark.parametrize("inactive", [True, False], ids=["INACTIVE", "PENDING"])
def test_cancel_of_a_task_not_running_cancels_it_at_once(store: TaskStore, inactive: bool) -> None:
    task = add_task(store, inactive=inactive)
    cancelled = store.run(ops.cancel, task.id)
    assert cancelled.status is S.CANCELLED
    assert cancelled.finished_at is not None
    assert cancelled.info == {"cancelled": True}


async def test_cancel_of_a_working_task_only_requests_it(astore: TaskStore) -> None:
    task = add_task(astore)
    await claim_ids(astore)
    requested = astore.run(ops.cancel, task.id)
    assert requested.status is S.WORKING
    assert requested.cancel_requested_at is not None


async def test_a_second_cancel_request_keeps_the_first_time(astore: TaskStore) -> None:
    task = add_task(astore)
    await claim_ids(astore)
    first = astore.run(ops.cancel, task.id).cancel_requested_at
    again = astore.run(ops.cancel, task.id).cancel_requested_at
    assert again == first


@pytest.mark.parametrize("status", FINAL)
def test_cancel_refuses_a_finished_task(store: TaskStore, status: S) -> None:
    task = add_task(store)
    force_status(store, task.id, status)
    with pytest.raises(InvalidTransition):
        store.run(ops.cancel, task.id)


def test_cancel_of_an_unknown_id_raises_task_not_found(store: TaskStore) -> None:
    with pytest.raises(TaskNotFound):
        store.run(ops.cancel, 999_999)


# ---------------------------------------------------------------- retry


@pytest.mark.parametrize("status", [S.ERROR, S.CANCELLED])
def test_retry_makes_a_failed_task_pending_now_with_fresh_attempts(
    store: TaskStore, status: S
) -> None:
    task = add_task(store)
    force_status(
        store,
        task.id,
        status,
        attempts=1,
        rescues=2,
        error={"type": "X", "message": "m", "traceback": None},
        finished_at=utcnow() - timedelta(minutes=1),
    )
    retried = store.run(ops.retry, task.id)
    assert (retried.status, retried.attempts, retried.rescues) == (S.PENDING, 0, 0)
    assert retried.error is None
    assert retried.finished_at is None


@pytest.mark.parametrize("status", [S.INACTIVE, S.PENDING, S.WORKING, S.COMPLETED])
def test_retry_refuses_a_task_that_did_not_fail(store: TaskStore, status: S) -> None:
    task = add_task(store)
    force_status(store, task.id, status)
    with pytest.raises(InvalidTransition):
        store.run(ops.retry, task.id)


def test_retry_refuses_while_another_open_task_holds_the_unique_key(store: TaskStore) -> None:
    old = add_task(store, unique_key="nightly")
    store.run(ops.cancel, old.id)
    holder = add_task(store, unique_key="nightly")
    with pytest.raises(InvalidTransition, match=f"held by open task {holder.id}"):
        store.run(ops.retry, old.id)


def test_retry_of_an_unknown_id_raises_task_not_found(store: TaskStore) -> None:
    with pytest.raises(TaskNotFound):
        store.run(ops.retry, 999_999)


# ---------------------------------------------------------------- events


def test_operations_announce_their_transitions_with_the_actor(store: TaskStore) -> None:
    seen = events_of(store)
    task = add_task(store, inactive=True)
    store.run_as("cli:alice", ops.activate, task.id)
    store.run_as("cli:alice", ops.cancel, task.id)
    store.run_as("cli:bob", ops.retry, task.id)
    kinds = [(e.kind, e.task_id, e.actor) for e in seen]
    assert kinds == [
        (EventKind.CREATED, task.id, None),
        (EventKind.ACTIVATED, task.id, "cli:alice"),
        (EventKind.CANCELLED, task.id, "cli:alice"),
        (EventKind.RESET, task.id, "cli:bob"),
    ]


def test_a_refused_operation_announces_nothing(store: TaskStore) -> None:
    task = add_task(store)
    seen = events_of(store)
    with pytest.raises(InvalidTransition):
        store.run(ops.activate, task.id)
    assert seen == []


def test_reads_announce_nothing(store: TaskStore) -> None:
    task = add_task(store)
    seen = events_of(store)
    store.run(ops.get_task, task.id)
    store.run(ops.list_tasks, TaskFilter())
    store.run(ops.count_by_status)
    assert seen == []


def test_probe_passes_on_a_database_with_the_schema(store: TaskStore) -> None:
    store.run(ops.probe)


def test_probe_without_the_schema_raises_schema_missing(empty_backend: Backend) -> None:
    with (
        Nightcrew(empty_backend.settings()) as app,
        pytest.raises(SchemaMissing, match="db upgrade"),
    ):
        app.store.run(ops.probe)


def test_a_pooled_connection_that_died_while_idle_is_replaced(store: TaskStore) -> None:
    if store.dialect != "postgresql":
        pytest.skip("a server that restarts under an idle pool: PostgreSQL")
    store.database.sync_engine.dispose()  # so the pool holds one connection
    add_task(store)
    with store.database.sync_engine.connect() as conn:  # goes back to the pool after
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert store.run(ops.count_by_status)[S.PENDING] == 1


def test_enqueue_one_replaces_a_pooled_connection_that_died_while_idle(
    store: TaskStore,
) -> None:
    if store.dialect != "postgresql":
        pytest.skip("a server that drops an idle pooled connection: PostgreSQL")
    (row,) = build_rows([Echo()], TaskOptions(), LOADER, utcnow())
    store.database.sync_autocommit_engine.dispose()  # so the pool holds one connection
    store.enqueue_one(row)
    with store.database.sync_autocommit_engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    store.enqueue_one(row)
    assert store.run(ops.count_by_status)[S.PENDING] == 2


def test_insert_one_refuses_a_row_with_a_unique_key(store: TaskStore) -> None:
    (row,) = build_rows([Echo()], TaskOptions(unique_key="k"), LOADER, utcnow())
    with pytest.raises(ValueError, match="insert_keyed"):
        store.run(ops.insert_one, row)


def test_insert_keyed_returns_the_open_holder_of_the_key(store: TaskStore) -> None:
    first = add_task(store, unique_key="k")
    (row,) = build_rows([Echo(value=9)], TaskOptions(unique_key="k"), LOADER, utcnow())
    assert store.run(ops.insert_keyed, row).id == first.id
