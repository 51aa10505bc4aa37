"""``/api/v1/tasks``: create, list, show, cancel, retry, activate, and bulk cancel/retry.

Each route is one call of `nightcrew.actions` (the CLI's own functions), made as the
authenticated caller, with the caller's address for the audit log.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from nightcrew import actions
from nightcrew.api.auth import Principal, require, role_extra
from nightcrew.api.deps import ClientDep, NightcrewDep
from nightcrew.api.problem import InvalidParameter
from nightcrew.api.schemas import (
    MAX_ID,
    BulkFilter,
    BulkOutcome,
    CreatedTask,
    CreateTask,
    Status,
    TaskDetail,
    TaskList,
    TaskSummary,
    Text,
    Timestamp,
)
from nightcrew.enqueue import TaskOptions
from nightcrew.store.ops import MAX_PAGE
from nightcrew.values import Role, TaskFilter

router = APIRouter(tags=["tasks"])

TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="The task's id.")]
Cursor = Annotated[
    str | None,
    Query(
        pattern=r"^[1-9][0-9]{0,18}$",
        description="The `next_cursor` of the previous page.",
    ),
]


def parse_cursor(cursor: str | None) -> int | None:
    """A page cursor as the id listings continue below."""
    if cursor is None:
        return None
    value = int(cursor)
    if value > MAX_ID:
        raise InvalidParameter("cursor out of range")
    return value


def _filter(
    status: list[Status],
    processor: str | None,
    queue: str | None,
    schedule: str | None,
    pipeline: int | None,
    created_after: Timestamp | None,
    created_before: Timestamp | None,
    before_id: int | None,
    limit: int,
) -> TaskFilter:
    return TaskFilter(
        statuses=tuple(dict.fromkeys(status)),
        processor=processor,
        queue=queue,
        before_id=before_id,
        limit=limit,
        schedule_name=schedule,
        pipeline_id=pipeline,
        created_after=created_after,
        created_before=created_before,
    )


Operator = Role.OPERATOR
Viewer = Role.VIEWER


@router.get("/tasks", openapi_extra=role_extra(Viewer), summary="List tasks, newest first")
def list_tasks(
    app: NightcrewDep,
    _caller: Annotated[Principal, Depends(require(Viewer))],
    status: Annotated[list[Status], Query(max_length=6)] = [],  # noqa: B006 - FastAPI copies it
    processor: Annotated[Text | None, Query(min_length=1, max_length=255)] = None,
    queue: Annotated[Text | None, Query(min_length=1, max_length=64)] = None,
    schedule: Annotated[Text | None, Query(min_length=1, max_length=200)] = None,
    pipeline: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    created_after: Annotated[Timestamp | None, Query()] = None,
    created_before: Annotated[Timestamp | None, Query()] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> TaskList:
    """Filters combine with AND; ``processor`` is a class path or the class name alone."""
    page = actions.list_tasks(
        app,
        statuses=dict.fromkeys(status),
        processor=processor,
        queue=queue,
        before_id=parse_cursor(cursor),
        limit=limit,
        schedule_name=schedule,
        pipeline_id=pipeline,
        created_after=created_after,
        created_before=created_before,
    )
    cursor_out = None if page.next_before_id is None else str(page.next_before_id)
    return TaskList(tasks=[TaskSummary.of(t) for t in page.tasks], next_cursor=cursor_out)


@router.post(
    "/tasks",
    status_code=201,
    openapi_extra=role_extra(Operator),
    responses={200: {"model": CreatedTask, "description": "An open task holds the unique key"}},
    summary="Create a task",
)
def create_task(
    body: CreateTask,
    response: Response,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "task.create"))],
) -> CreatedTask:
    """The processor must be allowed and the configuration must validate against its
    model; unknown configuration keys are kept, and named in ``warnings``."""
    options = TaskOptions(
        start_at=body.start_at,
        delay=body.delay,
        priority=body.priority,
        queue=body.queue,
        max_attempts=body.max_attempts,
        timeout=body.timeout,
        unique_key=body.unique_key,
        inactive=body.inactive,
        start_in=body.start_in,
    )
    done = actions.enqueue(
        app, body.processor, body.config, options, actor=caller.actor, client=client
    )
    if not done.created:
        response.status_code = 200
    return CreatedTask(
        task=TaskDetail.of(done.task), created=done.created, warnings=list(done.warnings)
    )


def _bulk_filter(body: BulkFilter) -> TaskFilter:
    return _filter(
        body.status,
        body.processor,
        body.queue,
        body.schedule,
        body.pipeline,
        body.created_after,
        body.created_before,
        None,
        body.limit,
    )


@router.post(
    "/tasks/bulk/cancel", openapi_extra=role_extra(Operator), summary="Cancel tasks by filter"
)
def bulk_cancel(
    body: BulkFilter,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "tasks.bulk_cancel"))],
) -> BulkOutcome:
    """Up to ``limit`` open tasks, in one transaction; call again while ``more``."""
    result = actions.bulk_cancel(app, _bulk_filter(body), actor=caller.actor, client=client)
    return BulkOutcome.of(result)


@router.post(
    "/tasks/bulk/retry", openapi_extra=role_extra(Operator), summary="Retry tasks by filter"
)
def bulk_retry(
    body: BulkFilter,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "tasks.bulk_retry"))],
) -> BulkOutcome:
    """Up to ``limit`` ERROR or CANCELLED tasks, in one transaction; call again while
    ``more``."""
    result = actions.bulk_retry(app, _bulk_filter(body), actor=caller.actor, client=client)
    return BulkOutcome.of(result)


@router.get("/tasks/{task_id}", openapi_extra=role_extra(Viewer), summary="Show one task")
def show_task(
    task_id: TaskId,
    app: NightcrewDep,
    _caller: Annotated[Principal, Depends(require(Viewer))],
) -> TaskDetail:
    return TaskDetail.of(actions.get(app, task_id))


@router.post("/tasks/{task_id}/cancel", openapi_extra=role_extra(Operator), summary="Cancel")
def cancel_task(
    task_id: TaskId,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "task.cancel"))],
) -> TaskDetail:
    """INACTIVE or PENDING: CANCELLED now; WORKING: its worker is asked to stop it."""
    return TaskDetail.of(actions.cancel(app, task_id, actor=caller.actor, client=client))


@router.post("/tasks/{task_id}/retry", openapi_extra=role_extra(Operator), summary="Retry")
def retry_task(
    task_id: TaskId,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "task.retry"))],
) -> TaskDetail:
    """ERROR or CANCELLED back to PENDING, due now, with fresh attempts."""
    return TaskDetail.of(actions.retry(app, task_id, actor=caller.actor, client=client))


@router.post("/tasks/{task_id}/activate", openapi_extra=role_extra(Operator), summary="Activate")
def activate_task(
    task_id: TaskId,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "task.activate"))],
) -> TaskDetail:
    """INACTIVE to PENDING."""
    return TaskDetail.of(actions.activate(app, task_id, actor=caller.actor, client=client))
