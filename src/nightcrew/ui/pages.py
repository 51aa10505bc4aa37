"""The dashboard's pages (GET): each reads through the operator actions and renders one
template. Live parts (``/live/...``) stream their fragments (`nightcrew.ui.live`); the
overview and the workers refresh their body by polling a fragment every few seconds.

Query parameters are read by hand and forgivingly: a page given a bad filter shows the
page with the filter dropped and says so, rather than an API-style 422.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

from nightcrew import actions
from nightcrew.api.schemas import TaskDetail
from nightcrew.catalog import ProcessorInfo
from nightcrew.models import FINAL_STATUSES, MaintenanceTaskStatus, PipelineStatus
from nightcrew.store.pipeline_ops import PipelineDetail
from nightcrew.ui import forms, live, svg
from nightcrew.ui.app import (
    PAGE_HEADERS,
    Ctx,
    CtxDep,
    Reader,
    UiError,
    call,
    fragment,
    render,
)
from nightcrew.ui.session import token_login_enabled
from nightcrew.values import AuditFilter, TaskStats, TaskView, WorkerView

router = APIRouter()

PAGE_SIZE = 50
MAX_ID = 2**63 - 1
S = MaintenanceTaskStatus


def _positive_int(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    number = int(value.strip())
    return number if 0 < number <= MAX_ID else None


def _text(value: str | None, limit: int = 200) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > limit or any(ord(c) < 32 for c in value):
        return None
    return value


def _statuses(values: Sequence[str]) -> list[MaintenanceTaskStatus]:
    chosen = []
    for value in values:
        try:
            chosen.append(MaintenanceTaskStatus(value.upper()))
        except ValueError:
            continue
    return list(dict.fromkeys(chosen))


# ---------------------------------------------------------------- login


@router.get("/login")
async def login_page(ctx: CtxDep, next: str | None = None) -> Response:
    """The token form; with a host's own authenticator, a pointer to the host's login."""
    return await render(
        ctx,
        "login.html",
        next=next or "",
        token_login=token_login_enabled(ctx.request),
        error=None,
    )


# ---------------------------------------------------------------- overview


@dataclass(frozen=True, slots=True)
class Workers:
    """The worker registry as read: every row (the dead marked) and how many are alive."""

    rows: Sequence[WorkerView]
    alive: int


async def _workers(ctx: Ctx) -> Workers:
    rows = await call(actions.list_workers, ctx.app)
    return Workers(rows, sum(1 for w in rows if w.alive))


def _overview_values(stats: TaskStats, workers: Workers) -> dict[str, Any]:
    queues = sorted(stats.by_queue.items())
    total = sum(stats.by_status.values())
    return {
        "stats": stats,
        "total": total,
        "queues": queues,
        "chart": svg.finished_chart(stats.finished_per_minute, stats.at),
        "workers": workers,
    }


@router.get("/")
async def overview(ctx: Reader) -> Response:
    stats = await call(actions.stats, ctx.app)
    values = _overview_values(stats, await _workers(ctx))
    return await render(ctx, "overview.html", page="overview", **values)


@router.get("/overview/body")
async def overview_body(ctx: CtxDep) -> Response:
    """The overview's body alone, polled by the page (401 without a caller: htmx then
    leaves the page as it is)."""
    if ctx.user is None:
        return Response(status_code=401)
    stats = await call(actions.stats, ctx.app)
    values = _overview_values(stats, await _workers(ctx))
    html = fragment(ctx, "partials/overview_body.html", **values)
    return HTMLResponse(html, headers=PAGE_HEADERS)


# ---------------------------------------------------------------- tasks


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """The task list's filters as the page read them from its URL."""

    statuses: list[MaintenanceTaskStatus]
    processor: str | None
    queue: str | None
    schedule: str | None
    pipeline: int | None
    cursor: int | None

    @classmethod
    def of(cls, request: Request) -> TaskQuery:
        return cls.of_mapping(request.query_params)

    @classmethod
    def of_mapping(cls, q: Any) -> TaskQuery:
        """From query parameters or a form's fields (both have ``get`` and ``getlist``)."""
        return cls(
            statuses=_statuses([v for v in q.getlist("status") if isinstance(v, str)]),
            processor=_text(q.get("processor"), 255),
            queue=_text(q.get("queue"), 64),
            schedule=_text(q.get("schedule")),
            pipeline=_positive_int(q.get("pipeline")),
            cursor=_positive_int(q.get("cursor")),
        )

    @property
    def filtered(self) -> bool:
        return bool(self.statuses or self.processor or self.queue or self.schedule or self.pipeline)

    def params(self) -> dict[str, Any]:
        return {
            "status": [s.value for s in self.statuses],
            "processor": self.processor,
            "queue": self.queue,
            "schedule": self.schedule,
            "pipeline": self.pipeline,
        }


