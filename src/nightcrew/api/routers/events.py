"""``/api/v1/events``: live task events as Server-Sent Events (or a JSON page of them).

A client that accepts ``text/event-stream`` (an ``EventSource``, ``curl -N -H 'Accept:
text/event-stream'``) gets a stream: each event is ``id: N``, ``event: <kind>`` and a
``data:`` line of JSON; a comment every ``heartbeat`` seconds keeps proxies from closing a
quiet stream (and nginx is told not to buffer it). A client that reconnects with
``Last-Event-ID`` (browsers do by themselves) first gets every matching event it missed,
then the live ones: the server keeps the last 20,000 events it saw (`nightcrew.live.hub`),
with ids that increase by one per event in this server process. An id older than that
window (or from before a restart) gets an ``event: gap`` first: read the tasks' state
again, then carry on with the stream.

Any other client gets a JSON page: the kept events after ``after`` (or ``Last-Event-ID``)
matching the filters, at most ``limit``, and the id to ask after next time (polling). So
generated clients and tests that read a whole body never hang on the stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from nightcrew.api.auth import Principal, require, role_extra
from nightcrew.api.deps import NightcrewDep
from nightcrew.api.schemas import MAX_ID, Text
from nightcrew.events import EventKind
from nightcrew.live import EventFilter, EventsMissed, LiveEvent, Subscription
from nightcrew.values import Role

router = APIRouter(tags=["events"])

#: What the reconnecting browser waits before trying again (milliseconds).
RETRY_MS = 1000
EVENT_STREAM = "text/event-stream"


class EventOut(BaseModel):
    """One task transition: ``id`` resumes the stream; large data is read by task id."""

    id: int
    kind: EventKind
    task_id: int
    at: datetime
    status: str | None
    queue: str | None
    processor: str | None
    attempt: int | None
    progress: float | None
    message: str | None
    duration: float | None
    pipeline_id: int | None
    schedule: str | None
    actor: str | None
    detail: dict[str, Any] | None
    waited: float | None


class EventPage(BaseModel):
    """Kept events after the id asked for; ``last_id`` is the one to ask after next time.
    ``gap`` is true when events after that id are no longer kept (some were missed)."""

    events: list[EventOut]
    last_id: int | None
    gap: bool


def _frame(event: LiveEvent) -> str:
    return f"id: {event.id}\nevent: {event.kind.value}\ndata: {event.to_json()}\n\n"


def _gap(last_id: int | None) -> str:
    data = json.dumps({"reason": "events were missed; read the state again", "after": last_id})
    return f"event: gap\ndata: {data}\n\n"


async def _frames(
    sub: Subscription, replay: list[LiveEvent] | None, heartbeat: float
) -> AsyncIterator[str]:
    try:
        yield f"retry: {RETRY_MS}\n\n"
        if replay is None:
            yield _gap(sub.last_id)
        elif replay:
            yield "".join(_frame(e) for e in replay)
        while not sub.closed:
            try:
                batch = await sub.get(heartbeat)
            except EventsMissed:
                yield _gap(sub.last_id)
                continue
            if batch:
                yield "".join(_frame(e) for e in batch)
            elif not sub.closed:
                yield ": keepalive\n\n"
    finally:
        sub.close()


@router.get(
    "/events",
    openapi_extra=role_extra(Role.VIEWER),
    summary="Live task events (Server-Sent Events)",
    responses={
        200: {
            "description": "An event stream (Accept: text/event-stream) or a JSON page",
            "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
        }
    },
    response_model=EventPage,
)
async def events(
    request: Request,
    app: NightcrewDep,
    _caller: Annotated[Principal, Depends(require(Role.VIEWER))],
    task: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this task.")] = None,
    queue: Annotated[Text | None, Query(min_length=1, max_length=64)] = None,
    pipeline: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    schedule: Annotated[Text | None, Query(min_length=1, max_length=200)] = None,
    kind: Annotated[list[EventKind] | None, Query(description="Only these kinds.")] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="Resume after id.")] = None,
    heartbeat: Annotated[float, Query(ge=0.1, le=300, description="Seconds.")] = 15.0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", pattern=r"^[0-9]{1,19}$")
    ] = None,
) -> Any:
    """Task events as they happen, from every process of the database, filtered by task,
    queue, pipeline, schedule and kind (all given must match)."""
    event_filter = EventFilter(
        task_id=task,
        queue=queue,
        pipeline_id=pipeline,
        schedule=schedule,
        kinds=None if not kind else frozenset(kind),
    )
    resume = int(last_event_id) if last_event_id is not None else after
    hub = app.live.hub()
    if EVENT_STREAM in request.headers.get("accept", ""):
        await hub.ready()
        sub, replay = hub.subscribe(event_filter, resume)
        return StreamingResponse(
            _frames(sub, replay, heartbeat),
            media_type=EVENT_STREAM,
            headers={"X-Accel-Buffering": "no", "Cache-Control": "no-store"},
        )
    kept = hub.replay(resume, event_filter) if resume is not None else hub.kept(event_filter)
    if kept is None:
        newest = hub.last_id
        return EventPage(events=[], last_id=newest if newest is not None else resume, gap=True)
    page = kept[:limit]
    last = page[-1].id if page else (resume if resume is not None else hub.last_id)
    return EventPage(
        events=[EventOut.model_validate(e.as_dict()) for e in page], last_id=last, gap=False
    )
