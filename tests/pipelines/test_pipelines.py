"""Pipelines on both databases: order, fan-out and fan-in, failure, cancel and retry.

Steps run in real workers (in this process); a step's start and end come from the rows the
worker wrote (``started_at``, ``finished_at``), so order is checked from what the database
recorded.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from nightcrew import (
    InvalidTransition,
    MaintenanceTaskStatus,
    Nightcrew,
    Pipeline,
    PipelineError,
    PipelineStatus,
    Worker,
    actions,
)
from nightcrew.errors import PipelineNotFound
from nightcrew.models import utcnow
from nightcrew.upkeep import Retention, cancel_stale_pending, prune_finished
from tests.processors import Boom, CollectResults, Echo, Sleep, SyncCollectResults
from tests.store.kit import claim, force_status

S = MaintenanceTaskStatus
PS = PipelineStatus


async def drain(app: Nightcrew, workers: int = 1, concurrency: int = 10) -> None:
    crew = [Worker(app=app, concurrency=concurrency) for _ in range(workers)]
    await asyncio.wait_for(asyncio.gather(*(w.run(until_idle=True) for w in crew)), 120)


def steps_by_name(app: Nightcrew, pipeline_id: int) -> dict[str, object]:
    detail = actions.get_pipeline(app, pipeline_id)
    return {s.step_name: s for s in detail.steps}


def two_steps(app: Nightcrew, name: str) -> tuple[int, int]:
    """A pipeline of "first" then "second" (depending on it): its id and first's."""
    p = Pipeline(name)
    first = p.add(Echo(), name="first")
    p.add(Echo(), name="second", depends_on=[first])
    pipeline_id = p.enqueue(database=app)
    return pipeline_id, steps_by_name(app, pipeline_id)["first"].id  # type: ignore[attr-defined]


async def test_a_diamond_runs_each_step_after_its_dependencies(aapp: Nightcrew) -> None:
    p = Pipeline("diamond")
    top = p.add(Echo(value=1), name="top")
    left = p.add(Sleep(seconds=0.05), name="left", depends_on=[top])
    right = p.add(Echo(value=2), name="right", depends_on=[top])
    p.add(CollectResults(), name="bottom", depends_on=[left, right])
    pipeline_id = p.enqueue(database=aapp)

    await drain(aapp, workers=2)

    detail = actions.get_pipeline(aapp, pipeline_id)
    assert detail.pipeline.status is PS.COMPLETED
    steps = {s.id: s for s in detail.steps}
    for dependency, dependent in detail.edges:
        before, after = steps[dependency], steps[dependent]
        assert before.finished_at is not None and after.started_at is not None
        assert after.started_at >= before.finished_at
    bottom = next(s for s in detail.steps if s.step_name == "bottom")
    assert bottom.info is not None
    assert set(bottom.info["results"]) == {"left", "right"}
    assert bottom.info["results"]["right"]["value"] == 2


async def test_a_fan_in_reads_the_results_of_a_thousand_steps(aapp: Nightcrew) -> None:
    p = Pipeline("wide")
    batch = [p.add(Echo(value=i), name=f"b{i}") for i in range(1000)]
    p.add(SyncCollectResults(), name="summary", depends_on=batch)
    pipeline_id = p.enqueue(database=aapp)

    await drain(aapp, concurrency=50)

    summary = steps_by_name(aapp, pipeline_id)["summary"]
    results = summary.info["results"]  # type: ignore[attr-defined]
    assert len(results) == 1000
    assert results["b999"]["value"] == 999
    assert actions.get_pipeline(aapp, pipeline_id).pipeline.status is PS.COMPLETED


async def test_a_failed_step_cancels_its_dependents_but_not_those_that_run_anyway(
    aapp: Nightcrew,
) -> None:
    p = Pipeline("failing")
    bad = p.add(Boom(), name="bad")
    after = p.add(Echo(), name="after", depends_on=[bad])
    p.add(Echo(), name="after-after", depends_on=[after])
    p.add(Echo(value=5), name="cleanup", depends_on=[bad], run_anyway=True)
    pipeline_id = p.enqueue(database=aapp)

    await drain(aapp)

    steps = steps_by_name(aapp, pipeline_id)
    statuses = {name: step.status for name, step in steps.items()}  # type: ignore[attr-defined]
    assert statuses == {
        "bad": S.ERROR,
        "after": S.CANCELLED,
        "after-after": S.CANCELLED,
        "cleanup": S.COMPLETED,
    }
    assert steps["after"].info["cancelled_by_dependency"] == steps["bad"].id  # type: ignore[attr-defined]
    assert actions.get_pipeline(aapp, pipeline_id).pipeline.status is PS.ERROR


async def test_only_non_critical_failures_end_partial_success(aapp: Nightcrew) -> None:
    p = Pipeline("partly")
    p.add(Echo(), name="fine")
    p.add(Boom(), name="optional", critical=False)
    pipeline_id = p.enqueue(database=aapp)

    await drain(aapp)

    pipeline = actions.get_pipeline(aapp, pipeline_id).pipeline
    assert (pipeline.status, pipeline.optional_failed, pipeline.critical_failed) == (
        PS.PARTIAL_SUCCESS,
        1,
        0,
    )


