"""Every SQL statement about pipelines: the pipeline rows, the dependency edges, and how
finished steps move their dependents and their pipeline.

A step's ``waiting_on`` counts its unfinished dependencies; the claim only takes rows where
it is 0 (the partial claimable indexes say so), so dependencies cost the claim nothing.
When steps finish, their dependents' counters go down by how many of their dependencies
just finished, dependents of failed steps are cancelled (unless they run anyway), and each
pipeline's counters move — all in the transaction that finished the steps, never in a sweep
(`nightcrew.store.pipeline_ops.settle`).
"""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Insert,
    Integer,
    Select,
    Table,
    Update,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql as pg

from nightcrew.models import (
    MaintenanceTask,
    MaintenanceTaskStatus,
    Pipeline,
    PipelineStatus,
    TaskDependency,
    UTCDateTime,
)
from nightcrew.store.statements import in_list, json_rows
from nightcrew.values import Dialect

T = cast(Table, MaintenanceTask.__table__)
P = cast(Table, Pipeline.__table__)
D = cast(Table, TaskDependency.__table__)
c, p, d = T.c, P.c, D.c
S = MaintenanceTaskStatus
PS = PipelineStatus


def _word(word: str) -> Any:
    """One of our own fixed words inline (a status): never user data."""
    return literal_column(f"'{word}'")


def _not_started() -> Any:
    """Steps a dependency can still move: a dependent is never WORKING before them."""
    return c.status.in_([_word(S.PENDING.value), _word(S.INACTIVE.value)])


def _open_pipeline() -> Any:
    return p.status.in_([_word(PS.PENDING.value), _word(PS.WORKING.value)])


# ---------------------------------------------------------------- creating


def insert_pipeline(values: dict[str, Any]) -> Insert:
    return insert(P).values(**values).returning(p.id)


def open_pipeline_by_key(key: str) -> Select[Any]:
    return select(p.id).where(p.unique_key == key, _open_pipeline())


_EDGE: tuple[tuple[str, Any], ...] = (("depends_on", BigInteger), ("task_id", BigInteger))


@functools.cache
def insert_edges(dialect: Dialect) -> Insert:
    """Dependency edges from one JSON array of ``{depends_on, task_id}``."""
    v = json_rows(dialect, "edge", _EDGE)
    return insert(D).from_select(["depends_on", "task_id"], select(v.c.depends_on, v.c.task_id))


# ---------------------------------------------------------------- reading


def get_pipeline(pipeline_id: int) -> Select[Any]:
    return select(P).where(p.id == pipeline_id)


def list_pipelines(statuses: list[str], before_id: int | None, limit: int) -> Select[Any]:
    stmt = select(P).order_by(p.id.desc()).limit(limit)
    if statuses:
        stmt = stmt.where(p.status.in_(statuses))
    if before_id is not None:
        stmt = stmt.where(p.id < before_id)
    return stmt


def steps_of(pipeline_id: int) -> Select[Any]:
    return select(T).where(c.pipeline_id == pipeline_id).order_by(c.id)


def edges_of(pipeline_id: int) -> Select[Any]:
    return (
        select(d.depends_on, d.task_id)
        .join(T, c.id == d.task_id)
        .where(c.pipeline_id == pipeline_id)
    )


def dependency_results(task_id: int) -> Select[Any]:
    """The step names and results of one task's dependencies."""
    return (
        select(c.id, c.step_name, c.status, c.info)
        .join(D, d.depends_on == c.id)
        .where(d.task_id == task_id)
        .order_by(c.id)
    )


# ---------------------------------------------------------------- steps finishing


def mark_working(pipeline_ids: list[int], now: Any) -> Update:
    """A pipeline whose first step was claimed is WORKING."""
    return (
        update(P)
        .where(p.id.in_(pipeline_ids), p.status == _word(PS.PENDING.value))
        .values(status=PS.WORKING.value, updated_at=now)
    )


def waiting_dependents(task_ids: list[int]) -> Select[Any]:
    """The not-yet-started dependents of these steps, one row per edge."""
    return (
        select(d.task_id, d.depends_on, c.run_anyway)
        .join(T, c.id == d.task_id)
        .where(d.depends_on.in_(task_ids), _not_started())
    )


@functools.cache
def release_dependents(dialect: Dialect) -> Update:
    """Count finished dependencies (``done``: their ids, as `statements.in_list` binds a
    list) off their not-yet-started dependents, in one statement: the path when none of
    the finished steps failed."""
    counts = (
        select(d.task_id.label("task_id"), func.count().label("n"))
        .where(in_list(d.depends_on, "done", dialect, BigInteger))
        .group_by(d.task_id)
        .subquery("finished")
    )
    return (
        update(T)
        .where(c.id == counts.c.task_id, _not_started())
        .values(
            waiting_on=c.waiting_on - counts.c.n, updated_at=bindparam("now", type_=UTCDateTime)
        )
        .returning(c.id, c.waiting_on, c.status, c.queue)
    )


_CANCEL: tuple[tuple[str, Any], ...] = (("id", BigInteger), ("info", pg.JSONB))
_RELEASE: tuple[tuple[str, Any], ...] = (("id", BigInteger), ("n", Integer))


@functools.cache
def cancel_steps(dialect: Dialect) -> Update:
    """Cancel not-yet-started steps (``steps``: JSON ``[{id, info}]``), returning them."""
    v = json_rows(dialect, "steps", _CANCEL)
    now = bindparam("now", type_=UTCDateTime)
    return (
        update(T)
        .where(c.id == v.c.id, _not_started())
        .values(
            status=S.CANCELLED.value,
            info=v.c.info,
            finished_at=now,
            cancel_requested_at=now,
            updated_at=now,
        )
        .returning(c.id, c.pipeline_id, c.critical)
    )