@router.get("/tasks")
async def tasks(ctx: Reader, request: Request) -> Response:
    query = TaskQuery.of(request)
    page = await call(
        actions.list_tasks,
        ctx.app,
        statuses=query.statuses,
        processor=query.processor,
        queue=query.queue,
        schedule_name=query.schedule,
        pipeline_id=query.pipeline,
        before_id=query.cursor,
        limit=PAGE_SIZE,
    )
    return await render(
        ctx,
        "tasks.html",
        page="tasks",
        query=query,
        tasks=page.tasks,
        next_cursor=page.next_before_id,
        live_ids=",".join(str(t.id) for t in page.tasks),
    )


def _watched(value: str | None, limit: int = 200) -> list[int]:
    ids: list[int] = []
    for part in (value or "").split(",")[:limit]:
        number = _positive_int(part)
        if number is not None:
            ids.append(number)
    return list(dict.fromkeys(ids))


async def _read_tasks(ctx: Ctx, ids: Sequence[int]) -> list[TaskView]:
    """The watched tasks, in one listing when their ids are close, else one by one."""
    if not ids:
        return []
    low, high = min(ids), max(ids)
    wanted = set(ids)
    if high - low < 1000:
        page = await call(actions.list_tasks, ctx.app, before_id=high + 1, limit=high - low + 1)
        return [t for t in page.tasks if t.id in wanted]
    found = []
    for task_id in ids:
        try:
            found.append(await call(actions.get, ctx.app, task_id))
        except UiError:
            continue
    return found


