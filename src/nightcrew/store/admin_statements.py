"""The statements of the admin API and its CLI: statistics, bulk selection, tokens, audit.

Kept apart from `nightcrew.store.statements` (the task lifecycle and the worker's hot path):
nothing here runs on a worker, and none of it changes a task's status. Every listing is
keyset-paginated on ``id`` and walks an index: a task listing the primary key or
``ix_maintenance_tasks_status_id``; the audit log its primary key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Table,
    Update,
    func,
    insert,
    literal_column,
    select,
    update,
)

from nightcrew.models import (
    FINAL_STATUSES,
    ApiToken,
    AuditEntry,
    MaintenanceTask,
    MaintenanceTaskStatus,
    SecretRecord,
)
from nightcrew.store import statements as st
from nightcrew.values import AuditFilter, AuditRecord, Dialect, TaskFilter

T = cast(Table, MaintenanceTask.__table__)
TOKENS = cast(Table, ApiToken.__table__)
AUDIT = cast(Table, AuditEntry.__table__)
SECRETS = cast(Table, SecretRecord.__table__)
S = MaintenanceTaskStatus
c = T.c


def _status_in(statuses: list[MaintenanceTaskStatus]) -> ColumnElement[bool]:
    """``status IN ('A', 'B')`` as literals, so a partial or status index is provably usable
    (the same reason as `statements._is`)."""
    return c.status.in_([literal_column(f"'{s.value}'") for s in sorted(statuses)])


# ---------------------------------------------------------------- statistics


def task_groups_statement() -> Select[Any]:
    """How many tasks there are per (status, queue, processor): one scan gives all three
    breakdowns (the groups are few; the caller sums them)."""
    return select(c.status, c.queue, c.processor_type, func.count()).group_by(
        c.status, c.queue, c.processor_type
    )


def oldest_due_pending_statement(now: datetime) -> Select[Any]:
    """The earliest ``start_at`` among PENDING tasks already due: how long the longest
    waiting task has waited (a future start is not waiting)."""
    return select(func.min(c.start_at)).where(_status_in([S.PENDING]), c.start_at <= now)


def finished_per_minute_statement(dialect: Dialect, since: datetime) -> Select[Any]:
    """Tasks that finished since ``since``, counted per minute and final status.

    ``updated_at >= since`` is implied (a finish writes both columns with one value and
    later writes only move ``updated_at`` on); it lets the ``(status, updated_at)`` index
    find the last hour's finished rows instead of a scan of the whole history.
    """
    if dialect == "postgresql":
        minute: Any = func.date_trunc("minute", c.finished_at)
    else:
        minute = func.strftime("%Y-%m-%d %H:%M:00", c.finished_at)
    bucket = minute.label("minute")
    return (
        select(bucket, c.status, func.count())
        .where(
            _status_in(sorted(FINAL_STATUSES)),
            c.updated_at >= since,
            c.finished_at >= since,
        )
        .group_by(bucket, c.status)
    )


# ---------------------------------------------------------------- bulk actions


def bulk_candidates_statement(
    task_filter: TaskFilter, statuses: tuple[MaintenanceTaskStatus, ...], *, skip_requested: bool
) -> Select[Any]:
    """The ids a bulk action would act on, newest first, at most ``task_filter.limit + 1``
    (the extra one says whether more remain).

    ``statuses`` are those the action can change, intersected with the filter's own;
    ``skip_requested`` leaves out WORKING tasks already asked to cancel, so a repeated bulk
    cancel makes progress instead of finding the same rows again.
    """
    wanted = tuple(s for s in statuses if not task_filter.statuses or s in task_filter.statuses)
    narrowed = TaskFilter(
        statuses=wanted,
        processor=task_filter.processor,
        queue=task_filter.queue,
        before_id=task_filter.before_id,
        schedule_name=task_filter.schedule_name,
        pipeline_id=task_filter.pipeline_id,
        created_after=task_filter.created_after,
        created_before=task_filter.created_before,
    )
    stmt = st.list_statement(narrowed, limit=task_filter.limit + 1).with_only_columns(c.id)
    if skip_requested:
        stmt = stmt.where(c.cancel_requested_at.is_(None))
    return stmt


# ---------------------------------------------------------------- tokens


def insert_token_statement(name: str, role: str, token_hash: str, now: datetime) -> Insert:
    return (
        insert(TOKENS)
        .values(name=name, role=role, token_hash=token_hash, created_at=now)
        .returning(*TOKENS.c)
    )


def token_by_name_statement(name: str) -> Select[Any]:
    return select(TOKENS).where(TOKENS.c.name == name)


def active_token_statement(token_hash: str) -> Select[Any]:
    """The token with this hash, if not revoked (the unique index on the hash finds it)."""
    return select(TOKENS).where(TOKENS.c.token_hash == token_hash, TOKENS.c.revoked_at.is_(None))


def tokens_statement(*, include_revoked: bool) -> Select[Any]:
    stmt = select(TOKENS).order_by(TOKENS.c.name)
    if not include_revoked:
        stmt = stmt.where(TOKENS.c.revoked_at.is_(None))
    return stmt


def any_active_token_statement() -> Select[Any]:
    return select(TOKENS.c.id).where(TOKENS.c.revoked_at.is_(None)).limit(1)


def touch_token_statement(token_id: int, now: datetime) -> Update:
    return update(TOKENS).where(TOKENS.c.id == token_id).values(last_used_at=now)


def revoke_token_statement(name: str, now: datetime) -> Update:
    return (
        update(TOKENS)
        .where(TOKENS.c.name == name, TOKENS.c.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(*TOKENS.c)
    )


# ---------------------------------------------------------------- secrets


def insert_secret_statement(dialect: Dialect, name: str, value: str, now: datetime) -> Insert:
    """Store ``value`` under ``name`` unless a secret of that name exists (the first writer
    wins; a concurrent one's insert does nothing, and both then read the winner's)."""
    from sqlalchemy.dialects import postgresql, sqlite

    maker = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        maker(SECRETS)
        .values(name=name, value=value, created_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )


def secret_statement(name: str) -> Select[Any]:
    return select(SECRETS.c.value).where(SECRETS.c.name == name)


# ---------------------------------------------------------------- audit log


def insert_audit_statement(record: AuditRecord, now: datetime) -> Insert:
    """Append one audit row (the log is never updated or deleted from by nightcrew)."""
    return (
        insert(AUDIT)
        .values(
            at=record.at or now,
            actor=record.actor,
            action=record.action,
            target=record.target,
            parameters=record.parameters,
            outcome=record.outcome,
            detail=record.detail,
            client=record.client,
        )
        .returning(AUDIT.c.id, AUDIT.c.at)
    )


def audit_list_statement(audit_filter: AuditFilter, *, limit: int) -> Select[Any]:
    """Newest first, keyset on id (the primary key walks it)."""
    f = audit_filter
    a = AUDIT.c
    stmt = select(AUDIT).order_by(a.id.desc()).limit(limit)
    if f.actor is not None:
        stmt = stmt.where(a.actor == f.actor)
    if f.action is not None:
        stmt = stmt.where(a.action == f.action)
    if f.outcome is not None:
        stmt = stmt.where(a.outcome == f.outcome)
    if f.target is not None:
        stmt = stmt.where(a.target == f.target)
    if f.after is not None:
        stmt = stmt.where(a.at >= f.after)
    if f.before is not None:
        stmt = stmt.where(a.at < f.before)
    if f.before_id is not None:
        stmt = stmt.where(a.id < f.before_id)
    return stmt
