"""Every error of the admin API as an RFC 9457 ``application/problem+json`` body.

Errors nightcrew raises on purpose map to a 4xx here, in one table, so no route can turn
bad input into a 500: an unknown id is 404, a transition the status forbids 409, input
the processor or the options refuse 422, an oversized body or configuration 413, JSON that
does not parse 400. A database that cannot be reached is 503. Anything else is a 500 whose
body says nothing about the cause (that goes to the log).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from nightcrew.errors import (
    DatabaseError,
    DatabaseUnavailable,
    InvalidProcessorConfig,
    InvalidTaskOptions,
    InvalidTokenRequest,
    InvalidTransition,
    NightcrewError,
    PayloadTooLarge,
    PipelineNotFound,
    ProcessorNotAllowed,
    ScheduleExists,
    ScheduleNotFound,
    SchemaMissing,
    TaskNotFound,
    TokenNameTaken,
    TokenNotFound,
)

log = logging.getLogger("nightcrew.api")

PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem: ``type`` names the kind, ``title`` says it in words, ``detail``
    this occurrence; ``errors`` lists the fields a validation refused."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class ApiError(NightcrewError):
    """An error of the API layer itself, carrying its HTTP status."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def headers(self) -> dict[str, str] | None:
        return None


class NotAuthenticated(ApiError):
    """No credentials, or credentials that name no active token or user."""

    status, slug, title = 401, "not-authenticated", "Authentication required"

    def headers(self) -> dict[str, str] | None:
        return {"WWW-Authenticate": 'Bearer realm="nightcrew"'}


class Forbidden(ApiError):
    """The caller's role is below the one the route needs."""

    status, slug, title = 403, "forbidden", "Role too low"


class InvalidParameter(ApiError):
    """A parameter that parsed but cannot be used (a cursor out of range, say)."""

    status, slug, title = 422, "invalid-parameter", "Invalid parameter"


class NotReady(ApiError):
    """The API has no Nightcrew app yet (its lifespan has not run)."""

    status, slug, title = 503, "not-ready", "Not ready"


#: nightcrew's errors and what they are over HTTP, most specific first.
ERROR_STATUS: tuple[tuple[type[NightcrewError], int, str, str], ...] = (
    (TaskNotFound, 404, "task-not-found", "Task not found"),
    (TokenNotFound, 404, "token-not-found", "Token not found"),
    (ScheduleNotFound, 404, "schedule-not-found", "Schedule not found"),
    (PipelineNotFound, 404, "pipeline-not-found", "Pipeline not found"),
    (InvalidTransition, 409, "invalid-transition", "Transition not allowed"),
    (TokenNameTaken, 409, "token-name-taken", "Token name taken"),
    (ScheduleExists, 409, "schedule-exists", "Schedule name taken"),
    (PayloadTooLarge, 413, "payload-too-large", "Configuration too large"),
    (ProcessorNotAllowed, 422, "processor-not-allowed", "Processor not allowed"),
    (InvalidProcessorConfig, 422, "invalid-configuration", "Invalid configuration"),
    (InvalidTaskOptions, 422, "invalid-task-options", "Invalid task options"),
    (InvalidTokenRequest, 422, "invalid-token-request", "Invalid token request"),
    (DatabaseUnavailable, 503, "database-unavailable", "Database unavailable"),
    (SchemaMissing, 503, "schema-missing", "Database schema missing"),
    (DatabaseError, 503, "database-error", "Database error"),
)

_STATUS_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("not-authenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("invalid-request", "Invalid request"),
}


def problem_type(slug: str) -> str:
    """A problem's ``type``: a URN, since these are names, not pages to fetch."""
    return f"urn:nightcrew:problem:{slug}"


def problem_response(
    request: Request | None,
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _nightcrew_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        return problem_response(
            request, exc.status, exc.slug, exc.title, str(exc) or None, headers=exc.headers()
        )
    for cls, status, slug, title in ERROR_STATUS:
        if isinstance(exc, cls):
            detail = str(exc) or None
            if isinstance(exc, DatabaseError):
                log.warning("database error in the admin API: %s", exc)
                detail = "the database cannot serve this request now"
            return problem_response(request, status, slug, title, detail)
    return problem_response(request, 400, "bad-request", "Bad request", str(exc) or None)


def _plain(value: Any) -> Any:
    """A validation error's parts as JSON (pydantic puts exceptions and bytes in ``ctx``)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in raw):
        return problem_response(
            request, 400, "malformed-json", "Malformed JSON", "the request body is not valid JSON"
        )
    errors = [
        {"loc": _plain(list(e.get("loc", ()))), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in raw
    ]
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
    return problem_response(
        request, 422, "invalid-request", "Invalid request", summary or None, errors=errors
    )


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _STATUS_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else None
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(request, exc.status_code, slug, title, detail, headers=headers)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error in the admin API", exc_info=exc)
    return problem_response(request, 500, "internal-error", "Internal error")


def install(api: FastAPI) -> None:
    """Route every error of ``api`` through the problem+json handlers."""
    api.add_exception_handler(NightcrewError, _nightcrew_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(Exception, _unexpected)
