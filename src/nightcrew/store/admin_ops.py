"""The admin API's store operations: statistics, bulk actions, tokens and the audit log.

Plans like those of `nightcrew.store.ops` (run with ``store.run(admin_ops.stats)``), each
returning typed values from `nightcrew.values`. `audited` wraps any operation so that its
audit row is written in the operation's own transaction: the row exists exactly when the
change does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from nightcrew.errors import InvalidTransition, TaskNotFound, TokenNameTaken, TokenNotFound
from nightcrew.models import MaintenanceTaskStatus
from nightcrew.store import admin_statements as ast
from nightcrew.store import ops
from nightcrew.store.plans import Plan, Tx, one_statement, reads
from nightcrew.values import (
    AuditFilter,
    AuditPage,
    AuditRecord,
    BulkResult,
    MinuteCount,
    Role,
    TaskFilter,
    TaskStats,
    TokenView,
)

S = MaintenanceTaskStatus
R = TypeVar("R")
P = ParamSpec("P")

#: At most this many tasks change in one bulk action (a client repeats while ``more``).
MAX_BULK = 1000
#: A token's ``last_used_at`` is written at most this often (a write per request would
#: cost more than the request; the column answers "is this token still in use?").
TOUCH_EVERY = timedelta(minutes=1)
#: The statistics' window of finished tasks.
FINISHED_WINDOW = timedelta(hours=1)

CANCELLABLE = (S.INACTIVE, S.PENDING, S.WORKING)
RETRYABLE = (S.ERROR, S.CANCELLED)


# ---------------------------------------------------------------- audit


def record_audit(tx: Tx, record: AuditRecord) -> Plan[AuditRecord]:
    """Append one audit row; returns it with its id and time."""
    result = yield ast.insert_audit_statement(record, tx.now), None
    row = result.one()
    return replace(record, id=int(row.id), at=row.at)


def audited(
    tx: Tx,
    record: AuditRecord,
    op: Callable[Concatenate[Tx, P], Plan[R]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> Plan[R]:
    """Run ``op`` and, in the same transaction, append ``record`` (outcome ok).

    If ``op`` raises, nothing of it is written and neither is the row: the caller records
    the refusal in a transaction of its own.
    """
    result = yield from op(tx, *args, **kwargs)
    yield from record_audit(tx, record)
    return result


def _audit_record(row: Any) -> AuditRecord:
    return AuditRecord(
        id=int(row.id),
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        parameters=row.parameters,
        outcome=row.outcome,
        detail=row.detail,
        client=row.client,
    )


@reads
def list_audit(tx: Tx, audit_filter: AuditFilter) -> Plan[AuditPage]:
    """One page of the audit log, newest first; ``next_before_id`` only if more exist."""
    limit = max(1, min(audit_filter.limit, ops.MAX_PAGE))
    result = yield ast.audit_list_statement(audit_filter, limit=limit + 1), None
    records = [_audit_record(row) for row in result.all()]
    more = len(records) > limit
    records = records[:limit]
    last = records[-1].id if more else None
    return AuditPage(records, last)


# ---------------------------------------------------------------- statistics


def _aware(value: Any) -> datetime:
    """A minute bucket as a datetime: PostgreSQL returns one, SQLite text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


@reads
def stats(tx: Tx) -> Plan[TaskStats]:
    """Counts per status, queue and processor, the oldest due PENDING task's wait, and the
    finishes per minute over the last hour."""
    by_status = dict.fromkeys(S, 0)
    by_queue: dict[str, dict[S, int]] = {}
    by_processor: dict[str, dict[S, int]] = {}
    result = yield ast.task_groups_statement(), None
    for row in result.all():
        cells = tuple(row)
        status, queue, processor, n = S(cells[0]), str(cells[1]), str(cells[2]), int(cells[3])
        by_status[status] += n
        queue_counts = by_queue.setdefault(queue, dict.fromkeys(S, 0))
        queue_counts[status] += n
        processor_counts = by_processor.setdefault(processor, dict.fromkeys(S, 0))
        processor_counts[status] += n
    result = yield ast.oldest_due_pending_statement(tx.now), None
    oldest = result.scalar()
    waited = None if oldest is None else max(0.0, (tx.now - oldest).total_seconds())
    since = tx.now - FINISHED_WINDOW
    result = yield ast.finished_per_minute_statement(tx.dialect, since), None
    minutes: dict[datetime, dict[str, int]] = {}
    for row in result.all():
        cells = tuple(row)
        counts = minutes.setdefault(_aware(cells[0]), {})
        counts[S(cells[1]).value.lower()] = int(cells[2])
    per_minute = [MinuteCount(minute, **counts) for minute, counts in sorted(minutes.items())]
    return TaskStats(tx.now, by_status, by_queue, by_processor, waited, per_minute)


