"""What differs on PostgreSQL: the notification channel and its payloads."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Text, func, literal_column
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
    """The JSON text of a notification, built in SQL so it names the sender's schema.

    Every install in one database shares the channel; the schema (``current_schema()``,
    which follows the connection's ``search_path``) lets a listener ignore the others'
    tasks and cancels. JSON keeps any queue name intact, colons and all.
    """

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
    except (ValueError, KeyError, TypeError):
        pass
    return None


def configure_engine(engine: Engine) -> None:
    """Nothing to set per connection today; kept so both dialects share one entry point."""


def conninfo(url: Any) -> str:
    """A libpq URI for a raw psycopg connection (the listener), from a SQLAlchemy URL."""
    return str(url.set(drivername="postgresql").render_as_string(hide_password=False))


async def listen(
    url: Any,
    on_notice: Callable[[Notice], None],
    on_connected: Callable[[int], None],
) -> None:
    """Hold a ``LISTEN`` connection and hand each notice for our schema to ``on_notice``.

    Returns (rather than raising) when the connection is lost, so the caller decides how
    to reconnect; ``on_connected`` runs after each successful ``LISTEN`` so the caller can
    catch up on anything missed while it was away.
    """
    import psycopg

    conn = await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True)
    try:
        cur = await conn.execute("SELECT current_schema()")
        row = await cur.fetchone()
        schema = row[0] if row else None
        await conn.execute(f"LISTEN {CHANNEL}")
        on_connected(conn.info.backend_pid)
        async for notify in conn.notifies():
            notice = parse_payload(notify.payload, schema or "")
            if notice is not None:
                on_notice(notice)
    finally:
        await conn.close()
