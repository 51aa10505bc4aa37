"""What differs on PostgreSQL: the bulk insert, the notification channel."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import BigInteger, Engine, Text, TextualSelect, func, literal_column, text
from sqlalchemy import cast as sql_cast

from nightcrew.models import MaintenanceTask

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


#: The columns an enqueue writes, with their SQL types.
_BULK_COLUMNS: dict[str, str] = {
    "status": "text",
    "processor_type": "text",
    "processor_json": "text",
    "queue": "text",
    "priority": "integer",
    "delay": "integer",
    "start_at": "timestamptz",
    "attempts": "integer",
    "max_attempts": "integer",
    "timeout": "double precision",
    "waiting_on": "integer",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
}


def configure_engine(engine: Engine) -> None:
    """Nothing to set per connection today; kept so both dialects share one entry point."""


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def bulk_insert(rows: Sequence[dict[str, Any]]) -> tuple[TextualSelect, dict[str, Any]]:
    """``INSERT ... SELECT`` from one JSON parameter, returning ids in row order.

    A column whose value is the same in every row (in a bulk enqueue, all but the
    processor's JSON, usually) is bound once as a scalar; only the others travel per row,
    as one JSON array of arrays that PostgreSQL expands with ``json_array_elements``.
    Encoding one JSON text is C code end to end, where driver-side arrays are dumped
    element by element in Python (measured: most of the time of a 20,000-row insert).
    ``ORDER BY`` the ordinality fixes the order in which the sequence hands out ids.
    """
    first = rows[0]
    varying = [
        name
        for name in _BULK_COLUMNS
        if name == "processor_json" or len(set(map(itemgetter(name), rows))) > 1
    ]
    params: dict[str, Any] = {}
    exprs = []
    for name, sql_type in _BULK_COLUMNS.items():
        if name not in varying:
            params[name] = _json_value(first[name])
            exprs.append(f"CAST(:{name} AS {sql_type})")
        elif len(varying) == 1:  # a flat array of values
            exprs.append(f"CAST(e.v #>> '{{}}' AS {sql_type})")
        else:  # an array of arrays
            exprs.append(f"CAST(e.v->>{varying.index(name)} AS {sql_type})")
    if any(isinstance(first[name], datetime | enum.Enum) for name in varying):
        data: list[Any] = [[_json_value(r[name]) for name in varying] for r in rows]
    else:
        data = list(map(itemgetter(*varying), rows))
    params["rows"] = json.dumps(data)
    sql = (
        f"INSERT INTO {MaintenanceTask.__tablename__} ({', '.join(_BULK_COLUMNS)}) "
        f"SELECT {', '.join(exprs)} "
        "FROM json_array_elements(CAST(:rows AS json)) WITH ORDINALITY AS e(v, n) "
        "ORDER BY e.n RETURNING id"
    )
    return text(sql).columns(id=BigInteger), params


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
