"""Store conformance, the worker's hot path: claim, finish, heartbeat, cancel requests,
rescue and progress behave the same on PostgreSQL and SQLite.

Nothing here runs a worker: each test calls one store method and reads the rows back.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from nightcrew import MaintenanceTaskStatus
from nightcrew.events import EventKind, TaskEvent
from nightcrew.models import utcnow
from nightcrew.store import TaskStore, open_store, ops
from nightcrew.store import statements as st
from nightcrew.values import ClaimedTask, Outcome, ProgressUpdate
from tests.store.kit import add_task, add_tasks, claim, claim_ids, force_status

S = MaintenanceTaskStatus


def done(claimed: ClaimedTask, status: S = S.COMPLETED, **kw: object) -> Outcome:
    return Outcome(claimed, status, kw.pop("info", None), **kw)  # type: ignore[arg-type]


def expire(store: TaskStore, task_id: int) -> None:
    force_status(store, task_id, S.WORKING, lease_expires_at=utcnow() - timedelta(seconds=1))


# ---------------------------------------------------------------- claim


async def test_claim_takes_up_to_the_limit_in_priority_then_age_order(astore: TaskStore) -> None:
    low = add_task(astore, priority=0)
    high = add_task(astore, priority=5)
    later = add_task(astore, priority=5)
    got = await claim(astore, 2)
    assert [t.id for t in got] == [high.id, later.id]
    assert [t.id for t in await claim(astore, 5)] == [low.id]


async def test_claim_orders_equal_priorities_by_created_at_before_id(astore: TaskStore) -> None:
    first, second = add_tasks(astore, 2)
    force_status(astore, first, S.PENDING, created_at=utcnow() + timedelta(seconds=5))
    assert await claim_ids(astore, 2) == [second, first]


async def test_claim_leases_the_tasks_to_its_token(astore: TaskStore) -> None:
    task = add_task(astore)
    (claimed,) = await claim(astore, token="w/7", lease_seconds=60)
    row = astore.run(ops.get_task, task.id)
    assert (row.status, row.lease_token, row.attempts) == (S.WORKING, "w/7", 1)
    assert claimed.lease_token == "w/7"
    assert claimed.attempt == 1
    assert row.lease_expires_at is not None
    assert row.lease_expires_at - utcnow() > timedelta(seconds=50)


async def test_claim_skips_tasks_not_yet_due(astore: TaskStore) -> None:
    add_task(astore, start_at=utcnow() + timedelta(hours=1))
    assert await claim_ids(astore) == []


async def test_claim_skips_inactive_and_finished_tasks(astore: TaskStore) -> None:
    add_task(astore, inactive=True)
    finished = add_task(astore)
    force_status(astore, finished.id, S.COMPLETED)
    assert await claim_ids(astore) == []


async def test_claim_serves_only_the_queues_asked_for(astore: TaskStore) -> None:
    mail = add_task(astore, queue="mail")
    sms = add_task(astore, queue="sms")
    add_task(astore, queue="other")
    assert await claim_ids(astore, queues=("mail",)) == [mail.id]
    assert await claim_ids(astore, queues=("sms", "nothing")) == [sms.id]


async def test_claim_can_exclude_queues(astore: TaskStore) -> None:
    add_task(astore, queue="reports")
    other = add_task(astore, queue="default")
    assert await claim_ids(astore, exclude=("reports",)) == [other.id]


async def test_concurrent_claims_never_take_the_same_task(aapp: object, astore: TaskStore) -> None:
    ids = add_tasks(astore, 60)
    second = open_store(astore.database, astore.events)
    try:
        results = await asyncio.gather(
            *(claim_ids(s, 7, token=f"w/{i}") for i in range(6) for s in (astore, second))
        )
    finally:
        await second.aclose()
    taken = [i for r in results for i in r]
    assert len(taken) == len(set(taken))
    assert set(taken) <= set(ids)


async def test_claim_announces_started_tasks(astore: TaskStore) -> None:
    seen: list[TaskEvent] = []
    astore.events.subscribe(seen.append, [EventKind.STARTED])
    task = add_task(astore)
    await claim(astore)
    assert [(e.kind, e.task_id, e.attempt) for e in seen] == [(EventKind.STARTED, task.id, 1)]


# ---------------------------------------------------------------- finish


async def test_finish_writes_outcomes_and_returns_their_ids(astore: TaskStore) -> None:
    add_tasks(astore, 3)
    a, b, c = await claim(astore)
    written = await astore.finish(
        [
            done(a, info={"n": 1}),
            done(b, S.ERROR, info={"error": "x"}, error={"type": "E", "message": "x"}),
            done(c, S.CANCELLED, info={"cancelled": True}),
        ]
    )
    assert sorted(written) == sorted([a.id, b.id, c.id])
    rows = {i: astore.run(ops.get_task, i) for i in written}
    assert (rows[a.id].status, rows[a.id].info, rows[a.id].progress) == (S.COMPLETED, {"n": 1}, 100)
    assert (rows[b.id].status, rows[b.id].error) == (S.ERROR, {"type": "E", "message": "x"})
    assert rows[c.id].status is S.CANCELLED
    assert all(r.finished_at is not None and r.lease_token is None for r in rows.values())


async def test_finish_of_a_retry_schedules_it_and_keeps_the_attempt(astore: TaskStore) -> None:
    task = add_task(astore)
    (claimed,) = await claim(astore)
    when = utcnow() + timedelta(minutes=3)
    await astore.finish([done(claimed, S.PENDING, info={"error": "later"}, start_at=when)])
    row = astore.run(ops.get_task, task.id)
    assert (row.status, row.attempts, row.finished_at) == (S.PENDING, 1, None)
    assert abs((row.start_at - when).total_seconds()) < 0.001


async def test_a_hand_back_does_not_spend_the_attempt(astore: TaskStore) -> None:
    task = add_task(astore)
    (claimed,) = await claim(astore)
    await astore.finish([done(claimed, S.PENDING, start_at=utcnow(), attempt_counted=False)])
    assert astore.run(ops.get_task, task.id).attempts == 0


async def test_finish_keeps_the_last_progress_reported(astore: TaskStore) -> None:
    task = add_task(astore)
    (claimed,) = await claim(astore)
    await astore.finish([done(claimed, S.ERROR, info={}, progress=(40.0, "stuck"))])
    row = astore.run(ops.get_task, task.id)
    assert (row.progress, row.progress_message) == (40.0, "stuck")


async def test_finish_with_another_claims_token_is_rejected(astore: TaskStore) -> None:
    task = add_task(astore)
    (claimed,) = await claim(astore, token="w/1")
    stale = claimed._replace(lease_token="w/0")
    assert await astore.finish([done(stale)]) == []
    assert astore.run(ops.get_task, task.id).status is S.WORKING


async def test_a_late_finish_after_a_rescue_and_a_new_claim_is_rejected(astore: TaskStore) -> None:
    task = add_task(astore)
    (old,) = await claim(astore, token="w/1")
    expire(astore, task.id)
    await astore.rescue(max_rescues=3, stale_after=3600)
    (new,) = await claim(astore, token="w/2")
    assert await astore.finish([done(old, info={"from": "old"})]) == []
    assert await astore.finish([done(new, info={"from": "new"})]) == [task.id]
    assert astore.run(ops.get_task, task.id).info == {"from": "new"}


async def test_finish_announces_each_outcome_by_its_kind(astore: TaskStore) -> None:
    seen: list[TaskEvent] = []
    astore.events.subscribe(seen.append)
    add_tasks(astore, 2)
    a, b = await claim(astore)
    stale = b._replace(lease_token="someone-else")
    await astore.finish([done(a, S.ERROR, info={"error": "bad"}), done(stale)])
    finished = [
        (e.kind, e.task_id) for e in seen if e.kind not in (EventKind.STARTED, EventKind.CREATED)
    ]
    assert sorted(finished) == sorted([(EventKind.FAILED, a.id), (EventKind.FINISH_REJECTED, b.id)])
    failed = next(e for e in seen if e.kind is EventKind.FAILED)
    assert failed.detail == {"error": "bad"}


async def test_an_outcome_with_nul_characters_is_stored(astore: TaskStore) -> None:
    task = add_task(astore)
    (claimed,) = await claim(astore)
    outcome = done(
        claimed,
        S.ERROR,
        info={"error": "a\x00b", "k\x00": ["x\x00"]},
        error={"type": "E", "message": "a\x00b", "traceback": None},
        progress=(5.0, "m\x00"),
    )
    assert await astore.finish([outcome]) == [task.id]
    row = astore.run(ops.get_task, task.id)
    assert row.status is S.ERROR
    assert row.info is not None and set(row.info) == {
        "error",
        "k\x00" if not _pg(astore) else "k\ufffd",
    }
    if _pg(astore):  # PostgreSQL's text cannot hold U+0000: it becomes U+FFFD
        assert row.info["error"] == "a\ufffdb"
        assert row.progress_message == "m\ufffd"
    else:
        assert row.info["error"] == "a\x00b"


def _pg(store: TaskStore) -> bool:
    return store.dialect == "postgresql"


# ---------------------------------------------------------------- heartbeat and cancel checks


async def test_heartbeat_extends_the_leases_held(astore: TaskStore) -> None:
    task = add_task(astore)
    (claimed,) = await claim(astore, lease_seconds=1)
    held = await astore.heartbeat([(task.id, claimed.lease_token)], lease_seconds=600)
    assert [h.id for h in held] == [task.id]
    row = astore.run(ops.get_task, task.id)
    assert row.lease_expires_at is not None
    assert row.lease_expires_at - utcnow() > timedelta(seconds=500)


async def test_heartbeat_leaves_out_leases_taken_away(astore: TaskStore) -> None:
    kept, gone = add_tasks(astore, 2)
    a, b = await claim(astore)
    astore.run(ops.cancel, gone)  # requests only: still WORKING, still ours
    force_status(astore, gone, S.COMPLETED)  # finished by an operator
    held = await astore.heartbeat([(a.id, a.lease_token), (b.id, b.lease_token)], 30)
    assert [h.id for h in held] == [kept]


async def test_heartbeat_does_not_touch_updated_at(astore: TaskStore) -> None:
    task = add_task(astore)
    (claimed,) = await claim(astore)
    before = astore.run(ops.get_task, task.id).updated_at
    await astore.heartbeat([(task.id, claimed.lease_token)], 30)
    assert astore.run(ops.get_task, task.id).updated_at == before


async def test_heartbeat_and_cancel_check_report_cancel_requests(astore: TaskStore) -> None:
    add_tasks(astore, 2)
    a, b = await claim(astore)
    astore.run(ops.cancel, b.id)
    leases = [(a.id, a.lease_token), (b.id, b.lease_token)]
    held = {h.id: h.cancel_requested for h in await astore.heartbeat(leases, 30)}
    assert held == {a.id: False, b.id: True}
    assert await astore.cancel_requests(leases) == [b.id]


# ---------------------------------------------------------------- rescue


async def test_rescue_hands_an_expired_lease_back_without_spending_an_attempt(
    astore: TaskStore,
) -> None:
    task = add_task(astore)
    await claim(astore)
    expire(astore, task.id)
    (rescued,) = await astore.rescue(max_rescues=3, stale_after=3600)
    assert (rescued.id, rescued.status) == (task.id, S.PENDING)
    row = astore.run(ops.get_task, task.id)
    assert (row.status, row.attempts, row.rescues, row.lease_token) == (S.PENDING, 0, 1, None)
    assert row.info is not None and row.info["rescued"] is True


async def test_a_task_that_keeps_losing_its_worker_ends_error_as_poison(astore: TaskStore) -> None:
    task = add_task(astore)
    for _ in range(3):
        await claim(astore)
        expire(astore, task.id)
        await astore.rescue(max_rescues=2, stale_after=3600)
    row = astore.run(ops.get_task, task.id)
    assert (row.status, row.rescues) == (S.ERROR, 3)
    assert row.error is not None and row.error["type"] == "PoisonTask"
    assert "rescued 3 times" in row.error["message"]


async def test_rescue_of_a_task_whose_cancel_was_requested_cancels_it(astore: TaskStore) -> None:
    task = add_task(astore)
    await claim(astore)
    astore.run(ops.cancel, task.id)
    expire(astore, task.id)
    await astore.rescue(max_rescues=3, stale_after=3600)
    assert astore.run(ops.get_task, task.id).status is S.CANCELLED


async def test_rescue_ends_a_stale_working_row_without_a_lease_error(astore: TaskStore) -> None:
    old, fresh = add_tasks(astore, 2)
    long_ago = utcnow() - timedelta(hours=2)
    force_status(astore, old, S.WORKING, started_at=long_ago, lease_expires_at=None)
    force_status(astore, fresh, S.WORKING, started_at=utcnow(), lease_expires_at=None)
    rescued = await astore.rescue(max_rescues=3, stale_after=3600)
    assert [(r.id, r.status) for r in rescued] == [(old, S.ERROR)]
    row = astore.run(ops.get_task, old)
    assert row.error is not None and row.error["type"] == "StaleWorking"
    assert astore.run(ops.get_task, fresh).status is S.WORKING


async def test_rescue_leaves_live_leases_alone(astore: TaskStore) -> None:
    add_task(astore)
    await claim(astore, lease_seconds=60)
    assert await astore.rescue(max_rescues=3, stale_after=3600) == []


async def test_rescue_announces_each_task(astore: TaskStore) -> None:
    seen: list[TaskEvent] = []
    astore.events.subscribe(seen.append, [EventKind.RESCUED])
    task = add_task(astore)
    await claim(astore)
    expire(astore, task.id)
    await astore.rescue(max_rescues=3, stale_after=3600)
    assert [(e.task_id, e.status, e.detail) for e in seen] == [(task.id, S.PENDING, {"rescues": 1})]


# ---------------------------------------------------------------- progress


async def test_save_progress_writes_the_latest_value_of_a_held_lease(astore: TaskStore) -> None:
    task = add_task(astore)
    (claimed,) = await claim(astore)
    await astore.save_progress([ProgressUpdate(task.id, claimed.lease_token, 1, 42.5, "half")])
    row = astore.run(ops.get_task, task.id)
    assert (row.progress, row.progress_message) == (42.5, "half")


async def test_save_progress_of_a_lease_taken_away_writes_nothing(astore: TaskStore) -> None:
    task = add_task(astore)
    await claim(astore)
    await astore.save_progress([ProgressUpdate(task.id, "someone-else", 1, 42.5, "half")])
    assert astore.run(ops.get_task, task.id).progress is None


# ---------------------------------------------------------------- statements


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_hot_statements_are_built_once(dialect: str) -> None:
    for build in (
        st.finish_statement,
        st.heartbeat_statement,
        st.rescue_statement,
        st.progress_statement,
        st.cancel_requested_statement,
    ):
        assert build(dialect) is build(dialect)  # type: ignore[arg-type]
    assert st.claim_statement(dialect, 1, False) is st.claim_statement(dialect, 1, False)  # type: ignore[arg-type]