def _sse(generator: Any) -> StreamingResponse:
    return StreamingResponse(
        generator,
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


@router.get("/live/tasks")
async def live_tasks(ctx: CtxDep, ids: str | None = None) -> Response:
    """Rows of the task list: ``status-<id>`` and ``progress-<id>`` fragments."""
    if ctx.user is None:
        return Response(status_code=401)
    watched = _watched(ids)

    async def produce() -> tuple[dict[str, str], bool]:
        shown: dict[str, str] = {}
        still_open = False
        for task in await _read_tasks(ctx, watched):
            shown[f"status-{task.id}"] = fragment(ctx, "partials/status.html", status=task.status)
            shown[f"progress-{task.id}"] = fragment(ctx, "partials/progress.html", task=task)
            still_open = still_open or task.status not in FINAL_STATUSES
        return shown, still_open

    return _sse(live.fragments(ctx.request, ctx.app, produce, live.for_tasks(watched)))


def _task_id(value: str) -> int:
    number = _positive_int(value)
    if number is None:
        raise UiError(404, "Task not found", f"no task with id {value!r}")
    return number


@router.get("/tasks/{task_id}")
async def task_page(ctx: Reader, task_id: str) -> Response:
    task = await call(actions.get, ctx.app, _task_id(task_id))
    detail = TaskDetail.of(task)
    title = f"Task {task.id}"
    return await render(ctx, "task.html", page="tasks", task=task, detail=detail, title=title)


@router.get("/live/tasks/{task_id}")
async def live_task(ctx: CtxDep, task_id: str) -> Response:
    """The task page's live part: one ``task`` fragment (status, progress, outcome)."""
    if ctx.user is None:
        return Response(status_code=401)
    number = _task_id(task_id)

    async def produce() -> tuple[dict[str, str], bool]:
        task = await call(actions.get, ctx.app, number)
        html = fragment(ctx, "partials/task_live.html", task=task, detail=TaskDetail.of(task))
        return {"task": html}, task.status not in FINAL_STATUSES

    wanted = live.for_tasks([number])
    return _sse(live.fragments(ctx.request, ctx.app, produce, wanted, task_id=number))


# ---------------------------------------------------------------- schedules


@router.get("/schedules")
async def schedules(ctx: Reader, after: str | None = None) -> Response:
    limit = 100
    rows = await call(actions.list_schedules, ctx.app, after=_text(after), limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return await render(
        ctx,
        "schedules.html",
        page="schedules",
        schedules=rows,
        next_after=rows[-1].name if more else None,
    )


# ---------------------------------------------------------------- pipelines


@router.get("/pipelines")
async def pipelines(ctx: Reader, request: Request) -> Response:
    chosen = []
    for value in request.query_params.getlist("status"):
        try:
            chosen.append(PipelineStatus(value.upper()))
        except ValueError:
            continue
    cursor = _positive_int(request.query_params.get("cursor"))
    rows, next_cursor = await call(
        actions.list_pipelines, ctx.app, statuses=chosen, before_id=cursor, limit=PAGE_SIZE
    )
    return await render(
        ctx,
        "pipelines.html",
        page="pipelines",
        pipelines=rows,
        statuses=chosen,
        next_cursor=next_cursor,
    )


def _graph(ctx: Ctx, detail: PipelineDetail) -> Any:
    nodes = [
        svg.GraphNode(
            id=step.id,
            label=step.step_name or f"task {step.id}",
            status=step.status.value,
            href=ctx.url(f"/tasks/{step.id}"),
            progress=step.progress,
        )
        for step in detail.steps
    ]
    labels = {s.value: s.value.lower() for s in MaintenanceTaskStatus}
    return svg.pipeline_graph(nodes, detail.edges, status_labels=labels)


def _pipeline_values(ctx: Ctx, detail: PipelineDetail) -> dict[str, Any]:
    depends: dict[int, list[int]] = {}
    for parent, child in detail.edges:
        depends.setdefault(child, []).append(parent)
    names = {s.id: s.step_name or f"task {s.id}" for s in detail.steps}
    return {
        "detail": detail,
        "pipeline": detail.pipeline,
        "graph": _graph(ctx, detail),
        "depends": {k: [names.get(p, str(p)) for p in v] for k, v in depends.items()},
    }


def _pipeline_id(value: str) -> int:
    number = _positive_int(value)
    if number is None:
        raise UiError(404, "Pipeline not found", f"no pipeline with id {value!r}")
    return number


@router.get("/pipelines/{pipeline_id}")
async def pipeline_page(ctx: Reader, pipeline_id: str) -> Response:
    detail = await call(actions.get_pipeline, ctx.app, _pipeline_id(pipeline_id))
    return await render(
        ctx,
        "pipeline.html",
        page="pipelines",
        title=f"Pipeline {detail.pipeline.id}",
        **_pipeline_values(ctx, detail),
    )


@router.get("/live/pipelines/{pipeline_id}")
async def live_pipeline(ctx: CtxDep, pipeline_id: str) -> Response:
    """The pipeline page's live parts: ``graph``, ``steps`` and ``summary``."""
    if ctx.user is None:
        return Response(status_code=401)
    number = _pipeline_id(pipeline_id)
    first = await call(actions.get_pipeline, ctx.app, number)

    async def produce() -> tuple[dict[str, str], bool]:
        detail = await call(actions.get_pipeline, ctx.app, number)
        values = _pipeline_values(ctx, detail)
        shown = {
            "graph": str(values["graph"]),
            "steps": fragment(ctx, "partials/pipeline_steps.html", **values),
            "summary": fragment(ctx, "partials/pipeline_summary.html", **values),
        }
        still_open = detail.pipeline.status in (PipelineStatus.PENDING, PipelineStatus.WORKING)
        return shown, still_open

    wanted = live.for_pipeline(number, [s.id for s in first.steps])
    return _sse(live.fragments(ctx.request, ctx.app, produce, wanted, pipeline_id=number))


# ---------------------------------------------------------------- workers


@router.get("/workers")
async def workers(ctx: Reader) -> Response:
    found = await _workers(ctx)
    return await render(ctx, "workers.html", page="workers", workers=found)


@router.get("/workers/body")
async def workers_body(ctx: CtxDep) -> Response:
    """The workers table alone, polled by the page."""
    if ctx.user is None:
        return Response(status_code=401)
    html = fragment(ctx, "partials/workers_body.html", workers=await _workers(ctx))
    return HTMLResponse(html, headers=PAGE_HEADERS)


# ---------------------------------------------------------------- audit


@router.get("/audit")
async def audit(ctx: Reader, request: Request) -> Response:
    q = request.query_params
    outcome = q.get("outcome")
    audit_filter = AuditFilter(
        actor=_text(q.get("actor")),
        action=_text(q.get("action"), 64),
        outcome=outcome if outcome in ("ok", "refused", "error") else None,  # type: ignore[arg-type]
        target=_text(q.get("target")),
        before_id=_positive_int(q.get("cursor")),
        limit=PAGE_SIZE,
    )
    page = await call(actions.list_audit, ctx.app, audit_filter)
    return await render(
        ctx,
        "audit.html",
        page="audit",
        filter=audit_filter,
        entries=page.records,
        next_cursor=page.next_before_id,
    )


# ---------------------------------------------------------------- processors


@router.get("/processors")
async def processors(ctx: Reader) -> Response:
    catalog = await call(actions.processors, ctx.app)
    return await render(ctx, "processors.html", page="processors", catalog=catalog)


async def find_processor(ctx: Ctx, class_path: str) -> ProcessorInfo:
    catalog = await call(actions.processors, ctx.app)
    for info in catalog.processors:
        if info.class_path == class_path:
            return info
    raise UiError(404, "Processor not found", f"{class_path!r} is not an allowed processor")


@router.get("/processors/{class_path}")
async def processor_page(ctx: Reader, class_path: str) -> Response:
    info = await find_processor(ctx, class_path)
    return await render(
        ctx,
        "processor.html",
        page="processors",
        title=info.name,
        info=info,
        fields=forms.fields_of(info.schema),
        options={},
        errors={},
        options_meta=forms.OPTION_FIELDS,
    )
