"""The SQL of nightcrew's own upkeep: pruning finished tasks and old audit rows,
cancelling stale PENDING ones.

All work in bounded batches, each one statement: the tasks are picked through
``ix_maintenance_tasks_status_updated`` (status, then age), at most ``:limit`` of them, and
on PostgreSQL locked ``SKIP LOCKED`` so a batch never waits for a row another transaction
holds. A batch touches only the rows it picked, so it holds locks for milliseconds, and a
prune of a million rows runs as a thousand such statements with pauses between them.
"""

from __future__ import annotations

import functools
from typing import cast

from sqlalchemy import Integer, String, Table, TextClause, bindparam, text

from nightcrew.models import OPEN_STATUSES, MaintenanceTask, MaintenanceTaskStatus, UTCDateTime
from nightcrew.values import Dialect

TASKS = cast(Table, MaintenanceTask.__table__).name
DEPENDENCIES = "nightcrew_task_dependencies"
PIPELINES = "nightcrew_pipelines"
AUDIT = "nightcrew_audit_log"
#: A pipeline in one of these statuses is over; once its last step is pruned, so is it.
_PIPELINE_FINAL = "'COMPLETED', 'PARTIAL_SUCCESS', 'ERROR', 'CANCELLED'"
BY_AGE = "ix_maintenance_tasks_status_updated"
_OPEN = ", ".join(f"'{s.value}'" for s in sorted(OPEN_STATUSES))
#: The statuses a prune may delete (final ones only, ever).
PRUNABLE = (
    MaintenanceTaskStatus.COMPLETED,
    MaintenanceTaskStatus.ERROR,
    MaintenanceTaskStatus.CANCELLED,
)


def _pick(dialect: Dialect, where: str) -> str:
    """The ids of one batch, oldest first, through the (status, updated_at) index."""
    hint = f" INDEXED BY {BY_AGE}" if dialect == "sqlite" else ""
    lock = " FOR UPDATE OF t SKIP LOCKED" if dialect == "postgresql" else ""
    return (
        f"SELECT t.id FROM {TASKS} AS t{hint} WHERE {where} "
        f"ORDER BY t.updated_at LIMIT :limit{lock}"
    )


def _ids_in(dialect: Dialect, pick: str) -> str:
    # PostgreSQL: the picked ids as one array, each row then found by primary key.
    return f"id = ANY(ARRAY({pick}))" if dialect == "postgresql" else f"id IN ({pick})"


@functools.cache
def prune_statement(dialect: Dialect, status: MaintenanceTaskStatus) -> TextClause:
    """Delete up to ``:limit`` tasks of ``status`` whose ``updated_at`` is before
    ``:cutoff``; the statement's row count is the number deleted.

    A finished task that an open task still depends on (a pipeline step whose dependent
    has not run yet, and may read its ``info``) is kept until that one is done.
    """
    if status not in PRUNABLE:
        raise ValueError(f"only finished tasks are pruned, not {status}")
    where = (
        f"t.status = '{status.value}' AND t.updated_at < :cutoff AND NOT EXISTS ("
        f"SELECT 1 FROM {DEPENDENCIES} AS d JOIN {TASKS} AS o ON o.id = d.task_id "
        f"WHERE d.depends_on = t.id AND o.status IN ({_OPEN}))"
    )
    sql = f"DELETE FROM {TASKS} WHERE {_ids_in(dialect, _pick(dialect, where))}"
    return text(sql).bindparams(
        bindparam("cutoff", type_=UTCDateTime), bindparam("limit", type_=Integer)
    )


@functools.cache
def prune_pipelines_statement(dialect: Dialect) -> TextClause:
    """Delete up to ``:limit`` finished pipelines none of whose steps is left (each step
    is a task, pruned by its own status's retention; the pipeline goes with the last)."""
    lock = " FOR UPDATE OF p SKIP LOCKED" if dialect == "postgresql" else ""
    pick = (
        f"SELECT p.id FROM {PIPELINES} AS p WHERE p.status IN ({_PIPELINE_FINAL}) "
        f"AND NOT EXISTS (SELECT 1 FROM {TASKS} AS t WHERE t.pipeline_id = p.id) "
        f"ORDER BY p.updated_at LIMIT :limit{lock}"
    )
    sql = f"DELETE FROM {PIPELINES} WHERE {_ids_in(dialect, pick)}"
    return text(sql).bindparams(bindparam("limit", type_=Integer))


@functools.cache
def prune_audit_statement(dialect: Dialect) -> TextClause:
    """Delete up to ``:limit`` audit rows written before ``:cutoff``, oldest first
    (through ``ix_nightcrew_audit_log_at``)."""
    lock = " FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    pick = f"SELECT id FROM {AUDIT} WHERE at < :cutoff ORDER BY at LIMIT :limit{lock}"
    sql = f"DELETE FROM {AUDIT} WHERE {_ids_in(dialect, pick)}"
    return text(sql).bindparams(
        bindparam("cutoff", type_=UTCDateTime), bindparam("limit", type_=Integer)
    )


@functools.cache
def count_prunable_statement(dialect: Dialect, status: MaintenanceTaskStatus) -> TextClause:
    """How many tasks of ``status`` are older than ``:cutoff`` (an index range count)."""
    hint = f" INDEXED BY {BY_AGE}" if dialect == "sqlite" else ""
    sql = (
        f"SELECT count(*) FROM {TASKS}{hint} "
        f"WHERE status = '{status.value}' AND updated_at < :cutoff"
    )
    return text(sql).bindparams(bindparam("cutoff", type_=UTCDateTime))


STALE_REASON = "cancelled by upkeep: PENDING and due for more than {minutes:g} minutes"


@functools.cache
def cancel_stale_statement(dialect: Dialect) -> TextClause:
    """Cancel up to ``:limit`` PENDING tasks unchanged and due since before ``:cutoff``
    (none waiting on a dependency); returns ``id, queue, processor_type, pipeline_id,
    critical`` (a cancelled pipeline step moves its dependents and pipeline with it).

    A PENDING row's ``updated_at`` is when it was enqueued, retried or activated, never
    later than it became due but for a ``start_at`` set in the past, so the index's
    (status, updated_at) range finds the candidates and ``start_at`` confirms them.
    """
    where = (
        "t.status = 'PENDING' AND t.updated_at < :cutoff AND t.start_at < :cutoff "
        "AND t.waiting_on = 0"
    )
    if dialect == "postgresql":
        info = "jsonb_build_object('cancelled', true, 'error', CAST(:reason AS text))"
    else:
        info = "json_object('cancelled', json('true'), 'error', :reason)"
    sql = (
        f"UPDATE {TASKS} SET status = 'CANCELLED', finished_at = :now, updated_at = :now, "
        f"cancel_requested_at = :now, info = {info} "
        f"WHERE {_ids_in(dialect, _pick(dialect, where))} AND status = 'PENDING' "
        "RETURNING id, queue, processor_type, pipeline_id, critical"
    )
    return text(sql).bindparams(
        bindparam("cutoff", type_=UTCDateTime),
        bindparam("now", type_=UTCDateTime),
        bindparam("limit", type_=Integer),
        bindparam("reason", type_=String),
    )
