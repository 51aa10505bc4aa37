"""Pipeline operations, each a plan (see `nightcrew.store.plans`) returning typed values.

`settle` is the heart: given steps that just reached a final status, it counts them off
their dependents (a dependent whose last dependency finished becomes claimable, and its
queue is woken), cancels the dependents of failed steps that do not run anyway (and, in
turn, theirs), and moves each pipeline's counters and status. It runs inside whatever
transaction finished the steps: a worker's batch of outcomes, an operator's cancel, a
rescue that gave up on a task.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nightcrew.errors import InvalidTransition, PipelineNotFound, TaskNotFound
from nightcrew.events import EventKind
from nightcrew.models import MaintenanceTaskStatus, PipelineStatus
from nightcrew.store import bulk
from nightcrew.store import pipeline_statements as ps
from nightcrew.store import statements as st
from nightcrew.store.plans import Plan, Tx, reads, tuples
from nightcrew.store.wakeups import earliest, notify_due
from nightcrew.values import Outcome, TaskView

S = MaintenanceTaskStatus
PS = PipelineStatus
FAILED = (S.ERROR, S.CANCELLED)


@dataclass(frozen=True, slots=True)
class PipelineView:
    """A pipeline row: its status and counters."""

    id: int
    name: str
    status: PipelineStatus
    unique_key: str | None
    steps: int
    steps_open: int
    critical_failed: int
    optional_failed: int
    cancelled: int
    info: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_mapping(cls, row: Any) -> PipelineView:
        values = dict(row)
        values["status"] = PS(values["status"])
        return cls(**{k: values[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class PipelineDetail:
    """A pipeline with its steps (by id) and its edges ``(depends_on, task_id)``."""

    pipeline: PipelineView
    steps: Sequence[TaskView]
    edges: Sequence[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Settled:
    """What settling finished steps did: steps cancelled for a failed dependency, steps
    now claimable, and the pipelines whose status changed."""

    cancelled: Sequence[int] = ()
    released: Sequence[int] = ()
    pipelines: Sequence[tuple[int, PipelineStatus]] = ()


@dataclass
class _Tally:
    closed: int = 0
    critical_failed: int = 0
    optional_failed: int = 0
    cancelled: int = 0

    def count(self, status: MaintenanceTaskStatus, critical: bool) -> None:
        self.closed += 1
        if status in FAILED:
            if critical:
                self.critical_failed += 1
            else:
                self.optional_failed += 1
        if status is S.CANCELLED:
            self.cancelled += 1


@dataclass
class _Settling:
    tallies: dict[int, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    cancelled: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)


# ---------------------------------------------------------------- creating


def insert_pipeline(
    tx: Tx,
    name: str,
    unique_key: str | None,
    rows: Sequence[dict[str, Any]],
    edges: Sequence[tuple[int, int]],
) -> Plan[tuple[int, bool]]:
    """Write a pipeline, its steps (``rows``, in order) and its edges (pairs of indexes
    into ``rows``: ``(dependency, dependent)``) in the caller's transaction.

    Returns the pipeline's id and whether it is new: with a ``unique_key`` held by an open
    pipeline, that pipeline's id and nothing written.
    """
    if unique_key is not None:
        result = yield ps.open_pipeline_by_key(unique_key), None
        holder = result.scalar()
        if holder is not None:
            return int(holder), False
    values = {
        "name": name,
        "status": PS.PENDING.value,
        "unique_key": unique_key,
        "steps": len(rows),
        "steps_open": len(rows),
        "created_at": tx.now,
        "updated_at": tx.now,
    }
    result = yield ps.insert_pipeline(values), None
    pipeline_id = int(result.scalar_one())
    waiting = Counter(dependent for _, dependent in edges)
    steps = [
        {**row, "pipeline_id": pipeline_id, "waiting_on": waiting[i]} for i, row in enumerate(rows)
    ]
    stmt, params = bulk.bulk_insert(tx.dialect, steps)
    result = yield stmt, params
    ids = sorted(int(i) for i in result.scalars())
    if edges:
        pairs = [{"depends_on": ids[a], "task_id": ids[b]} for a, b in edges]
        yield ps.insert_edges(tx.dialect), {"edge": _dumps(pairs)}
    ready = [s for s in steps if s["waiting_on"] == 0 and s["status"] == S.PENDING]
    yield from notify_due(tx, earliest(ready))
    for task_id, row in zip(ids, steps, strict=True):
        tx.emit(
            EventKind.CREATED,
            task_id,
            status=row["status"],
            queue=row["queue"],
            processor=row["processor_type"],
            detail={"pipeline_id": pipeline_id},
        )
    return pipeline_id, True


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value)


# ---------------------------------------------------------------- steps finishing


def finish_steps(
    tx: Tx, outcomes: Sequence[Outcome], encode: Callable[[Any], str]
) -> Plan[list[int]]:
    """Write pipeline steps' outcomes and settle the ones that reached a final status, in
    one transaction (``encode``: the store's JSON encoder for the outcome rows)."""
    payload = encode(st.outcome_rows(tx.dialect, outcomes, tx.now))
    result = yield st.finish_statement(tx.dialect), {"outcome": payload, "now": tx.now}
    written = {int(row[0]) for row in tuples(result)}
    final = [
        (o.task_id, o.status, o.claimed.pipeline_id, o.claimed.critical)
        for o in outcomes
        if o.task_id in written and o.status.is_final
    ]
    if final:
        yield from settle(tx, final)
    return [o.task_id for o in outcomes if o.task_id in written]


def settle(
    tx: Tx, finished: Sequence[tuple[int, MaintenanceTaskStatus, int | None, bool]]
) -> Plan[Settled]:
    """Move dependents and pipelines after steps ``(id, final status, pipeline, critical)``
    finished (see the module's docstring)."""
    state = _Settling()
    frontier = []
    for task_id, status, pipeline_id, critical in finished:
        if pipeline_id is None:
            continue
        state.tallies[pipeline_id].count(status, critical)
        frontier.append((task_id, status in FAILED))
    while frontier:
        frontier = yield from _settle_round(tx, frontier, state)
    changed: list[tuple[int, PipelineStatus]] = []
    if state.tallies:
        rows = [{"id": pid, **vars(tally)} for pid, tally in sorted(state.tallies.items())]
        result = yield ps.settle_pipelines(tx.dialect), {"pipelines": _dumps(rows), "now": tx.now}
        changed = [(int(r[0]), PS(r[1])) for r in tuples(result)]
    return Settled(state.cancelled, state.released, changed)


def _settle_round(
    tx: Tx, frontier: list[tuple[int, bool]], state: _Settling
) -> Plan[list[tuple[int, bool]]]:
    """One step of the walk down the graph: the frontier's dependents either lose a
    dependency to wait for or, when one failed and they do not run anyway, are cancelled."""
    failed = {task_id for task_id, is_failed in frontier if is_failed}
    if not failed:  # all succeeded: one statement counts them off their dependents
        ids = [task_id for task_id, _ in frontier]
        bound: Any = ids if tx.dialect == "postgresql" else _dumps(ids)
        result = yield ps.release_dependents(tx.dialect), {"done": bound, "now": tx.now}
        yield from _released(tx, tuples(result), state)
        return []
    result = yield ps.waiting_dependents([task_id for task_id, _ in frontier]), None
    doomed: dict[int, int] = {}
    counts: Counter[int] = Counter()
    for dependent, dependency, run_anyway in tuples(result):
        if dependency in failed and not run_anyway:
            doomed.setdefault(int(dependent), int(dependency))
        else:
            counts[int(dependent)] += 1
    next_frontier: list[tuple[int, bool]] = []
    if doomed:
        steps = [
            {
                "id": dependent,
                "info": {
                    "cancelled": True,
                    "error": f"dependency {dependency} did not complete",
                    "cancelled_by_dependency": dependency,
                },
            }
            for dependent, dependency in sorted(doomed.items())
        ]
        result = yield ps.cancel_steps(tx.dialect), {"steps": _dumps(steps), "now": tx.now}
        for task_id, pipeline_id, critical in tuples(result):
            state.cancelled.append(int(task_id))
            if pipeline_id is not None:
                state.tallies[int(pipeline_id)].count(S.CANCELLED, bool(critical))
            next_frontier.append((int(task_id), True))
            tx.emit(EventKind.CANCELLED, int(task_id), status=S.CANCELLED)
    release = {k: n for k, n in counts.items() if k not in doomed}
    if release:
        steps = [{"id": k, "n": n} for k, n in sorted(release.items())]
        result = yield ps.release_steps(tx.dialect), {"steps": _dumps(steps), "now": tx.now}
        yield from _released(tx, tuples(result), state)
    return next_frontier


def _released(tx: Tx, rows: list[tuple[Any, ...]], state: _Settling) -> Plan[None]:
    """Steps whose counter just moved: those at 0 (and PENDING) are claimable; wake them."""
    due: dict[str, datetime] = {}
    for task_id, waiting_on, status, queue in rows:
        if int(waiting_on) == 0 and S(status) is S.PENDING:
            state.released.append(int(task_id))
            due[str(queue)] = tx.now
    yield from notify_due(tx, due)


def mark_working(tx: Tx, pipeline_ids: Sequence[int]) -> Plan[None]:
    yield ps.mark_working(sorted(set(pipeline_ids)), tx.now), None


# ---------------------------------------------------------------- reading


@reads
def get_pipeline(tx: Tx, pipeline_id: int) -> Plan[PipelineView]:
    result = yield ps.get_pipeline(pipeline_id), None
    row = result.first()
    if row is None:
        raise PipelineNotFound(f"no pipeline with id {pipeline_id}")
    return PipelineView.from_mapping(row._mapping)


@reads
def pipeline_detail(tx: Tx, pipeline_id: int) -> Plan[PipelineDetail]:
    pipeline = yield from get_pipeline(tx, pipeline_id)
    result = yield ps.steps_of(pipeline_id), None
    steps = [TaskView.from_mapping(r._mapping) for r in result.all()]
    result = yield ps.edges_of(pipeline_id), None
    edges = [(int(a), int(b)) for a, b in tuples(result)]
    return PipelineDetail(pipeline, steps, edges)


@reads
def list_pipelines(
    tx: Tx, statuses: Sequence[PipelineStatus], before_id: int | None, limit: int
) -> Plan[tuple[list[PipelineView], int | None]]:
    limit = max(1, min(limit, 1000))
    stmt = ps.list_pipelines([s.value for s in statuses], before_id, limit + 1)
    result = yield stmt, None
    rows = [PipelineView.from_mapping(r._mapping) for r in result.all()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, rows[-1].id if more else None


@reads
def dependency_results(tx: Tx, task_id: int) -> Plan[dict[str, Any]]:
    """``{step name (or task id): info}`` of a task's dependencies."""
    result = yield ps.dependency_results(task_id), None
    return {
        (name if name is not None else str(task_id_)): info
        for task_id_, name, _status, info in tuples(result)
    }


# ---------------------------------------------------------------- operators


def cancel_pipeline(tx: Tx, pipeline_id: int) -> Plan[PipelineView]:
    """CANCELLED now: steps not yet started are cancelled at once, running ones are asked
    to stop (their worker stops them; they end CANCELLED)."""
    current = yield from get_pipeline(tx, pipeline_id)
    result = yield ps.cancel_pipeline(pipeline_id, tx.now), None
    if result.first() is None:
        raise InvalidTransition(f"pipeline {pipeline_id} is already {current.status}")
    result = yield ps.open_steps(pipeline_id), None
    steps = [(int(i), S(status)) for i, status in tuples(result)]
    waiting = [i for i, status in steps if status is not S.WORKING]
    if waiting:
        rows = [
            {"id": i, "info": {"cancelled": True, "error": "pipeline cancelled"}} for i in waiting
        ]
        result = yield ps.cancel_steps(tx.dialect), {"steps": _dumps(rows), "now": tx.now}
        cancelled = [
            (int(i), S.CANCELLED, pipeline_id, bool(crit)) for i, _p, crit in tuples(result)
        ]
        for task_id, *_ in cancelled:
            tx.emit(EventKind.CANCELLED, task_id, status=S.CANCELLED)
        yield from settle(tx, cancelled)
    for task_id, status in steps:
        if status is S.WORKING:
            result = yield st.request_cancel_statement(task_id, tx.now), None
            if result.first() is not None and tx.dialect == "postgresql":
                yield st.notify_cancel_statement(task_id), None
    return (yield from get_pipeline(tx, pipeline_id))


def step_id(tx: Tx, pipeline_id: int, name: str) -> Plan[int]:
    yield from get_pipeline(tx, pipeline_id)
    result = yield ps.step_by_name(pipeline_id, name), None
    found = result.scalar()
    if found is None:
        raise TaskNotFound(f"pipeline {pipeline_id} has no step named {name!r}")
    return int(found)


def reopen(
    tx: Tx, pipeline_id: int, retried: int, was_critical: bool, was_cancelled: bool
) -> Plan[list[int]]:
    """After an operator retried step ``retried``: re-arm the steps that were cancelled
    because it failed (and theirs), whose other dependencies did not fail either, and
    reopen the pipeline. Returns the re-armed steps."""
    rearmed: list[int] = []
    critical = 1 if was_critical else 0
    optional = 0 if was_critical else 1
    cancelled_count = 1 if was_cancelled else 0
    # The retried step itself waits for its open dependencies only: one that failed is
    # over (an operator asking to run a step whose dependency failed means it).
    result = yield ps.dependency_states([retried]), None
    open_deps = sum(1 for _, status in tuples(result) if not S(status).is_final)
    yield ps.set_waiting(retried, open_deps, tx.now), None
    frontier = [retried]
    while frontier:
        result = yield ps.cancelled_dependents(frontier), None
        candidates = sorted({int(r[0]) for r in tuples(result)} - set(rearmed))
        if not candidates:
            break
        result = yield ps.dependency_states(candidates), None
        states: dict[int, list[S]] = defaultdict(list)
        for task_id, status in tuples(result):
            states[int(task_id)].append(S(status))
        frontier = []
        for task_id in candidates:
            open_deps = sum(1 for s in states[task_id] if not s.is_final)
            if any(s in FAILED for s in states[task_id]):
                continue  # another dependency failed too: it stays cancelled
            result = yield ps.rearm_step(task_id, open_deps, tx.now), None
            row = result.first()
            if row is None:
                continue
            rearmed.append(task_id)
            frontier.append(task_id)
            cancelled_count += 1
            if bool(row.critical):
                critical += 1
            else:
                optional += 1
            tx.emit(EventKind.RESET, task_id, status=S.PENDING)
    stmt = ps.reopen_pipeline(
        pipeline_id, 1 + len(rearmed), critical, optional, cancelled_count, tx.now
    )
    yield stmt, None
    return rearmed
