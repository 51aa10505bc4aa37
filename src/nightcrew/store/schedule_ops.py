"""The store's operations on schedules, each a plan returning typed values.

Run one with ``store.run(schedule_ops.pause, "nightly")`` or ``await store.arun(...)``; each
runs in one transaction. The ticker's `tick` is the one that matters for correctness:

- it claims due schedules (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's whole tick is
  one ``BEGIN IMMEDIATE`` transaction), works out each one's ticks (`plan_ticks`: misfire,
  coalesce) and ``max_instances``, inserts the tasks and advances the schedules, all in
  that one transaction, with a bounded number of statements per batch whatever its size;
- a tick's task carries ``schedule_name`` and ``scheduled_for`` (the tick, unjittered), and
  the unique index on the pair refuses a second task for a tick (``ON CONFLICT DO
  NOTHING``), even after a restore or a clock step.

Operations that compute a tick take ``now`` (default: the transaction's clock), so tests and
tools can drive a schedule through any day, DST days included.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from nightcrew.errors import ConfigurationError, InvalidTransition, ScheduleExists, ScheduleNotFound
from nightcrew.events import EventKind
from nightcrew.models import MaintenanceTaskStatus, utcnow
from nightcrew.schedules.triggers import (
    DateTrigger,
    IntervalTrigger,
    TickPlan,
    Trigger,
    apply_jitter,
    format_duration,
    plan_ticks,
)
from nightcrew.schedules.values import (
    RESERVED_PREFIX,
    ScheduleChange,
    ScheduleDefinition,
    ScheduleView,
    SyncReport,
    TickReport,
    trigger_columns,
    trigger_from_columns,
)
from nightcrew.store import bulk, ops
from nightcrew.store import schedule_statements as sst
from nightcrew.store import statements as st
from nightcrew.store.plans import Plan, Tx, one_statement, reads
from nightcrew.values import Dialect, TaskView

S = MaintenanceTaskStatus

#: Schedules one ticker pass claims (PostgreSQL: 10,000 due at once take 20 passes,
#: spread over the workers; SQLite holds its write lock for one pass, so it takes fewer).
TICK_BATCH = {"postgresql": 500, "sqlite": 200}
#: The most schedules one listing returns.
MAX_LIST = 10_000


def next_tick(trigger: Trigger, after: datetime, anchor: datetime | None = None) -> datetime | None:
    """The first tick strictly after ``after`` (an interval counts from ``anchor``, if any)."""
    if isinstance(trigger, IntervalTrigger):
        return trigger.next_fire(after, anchor=anchor)
    return trigger.next_fire(after)


def _restart_tick(
    trigger: Trigger, now: datetime, last: datetime | None, anchor: datetime | None
) -> datetime | None:
    """Where a schedule goes on after a change of trigger, a resume or a re-declaration:
    the first tick strictly after ``max(now, last tick)``, so a tick that already ran
    never runs again (pgqueuer's issue #343) and none is caught up for the time it was
    paused. An interval keeps its grid (``anchor``: a tick of it) when it has one."""
    after = now if last is None or last < now else last
    return next_tick(trigger, after, anchor)


def _view(row: Any) -> ScheduleView:
    return ScheduleView.from_mapping(row._mapping)


def _stored(dialect: Dialect, value: Any, memo: dict[datetime, Any] | None = None) -> Any:
    """A value as the JSON rows carry it. Timestamps are memoized per batch (``memo``):
    the ticks of many schedules due at once, and their ``created_at``, are the same few."""
    if isinstance(value, datetime):
        if memo is None:
            return st.stored_timestamp(dialect, value)
        text = memo.get(value)
        if text is None:
            text = memo[value] = st.stored_timestamp(dialect, value)
        return text
    if isinstance(value, S):
        return value.value
    return value


def _plan(
    trigger: Trigger, due: datetime, now: datetime, grace: float | None, coalesce: bool
) -> TickPlan:
    """`plan_ticks`, with the common case first: one tick due, on time, and the next one
    still ahead (a pass that finds a schedule just due). Same answer, a fraction of the
    cost, which matters when 10,000 schedules fall due in the same second."""
    if due <= now and (grace is None or due >= now - timedelta(seconds=grace)):
        following = next_tick(trigger, due, due)
        if following is None or following > now:
            return TickPlan((due,), (), following)
    return plan_ticks(trigger, due, now, misfire_grace_time=grace, coalesce=coalesce)


def _task_base(stamp: datetime) -> dict[str, Any]:
    """The columns every task of one pass shares (`schedule_statements.TICK_ROW_COLUMNS`
    are the others): bound once by the insert."""
    return {
        **bulk.OPTIONAL,
        "status": S.PENDING,
        "delay": 0,
        "attempts": 0,
        "waiting_on": 0,
        "created_at": stamp,
        "updated_at": stamp,
    }


def _task_row(
    base: dict[str, Any], schedule: Any, tick: datetime, start_at: datetime
) -> dict[str, Any]:
    """The task one tick of ``schedule`` (a claimed row or a view) enqueues."""
    return {
        **base,
        "processor_type": schedule.processor_type,
        "processor_json": schedule.processor_json,
        "queue": schedule.queue or "default",
        "priority": schedule.priority or 0,
        "start_at": start_at,
        "max_attempts": schedule.max_attempts or 1,
        "timeout": schedule.timeout,
        "schedule_name": schedule.name,
        "scheduled_for": tick,
    }


def _insert_tasks(tx: Tx, rows: Sequence[dict[str, Any]]) -> Plan[dict[tuple[str, datetime], int]]:
    """Insert tick tasks in one statement; the new ids by (schedule, tick). A tick that
    already had a task is missing from the answer. Wakes the workers of their queues."""
    memo: dict[datetime, Any] = {}
    first = rows[0]  # `_task_row` gives every task of a pass the same constant columns
    params = {
        f"k_{name}": _stored(tx.dialect, first[name], memo) for name in sst.tick_constant_columns()
    }
    per_row = sst.TICK_ROW_COLUMNS
    data = [[_stored(tx.dialect, row[name], memo) for name in per_row] for row in rows]
    params["rows"] = json.dumps(data)
    result = yield sst.insert_ticks_statement(tx.dialect), params
    inserted = {(r.schedule_name, r.scheduled_for): int(r.id) for r in result.all()}
    if tx.dialect == "postgresql" and inserted:
        due: dict[str, datetime] = {}
        for row in rows:
            if (row["schedule_name"], row["scheduled_for"]) in inserted:
                queue, start_at = row["queue"], row["start_at"]
                if queue not in due or start_at < due[queue]:
                    due[queue] = start_at
        for queue, start_at in sorted(due.items()):
            yield st.notify_task_statement(queue, start_at), None
    for row in rows:
        task_id = inserted.get((row["schedule_name"], row["scheduled_for"]))
        if task_id is not None:
            tx.emit(
                EventKind.CREATED,
                task_id,
                status=S.PENDING,
                queue=row["queue"],
                processor=row["processor_type"],
                detail={
                    "schedule": row["schedule_name"],
                    "scheduled_for": row["scheduled_for"].isoformat(),
                },
            )
    return inserted


def _advance(tx: Tx, updates: Sequence[dict[str, Any]], now: datetime) -> Plan[None]:
    memo: dict[datetime, Any] = {}
    data = [
        {name: _stored(tx.dialect, u.get(name), memo) for name, _ in sst.AFTER_TICK_FIELDS}
        for u in updates
    ]
    yield sst.after_tick_statement(tx.dialect), {"rows": json.dumps(data), "now": now}


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


# ---------------------------------------------------------------- the ticker


@reads
@one_statement
def earliest_due(tx: Tx) -> Plan[datetime | None]:
    """The earliest ``next_run_at`` of the enabled schedules (None: nothing will fire).

    The idle ticker's only query: the first entry of a partial index, one round trip (in
    autocommit on PostgreSQL: no BEGIN and COMMIT around it).
    """
    result = yield sst.earliest_due_statement(tx.dialect), None
    value: datetime | None = result.scalar()
    return value


def tick(
    tx: Tx, *, limit: int | None = None, now: datetime | None = None, seed: int | None = None
) -> Plan[TickReport]:
    """One ticker pass: claim up to ``limit`` due schedules, enqueue their ticks' tasks and
    advance them, in this one transaction (four statements, plus a NOTIFY per queue).

    ``now`` is the tick clock (default: the transaction's); ``seed`` makes jitter
    repeatable. A schedule whose stored trigger no longer makes sense (a time zone gone
    from the system, say) is stopped (``next_run_at`` cleared) with the reason recorded,
    instead of failing every pass of every worker.
    """
    clock = tx.now if now is None else now
    batch = TICK_BATCH[tx.dialect] if limit is None else limit
    result = yield sst.claim_due_statement(tx.dialect), {"now": clock, "limit": batch}
    claimed = result.all()
    if not claimed:
        return TickReport(0, 0, 0, 0, 0, full=False)
    rng: random.Random | None = None  # seeded from the OS only if a row has jitter
    stamp = clock if now is not None else utcnow()
    base = _task_base(stamp)
    tasks: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    misfired = over = 0
    # Rows with the same trigger share one trigger object (a cron's is parsed once).
    triggers: dict[tuple[Any, ...], Trigger] = {}
    for row in claimed:
        update: dict[str, Any] = {"id": row.id, "misfires": 0, "skipped": 0}
        updates.append(update)
        reasons: list[str] = []
        try:
            key = (row.trigger_kind, row.cron, row.timezone, row.every_seconds, row.run_at)
            trigger = triggers.get(key) or triggers.setdefault(key, trigger_from_columns(*key))
            plan = _plan(
                trigger, row.next_run_at, clock, row.misfire_grace_seconds, bool(row.coalesce)
            )
        except (ConfigurationError, ValueError, RuntimeError) as exc:
            update.update(next_run_at=None, skip_at=clock, skip_reason=f"stopped: {exc}")
            continue
        update["next_run_at"] = plan.next_run_at
        if plan.skipped:
            misfired += len(plan.skipped)
            update["misfires"] = len(plan.skipped)
            grace = format_duration(timedelta(seconds=row.misfire_grace_seconds or 0))
            more = " and more" if plan.skipped_truncated else ""
            reasons.append(
                f"misfired: {len(plan.skipped)}{more} tick(s) from {_when(plan.skipped[0])} "
                f"to {_when(plan.skipped[-1])} found more than {grace} late"
            )
        open_tasks = int(row.open_tasks)
        skipped: list[datetime] = []
        for when in plan.enqueue:
            if open_tasks >= row.max_instances:
                skipped.append(when)
                continue
            open_tasks += 1
            start_at = when
            if row.jitter_seconds:
                rng = rng or random.Random(seed)
                start_at = apply_jitter(when, row.jitter_seconds, rng)
            tasks.append(_task_row(base, row, when, start_at))
            update["last_run_at"] = when
        if skipped:
            over += len(skipped)
            update["skipped"] = len(skipped)
            reasons.append(
                f"max_instances: {len(skipped)} tick(s) up to {_when(skipped[-1])} skipped "
                f"while {row.max_instances} task(s) of this schedule were open"
            )
        if reasons:
            update.update(skip_at=clock, skip_reason="; ".join(reasons))
    inserted: dict[tuple[str, datetime], int] = {}
    if tasks:
        inserted = yield from _insert_tasks(tx, tasks)
    by_name = {row.name: u for row, u in zip(claimed, updates, strict=True)}
    conflicts = 0
    for task in tasks:
        tick_key: tuple[str, datetime] = (task["schedule_name"], task["scheduled_for"])
        update = by_name[tick_key[0]]
        if tick_key in inserted:
            update["last_task_id"] = inserted[tick_key]
        else:
            conflicts += 1
            note = f"tick {_when(tick_key[1])} already had a task (kept; none added)"
            reason = update.get("skip_reason")
            update.update(skip_at=clock, skip_reason=f"{reason}; {note}" if reason else note)
    yield from _advance(tx, updates, stamp)
    return TickReport(
        claimed=len(claimed),
        enqueued=len(inserted),
        misfired=misfired,
        skipped_instances=over,
        conflicts=conflicts,
        full=len(claimed) >= batch,
    )


# ---------------------------------------------------------------- reading


@reads
def get_schedule(tx: Tx, name: str) -> Plan[ScheduleView]:
    result = yield sst.get_statement(name), None
    row = result.first()
    if row is None:
        raise ScheduleNotFound(f"no schedule named {name!r}")
    return _view(row)


def _locked(tx: Tx, name: str) -> Plan[ScheduleView]:
    result = yield sst.get_statement(name, lock=tx.dialect == "postgresql"), None
    row = result.first()
    if row is None:
        raise ScheduleNotFound(f"no schedule named {name!r}")
    return _view(row)


@reads
def list_schedules(
    tx: Tx,
    *,
    after: str | None = None,
    limit: int = MAX_LIST,
    enabled: bool | None = None,
    source: str | None = None,
) -> Plan[list[ScheduleView]]:
    """Schedules by name, at most ``limit`` (keyset: names after ``after``); ``enabled``
    and ``source`` (``code`` or ``runtime``; None: any) narrow the listing."""
    limit = max(1, min(limit, MAX_LIST))
    stmt = sst.list_statement(after=after, limit=limit, enabled=enabled, source=source)
    result = yield stmt, None
    return [_view(row) for row in result.all()]


# ---------------------------------------------------------------- writing


def _new_row(definition: ScheduleDefinition, now: datetime) -> dict[str, Any]:
    first = next_tick(definition.trigger, now)
    anchored = isinstance(definition.trigger, IntervalTrigger)
    return {
        **definition.columns(),
        "enabled": definition.enabled,
        "source": definition.source,
        "declared_hash": definition.declared_hash() if definition.source == "code" else None,
        "next_run_at": first,
        "anchor_at": first if anchored else None,
        "created_at": now,
        "updated_at": now,
    }


def add_schedules(
    tx: Tx, definitions: Sequence[ScheduleDefinition], *, now: datetime | None = None
) -> Plan[list[str]]:
    """Insert new schedules in one statement; the names that existed already are
    skipped and returned (nothing of theirs changes). Each new schedule's first tick is
    the first one after ``now``."""
    clock = tx.now if now is None else now
    if not definitions:
        return []
    rows = [_new_row(d, clock) for d in definitions]
    result = yield sst.insert_statement(tx.dialect), rows
    created = {row.name for row in result.all()}
    if tx.dialect == "postgresql" and created:
        firsts = [r["next_run_at"] for r in rows if r["name"] in created and r["next_run_at"]]
        yield sst.notify_schedule_statement(min(firsts) if firsts else None), None
    return [d.name for d in definitions if d.name not in created]


def add_schedule(
    tx: Tx, definition: ScheduleDefinition, *, now: datetime | None = None
) -> Plan[ScheduleView]:
    """Insert one schedule; `ScheduleExists` if its name is taken."""
    existing = yield from add_schedules(tx, [definition], now=now)
    if existing:
        raise ScheduleExists(
            f"a schedule named {definition.name!r} exists already (delete it first)"
        )
    return (yield from get_schedule(tx, definition.name))


def pause_schedule(tx: Tx, name: str) -> Plan[ScheduleView]:
    """Stop ticking (``enabled`` false); a paused schedule keeps its next run for display."""
    result = yield sst.set_enabled_statement(name, False, tx.now), None
    if result.first() is None:
        raise ScheduleNotFound(f"no schedule named {name!r}")
    return (yield from get_schedule(tx, name))


def resume_schedule(tx: Tx, name: str, *, now: datetime | None = None) -> Plan[ScheduleView]:
    """Tick again from the first tick after now: ticks of the paused time are not caught
    up. Resuming an active schedule changes nothing."""
    clock = tx.now if now is None else now
    current = yield from _locked(tx, name)
    if current.enabled:
        return current
    anchor = current.next_run_at or current.anchor_at
    nxt = _restart_tick(current.trigger, clock, current.last_run_at, anchor)
    yield sst.set_enabled_statement(name, True, tx.now, nxt), None
    if tx.dialect == "postgresql":
        yield sst.notify_schedule_statement(nxt), None
    return (yield from get_schedule(tx, name))


def run_schedule_now(tx: Tx, name: str, *, now: datetime | None = None) -> Plan[TaskView]:
    """Enqueue the schedule's task now, whatever its state (paused too), with
    ``scheduled_for = now`` (an instant no tick has), without moving ``next_run_at``."""
    clock = tx.now if now is None else now
    current = yield from _locked(tx, name)
    task = _task_row(_task_base(clock), current, clock, clock)
    inserted = yield from _insert_tasks(tx, [task])
    task_id = inserted.get((current.name, clock))
    if task_id is None:
        raise InvalidTransition(f"schedule {name!r} has a task for {clock.isoformat()} already")
    update = {
        "id": current.id,
        "next_run_at": current.next_run_at,
        "last_run_at": clock,
        "last_task_id": task_id,
        "misfires": 0,
        "skipped": 0,
    }
    yield from _advance(tx, [update], tx.now)
    return (yield from ops.get_task(tx, task_id))


def delete_schedule(tx: Tx, name: str) -> Plan[ScheduleView]:
    """Delete a schedule; returns it as it was. Its tasks stay (they keep its name)."""
    current = yield from _locked(tx, name)
    yield sst.delete_statement(name), None
    return current


# ---------------------------------------------------------------- sync from code


def _describe_changes(row: Any, definition: ScheduleDefinition) -> tuple[bool, list[str]]:
    """Whether the trigger changed, and what changed, for the sync's report."""
    new = definition.columns()
    old_trigger = trigger_from_columns(
        row.trigger_kind, row.cron, row.timezone, row.every_seconds, row.run_at
    )
    trigger_changed = trigger_columns(old_trigger) != trigger_columns(definition.trigger)
    changed: list[str] = []
    if trigger_changed:
        changed.append(f"trigger {old_trigger.describe()} -> {definition.trigger.describe()}")
    if (row.processor_type, row.processor_json) != (new["processor_type"], new["processor_json"]):
        changed.append("processor")
    for option in (
        "queue",
        "priority",
        "max_attempts",
        "timeout",
        "misfire_grace_seconds",
        "coalesce",
        "max_instances",
        "jitter_seconds",
    ):
        if getattr(row, option) != new[option]:
            changed.append(option)
    return trigger_changed, changed


def _split_hash(stored: str | None) -> tuple[str | None, bool | None]:
    """(definition part, declared enabled) of a stored ``declared_hash``."""
    if stored is None or ":" not in stored:
        return None, None
    digest, _, flag = stored.rpartition(":")
    return digest, flag == "1"


def sync_schedules(
    tx: Tx,
    definitions: Sequence[ScheduleDefinition],
    *,
    retire_user: bool,
    now: datetime | None = None,
) -> Plan[SyncReport]:
    """Make the code schedules match ``definitions``, by name, in one transaction.

    - a new name is created (first tick after now);
    - a declaration that changed is rewritten; a changed trigger goes on from the first
      tick strictly after ``max(now, last tick)``, so no tick runs twice and the
      unique (schedule, tick) key is never even tried; a changed processor or option
      applies from the next tick;
    - ``enabled`` is applied only when the code's own ``enabled=`` changed (or the row is
      new, adopted or re-declared), so an operator's pause or resume holds otherwise;
    - a code row no longer declared is disabled and kept (``retired``): the upkeep ones
      (``nightcrew.*``) always, the others only with ``retire_user`` (when the app's
      schedules were loaded at all);
    - a runtime row with a declared name is adopted by the code.

    PostgreSQL: an advisory transaction lock makes concurrent syncs (many workers starting
    at once) run one after the other, and the rows are read ``FOR UPDATE``, so a tick in
    flight finishes first and its last tick is seen. SQLite: one ``BEGIN IMMEDIATE``.
    """
    clock = tx.now if now is None else now
    if tx.dialect == "postgresql":
        yield sst.sync_lock_statement(), None
    names = [d.name for d in definitions]
    result = yield sst.for_sync_statement(tx.dialect, names), None
    existing = {row.name: row for row in result.all()}
    inserts: list[ScheduleDefinition] = []
    updates: list[dict[str, Any]] = []
    changes: list[ScheduleChange] = []
    unchanged = 0
    wake: list[datetime] = []
    for d in definitions:
        row = existing.get(d.name)
        declared = d.declared_hash()
        if row is None:
            inserts.append(d)
            continue
        if row.source == "code" and row.declared_hash == declared:
            unchanged += 1
            continue
        old_digest, old_enabled = _split_hash(row.declared_hash)
        new_digest, _ = _split_hash(declared)
        retired = row.source == "code" and row.declared_hash is None
        adopted = row.source != "code"
        trigger_changed, what = _describe_changes(row, d)
        enabled = bool(row.enabled)
        if adopted or retired or old_enabled is None or old_enabled != d.enabled:
            if enabled != d.enabled:
                what.append("enabled" if d.enabled else "paused")
            enabled = d.enabled
        next_run_at, anchor_at = row.next_run_at, row.anchor_at
        if trigger_changed or (enabled and not row.enabled):
            anchor = None if trigger_changed else (row.next_run_at or row.anchor_at)
            next_run_at = _restart_tick(d.trigger, clock, row.last_run_at, anchor)
            anchor_at = next_run_at if isinstance(d.trigger, IntervalTrigger) else None
            if next_run_at is not None:
                what.append(f"next run {_when(next_run_at)}")
                wake.append(next_run_at)
        if old_digest == new_digest and not what:
            what.append("declaration refreshed")
        updates.append(
            {
                "_id": row.id,
                **{k: v for k, v in d.columns().items() if k != "name"},
                "enabled": enabled,
                "source": "code",
                "declared_hash": declared,
                "next_run_at": next_run_at,
                "anchor_at": anchor_at,
                "updated_at": clock,
            }
        )
        if retired:
            what.insert(0, "declared again")
        detail = ", ".join(what)
        changes.append(
            ScheduleChange(d.name, "adopted", detail)
            if adopted
            else ScheduleChange(d.name, "updated", detail)
        )
    declared_names = set(names)
    retire: list[Any] = [
        row
        for row in existing.values()
        if row.source == "code"
        and row.name not in declared_names
        and row.declared_hash is not None
        and (row.name.startswith(RESERVED_PREFIX) or retire_user)
    ]
    if inserts:
        yield from add_schedules(tx, inserts, now=clock)
        for d in inserts:
            first = next_tick(d.trigger, clock)
            note = f"first run {_when(first)}" if first else "no run ahead"
            if not d.enabled:
                note += ", paused"
            changes.append(ScheduleChange(d.name, "created", note))
    if updates:
        yield sst.sync_update_statement(), updates
    if retire:
        yield sst.retire_statement([row.id for row in retire], clock), None
        for row in retire:
            changes.append(ScheduleChange(row.name, "retired", "no longer declared: disabled"))
    if wake and tx.dialect == "postgresql":
        yield sst.notify_schedule_statement(min(wake)), None
    order = {"created": 0, "adopted": 1, "updated": 2, "retired": 3}
    changes.sort(key=lambda c: (order[c.action], c.name))
    return SyncReport(tuple(changes), unchanged)


def one_off_in_past(definition: ScheduleDefinition, now: datetime) -> bool:
    """Whether a one-off's date is not after ``now`` (it would never run)."""
    trigger = definition.trigger
    return isinstance(trigger, DateTrigger) and trigger.at <= now
