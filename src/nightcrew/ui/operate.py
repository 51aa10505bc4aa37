"""The dashboard's forms (POST): login, logout, and the operators' actions.

Each action is one call of `nightcrew.actions` as the signed-in caller, with the caller's
address, so it is audited exactly as the same call through the API or the CLI. Every post
goes through `acting` (a caller, the CSRF token, the role) and ends in a redirect back to
the page it came from (post/redirect/get: a reload never repeats an action), with the
outcome as a one-time message.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nightcrew import actions
from nightcrew.errors import NightcrewError
from nightcrew.ui import forms
from nightcrew.ui.app import (
    Ctx,
    CtxDep,
    UiError,
    acting,
    call,
    form_of,
    redirect,
    render,
    safe_next,
)
from nightcrew.ui.pages import TaskQuery, _pipeline_id, _positive_int, _task_id, find_processor
from nightcrew.ui.session import token_login_enabled
from nightcrew.values import AuditRecord, Role, TaskFilter

router = APIRouter()

Operator = Role.OPERATOR
#: Most tasks one bulk post acts on one by one (by selection).
MAX_SELECTED = 200


def _field(form: object, name: str) -> str:
    value = form.get(name) if hasattr(form, "get") else None
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------- login / logout


@router.post("/login")
async def login(ctx: CtxDep, request: Request) -> Response:
    """Check the posted token as the API does and start a session for it."""
    form = await form_of(request)
    next_url = safe_next(ctx, _field(form, "next"))
    if not ctx.session.check_csrf(_field(form, "csrf")):
        raise UiError(403, "Form expired", "the login form is stale: reload the page")
    if not token_login_enabled(request):
        raise UiError(404, "No token login", "this dashboard signs in through its host")
    token = _field(form, "token").strip()
    found = await run_in_threadpool(actions.authenticate, ctx.app, token) if token else None
    if found is None:
        return await render(
            ctx,
            "login.html",
            status=401,
            next=next_url,
            token_login=True,
            error="That token is not valid (unknown or revoked).",
        )
    ctx.session.log_in(found.id, found.name)
    entry = AuditRecord(
        f"token:{found.name}",
        "ui.login",
        f"token:{found.name}",
        None,
        "ok",
        detail=f"dashboard session as {found.role.value}",
        client=ctx.client,
    )
    await run_in_threadpool(actions.record, ctx.app, entry)
    return await redirect(ctx, next_url)


@router.post("/logout")
async def logout(ctx: CtxDep, request: Request) -> Response:
    form = await form_of(request)
    if not ctx.session.check_csrf(_field(form, "csrf")):
        raise UiError(403, "Form expired", "the form is stale: reload the page")
    ctx.session.log_out()
    ctx.session.flash("ok", "Signed out.")
    return await redirect(ctx, ctx.url("/login"))


# ---------------------------------------------------------------- tasks


def _done(ctx: Ctx, what: str, changed: int, refused: list[str]) -> None:
    if changed:
        ctx.session.flash("ok", f"{what}: {changed} task{'s' if changed != 1 else ''}.")
    for message in refused[:5]:
        ctx.session.flash("error", message)
    if len(refused) > 5:
        ctx.session.flash("error", f"... and {len(refused) - 5} more refused.")
    if not changed and not refused:
        ctx.session.flash("warning", f"{what}: no task selected.")


TASK_ACTIONS = {
    "cancel": (actions.cancel, "Cancelled (or asked to stop)"),
    "retry": (actions.retry, "Retried"),
    "activate": (actions.activate, "Activated"),
}


@router.post("/tasks/{task_id}/cancel")
async def cancel_task(
    task_id: str, request: Request, ctx: Annotated[Ctx, Depends(acting(Operator, "task.cancel"))]
) -> Response:
    return await _task_action(ctx, request, task_id, "cancel")


@router.post("/tasks/{task_id}/retry")
async def retry_task(
    task_id: str, request: Request, ctx: Annotated[Ctx, Depends(acting(Operator, "task.retry"))]
) -> Response:
    return await _task_action(ctx, request, task_id, "retry")


@router.post("/tasks/{task_id}/activate")
async def activate_task(
    task_id: str,
    request: Request,
    ctx: Annotated[Ctx, Depends(acting(Operator, "task.activate"))],
) -> Response:
    return await _task_action(ctx, request, task_id, "activate")


async def _task_action(ctx: Ctx, request: Request, task_id: str, op: str) -> Response:
    number = _task_id(task_id)
    fn, what = TASK_ACTIONS[op]
    form = await form_of(request)
    back = safe_next(ctx, _field(form, "next"), ctx.url(f"/tasks/{number}"))
    try:
        await run_in_threadpool(fn, ctx.app, number, actor=ctx.actor, client=ctx.client)
    except NightcrewError as exc:
        _done(ctx, what, 0, [f"task {number}: {exc}"])
    else:
        _done(ctx, what, 1, [])
    return await redirect(ctx, back)


@router.post("/tasks/bulk")
async def bulk(
    request: Request, ctx: Annotated[Ctx, Depends(acting(Operator, "tasks.bulk"))]
) -> Response:
    """Selected tasks one by one (each audited as its own action), or every task matching
    the list's filter in one bulk action (``op`` ``cancel-matching`` / ``retry-matching``)."""
    form = await form_of(request)
    op = _field(form, "op")
    back = safe_next(ctx, _field(form, "next"), ctx.url("/tasks"))
    if op in ("cancel-matching", "retry-matching"):
        return await _bulk_matching(ctx, form, op, back)
    if op not in ("cancel", "retry"):
        raise UiError(400, "Unknown action", f"no bulk action {op!r}")
    fn, what = TASK_ACTIONS[op]
    ids = []
    for value in form.getlist("ids")[:MAX_SELECTED]:
        number = _positive_int(value if isinstance(value, str) else None)
        if number is not None:
            ids.append(number)
    changed, refused = 0, []
    for number in dict.fromkeys(ids):
        try:
            await run_in_threadpool(fn, ctx.app, number, actor=ctx.actor, client=ctx.client)
            changed += 1
        except NightcrewError as exc:
            refused.append(f"task {number}: {exc}")
    _done(ctx, what, changed, refused)
    return await redirect(ctx, back)


