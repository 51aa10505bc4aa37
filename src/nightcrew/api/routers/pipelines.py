"""``/api/v1/pipelines``: list, show, cancel, and retry a failed step.

Each route is one call of `nightcrew.actions` (the CLI's and the dashboard's own
functions), made as the authenticated caller, with the caller's address for the audit log.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from nightcrew import actions
from nightcrew.api.auth import Principal, require, role_extra
from nightcrew.api.deps import ClientDep, NightcrewDep
from nightcrew.api.routers.tasks import Cursor, parse_cursor
from nightcrew.api.schemas import (
    MAX_ID,
    SAFE_TEXT,
    PipelineDetail,
    PipelineList,
    PipelineOut,
    TaskDetail,
)
from nightcrew.models import PipelineStatus
from nightcrew.pipelines import MAX_STEP_NAME
from nightcrew.store.ops import MAX_PAGE
from nightcrew.values import Role

router = APIRouter(tags=["pipelines"])

Operator = Role.OPERATOR
Viewer = Role.VIEWER

PipelineId = Annotated[int, Path(ge=1, le=MAX_ID, description="The pipeline's id.")]
StepName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_STEP_NAME,
        pattern=SAFE_TEXT,
        description="The step's name (the rest of the path: a name may hold a `/`).",
    ),
]

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No pipeline with this id"}}


@router.get("/pipelines", openapi_extra=role_extra(Viewer), summary="List pipelines, newest first")
def list_pipelines(
    app: NightcrewDep,
    _caller: Annotated[Principal, Depends(require(Viewer))],
    status: Annotated[list[PipelineStatus], Query(max_length=6)] = [],  # noqa: B006 - FastAPI copies it
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> PipelineList:
    """``status`` may be given more than once (any of them)."""
    pipelines, next_before_id = actions.list_pipelines(
        app, statuses=dict.fromkeys(status), before_id=parse_cursor(cursor), limit=limit
    )
    cursor_out = None if next_before_id is None else str(next_before_id)
    return PipelineList(pipelines=[PipelineOut.of(p) for p in pipelines], next_cursor=cursor_out)


@router.get(
    "/pipelines/{pipeline_id}",
    openapi_extra=role_extra(Viewer),
    responses=NOT_FOUND,
    summary="Show one pipeline",
)
def show_pipeline(
    pipeline_id: PipelineId,
    app: NightcrewDep,
    _caller: Annotated[Principal, Depends(require(Viewer))],
) -> PipelineDetail:
    """The pipeline, its steps (as GET /tasks lists them) and its edges."""
    return PipelineDetail.of(actions.get_pipeline(app, pipeline_id))


@router.post(
    "/pipelines/{pipeline_id}/cancel",
    openapi_extra=role_extra(Operator),
    responses={**NOT_FOUND, 409: {"description": "The pipeline has finished"}},
    summary="Cancel",
)
def cancel_pipeline(
    pipeline_id: PipelineId,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "pipeline.cancel"))],
) -> PipelineOut:
    """CANCELLED now: steps not yet started are cancelled at once, running ones are asked
    to stop (their workers stop them)."""
    return PipelineOut.of(
        actions.cancel_pipeline(app, pipeline_id, actor=caller.actor, client=client)
    )


@router.post(
    "/pipelines/{pipeline_id}/steps/{step:path}/retry",
    openapi_extra=role_extra(Operator),
    responses={
        **NOT_FOUND,
        409: {"description": "The step's status forbids a retry"},
    },
    summary="Retry a step",
)
def retry_step(
    pipeline_id: PipelineId,
    step: StepName,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Operator, "pipeline.retry_step"))],
) -> TaskDetail:
    """An ERROR or CANCELLED step back to PENDING with fresh attempts; the steps its
    failure cancelled are re-armed and the pipeline reopens. The response is the step."""
    return TaskDetail.of(
        actions.retry_step(app, pipeline_id, step, actor=caller.actor, client=client)
    )
