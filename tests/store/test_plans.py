"""The worker's statements find their rows through indexes whatever the table's statistics.

A table just filled by a burst has none (and its indexes, made on an empty table, claim to
be empty); a table analyzed before the burst has wrong ones. In both states each hot
statement must walk an index — never scan the table, never sort the backlog. The plans are
read the way the store sends the statements: its compiled SQL, on a connection set up as
its own (`HOT_SESSION_SETUP` on PostgreSQL).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from nightcrew.models import utcnow
from nightcrew.store import TaskStore
from nightcrew.store import statements as st
from nightcrew.store.postgres import HOT_SESSION_SETUP, conninfo
from tests.store.kit import add_tasks

BURST = 20_000
LEASES = [{"id": i, "token": "w/1"} for i in range(1, 11)]


def hot_cases(dialect: Any) -> dict[str, tuple[Any, dict[str, Any]]]:
    now = utcnow()
    claim = {"now": now, "limit": 10, "token": "w/1", "lease_until": now}
    return {
        "claim": (st.claim_statement(dialect, 0, False), claim),
        "claim one queue": (st.claim_statement(dialect, 1, False), {**claim, "only_queue": "q"}),
        "finish": (
            st.finish_statement(dialect),
            {
                "outcome": json.dumps(
                    [{**lease, "status": "COMPLETED", "refund": 0} for lease in LEASES]
                ),
                "now": now,
            },
        ),
        "heartbeat": (
            st.heartbeat_statement(dialect),
            {"lease": json.dumps(LEASES), "lease_until": now},
        ),
        "cancel check": (st.cancel_requested_statement(dialect), {"lease": json.dumps(LEASES)}),
        "rescue": (
            st.rescue_statement(dialect),
            {"now": now, "stale_before": now - timedelta(hours=1), "max_rescues": 3},
        ),
        "rescue, all but ending steps": (
            st.rescue_statement(dialect, ending_steps=False),
            {"now": now, "stale_before": now - timedelta(hours=1), "max_rescues": 3},
        ),
        "rescue, ending steps": (
            st.rescue_statement(dialect, ending_steps=True),
            {"now": now, "stale_before": now - timedelta(hours=1), "max_rescues": 3},
        ),
        "progress": (
            st.progress_statement(dialect),
            {"report": json.dumps([{**lease, "progress": 5.0} for lease in LEASES]), "now": now},
        ),
    }


def pg_plans(store: TaskStore) -> Iterator[tuple[str, str]]:
    with psycopg.connect(conninfo(store.database.url), autocommit=True) as conn:
        for statement in HOT_SESSION_SETUP:
            conn.execute(statement)
        for name, (stmt, params) in hot_cases("postgresql").items():
            compiled = store.compiled(stmt)
            conn.execute("BEGIN")
            rows = conn.execute(
                "EXPLAIN (COSTS OFF) " + compiled.sql, {**compiled.constants, **params}
            ).fetchall()
            conn.execute("ROLLBACK")
            yield name, "\n".join(r[0] for r in rows)


def sqlite_plans(store: TaskStore) -> Iterator[tuple[str, str]]:
    conn = sqlite3.connect(str(store.database.url.database))
    try:
        for name, (stmt, params) in hot_cases("sqlite").items():
            compiled = store.compiled(stmt)
            bound = store._bind({**compiled.constants, **params})
            rows = conn.execute("EXPLAIN QUERY PLAN " + compiled.sql, bound).fetchall()
            yield name, "\n".join(str(r[3]) for r in rows)
    finally:
        conn.close()


def assert_index_driven(store: TaskStore) -> None:
    plans = pg_plans(store) if store.dialect == "postgresql" else sqlite_plans(store)
    for name, plan in plans:
        if store.dialect == "postgresql":
            assert "Seq Scan on maintenance_tasks" not in plan, f"{name}:\n{plan}"
            assert "Sort" not in plan, f"{name}:\n{plan}"
        else:
            lines = [line for line in plan.splitlines() if "maintenance_tasks" in line]
            assert lines, f"{name}:\n{plan}"
            for line in lines:
                assert "USING" in line, f"{name}: {line}\n{plan}"
            assert "TEMP B-TREE" not in plan, f"{name}:\n{plan}"


@pytest.fixture
def burst(store: TaskStore) -> TaskStore:
    """A table just filled by a burst, its statistics never gathered."""
    add_tasks(store, BURST, queue="q")
    return store


def test_hot_statements_use_indexes_on_a_table_never_analyzed(burst: TaskStore) -> None:
    assert_index_driven(burst)


def test_hot_statements_use_indexes_with_statistics_from_before_a_burst(
    store: TaskStore,
) -> None:
    ids = add_tasks(store, 2_000, queue="q")
    with store.database.sync_engine.begin() as conn:
        conn.execute(
            st.T.update().where(st.c.id.in_(ids)).values(status="COMPLETED", finished_at=utcnow())
        )
        conn.exec_driver_sql("ANALYZE maintenance_tasks")
    add_tasks(store, BURST, queue="q")
    assert_index_driven(store)
