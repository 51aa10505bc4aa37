"""Live pages: a Server-Sent Events stream of HTML fragments that htmx swaps in.

A live page opens one stream (``sse-connect``, htmx's SSE extension); each element that
should follow the tasks names an event (``sse-swap="progress-42"``). The stream re-renders
those fragments when something may have changed and sends only the ones that differ from
what it sent before, so an idle page costs one small read per poll and nothing on the wire.

"Something may have changed" comes from nightcrew's event stream (`nightcrew.events.stream`:
every process's events, by PostgreSQL NOTIFY or SQLite's journal); a poll
(`POLL_OPEN_SECONDS` while a watched task is open) is the floor under it, so a page stays
right even where events are turned off (``NIGHTCREW_PUBLISH_EVENTS=false``). Events only
wake the stream; what is shown is always read back through the operator actions, never
taken from an event's payload.

A stream ends by itself after `STREAM_SECONDS` (the browser reconnects at once, with its
cookie checked again), so a revoked session cannot watch forever and a server shutting
down is not held up for long by open pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from fastapi import Request

from nightcrew import events as nightcrew_events
from nightcrew.app import Nightcrew
from nightcrew.live.hub import EventsMissed

log = logging.getLogger("nightcrew.ui")

#: Poll intervals: while a watched task is open, and when all are finished.
POLL_OPEN_SECONDS = 1.0
POLL_IDLE_SECONDS = 10.0
#: Seconds between comment lines that keep proxies from closing a quiet stream.
HEARTBEAT_SECONDS = 15.0
#: A stream's longest life (the browser reconnects after ``RETRY_MS``).
STREAM_SECONDS = 120.0
RETRY_MS = 1000

#: Renders the fragments of a view: event name -> HTML, and whether anything watched is
#: still open (decides the poll interval).
Producer = Callable[[], Awaitable[tuple[dict[str, str], bool]]]


def sse_message(event: str, html: str) -> str:
    """One SSE message; each line of the fragment is a ``data:`` line (joined by newlines
    again in the browser)."""
    lines = html.splitlines() or [""]
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


class Waker:
    """Wakes a stream when an event may concern what it shows.

    Follows `nightcrew.events.stream` (every process's events, filtered there by
    ``filters`` and here by ``wanted``); a stream that fell behind wakes the page too,
    which then reads everything again. If the event stream fails, the poll goes on alone.
    """

    def __init__(
        self, app: Nightcrew, wanted: Callable[[Any], bool], filters: dict[str, Any]
    ) -> None:
        self._app = app
        self._wanted = wanted
        self._filters = filters
        self._flag = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _follow(self) -> None:
        while True:
            try:
                async with nightcrew_events.stream(self._app, **self._filters) as events:
                    async for event in events:
                        if self._wanted(event):
                            self._flag.set()
                return
            except EventsMissed:
                self._flag.set()  # fell behind the kept window: show the state again
            except Exception:
                log.warning("the dashboard's event stream stopped; polling only", exc_info=True)
                return

    def __enter__(self) -> Waker:
        self._task = asyncio.create_task(self._follow())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def wait(self, seconds: float) -> None:
        """Until an event wanted arrives or ``seconds`` pass."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._flag.wait()
        self._flag.clear()


def for_tasks(ids: Iterable[int]) -> Callable[[Any], bool]:
    wanted = frozenset(ids)
    return lambda event: getattr(event, "task_id", None) in wanted


def for_pipeline(pipeline_id: int, ids: Iterable[int]) -> Callable[[Any], bool]:
    wanted = frozenset(ids)
    return lambda event: (
        getattr(event, "pipeline_id", None) == pipeline_id
        or getattr(event, "task_id", None) in wanted
    )


async def fragments(
    request: Request,
    app: Nightcrew,
    produce: Producer,
    wanted: Callable[[Any], bool],
    **filters: Any,
) -> AsyncIterator[str]:
    """The stream: fragments that changed, heartbeats, until the client leaves or
    `STREAM_SECONDS` pass."""
    yield f"retry: {RETRY_MS}\n\n"
    sent: dict[str, str] = {}
    started = last_beat = time.monotonic()
    with Waker(app, wanted, filters) as waker:
        while time.monotonic() - started < STREAM_SECONDS:
            if await request.is_disconnected():
                return
            try:
                shown, still_open = await produce()
            except Exception:
                log.warning("a live fragment failed to render", exc_info=True)
                shown, still_open = {}, True
            for name, html in shown.items():
                if sent.get(name) != html:
                    sent[name] = html
                    yield sse_message(name, html)
                    last_beat = time.monotonic()
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                yield ": keep-alive\n\n"
                last_beat = time.monotonic()
            await waker.wait(POLL_OPEN_SECONDS if still_open else POLL_IDLE_SECONDS)
