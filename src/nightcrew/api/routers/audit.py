"""``/api/v1/audit``: the audit log, newest first, filtered and paginated."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from nightcrew import actions
from nightcrew.api.auth import Principal, require, role_extra
from nightcrew.api.deps import NightcrewDep
from nightcrew.api.routers.tasks import Cursor, parse_cursor
from nightcrew.api.schemas import AuditList, Text, Timestamp
from nightcrew.store.ops import MAX_PAGE
from nightcrew.values import AuditFilter, Role

router = APIRouter(tags=["audit"])


@router.get("/audit", openapi_extra=role_extra(Role.VIEWER), summary="The audit log")
def audit_log(
    app: NightcrewDep,
    _caller: Annotated[Principal, Depends(require(Role.VIEWER))],
    actor: Annotated[Text | None, Query(min_length=1, max_length=200)] = None,
    action: Annotated[Text | None, Query(min_length=1, max_length=64)] = None,
    outcome: Literal["ok", "refused", "error"] | None = None,
    target: Annotated[Text | None, Query(min_length=1, max_length=200)] = None,
    after: Annotated[Timestamp | None, Query()] = None,
    before: Annotated[Timestamp | None, Query()] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> AuditList:
    """Every mutating call, API or CLI: actor, action, target, parameters (secrets
    redacted), outcome, time and client address. ``after`` is inclusive, ``before`` not."""
    audit_filter = AuditFilter(
        actor=actor,
        action=action,
        outcome=outcome,
        target=target,
        after=after,
        before=before,
        before_id=parse_cursor(cursor),
        limit=limit,
    )
    return AuditList.of(actions.list_audit(app, audit_filter))