async def _bulk_matching(ctx: Ctx, form: object, op: str, back: str) -> Response:
    query = TaskQuery.of_mapping(form)
    if not query.filtered:
        raise UiError(400, "No filter", "a bulk action by filter needs at least one criterion")
    task_filter = TaskFilter(
        statuses=tuple(query.statuses),
        processor=query.processor,
        queue=query.queue,
        schedule_name=query.schedule,
        pipeline_id=query.pipeline,
        limit=1000,
    )
    fn = actions.bulk_cancel if op == "cancel-matching" else actions.bulk_retry
    result = await call(fn, ctx.app, task_filter, actor=ctx.actor, client=ctx.client)
    what = "Cancelled" if op == "cancel-matching" else "Retried"
    ctx.session.flash(
        "ok",
        f"{what} {len(result.changed)} matching tasks"
        + (f"; {len(result.skipped)} had moved on" if result.skipped else "")
        + ("; more match: run it again" if result.more else "")
        + ".",
    )
    return await redirect(ctx, back)


# ---------------------------------------------------------------- schedules


SCHEDULE_ACTIONS = {
    "pause": (actions.pause_schedule, "Paused"),
    "resume": (actions.resume_schedule, "Resumed"),
    "run-now": (actions.run_schedule_now, "Enqueued a run of"),
}


