"""Waking workers from inside a transaction (PostgreSQL NOTIFY, delivered at commit).

Shared by every operation that makes tasks claimable: an enqueue, an activation, a retry,
a pipeline step whose last dependency finished. SQLite has no notifications; its workers
poll.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from nightcrew.store import statements as st
from nightcrew.store.plans import Plan, Tx


def notify_due(tx: Tx, due: dict[str, datetime]) -> Plan[None]:
    """Wake workers of each queue; the payload says when its earliest new task is due."""
    if tx.dialect == "postgresql":
        for queue, start_at in sorted(due.items()):
            yield st.notify_task_statement(queue, start_at), None


def earliest(
    rows: Iterable[Any], queue: str = "queue", start_at: str = "start_at"
) -> dict[str, datetime]:
    """The earliest due time per queue among rows (mappings with those keys)."""
    due: dict[str, datetime] = {}
    for row in rows:
        q, when = row[queue], row[start_at]
        if q not in due or when < due[q]:
            due[q] = when
    return due
