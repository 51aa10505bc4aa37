"""The admin API's FastAPI application: `create_api`, and `mount_admin` for a host app.

The application gets its `Nightcrew` from the caller or, when none is given, makes one
from ``settings`` in its lifespan (and closes it at shutdown); it is kept on the
application's state, never in a module global. Every route under ``/api/v1`` needs a
caller (`nightcrew.api.auth`); ``/healthz`` needs none and says nothing but "ok".

Around the routes: a bound on the request body (1 MiB by default: a configuration is at
most 64 KiB), security headers on every response (no sniffing, no framing, no referrer,
no caching), and CORS only when origins are named.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nightcrew import actions
from nightcrew.api import problem
from nightcrew.api.auth import Authenticator, Principal, TokenAuth, require, role_extra
from nightcrew.api.routers import ROUTERS
from nightcrew.api.routers.metrics import router as metrics_router
from nightcrew.api.schemas import Health
from nightcrew.app import Nightcrew
from nightcrew.settings import Settings
from nightcrew.values import Role

PREFIX = "/api/v1"
#: The largest request body accepted (bytes).
MAX_BODY_BYTES = 1024 * 1024

#: Headers on every response: nothing here is meant to be sniffed, framed, cached or to
#: leak the URL it came from.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
)

#: The problems every route can answer with, documented once for all of them.
COMMON_PROBLEMS = {
    400: "Malformed JSON or an unreadable body",
    401: "No or unknown bearer token",
    403: "The caller's role is too low",
    413: "Request body or configuration too large",
    422: "Input that fails validation",
    503: "The database cannot be reached",
}


class SecurityHeaders:
    """Add `SECURITY_HEADERS` to every response (pure ASGI: streaming stays streaming)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimit:
    """Refuse a request body over ``max_bytes``: by its Content-Length before reading, or
    as it streams in (a chunked body has none). The route never sees the rest."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                response = problem.problem_response(
                    None,
                    413,
                    "body-too-large",
                    "Request body too large",
                    f"the request body is larger than {self.max_bytes} bytes",
                )
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


def _version() -> str:
    try:
        return version("nightcrew")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def _openapi(api: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every 4xx/5xx answer as problem+json and bearer security."""
    if api.openapi_schema:
        return api.openapi_schema
    doc = get_openapi(
        title=api.title,
        version=api.version,
        description=api.description,
        routes=api.routes,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = problem.Problem.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    problem_content = {problem.PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in doc.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if path.startswith(PREFIX):
                for status, description in COMMON_PROBLEMS.items():
                    responses.setdefault(str(status), {"description": description})
                if "{task_id}" in path:
                    responses.setdefault("404", {"description": "No task with this id"})
                    if operation.get("operationId", "").startswith(("cancel", "retry", "activate")):
                        responses.setdefault("409", {"description": "The status forbids it"})
                if "{name}" in path:
                    responses.setdefault("404", {"description": "No active token of this name"})
            for status, response in responses.items():
                if status[0] in "45":
                    response["content"] = problem_content
    api.openapi_schema = doc
    return doc


def create_api(
    app: Nightcrew | None = None,
    *,
    settings: Settings | None = None,
    auth: Authenticator | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    cors_origins: Sequence[str] = (),
    routers: Sequence[APIRouter] | None = None,
    ui: bool = True,
) -> FastAPI:
    """The admin API for ``app`` (or an app made from ``settings`` at start-up).

    ``auth`` replaces the bearer tokens by the host's own rule (see `nightcrew.api.auth`).
    ``cors_origins`` enables CORS for exactly those origins (off when empty). ``routers``
    replaces the default `ROUTERS` (all resources). ``ui`` serves the dashboard
    (`nightcrew.ui`) at ``/ui`` on the same app, with the same auth and audit log.
    """

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        if app is not None:
            yield
            return
        made = Nightcrew(settings)
        api.state.nightcrew = made
        try:
            yield
        finally:
            api.state.nightcrew = None
            await made.aclose()

    api = FastAPI(
        title="nightcrew admin API",
        version=_version(),
        description=(
            "Tasks, schedules, pipelines, statistics, processors, the audit log and API tokens."
        ),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    api.state.nightcrew = app
    api.state.nightcrew_auth = auth if auth is not None else TokenAuth()
    problem.install(api)
    for router in routers if routers is not None else ROUTERS:
        api.include_router(router, prefix=PREFIX)
    api.include_router(_meta_router(api))
    api.include_router(metrics_router)
    if ui:
        from nightcrew.ui import install as install_ui

        install_ui(api)
    api.openapi = lambda: _openapi(api)  # type: ignore[method-assign]
    api.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if cors_origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    api.add_middleware(SecurityHeaders)
    return api


def _meta_router(api: FastAPI) -> APIRouter:
    """``/healthz`` (no caller needed) and the OpenAPI document (a viewer's)."""
    router = APIRouter()

    @router.get("/healthz", tags=["health"], openapi_extra={"security": []})
    async def healthz(request: Request) -> JSONResponse:
        """ "ok" when the database answers, 503 otherwise; nothing else."""
        app = getattr(request.app.state, "nightcrew", None)
        try:
            if not isinstance(app, Nightcrew):
                raise problem.NotReady()
            await run_in_threadpool(actions.ping, app)
        except Exception:
            return JSONResponse(Health(status="unavailable").model_dump(), status_code=503)
        return JSONResponse(Health(status="ok").model_dump())

    @router.get(
        f"{PREFIX}/openapi.json", include_in_schema=False, openapi_extra=role_extra(Role.VIEWER)
    )
    async def openapi_document(request: Request) -> JSONResponse:
        principal = await require(Role.VIEWER)(request, None)
        del principal
        doc = dict(api.openapi())
        root = request.scope.get("root_path", "")
        if root:
            doc["servers"] = [{"url": root}]
        return JSONResponse(json.loads(json.dumps(doc)))

    return router


def mount_admin(
    host_app: Any,
    prefix: str = "/nightcrew",
    *,
    app: Nightcrew | None = None,
    auth: Authenticator | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> FastAPI:
    """Mount the admin API into a host FastAPI or Starlette app at ``prefix``.

    Routes are then at ``{prefix}/api/v1/...`` and ``{prefix}/healthz``. Pass the host's
    `Nightcrew` as ``app`` (recommended); without one, an app is made from ``settings`` in
    the host's lifespan (mounted apps get none of their own) and closed with it. ``auth``
    is usually the host's rule (its logged-in user's role); ``options`` go to `create_api`.
    """
    api = create_api(app, settings=settings, auth=auth, **options)
    host_app.mount(prefix, api)
    if app is None:
        router = host_app.router
        inner = router.lifespan_context

        @asynccontextmanager
        async def lifespan(host: Any) -> AsyncIterator[Any]:
            async with inner(host) as state, api.router.lifespan_context(api):
                yield state

        router.lifespan_context = lifespan
    return api


__all__ = ["MAX_BODY_BYTES", "PREFIX", "Principal", "create_api", "mount_admin"]