async def test_a_pipeline_is_pending_until_a_step_starts(aapp: Nightcrew) -> None:
    p = Pipeline("waiting")
    p.add(Echo())
    pipeline_id = p.enqueue(database=aapp)
    assert actions.get_pipeline(aapp, pipeline_id).pipeline.status is PS.PENDING


def test_cancelling_a_pipeline_cancels_its_waiting_steps_at_once(app: Nightcrew) -> None:
    p = Pipeline("doomed")
    first = p.add(Echo(), name="first")
    p.add(Echo(), name="second", depends_on=[first])
    pipeline_id = p.enqueue(database=app)

    cancelled = actions.cancel_pipeline(app, pipeline_id, actor="test")

    assert cancelled.status is PS.CANCELLED
    steps = steps_by_name(app, pipeline_id)
    assert {s.status for s in steps.values()} == {S.CANCELLED}  # type: ignore[attr-defined]
    with pytest.raises(InvalidTransition):
        actions.cancel_pipeline(app, pipeline_id)


async def test_a_step_cancelled_by_upkeep_as_stale_cancels_its_dependents_and_ends_the_pipeline(
    app: Nightcrew,
) -> None:
    pipeline_id, first_id = two_steps(app, "forgotten")
    long_ago = utcnow() - timedelta(hours=5)
    force_status(app.store, first_id, S.PENDING, updated_at=long_ago, start_at=long_ago)

    assert await cancel_stale_pending(app.store, 240) == [first_id]

    steps = steps_by_name(app, pipeline_id)
    assert {s.status for s in steps.values()} == {S.CANCELLED}  # type: ignore[attr-defined]
    assert actions.get_pipeline(app, pipeline_id).pipeline.status not in (PS.PENDING, PS.WORKING)


async def test_a_step_the_rescue_gives_up_on_cancels_its_dependents_in_the_same_call(
    app: Nightcrew,
) -> None:
    pipeline_id, first_id = two_steps(app, "poisoned")
    (claimed,) = await claim(app.store)
    assert claimed.id == first_id
    # Its worker vanished for the last time it may: the lease ran out, the rescues are spent.
    force_status(app.store, first_id, S.WORKING, lease_expires_at=utcnow() - timedelta(seconds=1))

    (rescued,) = await app.store.rescue(max_rescues=0, stale_after=3600)

    assert (rescued.id, rescued.status) == (first_id, S.ERROR)
    steps = steps_by_name(app, pipeline_id)
    assert steps["second"].status is S.CANCELLED  # type: ignore[attr-defined]
    assert actions.get_pipeline(app, pipeline_id).pipeline.status is PS.ERROR


async def test_a_finished_pipeline_is_pruned_with_its_last_step(aapp: Nightcrew) -> None:
    def pipeline(name: str) -> int:
        p = Pipeline(name)
        first = p.add(Echo(), name="first")
        p.add(Boom(), name="second", depends_on=[first], critical=False)
        return p.enqueue(database=aapp)

    old, half_kept, recent = pipeline("old"), pipeline("half-kept"), pipeline("recent")
    await drain(aapp)
    month_ago = utcnow() - timedelta(days=40)
    for pipeline_id in (old, half_kept):
        for step in steps_by_name(aapp, pipeline_id).values():
            # COMPLETED is kept 30 days, ERROR 90: only "old" loses its ERROR step too.
            days = 100 if pipeline_id == old else 40
            age = month_ago if step.status is S.COMPLETED else utcnow() - timedelta(days=days)  # type: ignore[attr-defined]
            force_status(aapp.store, step.id, step.status, updated_at=age)  # type: ignore[attr-defined]

    report = await prune_finished(aapp.store, Retention(), pause=0)

    assert report.pipelines == 1
    with pytest.raises(PipelineNotFound):
        actions.get_pipeline(aapp, old)
    assert [s.step_name for s in actions.get_pipeline(aapp, half_kept).steps] == ["second"]
    assert len(actions.get_pipeline(aapp, recent).steps) == 2


def test_independent_steps_are_enqueued_in_the_order_they_were_added(app: Nightcrew) -> None:
    p = Pipeline("ordered")
    batches = [p.add(Echo(), name=f"batch-{i}") for i in range(5)]
    p.add(CollectResults(), name="summary", depends_on=batches)
    pipeline_id = p.enqueue(database=app)

    steps = sorted(actions.get_pipeline(app, pipeline_id).steps, key=lambda s: s.id)
    assert [s.step_name for s in steps] == [*(f"batch-{i}" for i in range(5)), "summary"]