# ---------------------------------------------------------------- bulk actions


def _bulk(
    tx: Tx,
    task_filter: TaskFilter,
    statuses: tuple[S, ...],
    op: Callable[[Tx, int], Plan[Any]],
    *,
    skip_requested: bool,
) -> Plan[BulkResult]:
    limit = max(1, min(task_filter.limit, MAX_BULK))
    bounded = replace(task_filter, limit=limit)
    result = yield (
        ast.bulk_candidates_statement(bounded, statuses, skip_requested=skip_requested),
        None,
    )
    ids = [int(i) for i in result.scalars()]
    more = len(ids) > limit
    changed: list[int] = []
    skipped: list[int] = []
    for task_id in ids[:limit]:
        try:
            # A refused transition raises before it writes anything (its conditional
            # update matched no row), so catching it leaves the transaction clean.
            yield from op(tx, task_id)
        except (InvalidTransition, TaskNotFound):
            skipped.append(task_id)
        else:
            changed.append(task_id)
    return BulkResult(changed, skipped, more)


def bulk_cancel(tx: Tx, task_filter: TaskFilter) -> Plan[BulkResult]:
    """Cancel up to ``task_filter.limit`` (at most `MAX_BULK`) matching open tasks, as
    `ops.cancel` does one (WORKING ones are asked to stop)."""
    return (yield from _bulk(tx, task_filter, CANCELLABLE, ops.cancel, skip_requested=True))


def bulk_retry(tx: Tx, task_filter: TaskFilter) -> Plan[BulkResult]:
    """Retry up to ``task_filter.limit`` (at most `MAX_BULK`) matching ERROR or CANCELLED
    tasks, as `ops.retry` does one."""
    return (yield from _bulk(tx, task_filter, RETRYABLE, ops.retry, skip_requested=False))


# ---------------------------------------------------------------- secrets


def shared_secret(tx: Tx, name: str, candidate: str) -> Plan[str]:
    """The secret stored under ``name``, ``candidate`` becoming it if there is none yet."""
    yield ast.insert_secret_statement(tx.dialect, name, candidate, tx.now), None
    result = yield ast.secret_statement(name), None
    return str(result.scalar_one())


# ---------------------------------------------------------------- tokens


def _token(row: Any) -> TokenView:
    return TokenView(
        id=int(row.id),
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def create_token(tx: Tx, name: str, role: Role, token_hash: str) -> Plan[TokenView]:
    """Store a new token's hash under ``name``; `TokenNameTaken` if the name is used (by an
    active or a revoked token)."""
    result = yield ast.token_by_name_statement(name), None
    if result.first() is not None:
        raise TokenNameTaken(f"a token named {name!r} exists already (names are never reused)")
    # A concurrent create of the same name loses on the unique index instead.
    result = yield ast.insert_token_statement(name, role.value, token_hash, tx.now), None
    return _token(result.one())


@reads
def list_tokens(tx: Tx, include_revoked: bool = False) -> Plan[list[TokenView]]:
    result = yield ast.tokens_statement(include_revoked=include_revoked), None
    return [_token(row) for row in result.all()]


@reads
def find_token(tx: Tx, token_hash: str) -> Plan[tuple[TokenView, str] | None]:
    """The active token with this hash and the hash as stored (for a constant-time
    comparison by the caller), or None."""
    result = yield ast.active_token_statement(token_hash), None
    row = result.first()
    return None if row is None else (_token(row), str(row.token_hash))


@reads
def has_tokens(tx: Tx) -> Plan[bool]:
    """Whether any active token exists (``nightcrew serve`` refuses a public bind without)."""
    result = yield ast.any_active_token_statement(), None
    return result.first() is not None


@one_statement
def touch_token(tx: Tx, token_id: int) -> Plan[None]:
    yield ast.touch_token_statement(token_id, tx.now), None


def needs_touch(token: TokenView, now: datetime) -> bool:
    """Whether a use of ``token`` at ``now`` should be written (see `TOUCH_EVERY`)."""
    return token.last_used_at is None or now - token.last_used_at >= TOUCH_EVERY


def revoke_token(tx: Tx, name: str) -> Plan[TokenView]:
    """Revoke the active token named ``name`` (its row stays, for the audit log's sake)."""
    result = yield ast.revoke_token_statement(name, tx.now), None
    row = result.first()
    if row is None:
        raise TokenNotFound(f"no active token named {name!r}")
    return _token(row)
