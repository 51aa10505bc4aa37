"""The event transports carry payloads whole and in order, whatever characters they hold:
NOTIFY on PostgreSQL (a batch sent as one text, cut on the server), the journal on SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest

from nightcrew import Nightcrew
from nightcrew.errors import NightcrewError
from nightcrew.events import EventKind, TaskEvent
from nightcrew.live.wire import decode, encode
from nightcrew.models import MaintenanceTaskStatus, utcnow
from nightcrew.store.event_transport import RECEIVER_NAME, EventTransport, for_database
from nightcrew.store.postgres import conninfo
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


@contextlib.asynccontextmanager
async def loop_receiver(
    backend: Backend, deliver: Callable[[list[str]], None]
) -> AsyncIterator[tuple[Nightcrew, EventTransport, asyncio.Task[None]]]:
    """A PostgreSQL transport's loop receiver, listening, for the test's body."""
    if not backend.is_postgres:
        pytest.skip("SQLite's journal is tailed by a thread")
    async with Nightcrew(observe_settings(backend)) as app:
        transport = for_database(app.database)
        listening = asyncio.Event()
        receiving = asyncio.create_task(transport.areceive(deliver, listening.set))
        try:
            await asyncio.wait_for(listening.wait(), 30)
            yield app, transport, receiving
        finally:
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
            await transport.aclose()


async def test_a_loops_receiver_gets_payloads_whole_and_in_order(backend: Backend) -> None:
    received: list[str] = []
    batches: list[int] = []

    def deliver(payloads: list[str]) -> None:
        batches.append(len(payloads))
        received.extend(payloads)

    async with loop_receiver(backend, deliver) as (_, transport, _receiving):
        scope = transport.scope()
        sent = encode(events(400), scope, "elsewhere:1:abc")
        await transport.asend(sent)

        def mine() -> list[str]:  # other tests' installs share the channel
            return [p for p in received if decode(p, scope) is not None]

        await until(lambda: len(mine()) >= len(sent), "every payload received")
    assert mine() == sent
    assert len(sent) > 1 and max(batches) > 1  # one statement's notices: handed over together


async def test_a_loops_receiver_raises_when_its_connection_is_lost(backend: Backend) -> None:
    async with loop_receiver(backend, lambda _: None) as (app, _transport, receiving):
        with psycopg.connect(conninfo(app.database.url), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database()",
                (RECEIVER_NAME,),
            )
        # The hub retries on an error; a receiver that hung instead would stop its events.
        with pytest.raises(NightcrewError):
            await asyncio.wait_for(asyncio.shield(receiving), 30)