@functools.cache
def release_steps(dialect: Dialect) -> Update:
    """Count finished dependencies off (``steps``: JSON ``[{id, n}]``).

    Returns each step's new ``waiting_on`` and queue: a PENDING step at 0 is claimable now.
    """
    v = json_rows(dialect, "steps", _RELEASE)
    return (
        update(T)
        .where(c.id == v.c.id, _not_started())
        .values(waiting_on=c.waiting_on - v.c.n, updated_at=bindparam("now", type_=UTCDateTime))
        .returning(c.id, c.waiting_on, c.status, c.queue)
    )


_SETTLE: tuple[tuple[str, Any], ...] = (
    ("id", BigInteger),
    ("closed", Integer),
    ("critical_failed", Integer),
    ("optional_failed", Integer),
    ("cancelled", Integer),
)


@functools.cache
def settle_pipelines(dialect: Dialect) -> Update:
    """Move pipelines' counters by what their steps just did (``pipelines``: JSON rows of
    `_SETTLE`), and their status with them.

    A pipeline is WORKING while a step is open; once none is: ERROR if a critical step
    failed (ended ERROR or CANCELLED), PARTIAL_SUCCESS if only non-critical ones did,
    COMPLETED otherwise. A final status (an operator's CANCELLED) stays.
    """
    v = json_rows(dialect, "pipelines", _SETTLE)
    now = bindparam("now", type_=UTCDateTime)
    final = p.status.in_([_word(s.value) for s in PS if s not in (PS.PENDING, PS.WORKING)])
    left = p.steps_open - v.c.closed
    ended = case(
        (p.critical_failed + v.c.critical_failed > 0, _word(PS.ERROR.value)),
        (p.optional_failed + v.c.optional_failed > 0, _word(PS.PARTIAL_SUCCESS.value)),
        else_=_word(PS.COMPLETED.value),
    )
    return (
        update(P)
        .where(p.id == v.c.id)
        .values(
            steps_open=left,
            critical_failed=p.critical_failed + v.c.critical_failed,
            optional_failed=p.optional_failed + v.c.optional_failed,
            cancelled=p.cancelled + v.c.cancelled,
            status=case((final, p.status), (left <= 0, ended), else_=_word(PS.WORKING.value)),
            finished_at=case((final, p.finished_at), (left <= 0, now), else_=None),
            updated_at=now,
        )
        .returning(p.id, p.status)
    )


# ---------------------------------------------------------------- operators


def cancel_pipeline(pipeline_id: int, now: Any) -> Update:
    return (
        update(P)
        .where(p.id == pipeline_id, _open_pipeline())
        .values(status=PS.CANCELLED.value, finished_at=now, updated_at=now)
        .returning(p.id)
    )


def open_steps(pipeline_id: int) -> Select[Any]:
    return select(c.id, c.status).where(
        c.pipeline_id == pipeline_id,
        c.status.in_([_word(S.INACTIVE.value), _word(S.PENDING.value), _word(S.WORKING.value)]),
    )


def step_by_name(pipeline_id: int, name: str) -> Select[Any]:
    return select(c.id).where(c.pipeline_id == pipeline_id, c.step_name == name)


def cancelled_dependents(task_ids: list[int]) -> Select[Any]:
    """Dependents that were cancelled because a dependency failed (re-armed by a retry)."""
    return (
        select(d.task_id)
        .join(T, c.id == d.task_id)
        .where(d.depends_on.in_(task_ids), c.status == _word(S.CANCELLED.value))
    )


def dependency_states(task_ids: list[int]) -> Select[Any]:
    """For each task, the status of each of its dependencies."""
    dep = T.alias("dep")
    return (
        select(d.task_id, dep.c.status)
        .join(dep, dep.c.id == d.depends_on)
        .where(d.task_id.in_(task_ids))
    )


def rearm_step(task_id: int, waiting_on: int, now: Any) -> Update:
    """A step cancelled for a failed dependency that an operator retried: back to
    PENDING, waiting for its open dependencies again."""
    return (
        update(T)
        .where(c.id == task_id, c.status == _word(S.CANCELLED.value))
        .values(
            status=S.PENDING.value,
            waiting_on=waiting_on,
            attempts=0,
            rescues=0,
            start_at=now,
            finished_at=None,
            cancel_requested_at=None,
            info=None,
            error=None,
            updated_at=now,
        )
        .returning(c.id, c.critical)
    )


def set_waiting(task_id: int, waiting_on: int, now: Any) -> Update:
    return update(T).where(c.id == task_id).values(waiting_on=waiting_on, updated_at=now)


def reopen_pipeline(
    pipeline_id: int, reopened: int, critical: int, optional: int, cancelled: int, now: Any
) -> Update:
    """Steps came back (an operator's retry): the pipeline is WORKING again, the failures
    those steps had counted undone."""

    def less(column: Any, n: int) -> Any:
        return case((column - n < 0, 0), else_=column - n)

    return (
        update(P)
        .where(p.id == pipeline_id)
        .values(
            status=PS.WORKING.value,
            steps_open=p.steps_open + reopened,
            critical_failed=less(p.critical_failed, critical),
            optional_failed=less(p.optional_failed, optional),
            cancelled=less(p.cancelled, cancelled),
            finished_at=None,
            updated_at=now,
        )
    )
