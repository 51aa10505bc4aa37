"""The dashboard's plumbing: installing it on the API's app, the per-request context, the
guards every page and form goes through, rendering, errors and the shipped static files.

The dashboard lives on the admin API's own FastAPI application (``create_api`` calls
`install`), under ``/ui`` next to ``/api/v1``, so ``nightcrew serve`` and ``mount_admin``
bring it along, with the same `Nightcrew`, the same authenticator and the same audit log.
Its routes are left out of the OpenAPI document: they are pages, not an API.

Pages send their own security headers (the API's ``default-src 'none'`` would block the
dashboard's own stylesheet and scripts): a content security policy that admits this
origin's files only, no inline script or style, no eval, no framing.
"""

from __future__ import annotations

import mimetypes
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from nightcrew import actions
from nightcrew.api.deps import client_of, nightcrew_of
from nightcrew.api.problem import ERROR_STATUS
from nightcrew.app import Nightcrew
from nightcrew.errors import (
    DatabaseError,
    NightcrewError,
    PipelineNotFound,
    ScheduleExists,
    ScheduleNotFound,
)
from nightcrew.models import MaintenanceTaskStatus, PipelineStatus
from nightcrew.ui import fmt
from nightcrew.ui.session import UiSession, UiUser, current_user, load_session, save_session
from nightcrew.values import AuditRecord, Role

UI_PREFIX = "/ui"
HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"

#: The vendored scripts (see ``static/vendor/README.md``); versioned names, so cacheable.
HTMX = "vendor/htmx-2.0.11.min.js"
HTMX_SSE = "vendor/htmx-ext-sse-2.2.4.min.js"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {"content-security-policy": CSP, "cache-control": "no-store"}

#: Errors of the dashboard's extra resources, as `ERROR_STATUS` maps the API's.
_MORE_STATUS: tuple[tuple[type[NightcrewError], int, str, str], ...] = (
    (PipelineNotFound, 404, "pipeline-not-found", "Pipeline not found"),
    (ScheduleNotFound, 404, "schedule-not-found", "Schedule not found"),
    (ScheduleExists, 409, "schedule-exists", "Schedule exists"),
)

P = ParamSpec("P")
R = TypeVar("R")


class UiError(Exception):
    """A page that cannot be shown or an action refused: an HTML error page."""

    def __init__(self, status: int, title: str, detail: str | None = None) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail

    @classmethod
    def of(cls, exc: NightcrewError) -> UiError:
        """nightcrew's error as the API would answer it (same status table, plus the
        schedules' and pipelines' own)."""
        for kind, status, _slug, title in (*ERROR_STATUS, *_MORE_STATUS):
            if isinstance(exc, kind):
                detail = str(exc) or None
                if isinstance(exc, DatabaseError):
                    detail = "the database cannot serve this request now"
                return cls(status, title, detail)
        return cls(400, "Refused", str(exc) or None)


class LoginRequired(Exception):
    """No caller: a page sends the browser to the login form, then back."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


@dataclass
class Ctx:
    """What a page handler works with: the app, the session, the caller, the base URL."""

    request: Request
    app: Nightcrew
    session: UiSession
    user: UiUser | None
    env: Environment

    @property
    def base(self) -> str:
        """The dashboard's URL path (``/ui``, or ``/nightcrew/ui`` under ``mount_admin``)."""
        return base_of(self.request)

    @property
    def client(self) -> str | None:
        return client_of(self.request)

    @property
    def actor(self) -> str:
        assert self.user is not None
        return self.user.actor

    @property
    def can_operate(self) -> bool:
        return self.user is not None and self.user.can(Role.OPERATOR)

    def url(self, path: str = "", **query: Any) -> str:
        items = [(k, v) for k, v in query.items() if v not in (None, "", [], ())]
        flat: list[tuple[str, str]] = []
        for key, value in items:
            if isinstance(value, list | tuple):
                flat.extend((key, str(v)) for v in value)
            else:
                flat.append((key, str(value)))
        suffix = "?" + urllib.parse.urlencode(flat) if flat else ""
        return f"{self.base}{path}{suffix}"


