"""Claiming ahead (prefetch): batched claims for short tasks, never more runs than slots,
no hoarding of long tasks, nothing claimed ahead lost when the worker stops or run when
cancelled."""

from __future__ import annotations

import asyncio

from nightcrew import MaintenanceTaskStatus, Nightcrew, Worker, actions, create_maintenance_tasks
from nightcrew.store import ops
from nightcrew.values import ClaimedTask, ClaimRequest, StopReason, TaskFilter
from tests.processors import TRACKED_MAX, Echo, Sleep, Tracked

S = MaintenanceTaskStatus


async def test_prefetch_never_runs_more_tasks_than_slots(aapp: Nightcrew) -> None:
    processors = [Tracked(group="prefetch", seconds=0.001) for _ in range(300)]
    create_maintenance_tasks(processors, database=aapp)
    await asyncio.wait_for(Worker(app=aapp, concurrency=3).run(until_idle=True), 60)
    assert TRACKED_MAX["prefetch"] <= 3
    assert (await aapp.store.arun(ops.count_by_status))[S.COMPLETED] == 300


async def test_short_tasks_are_claimed_ahead_of_the_free_slots(aapp: Nightcrew) -> None:
    create_maintenance_tasks([Echo(value=i) for i in range(400)], database=aapp)
    worker = Worker(app=aapp, concurrency=2)
    sizes: list[int] = []
    claim = worker.store.claim

    async def counting(request: ClaimRequest) -> list[ClaimedTask]:
        got = await claim(request)
        sizes.append(len(got))
        return got

    worker.store.claim = counting  # type: ignore[method-assign]
    await asyncio.wait_for(worker.run(until_idle=True), 60)
    assert max(sizes) > 2  # more than the two free slots in one statement
    assert (await aapp.store.arun(ops.count_by_status))[S.COMPLETED] == 400


async def test_long_tasks_are_not_hoarded(aapp: Nightcrew) -> None:
    """A worker of one slot running slow tasks claims about one at a time, so a second
    worker arriving later still finds work (ten tasks: on a loaded machine the first may
    have started only one by the time the second arrives, and must not hold the rest)."""
    create_maintenance_tasks([Sleep(seconds=0.4) for _ in range(10)], database=aapp)
    first = Worker(app=aapp, concurrency=1)
    running = asyncio.create_task(first.run(until_idle=True))
    await asyncio.sleep(1.0)  # the first has timed a run or two by now
    second = Worker(app=aapp, concurrency=1)
    await asyncio.wait_for(second.run(until_idle=True), 30)
    await asyncio.wait_for(running, 30)
    assert second.processed >= 2


async def test_tasks_claimed_ahead_go_back_pending_when_the_worker_stops(
    aapp: Nightcrew,
) -> None:
    ids = create_maintenance_tasks([Sleep(seconds=0.002) for _ in range(3000)], database=aapp)
    worker = Worker(app=aapp, concurrency=2)
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.6)
    worker.request_stop()
    await asyncio.wait_for(running, 30)

    counts = await aapp.store.arun(ops.count_by_status)
    assert counts[S.WORKING] == 0
    assert counts[S.COMPLETED] + counts[S.PENDING] == len(ids)
    assert counts[S.PENDING] > 0
    pending = await aapp.store.arun(ops.list_tasks, TaskFilter(statuses=(S.PENDING,), limit=1000))
    assert all(t.attempts == 0 for t in pending.tasks)


async def test_a_task_claimed_ahead_and_cancelled_ends_cancelled_without_running(
    aapp: Nightcrew,
) -> None:
    """What a cancel NOTIFY (or the lease keeper's poll) does to a task the claimer holds
    ahead of a free slot: it ends CANCELLED, and its processor never runs."""
    (task_id,) = create_maintenance_tasks([Echo(value=7)], database=aapp)
    worker = Worker(app=aapp, concurrency=1)
    request = ClaimRequest(token="ahead-1", limit=1, lease_seconds=60)
    (claimed,) = await worker.store.claim(request)
    worker.state.queued[claimed.id] = claimed  # held ahead, as the claimer holds it
    worker.state.stop_run(claimed.id, StopReason.CANCEL)
    await worker.finisher.flush()

    task = actions.get(aapp, task_id)
    assert task.status is S.CANCELLED
    assert "value" not in (task.info or {})  # Echo's result: it never ran
    assert task_id not in worker.state.queued
