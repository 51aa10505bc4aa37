"""PostgreSQL notifications: the channel, the payloads statements build, and their parsing.

Enqueues, due-time changes, cancel requests and schedule changes wake workers through
``NOTIFY``. Payloads are
JSON built in SQL so they name the sender's schema: every install in one database shares the
channel, and a listener ignores the others' tasks and cancels. JSON keeps any queue name
intact, colons and all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, func, literal_column
from sqlalchemy import cast as sql_cast

#: Channel on which enqueues, due-time changes and cancel requests wake workers.
CHANNEL = "nightcrew"


@dataclass(frozen=True, slots=True)
class Notice:
    """One decoded notification: a task of ``queue`` due at ``due`` (epoch), or a cancel."""

    kind: str
    queue: str | None = None
    due: float | None = None
    task_id: int | None = None


def payload(kind: str, **fields: Any) -> Any:
    """The JSON text of a notification, as a SQL expression naming ``current_schema()``."""

    def const(word: str) -> Any:  # our own fixed words: rendered inline, never user data
        return literal_column(f"'{word}'", Text)

    args: list[Any] = [const("k"), const(kind), const("s"), func.current_schema()]
    for name, value in fields.items():
        args += [const(name), value]
    return sql_cast(func.json_build_object(*args), Text)


def parse_payload(text: str, schema: str) -> Notice | None:
    """The notice in ``text`` if it is meant for ``schema``; None for others and garbage."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("s") != schema:
            return None
        kind = data["k"]
        if kind == "task":
            due = data.get("d")
            return Notice("task", queue=str(data["q"]), due=None if due is None else float(due))
        if kind == "cancel":
            return Notice("cancel", task_id=int(data["id"]))
        if kind == "schedule":  # a schedule was added or changed: tickers look again
            due = data.get("d")
            return Notice("schedule", due=None if due is None else float(due))
    except (ValueError, KeyError, TypeError):
        pass
    return None
