"""nightcrew's admin API: FastAPI over the operator actions, closed by default.

`create_api` makes the application (``nightcrew serve`` runs it under uvicorn);
`mount_admin` mounts it into a host FastAPI or Starlette app. Callers are identified by
bearer tokens (``nightcrew tokens create``) or by the host's own rule, and each route
needs a role: viewer (read), operator (+ actions on tasks), admin (+ tokens). Every
mutating call leaves a row in the audit log; every error is an RFC 9457 problem.
"""

from nightcrew.api.app import MAX_BODY_BYTES, PREFIX, create_api, mount_admin
from nightcrew.api.auth import Authenticator, Principal, TokenAuth, require
from nightcrew.api.problem import PROBLEM_JSON, Problem
from nightcrew.values import Role

__all__ = [
    "MAX_BODY_BYTES",
    "PREFIX",
    "PROBLEM_JSON",
    "Authenticator",
    "Principal",
    "Problem",
    "Role",
    "TokenAuth",
    "create_api",
    "mount_admin",
    "require",
]
