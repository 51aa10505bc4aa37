"""``/api/v1/schedules``: list, show, add, pause, resume, run now and delete schedules.

Each route is one call of `nightcrew.actions` (the CLI's own functions), made as the
authenticated caller, with the caller's address for the audit log. A schedule's name may
hold a ``/`` (``reports/daily``): the routes take the rest of the path as the name, so
``/schedules/reports/daily/pause`` pauses ``reports/daily``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from nightcrew import actions
from nightcrew.api.auth import Principal, require, role_extra
from nightcrew.api.deps import ClientDep, NightcrewDep
from nightcrew.api.problem import ApiError
from nightcrew.api.schemas import (
    SCHEDULE_NAME,
    CreatedSchedule,
    CreateSchedule,
    ScheduleDetail,
    ScheduleList,
    ScheduleSource,
    ScheduleSummary,
    TaskDetail,
)
from nightcrew.app import Nightcrew
from nightcrew.errors import ConfigurationError
from nightcrew.processors import unknown_fields
from nightcrew.schedules.values import ScheduleView
from nightcrew.store.ops import MAX_PAGE
from nightcrew.values import Role

router = APIRouter(tags=["schedules"])

Operator = Role.OPERATOR
Viewer = Role.VIEWER

Name = Annotated[
    str,
    Path(min_length=1, max_length=200, pattern=SCHEDULE_NAME, description="The schedule's name."),
]
NameCursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        pattern=SCHEDULE_NAME,
        description="The `next_cursor` of the previous page.",
    ),
]

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No schedule of this name"}}


class InvalidSchedule(ApiError):
    """A trigger or option the schedule refuses (a bad cron expression, an unknown time
    zone, two triggers, a one-off in the past, a reserved name)."""

    status, slug, title = 422, "invalid-schedule", "Invalid schedule"


def _warnings(app: Nightcrew, view: ScheduleView) -> list[str]:
    """The configuration keys the schedule's processor does not declare, as POST /tasks
    names them (kept in the configuration, ignored by the processor)."""
    processor = app.loader.load(view.processor_type, view.processor_json)
    return [
        f"{view.processor_type} declares no field {name!r}: kept in the configuration, "
        "ignored by the processor"
        for name in unknown_fields(processor)
    ]


@router.get("/schedules", openapi_extra=role_extra(Viewer), summary="List schedules, by name")
def list_schedules(
    app: NightcrewDep,
    _caller: Annotated[Principal, Depends(require(Viewer))],
    enabled: Annotated[bool | None, Query(description="Paused (false) or not (true).")] = None,
    source: Annotated[ScheduleSource | None, Query()] = None,
    cursor: NameCursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> ScheduleList:
    """Filters combine with AND; ``source`` is ``code`` (declared in
    ``NIGHTCREW_SCHEDULES``, or nightcrew's upkeep) or ``runtime`` (added by an operator)."""
    rows = actions.list_schedules(
        app, after=cursor, limit=limit + 1, enabled=enabled, source=source
    )
    page = rows[:limit]
    cursor_out = page[-1].name if len(rows) > limit else None
    return ScheduleList(schedules=[ScheduleSummary.of(v) for v in page], next_cursor=cursor_out)


@router.post(
    "/schedules",
    status_code=201,
    openapi_extra=role_extra(Operator),
    responses={409: {"description": "A schedule of this name exists"}},
    summary="Add a schedule",
)
def add_schedule(
    body: CreateSchedule,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "schedule.add"))],
) -> CreatedSchedule:
    """The processor must be allowed and the configuration must validate against its
    model; unknown configuration keys are kept, and named in ``warnings``. Its first
    tick is the first one after now."""
    try:
        view = actions.add_schedule(
            app,
            body.name,
            body.processor,
            body.config,
            cron=body.cron,
            timezone=body.timezone,
            every=body.every,
            at=body.at,
            queue=body.queue,
            priority=body.priority,
            max_attempts=body.max_attempts,
            timeout=body.timeout,
            misfire_grace=body.misfire_grace,
            coalesce=body.coalesce,
            max_instances=body.max_instances,
            jitter=body.jitter,
            actor=caller.actor,
            client=client,
        )
    except ConfigurationError as exc:
        raise InvalidSchedule(str(exc)) from exc
    return CreatedSchedule(schedule=ScheduleDetail.of(view), warnings=_warnings(app, view))


@router.post(
    "/schedules/{name:path}/pause",
    openapi_extra=role_extra(Operator),
    responses=NOT_FOUND,
    summary="Pause",
)
def pause_schedule(
    name: Name,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "schedule.pause"))],
) -> ScheduleDetail:
    """No tick runs until it is resumed (a paused code schedule stays paused across
    deploys). Pausing a paused schedule changes nothing."""
    return ScheduleDetail.of(actions.pause_schedule(app, name, actor=caller.actor, client=client))


@router.post(
    "/schedules/{name:path}/resume",
    openapi_extra=role_extra(Operator),
    responses=NOT_FOUND,
    summary="Resume",
)
def resume_schedule(
    name: Name,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "schedule.resume"))],
) -> ScheduleDetail:
    """Ticks again from the first tick after now: the ticks of the paused time are not
    caught up. Resuming an active schedule changes nothing."""
    return ScheduleDetail.of(actions.resume_schedule(app, name, actor=caller.actor, client=client))


@router.post(
    "/schedules/{name:path}/run-now",
    status_code=201,
    openapi_extra=role_extra(Operator),
    responses={
        **NOT_FOUND,
        409: {"description": "The schedule has a task for this instant already"},
    },
    summary="Run now",
)
def run_schedule_now(
    name: Name,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "schedule.run_now"))],
) -> TaskDetail:
    """Enqueue the schedule's task now (paused or not), leaving its next run where it is;
    the response is the new task."""
    return TaskDetail.of(actions.run_schedule_now(app, name, actor=caller.actor, client=client))


@router.get(
    "/schedules/{name:path}",
    openapi_extra=role_extra(Viewer),
    responses=NOT_FOUND,
    summary="Show one schedule",
)
def show_schedule(
    name: Name,
    app: NightcrewDep,
    _caller: Annotated[Principal, Depends(require(Viewer))],
) -> ScheduleDetail:
    return ScheduleDetail.of(actions.get_schedule(app, name))


@router.delete(
    "/schedules/{name:path}",
    openapi_extra=role_extra(Operator),
    responses=NOT_FOUND,
    summary="Delete",
)
def delete_schedule(
    name: Name,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "schedule.delete"))],
) -> ScheduleDetail:
    """The schedule as it was; its tasks stay. A schedule declared in code comes back
    with the next sync: remove it from code, or pause it, instead."""
    return ScheduleDetail.of(actions.delete_schedule(app, name, actor=caller.actor, client=client))