async def test_retrying_a_step_cancelled_for_its_dependency_runs_it_anyway(
    aapp: Nightcrew,
) -> None:
    p = Pipeline("second chance")
    flaky = p.add(Boom(), name="flaky")
    p.add(Echo(value=3), name="next", depends_on=[flaky])
    pipeline_id = p.enqueue(database=aapp)
    await drain(aapp)
    assert actions.get_pipeline(aapp, pipeline_id).pipeline.status is PS.ERROR

    retried = actions.retry_step(aapp, pipeline_id, "next", actor="test")

    assert (retried.status, retried.waiting_on) == (S.PENDING, 0)
    await drain(aapp)
    steps = steps_by_name(aapp, pipeline_id)
    assert steps["next"].status is S.COMPLETED  # type: ignore[attr-defined]
    pipeline = actions.get_pipeline(aapp, pipeline_id).pipeline
    assert (pipeline.status, pipeline.steps_open) == (PS.ERROR, 0)  # flaky still failed


async def test_retrying_the_failed_dependency_runs_the_cancelled_steps_again(
    aapp: Nightcrew, settings: object
) -> None:
    p = Pipeline("retry root")
    flaky = p.add(Boom(), name="flaky")
    p.add(Echo(value=3), name="next", depends_on=[flaky])
    pipeline_id = p.enqueue(database=aapp)
    await drain(aapp)

    actions.retry_step(aapp, pipeline_id, "flaky", actor="test")

    pipeline = actions.get_pipeline(aapp, pipeline_id)
    assert pipeline.pipeline.status is PS.WORKING
    steps = {s.step_name: s for s in pipeline.steps}
    assert (steps["flaky"].status, steps["next"].status) == (S.PENDING, S.PENDING)
    assert steps["next"].waiting_on == 1
    await drain(aapp)
    steps = steps_by_name(aapp, pipeline_id)
    assert steps["flaky"].status is S.ERROR  # type: ignore[attr-defined]  # Boom still booms
    assert steps["next"].status is S.CANCELLED  # type: ignore[attr-defined]
    assert actions.get_pipeline(aapp, pipeline_id).pipeline.status is PS.ERROR


async def test_a_staged_step_waits_for_activation_after_its_dependencies(
    aapp: Nightcrew,
) -> None:
    p = Pipeline("staged")
    first = p.add(Echo(), name="first")
    p.add(Echo(), name="gate", depends_on=[first], inactive=True)
    pipeline_id = p.enqueue(database=aapp)
    await drain(aapp)
    gate = steps_by_name(aapp, pipeline_id)["gate"]
    assert (gate.status, gate.waiting_on) == (S.INACTIVE, 0)  # type: ignore[attr-defined]
    actions.activate(aapp, gate.id)  # type: ignore[attr-defined]
    await drain(aapp)
    assert actions.get_pipeline(aapp, pipeline_id).pipeline.status is PS.COMPLETED


def test_a_pipeline_with_an_open_unique_key_is_returned_instead_of_a_new_one(
    app: Nightcrew,
) -> None:
    def build() -> Pipeline:
        p = Pipeline("nightly", unique_key="nightly-2026-12-01")
        p.add(Echo())
        return p

    first = build().enqueue(database=app)
    assert build().enqueue(database=app) == first
    actions.cancel_pipeline(app, first)
    assert build().enqueue(database=app) != first


def test_a_cycle_is_refused_before_anything_is_written(app: Nightcrew) -> None:
    p = Pipeline("loop")
    p.add(Echo(), name="a", depends_on=["b"])
    p.add(Echo(), name="b", depends_on=["a"])
    with pytest.raises(PipelineError, match="cycle"):
        p.enqueue(database=app)
    assert actions.list_pipelines(app)[0] == []


def test_an_unknown_dependency_is_refused(app: Nightcrew) -> None:
    p = Pipeline("typo")
    p.add(Echo(), name="a", depends_on=["nope"])
    with pytest.raises(PipelineError, match="'nope'"):
        p.enqueue(database=app)


def test_a_duplicate_step_name_is_refused() -> None:
    p = Pipeline("dupes")
    p.add(Echo(), name="a")
    with pytest.raises(PipelineError, match="already has a step named 'a'"):
        p.add(Echo(), name="a")


def test_steps_get_unique_default_names() -> None:
    p = Pipeline("names")
    names = [p.add(Echo()).name for _ in range(3)]
    assert names == ["Echo-1", "Echo-2", "Echo-3"]


def test_a_pipeline_is_written_in_the_callers_transaction(app: Nightcrew) -> None:
    from sqlalchemy.orm import Session

    p = Pipeline("in a transaction")
    p.add(Echo())
    with Session(app.database.sync_engine) as session:
        p.enqueue(session=session, database=app)
        session.rollback()
    assert actions.list_pipelines(app)[0] == []


async def test_aenqueue_writes_the_pipeline_from_async_code(aapp: Nightcrew) -> None:
    p = Pipeline("async")
    first = p.add(Echo(value=1), name="first")
    p.add(Echo(value=2), name="second", depends_on=[first])
    pipeline_id = await p.aenqueue(database=aapp)
    detail = actions.get_pipeline(aapp, pipeline_id)
    assert [s.step_name for s in detail.steps] == ["first", "second"]
    assert [s.waiting_on for s in detail.steps] == [0, 1]
