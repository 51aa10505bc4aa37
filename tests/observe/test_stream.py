"""``nightcrew.events.stream`` from Python: events made by other processes (an enqueue in
one, a worker in another) arrive in order, filtered; on PostgreSQL through NOTIFY, on
SQLite through the journal next to the database file."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid

import pytest

from nightcrew import Nightcrew, TaskOptions, create_maintenance_task, create_maintenance_tasks
from nightcrew.events import EventKind, stream
from nightcrew.live import EventsMissed
from tests.conftest import ROOT, Backend
from tests.observe.conftest import MODULES, observe_settings, until
from tests.processors import Echo

ENQUEUE_AND_RUN = textwrap.dedent(
    """
    import asyncio, sys
    from nightcrew import Nightcrew, Settings, create_maintenance_task
    from tests.observe_processors import Ticking

    queue = sys.argv[1]
    with Nightcrew(Settings()) as app:
        task = create_maintenance_task(Ticking(steps=3, interval=0.1), database=app, queue=queue)
    print(task.id, flush=True)

    async def work() -> None:
        async with Nightcrew(Settings()) as app:
            await app.worker(queues=[queue]).run(until_idle=True)

    asyncio.run(work())
    """
)


async def test_the_stream_delivers_events_of_other_processes(backend: Backend) -> None:
    queue = f"far-{uuid.uuid4().hex[:6]}"
    app = Nightcrew(observe_settings(backend))
    kinds: list[EventKind] = []
    task_ids: set[int] = set()
    try:
        async with stream(app, queue=queue) as events:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                ENQUEUE_AND_RUN,
                queue,
                env=backend.env(NIGHTCREW_PROCESSOR_MODULES=",".join(MODULES)),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            async with asyncio.timeout(60):
                async for event in events:
                    kinds.append(event.kind)
                    task_ids.add(event.task_id)
                    assert event.queue == queue
                    if event.kind is EventKind.COMPLETED:
                        break
            out, err = await proc.communicate()
    finally:
        await app.aclose()
    assert proc.returncode == 0, err.decode()
    assert task_ids == {int(out.split()[0])}
    assert kinds[:2] == [EventKind.CREATED, EventKind.STARTED]
    assert kinds[-1] is EventKind.COMPLETED
    assert EventKind.PROGRESS in kinds


async def test_a_stream_filters_by_task_and_kind(backend: Backend) -> None:
    app = Nightcrew(observe_settings(backend))
    other = Nightcrew(observe_settings(backend))
    try:
        async with stream(app, kinds=[EventKind.CREATED], queue="filtered") as events:
            create_maintenance_task(Echo(value=1), database=other, queue="unwanted")
            wanted = create_maintenance_task(Echo(value=2), database=other, queue="filtered")
            async with asyncio.timeout(30):
                event = await anext(aiter(events))
        assert (event.task_id, event.kind, event.status) == (
            wanted.id,
            EventKind.CREATED,
            "PENDING",
        )
    finally:
        other.close()
        await app.aclose()


async def test_resuming_from_an_id_no_longer_kept_raises(backend: Backend) -> None:
    app = Nightcrew(observe_settings(backend))
    try:
        create_maintenance_task(Echo(), database=app)  # something in the window
        hub = app.live.hub()
        await hub.ready()
        create_maintenance_task(Echo(), database=app)
        await asyncio.sleep(0.1)
        with pytest.raises(EventsMissed):
            async with stream(app, after=1):
                pass
    finally:
        await app.aclose()


async def test_a_stream_left_or_cancelled_stops_being_fed(backend: Backend) -> None:
    app = Nightcrew(observe_settings(backend))
    try:
        hub = app.live.hub()

        async def follow() -> None:
            async for _event in stream(app):
                pass

        task = asyncio.create_task(follow())
        await until(lambda: hub.subscribers == 1, "subscribed (once the hub is ready)")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert hub.subscribers == 0
        async with stream(app) as events:
            assert hub.subscribers == 1
            del events
        assert hub.subscribers == 0
    finally:
        await app.aclose()


async def test_batches_hand_out_each_event_once_a_list_at_a_time(backend: Backend) -> None:
    app = Nightcrew(observe_settings(backend))
    other = Nightcrew(observe_settings(backend))
    queue = f"batched-{uuid.uuid4().hex[:6]}"
    try:
        async with stream(app, kinds=[EventKind.CREATED], queue=queue) as events:
            first = create_maintenance_task(Echo(value=0), database=other, queue=queue)
            async with asyncio.timeout(30):
                assert (await anext(aiter(events))).task_id == first.id
            made = create_maintenance_tasks(
                [Echo(value=i) for i in range(1, 6)], TaskOptions(queue=queue), database=other
            )
            seen: list[int] = []
            async with asyncio.timeout(30):
                async for batch in events.batches():
                    assert batch, "a batch is never empty"
                    seen += [event.task_id for event in batch]
                    if len(seen) >= len(made):
                        break
        assert seen == made
    finally:
        other.close()
        await app.aclose()


async def test_batches_end_when_the_stream_is_closed(backend: Backend) -> None:
    app = Nightcrew(observe_settings(backend))
    try:
        async with stream(app) as events:
            batches = events.batches()
            waiting = asyncio.ensure_future(anext(batches))
            await asyncio.sleep(0.05)
            events.close()
            async with asyncio.timeout(10):
                with pytest.raises(StopAsyncIteration):
                    await waiting
    finally:
        await app.aclose()