@router.post("/schedules/action")
async def schedule_action(
    request: Request, ctx: Annotated[Ctx, Depends(acting(Operator, "schedule.action"))]
) -> Response:
    form = await form_of(request)
    name, op = _field(form, "name"), _field(form, "op")
    if op not in SCHEDULE_ACTIONS:
        raise UiError(400, "Unknown action", f"no schedule action {op!r}")
    fn, what = SCHEDULE_ACTIONS[op]
    try:
        await run_in_threadpool(fn, ctx.app, name, actor=ctx.actor, client=ctx.client)
    except NightcrewError as exc:
        ctx.session.flash("error", f"schedule {name}: {exc}")
    else:
        ctx.session.flash("ok", f"{what} schedule {name}.")
    return await redirect(ctx, safe_next(ctx, _field(form, "next"), ctx.url("/schedules")))


# ---------------------------------------------------------------- pipelines


@router.post("/pipelines/{pipeline_id}/cancel")
async def cancel_pipeline(
    pipeline_id: str,
    ctx: Annotated[Ctx, Depends(acting(Operator, "pipeline.cancel"))],
) -> Response:
    number = _pipeline_id(pipeline_id)
    try:
        await run_in_threadpool(
            actions.cancel_pipeline, ctx.app, number, actor=ctx.actor, client=ctx.client
        )
    except NightcrewError as exc:
        ctx.session.flash("error", f"pipeline {number}: {exc}")
    else:
        ctx.session.flash("ok", f"Cancelled pipeline {number}.")
    return await redirect(ctx, ctx.url(f"/pipelines/{number}"))


@router.post("/pipelines/{pipeline_id}/retry")
async def retry_step(
    pipeline_id: str,
    request: Request,
    ctx: Annotated[Ctx, Depends(acting(Operator, "pipeline.retry_step"))],
) -> Response:
    number = _pipeline_id(pipeline_id)
    step = _field(await form_of(request), "step")
    try:
        await run_in_threadpool(
            actions.retry_step, ctx.app, number, step, actor=ctx.actor, client=ctx.client
        )
    except NightcrewError as exc:
        ctx.session.flash("error", f"step {step}: {exc}")
    else:
        ctx.session.flash("ok", f"Retrying step {step}.")
    return await redirect(ctx, ctx.url(f"/pipelines/{number}"))


# ---------------------------------------------------------------- creating tasks


@router.post("/processors/{class_path}")
async def create_task(
    class_path: str,
    request: Request,
    ctx: Annotated[Ctx, Depends(acting(Operator, "task.create"))],
) -> Response:
    """The processor's form: shaped here, validated by the processor's model through
    `actions.enqueue` (a refusal shows the form again with what was sent)."""
    info = await find_processor(ctx, class_path)
    form = await form_of(request)
    posted = {k: v for k, v in form.items() if isinstance(v, str)}
    fields = forms.fields_of(info.schema)
    errors: dict[str, str] = {}
    try:
        config = forms.config_from(fields, posted, info.schema)
        options = forms.options_from(posted)
        done = await run_in_threadpool(
            actions.enqueue,
            ctx.app,
            info.class_path,
            config,
            options,
            actor=ctx.actor,
            client=ctx.client,
        )
    except forms.FormErrors as exc:
        errors = exc.errors
    except NightcrewError as exc:
        errors = {"": str(exc)}
    if errors:
        return await render(
            ctx,
            "processor.html",
            status=422,
            page="processors",
            title=info.name,
            info=info,
            fields=forms.with_values(fields, posted),
            options={k[len("option.") :]: v for k, v in posted.items() if k.startswith("option.")},
            errors=errors,
            options_meta=forms.OPTION_FIELDS,
        )
    task = done.task
    if done.created:
        ctx.session.flash("ok", f"Created task {task.id}.")
    else:
        ctx.session.flash("warning", f"An open task holds that unique key: task {task.id}.")
    for warning in done.warnings:
        ctx.session.flash("warning", warning)
    return await redirect(ctx, ctx.url(f"/tasks/{task.id}"))
