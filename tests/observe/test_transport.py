"""The event transports carry payloads whole and in order, whatever characters they hold:
NOTIFY on PostgreSQL (a batch sent as one text, cut on the server), the journal on SQLite."""

from __future__ import annotations

import threading

from nightcrew import Nightcrew
from nightcrew.events import EventKind, TaskEvent
from nightcrew.live.wire import decode, encode
from nightcrew.models import MaintenanceTaskStatus, utcnow
from nightcrew.store.event_transport import for_database
from tests.conftest import Backend
from tests.observe.conftest import observe_settings, until

#: What a text-array literal or a separator could trip on: quotes, backslashes, braces,
#: commas, a control character (JSON escapes it), non-ASCII.
AWKWARD = 'a "quoted", {braced} \\ back\\slash \x1f unit-sep \x00 nul, é ✓'


def events(count: int) -> list[TaskEvent]:
    at = utcnow()
    return [
        TaskEvent(
            EventKind.PROGRESS,
            i,
            at,
            MaintenanceTaskStatus.WORKING,
            "default",
            "p.X",
            1,
            0.5,
            f"{AWKWARD} {i}",
        )
        for i in range(1, count + 1)
    ]


async def test_payloads_arrive_whole_and_in_order(backend: Backend) -> None:
    async with Nightcrew(observe_settings(backend)) as app:
        transport = for_database(app.database)
        scope = transport.scope()
        received: list[str] = []
        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=transport.receive, args=(received.extend, stop, ready), daemon=True
        )
        thread.start()
        try:
            assert ready.wait(30)
            sent = encode(events(40), scope, "elsewhere:1:abc")
            transport.send(sent)
            if transport.sends_async:  # a worker's loop sends its own
                more = encode(events(3), scope, "elsewhere:1:abc")
                await transport.asend(more)
                sent += more

            # Other tests' installs share the channel: only this scope's payloads count.
            def mine() -> list[str]:
                return [p for p in received if decode(p, scope) is not None]

            await until(lambda: len(mine()) >= len(sent), "every payload received")
        finally:
            stop.set()
            thread.join(10)
            await transport.aclose()
    assert mine() == sent
    messages = [row[8] for p in mine() for row in decode(p, scope).rows]  # type: ignore[union-attr]
    assert messages[:2] == [f"{AWKWARD} 1", f"{AWKWARD} 2"]
