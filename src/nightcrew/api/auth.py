"""Who is calling and what they may do: closed by default, one dependency per route.

An *authenticator* maps a request to a `Principal` (an actor name and a `Role`), or to
None when the request carries no acceptable credentials. The default, `TokenAuth`, reads
``Authorization: Bearer <token>`` and looks the token's hash up in the store. A host
application plugs in its own rule instead (its session's user, say), as a plain or async
callable; a ``(actor, role)`` tuple is accepted as well as a `Principal`::

    def host_auth(request: Request) -> tuple[str, Role] | None:
        user = request.state.user  # set by the host's own middleware
        if user is None:
            return None
        return f"user:{user.id}", Role.ADMIN if user.admin else Role.VIEWER

Each route declares the role it needs with `require`: no principal is a 401, a role below
the route's a 403 (for a mutating route, the refusal is also written to the audit log).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from nightcrew import actions
from nightcrew.api.deps import client_of, nightcrew_of
from nightcrew.api.problem import Forbidden, NotAuthenticated
from nightcrew.values import AuditRecord, Role


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: ``actor`` is what the audit log and events name."""

    actor: str
    role: Role


AuthResult = Principal | tuple[str, Role | str] | None
#: Maps a request to its caller, or None (401). May be ``async``; a plain function runs on
#: the event loop, so one that does blocking I/O should be async (or use a thread itself).
Authenticator = Callable[[Request], AuthResult | Awaitable[AuthResult]]

#: The bearer scheme, for the OpenAPI document (and so for generated clients).
bearer = HTTPBearer(auto_error=False, description="An API token from `nightcrew tokens create`")


class TokenAuth:
    """Bearer tokens made by ``nightcrew tokens create``: the actor is ``token:<name>``.

    The token itself is never logged or stored; only its SHA-256 is looked up.
    """

    async def __call__(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        app = nightcrew_of(request)
        found = await run_in_threadpool(actions.authenticate, app, token)
        return None if found is None else Principal(f"token:{found.name}", found.role)


def as_principal(result: AuthResult) -> Principal | None:
    """An authenticator's answer as a `Principal` (a tuple's role may be a string)."""
    if result is None or isinstance(result, Principal):
        return result
    actor, role = result
    return Principal(str(actor), Role(role))


async def identify(request: Request) -> Principal | None:
    """Run the API's authenticator on ``request``."""
    authenticate: Authenticator = request.app.state.nightcrew_auth
    result: Any = authenticate(request)
    if inspect.isawaitable(result):
        result = await result
    return as_principal(result)


def require(role: Role, action: str | None = None) -> Callable[..., Awaitable[Principal]]:
    """The dependency a route needing ``role`` declares; it returns the caller.

    ``action`` names a mutating route's audit action: a caller whose role is too low is
    then recorded as refused (who tried to do what is worth keeping; an anonymous caller
    is not recorded, so unauthenticated noise cannot fill the log).
    """

    async def dependency(
        request: Request,
        _credentials: HTTPAuthorizationCredentials | None = Security(bearer),  # noqa: B008
    ) -> Principal:
        principal = await identify(request)
        if principal is None:
            raise NotAuthenticated("a valid bearer token (or the host's login) is required")
        if not principal.role.allows(role):
            if action is not None:
                target = next(iter(request.path_params.values()), None)
                entry = AuditRecord(
                    principal.actor,
                    action,
                    None if target is None else f"{action.split('.')[0]}:{target}",
                    None,
                    "refused",
                    detail=f"role {principal.role.value} is below {role.value}",
                    client=client_of(request),
                )
                await run_in_threadpool(actions.record, nightcrew_of(request), entry)
            raise Forbidden(
                f"this needs the {role.value} role; the caller has {principal.role.value}"
            )
        return principal

    dependency.__name__ = f"require_{role.value}"
    return dependency


def role_extra(role: Role) -> dict[str, Any]:
    """The OpenAPI extension naming the role a route needs (the role matrix test reads it)."""
    return {"x-required-role": role.value}