def base_of(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/") + UI_PREFIX


async def call(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run an operator action off the event loop; its refusals become error pages."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except NightcrewError as exc:
        raise UiError.of(exc) from exc


# ---------------------------------------------------------------- guards


async def context(request: Request) -> Ctx:
    app = nightcrew_of(request)
    session = await load_session(request)
    user = await current_user(request, session)
    env: Environment = request.app.state.nightcrew_ui_env
    return Ctx(request, app, session, user, env)


CtxDep = Annotated[Ctx, Depends(context)]


async def signed_in(ctx: CtxDep) -> Ctx:
    """Any caller may read (viewer is the lowest role); none is sent to the login form."""
    if ctx.user is None:
        request = ctx.request
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return ctx


Reader = Annotated[Ctx, Depends(signed_in)]


async def form_of(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=2000)


def acting(role: Role, action: str) -> Callable[..., Awaitable[Ctx]]:
    """The guard of a form post: a caller, the session's CSRF token, then the role.

    A role too low is refused with 403 and, as in the API, written to the audit log as a
    refusal naming who tried what; a missing or wrong CSRF token is refused before anything
    else is looked at (and not recorded: it is a forged request, not the caller's).
    """

    async def guard(request: Request, ctx: CtxDep) -> Ctx:
        if ctx.user is None:
            raise UiError(401, "Sign in first", "this action needs a signed-in caller")
        form = await form_of(request)
        token = form.get("csrf")
        if not ctx.session.check_csrf(token if isinstance(token, str) else None):
            raise UiError(
                403, "Form expired", "the form's CSRF token is missing or stale: reload the page"
            )
        if not ctx.user.can(role):
            target_value = next(iter(request.path_params.values()), None)
            entry = AuditRecord(
                ctx.user.actor,
                action,
                None if target_value is None else f"{action.split('.')[0]}:{target_value}",
                None,
                "refused",
                detail=f"role {ctx.user.role.value} is below {role.value}",
                client=ctx.client,
            )
            await run_in_threadpool(actions.record, ctx.app, entry)
            raise UiError(
                403,
                "Role too low",
                f"this needs the {role.value} role; you have {ctx.user.role.value}",
            )
        return ctx

    guard.__name__ = f"ui_{role.value}_{action.replace('.', '_')}"
    return guard


# ---------------------------------------------------------------- rendering


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=fmt.when,
        duration=fmt.duration,
        ago=fmt.ago,
        ts=fmt.timestamp,
        pretty=fmt.pretty_json,
        label=fmt.status_label,
    )
    env.globals.update(
        STATUSES=list(MaintenanceTaskStatus),
        PIPELINE_STATUSES=list(PipelineStatus),
        HTMX=HTMX,
        HTMX_SSE=HTMX_SSE,
        Role=Role,
    )
    return env


def fragment(ctx: Ctx, name: str, **values: Any) -> str:
    """A template rendered for a live update or a poll (no page around it)."""
    return ctx.env.get_template(name).render(ctx=ctx, now=datetime.now(UTC), **values)


async def render(ctx: Ctx, name: str, *, status: int = 200, **values: Any) -> HTMLResponse:
    """A whole page; the session's one-time messages are shown and dropped."""
    html = ctx.env.get_template(name).render(
        ctx=ctx, now=datetime.now(UTC), flashes=ctx.session.take_flashes(), **values
    )
    response = HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
    await save_session(ctx.request, response, ctx.session)
    return response


async def redirect(ctx: Ctx, url: str) -> Response:
    """See-other after a post (so a reload never posts twice)."""
    response = RedirectResponse(url, status_code=303, headers={"cache-control": "no-store"})
    await save_session(ctx.request, response, ctx.session)
    return response


def safe_next(ctx: Ctx, candidate: object, default: str | None = None) -> str:
    """A post's return address if it is a page of this dashboard, else ``default``."""
    fallback = default or ctx.url("/")
    if not isinstance(candidate, str) or not candidate.startswith(ctx.base + "/"):
        return fallback
    if "//" in candidate or "\\" in candidate or any(ord(c) < 32 for c in candidate):
        return fallback
    return candidate


# ---------------------------------------------------------------- errors


async def _ui_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UiError)
    env: Environment = request.app.state.nightcrew_ui_env
    html = env.get_template("error.html").render(
        base=base_of(request),
        status=exc.status,
        title=exc.title,
        detail=exc.detail,
        HTMX=HTMX,
    )
    return HTMLResponse(html, status_code=exc.status, headers=PAGE_HEADERS)


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    target = base_of(request) + "/login?" + urllib.parse.urlencode({"next": exc.next_url})
    return RedirectResponse(target, status_code=303, headers={"cache-control": "no-store"})


# ---------------------------------------------------------------- static files


def _static_files() -> dict[str, Path]:
    """The files under ``static/`` that may be served, by their URL name."""
    return {
        path.relative_to(STATIC).as_posix(): path
        for path in STATIC.rglob("*")
        if path.is_file() and path.suffix in (".js", ".css", ".svg", ".png")
    }


def _static_router(files: dict[str, Path]) -> APIRouter:
    router = APIRouter()

    @router.get("/static/{name:path}", include_in_schema=False)
    async def static(name: str) -> Response:
        path = files.get(name)
        if path is None:
            raise UiError(404, "Not found", f"no file {name!r}")
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        # Vendored files carry their version in the name: cache them. Ours may change
        # with any release: revalidate.
        cache = "public, max-age=31536000, immutable" if name.startswith("vendor/") else "no-cache"
        return FileResponse(
            path,
            media_type=media,
            headers={"cache-control": cache, "x-content-type-options": "nosniff"},
        )

    return router


def install(api: FastAPI, routers: Iterable[APIRouter] | None = None) -> None:
    """Serve the dashboard from ``api`` under ``/ui`` (see the module's docstring)."""
    from nightcrew.ui import operate, pages

    api.state.nightcrew_ui_env = _environment()
    api.add_exception_handler(UiError, _ui_error)
    api.add_exception_handler(LoginRequired, _login_required)
    chosen = list(routers) if routers is not None else [pages.router, operate.router]
    for router in [_static_router(_static_files()), *chosen]:
        api.include_router(router, prefix=UI_PREFIX, include_in_schema=False)
