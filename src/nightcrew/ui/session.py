"""Who is looking at the dashboard: a signed cookie session, its CSRF token, the caller.

A browser cannot send a bearer token by itself, so the dashboard trades one for a cookie:
the login form posts the token, the server checks it with the API's own check
(`actions.authenticate`) and stores the token's id and name (never the token) in a cookie
signed with `itsdangerous`. The cookie is HttpOnly (no script reads it), SameSite=Strict
(no other site's page sends it), Secure when the page came over https, scoped to the
dashboard's path, and expires after `SESSION_SECONDS`. Each request looks the token up
again, so a revoked token's session ends at its next click and a changed role applies.

A host application that plugged its own rule into the API (``create_api(auth=...)``)
gets that rule here too: the dashboard asks it first, and then offers no token login (the
host's own login is the way in).

Every form carries the session's CSRF token and every POST is refused without it: the
cookie alone never authorises a change. The signing key is ``NIGHTCREW_UI_SECRET`` or,
unset, a random key made once and kept in the database (`actions.shared_secret`), so
every process serving the dashboard shares it.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nightcrew import actions
from nightcrew.api.auth import TokenAuth, identify
from nightcrew.api.deps import nightcrew_of
from nightcrew.app import Nightcrew
from nightcrew.values import Role

COOKIE = "nightcrew_ui"
#: A session lasts this long after its login (then the token is asked for again).
SESSION_SECONDS = 12 * 3600
#: The name the generated signing key is kept under (`actions.shared_secret`).
SECRET_NAME = "ui.session"
_SALT = "nightcrew.ui.session.v1"


@dataclass
class UiSession:
    """What the cookie holds: the CSRF token, the logged-in token (if any), messages to
    show once. ``modified`` says the cookie must be written again."""

    csrf: str
    token_id: int | None = None
    token_name: str | None = None
    login_at: float | None = None
    flashes: list[tuple[str, str]] = field(default_factory=list)
    modified: bool = False

    def flash(self, kind: Literal["ok", "error", "warning"], message: str) -> None:
        self.flashes.append((kind, message))
        self.modified = True

    def take_flashes(self) -> list[tuple[str, str]]:
        shown, self.flashes = self.flashes, []
        if shown:
            self.modified = True
        return shown

    def check_csrf(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, str(token))

    def log_in(self, token_id: int, name: str) -> None:
        """A new session for the token: a fresh CSRF token too (the one seen before login
        must not outlive it)."""
        self.csrf = secrets.token_urlsafe(32)
        self.token_id, self.token_name, self.login_at = token_id, name, time.time()
        self.flashes = []
        self.modified = True

    def log_out(self) -> None:
        self.csrf = secrets.token_urlsafe(32)
        self.token_id = self.token_name = self.login_at = None
        self.modified = True

    def dump(self) -> dict[str, Any]:
        return {
            "c": self.csrf,
            "t": self.token_id,
            "n": self.token_name,
            "l": self.login_at,
            "f": self.flashes[-5:],
        }

    @classmethod
    def load(cls, data: Any) -> UiSession | None:
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        token_id = data.get("t")
        login_at = data.get("l")
        if token_id is not None and (
            not isinstance(login_at, int | float) or time.time() - login_at > SESSION_SECONDS
        ):
            return None  # expired: a new anonymous session
        flashes = [
            (str(f[0]), str(f[1]))
            for f in data.get("f") or []
            if isinstance(f, list | tuple) and len(f) == 2
        ]
        return cls(
            csrf=data["c"],
            token_id=int(token_id) if isinstance(token_id, int) else None,
            token_name=str(data["n"]) if data.get("n") is not None else None,
            login_at=float(login_at) if isinstance(login_at, int | float) else None,
            flashes=flashes,
        )


@dataclass(frozen=True, slots=True)
class UiUser:
    """The caller: ``actor`` names it in the audit log and events, as the API does."""

    actor: str
    role: Role
    #: ``token``: a token login of this session; ``host``: the API's authenticator said so.
    via: Literal["token", "host"]

    def can(self, role: Role) -> bool:
        return self.role.allows(role)


async def _serializer(request: Request) -> URLSafeTimedSerializer:
    """The signer, made once per API application (kept on its state, not in a global)."""
    state = request.app.state
    signer: URLSafeTimedSerializer | None = getattr(state, "nightcrew_ui_signer", None)
    if signer is None:
        app = nightcrew_of(request)
        configured = app.settings.ui_secret
        if configured is not None:
            key = configured.get_secret_value()
        else:
            key = await run_in_threadpool(actions.shared_secret, app, SECRET_NAME)
        signer = URLSafeTimedSerializer(key, salt=_SALT)
        state.nightcrew_ui_signer = signer
    return signer


async def load_session(request: Request) -> UiSession:
    """The request's session, or a new anonymous one (bad, expired or missing cookie)."""
    raw = request.cookies.get(COOKIE)
    if raw:
        signer = await _serializer(request)
        try:
            found = UiSession.load(signer.loads(raw, max_age=SESSION_SECONDS))
        except BadSignature:
            found = None
        if found is not None:
            return found
    return UiSession(csrf=secrets.token_urlsafe(32), modified=True)


def cookie_path(request: Request) -> str:
    """The dashboard's path: the cookie is never sent to the API's routes."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/") + "/ui"


async def save_session(request: Request, response: Response, session: UiSession) -> None:
    """Write the cookie when the session changed."""
    if not session.modified:
        return
    signer = await _serializer(request)
    response.set_cookie(
        COOKIE,
        signer.dumps(session.dump()),
        max_age=SESSION_SECONDS,
        path=cookie_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def token_login_enabled(request: Request) -> bool:
    """Token login is the API's own bearer tokens: off when a host plugged in its rule."""
    return isinstance(request.app.state.nightcrew_auth, TokenAuth)


async def current_user(request: Request, session: UiSession) -> UiUser | None:
    """The host's rule first (or a bearer header, with the default auth), then the
    session's token, looked up again so revocations and role changes apply at once."""
    principal = await identify(request)
    if principal is not None:
        return UiUser(principal.actor, principal.role, "host")
    if session.token_id is None or not token_login_enabled(request):
        return None
    app: Nightcrew = nightcrew_of(request)
    tokens = await run_in_threadpool(actions.list_tokens, app)
    for token in tokens:
        if token.id == session.token_id and token.name == session.token_name:
            return UiUser(f"token:{token.name}", token.role, "token")
    session.log_out()  # revoked: the session ends
    return None
