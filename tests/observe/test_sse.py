"""``/api/v1/events`` on a real server: a running task's progress and its finish reach the
client (from a worker of another app, so through NOTIFY or the SQLite journal), a client
resumes with Last-Event-ID without a gap, an id older than the kept window gets a gap
event, quiet streams get heartbeats, and the stream needs a viewer like every route."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from nightcrew import Nightcrew, actions, create_maintenance_task
from tests.conftest import Backend
from tests.observe.conftest import observe_settings, serving
from tests.observe_processors import Ticking
from tests.processors import Echo

STREAM = {"Accept": "text/event-stream"}


@dataclass
class Message:
    id: int | None
    event: str | None
    data: dict[str, Any] | None
    comment: bool
    received: float


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """SSE messages as they arrive (comments included, as messages of their own)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield Message(None, None, None, True, time.time())
            continue
        if line:
            name, _, rest = line.partition(":")
            fields[name] = rest[1:] if rest.startswith(" ") else rest
            continue
        if "data" in fields or "id" in fields:
            yield Message(
                int(fields["id"]) if "id" in fields else None,
                fields.get("event"),
                json.loads(fields["data"]) if "data" in fields else None,
                False,
                time.time(),
            )
        fields = {}


@asynccontextmanager
async def opened(
    url: str, token: str, headers: dict[str, str] | None = None, **params: Any
) -> AsyncIterator[AsyncIterator[Message]]:
    auth = {"Authorization": f"Bearer {token}", **STREAM, **(headers or {})}
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client,
        client.stream("GET", f"{url}/api/v1/events", params=params, headers=auth) as r,
    ):
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        yield messages(r)


async def until_event(
    stream: AsyncIterator[Message], want: str, within: float = 30.0
) -> list[Message]:
    seen: list[Message] = []
    async with asyncio.timeout(within):
        async for message in stream:
            if message.comment:
                continue
            seen.append(message)
            if message.event == want:
                return seen
    raise AssertionError(f"the stream ended before {want}")


async def test_sse_delivers_a_running_tasks_progress_and_its_finish(backend: Backend) -> None:
    api_app = Nightcrew(observe_settings(backend))
    worker_app = Nightcrew(observe_settings(backend))
    _, token = actions.create_token(api_app, "sse", "viewer")
    queue = f"sse-{uuid.uuid4().hex[:6]}"
    try:
        with serving(api_app) as url:
            async with opened(url, token, queue=queue) as stream:
                task = create_maintenance_task(
                    Ticking(steps=4, interval=0.15), database=worker_app, queue=queue
                )
                worker = worker_app.worker(concurrency=2)
                run = asyncio.create_task(worker.run())
                try:
                    seen = await until_event(stream, "completed")
                finally:
                    worker.request_stop()
                    await asyncio.wait_for(run, 60)
    finally:
        await worker_app.aclose()
        api_app.close()
    kinds = [m.event for m in seen]
    assert kinds[0] == "created" and kinds[1] == "started" and kinds[-1] == "completed"
    progress = [m for m in seen if m.event == "progress"]
    assert len(progress) >= 3, kinds
    assert all(m.data is not None and m.data["task_id"] == task.id for m in seen)
    percents = [m.data["progress"] for m in progress if m.data]
    assert percents == sorted(percents)
    # Each report carries the time it was made: it reached the client while the task ran.
    late = [m.received - float(m.data["message"]) for m in progress if m.data]
    assert max(late) < 2.0, late
    done = seen[-1].data
    assert done is not None and done["status"] == "COMPLETED" and done["queue"] == queue
    ids = [m.id for m in seen if m.id is not None]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_sse_resumes_after_the_last_event_id_without_a_gap(backend: Backend) -> None:
    api_app = Nightcrew(observe_settings(backend))
    other = Nightcrew(observe_settings(backend))
    _, token = actions.create_token(api_app, "sse", "viewer")
    queue = f"resume-{uuid.uuid4().hex[:6]}"
    try:
        with serving(api_app) as url:
            async with opened(url, token, queue=queue) as stream:
                first = create_maintenance_task(Echo(value=1), database=other, queue=queue)
                (created,) = await until_event(stream, "created")
            assert created.data is not None and created.data["task_id"] == first.id
            # Disconnected: two more tasks are created meanwhile (and one elsewhere).
            missed = [
                create_maintenance_task(Echo(value=v), database=other, queue=queue).id
                for v in (2, 3)
            ]
            create_maintenance_task(Echo(value=4), database=other, queue="elsewhere")
            await asyncio.sleep(0.5)  # they reach the server's window while nobody listens
            resume = {"Last-Event-ID": str(created.id)}
            async with opened(url, token, headers=resume, queue=queue) as stream:
                replayed = [
                    m
                    async for m in _take(stream, 2)  # the two missed, then live ones
                ]
                later = create_maintenance_task(Echo(value=5), database=other, queue=queue)
                (live,) = await until_event(stream, "created")
            assert [m.data["task_id"] for m in replayed if m.data] == missed
            assert all(m.id is not None and m.id > created.id for m in replayed)
            assert live.data is not None and live.data["task_id"] == later.id
            # An id older than anything kept (a server restart, say): told, then live.
            async with opened(url, token, headers={"Last-Event-ID": "1"}, queue=queue) as s:
                (gap,) = [m async for m in _take(s, 1)]
            assert gap.event == "gap"
            # An id past the newest kept (another process's numbering, one started later):
            # the server cannot tell what was missed, so it says so too.
            future = {"Last-Event-ID": str(time.time_ns() // 1000 + 10**9)}
            async with opened(url, token, headers=future, queue=queue) as s:
                (gap,) = [m async for m in _take(s, 1)]
            assert gap.event == "gap"
    finally:
        other.close()
        api_app.close()


async def _take(stream: AsyncIterator[Message], n: int) -> AsyncIterator[Message]:
    got = 0
    async with asyncio.timeout(30):
        async for message in stream:
            if message.comment:
                continue
            yield message
            got += 1
            if got == n:
                return


async def test_a_quiet_stream_gets_heartbeats(backend: Backend) -> None:
    app = Nightcrew(observe_settings(backend))
    _, token = actions.create_token(app, "sse", "viewer")
    try:
        with serving(app) as url:
            async with opened(url, token, task=10**9, heartbeat=0.2) as stream:
                async with asyncio.timeout(10):
                    comments = 0
                    async for message in stream:
                        comments += message.comment
                        if comments == 2:
                            break
    finally:
        app.close()
    assert comments == 2


async def test_the_stream_needs_a_viewer(backend: Backend) -> None:
    app = Nightcrew(observe_settings(backend))
    try:
        with serving(app) as url:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{url}/api/v1/events", headers=STREAM)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
    finally:
        app.close()
