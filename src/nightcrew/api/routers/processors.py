"""``/api/v1/processors``: what tasks can be created of, with each configuration's schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from nightcrew import actions
from nightcrew.api.auth import Principal, require, role_extra
from nightcrew.api.deps import NightcrewDep
from nightcrew.api.schemas import ProcessorList
from nightcrew.values import Role

router = APIRouter(tags=["processors"])


@router.get("/processors", openapi_extra=role_extra(Role.VIEWER), summary="Allowed processors")
async def processors(
    app: NightcrewDep, _caller: Annotated[Principal, Depends(require(Role.VIEWER))]
) -> ProcessorList:
    """Every concrete processor class of the allowlisted modules, with the JSON schema of
    its configuration (so a form can be drawn); modules that fail to import are listed in
    ``problems``. Importing runs module code, so it happens off the event loop."""
    return ProcessorList.of(await run_in_threadpool(actions.processors, app))
