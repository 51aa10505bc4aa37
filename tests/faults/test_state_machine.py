"""Stateful property tests of the task state machine, through the store interface.

Hypothesis drives random interleavings of what workers and operators do to tasks, on both
databases, each example on a fresh table and a store of its own: claims (`TaskStore.claim`),
heartbeats, finishes (completed, failed, cancelled, retried, handed back), late finishes
and heartbeats with an old `ClaimedTask`, lease expiry (``lease_expires_at`` written in the
past through the ORM: a worker that died), rescues, and the operator's cancel, retry and
activate (`ops`, through `TaskStore.run`). A model predicts every row; besides agreeing
with it, the database must keep these invariants, checked from the rows alone:

- no task lost: every id created exists;
- none finished twice: a final status never changes, except by an operator's retry;
- none revived: after a final status nothing but a retry makes a task open again;
- attempts never exceed the claims made (since the last retry);
- rescues never decrease, except on a retry;
- a finish or heartbeat fenced by a stale token writes nothing.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete
from sqlalchemy.orm import Session

from nightcrew import InvalidTransition, MaintenanceTask, MaintenanceTaskStatus, TaskOptions
from nightcrew.enqueue import build_rows
from nightcrew.models import utcnow
from nightcrew.processors import ProcessorLoader
from nightcrew.store import Database, TaskStore, open_store, ops
from nightcrew.store import statements as sts
from nightcrew.values import ClaimedTask, ClaimRequest, Outcome, TaskFilter, TaskView
from tests.conftest import TEST_MODULES, Backend
from tests.processors import Echo

S = MaintenanceTaskStatus
FINAL = (S.COMPLETED, S.ERROR, S.CANCELLED)
LOADER = ProcessorLoader(TEST_MODULES)
MAX_RESCUES = 2
LEASE = 60.0
#: Ways a run ends: (status written, attempt counted, due again at once).
ENDINGS = {
    "completed": (S.COMPLETED, True, True),
    "failed": (S.ERROR, True, True),
    "cancelled": (S.CANCELLED, True, True),
    "retry now": (S.PENDING, True, True),
    "retry later": (S.PENDING, True, False),
    "handed back": (S.PENDING, False, True),
}


@dataclass
class Model:
    """What the row of one task must hold."""

    status: MaintenanceTaskStatus
    attempts: int = 0
    rescues: int = 0
    token: str | None = None
    cancel_requested: bool = False
    expired: bool = False
    due: bool = True
    #: Claims since the last operator retry.
    claims: int = 0


class TaskStateMachine(RuleBasedStateMachine):
    url: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.database = Database(self.url)
        with self.database.sync_engine.begin() as conn:
            conn.execute(delete(sts.T))
        self.store: TaskStore = open_store(self.database)
        self.model: dict[int, Model] = {}
        self.claims: list[ClaimedTask] = []
        self.tokens = itertools.count(1)
        #: The rows as last seen by the invariant, and the ids an operator retried since.
        self.seen: dict[int, TaskView] = {}
        self.retried: set[int] = set()

    def teardown(self) -> None:
        self.loop.run_until_complete(self.store.aclose())
        self.loop.run_until_complete(self.database.adispose())
        self.loop.close()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def rows(self) -> dict[int, TaskView]:
        page = self.store.run(ops.list_tasks, TaskFilter(limit=ops.MAX_PAGE))
        assert page.next_before_id is None
        return {t.id: t for t in page.tasks}

    def row(self, task_id: int) -> TaskView:
        return self.store.run(ops.get_task, task_id)

    # ------------------------------------------------------------ creating

    @initialize(n=st.integers(1, 3))
    def first_tasks(self, n: int) -> None:
        self.add(n, False)

    @rule(n=st.integers(1, 3), inactive=st.booleans())
    def add(self, n: int, inactive: bool) -> None:
        processors = [Echo(value=i) for i in range(n)]
        rows = build_rows(processors, TaskOptions(inactive=inactive), LOADER, utcnow())
        for task_id in self.store.run(ops.insert_tasks, rows):
            assert task_id not in self.model
            self.model[task_id] = Model(S.INACTIVE if inactive else S.PENDING)

    # ------------------------------------------------------------ a worker's moves

    @rule(limit=st.integers(1, 4))
    def claim(self, limit: int) -> None:
        token = f"machine/{next(self.tokens)}"
        claimed = self.run(self.store.claim(ClaimRequest(token, limit, LEASE)))
        due = sorted(i for i, m in self.model.items() if m.status is S.PENDING and m.due)
        # Claim order: priority (all equal here), then creation: the oldest due first.
        assert [t.id for t in claimed] == due[:limit]
        for t in claimed:
            m = self.model[t.id]
            m.status, m.token, m.expired = S.WORKING, token, False
            m.attempts += 1
            m.claims += 1
            assert (t.attempt, t.rescues, t.lease_token) == (m.attempts, m.rescues, token)
        self.claims += claimed

    def _current(self, claimed: ClaimedTask) -> bool:
        m = self.model[claimed.id]
        return m.status is S.WORKING and m.token == claimed.lease_token

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self.claims), min_size=1, max_size=4))
        current = {c.id for c in chosen if self._current(c)}
        # Tasks asked about only with stale tokens (an old claim: lost, reclaimed, ended).
        stale = {c.id for c in chosen} - current
        leases = sorted({(c.id, c.lease_token) for c in chosen})
        before = {i: self.row(i) for i in stale}
        held = self.run(self.store.heartbeat(leases, LEASE))
        assert sorted(h.id for h in held) == sorted(current)
        for h in held:
            assert h.cancel_requested == self.model[h.id].cancel_requested
            self.model[h.id].expired = False
        # A stale token extends nothing and changes nothing, whatever the task holds now.
        assert {i: self.row(i) for i in stale} == before

    @precondition(lambda self: self.claims)
    @rule(data=st.data(), ending=st.sampled_from(sorted(ENDINGS)))
    def finish(self, data: st.DataObject, ending: str) -> None:
        """End a run: the current one of its task, or a late one (an old claim)."""
        claimed = data.draw(st.sampled_from(self.claims))
        status, counted, due_now = ENDINGS[ending]
        start_at = None if due_now else utcnow() + timedelta(hours=1)
        outcome = Outcome(
            claimed, status, {"ending": ending}, None, start_at, attempt_counted=counted
        )
        current = self._current(claimed)
        before = self.row(claimed.id)
        written = self.run(self.store.finish([outcome]))
        if not current:
            # A late finish (its lease was lost: rescued, reclaimed, ended) never writes.
            assert written == []
            assert self.row(claimed.id) == before
            return
        assert written == [claimed.id]
        m = self.model[claimed.id]
        m.status, m.token, m.expired, m.due = status, None, False, due_now
        if not counted:
            m.attempts -= 1
        if status is S.PENDING:
            m.cancel_requested = False

    @precondition(lambda self: any(m.status is S.WORKING for m in self.model.values()))
    @rule(data=st.data())
    def lease_expires(self, data: st.DataObject) -> None:
        """The worker holding a task died: its lease runs out (written in the past)."""
        working = sorted(i for i, m in self.model.items() if m.status is S.WORKING)
        self._expire(data.draw(st.sampled_from(working)))

    def _expire(self, task_id: int) -> None:
        with Session(self.database.sync_engine) as session, session.begin():
            task = session.get_one(MaintenanceTask, task_id)
            task.lease_expires_at = utcnow() - timedelta(seconds=1)
        self.model[task_id].expired = True

    @rule()
    def rescue(self) -> None:
        rescued = self.run(self.store.rescue(max_rescues=MAX_RESCUES, stale_after=3600.0))
        expected = {}
        for task_id, m in self.model.items():
            if m.status is not S.WORKING or not m.expired:
                continue
            m.rescues += 1
            m.token, m.expired = None, False
            if m.cancel_requested:
                m.status = S.CANCELLED
            elif m.rescues > MAX_RESCUES:
                m.status = S.ERROR  # a poison task
            else:
                m.status, m.due = S.PENDING, True
                m.attempts -= 1  # a rescue spends no attempt
            expected[task_id] = m.status
        assert {w.id: w.status for w in rescued} == expected

    @rule(limit=st.integers(1, 4))
    def worker_dies(self, limit: int) -> None:
        """A worker claims, dies at once, and a rescuer finds its leases expired."""
        before = len(self.claims)
        self.claim(limit)
        for claimed in self.claims[before:]:
            self._expire(claimed.id)
        self.rescue()

    # ------------------------------------------------------------ an operator's moves

    def _pick(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.model)))

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id = self._pick(data)
        m = self.model[task_id]
        if m.status in FINAL:
            with pytest.raises(InvalidTransition):
                self.store.run(ops.cancel, task_id)
            return
        view = self.store.run(ops.cancel, task_id)
        if m.status is S.WORKING:
            m.cancel_requested = True  # its worker is asked to stop it
        else:
            m.status, m.cancel_requested = S.CANCELLED, True
        assert view.status is m.status

    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        task_id = self._pick(data)
        m = self.model[task_id]
        if m.status not in (S.ERROR, S.CANCELLED):
            with pytest.raises(InvalidTransition):
                self.store.run(ops.retry, task_id)
            return
        self.store.run(ops.retry, task_id)
        self.model[task_id] = replace(Model(S.PENDING))
        self.retried.add(task_id)

    @rule(data=st.data())
    def activate(self, data: st.DataObject) -> None:
        task_id = self._pick(data)
        m = self.model[task_id]
        if m.status is not S.INACTIVE:
            with pytest.raises(InvalidTransition):
                self.store.run(ops.activate, task_id)
            return
        self.store.run(ops.activate, task_id)
        m.status, m.due = S.PENDING, True

    # ------------------------------------------------------------ invariants

    @invariant()
    def rows_keep_the_invariants(self) -> None:
        rows = self.rows()
        # No task lost (and none appears from nowhere).
        assert set(rows) == set(self.model)
        for task_id, row in rows.items():
            m = self.model[task_id]
            was = self.seen.get(task_id)
            retried = task_id in self.retried
            if was is not None and was.status in FINAL and not retried:
                # Finished once: never finished again, never revived, never changed.
                assert row == was, (was, row)
            if was is not None and not retried:
                assert row.rescues >= was.rescues  # rescues only grow, except on retry
            assert 0 <= row.attempts <= m.claims  # never more attempts than claims
            # And exactly what the model says.
            assert row.status is m.status, (row, m)
            assert (row.attempts, row.rescues, row.lease_token) == (m.attempts, m.rescues, m.token)
            assert (row.cancel_requested_at is not None) == m.cancel_requested, (row, m)
            assert (row.lease_expires_at is None) == (m.status is not S.WORKING)
            assert (row.finished_at is not None) == (m.status in FINAL)
        self.seen = rows
        self.retried.clear()


@pytest.mark.slow
def test_task_state_machine_through_the_store(backend: Backend) -> None:
    TaskStateMachine.url = backend.url
    run_state_machine_as_test(
        TaskStateMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
