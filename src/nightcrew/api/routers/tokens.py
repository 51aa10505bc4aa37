"""``/api/v1/tokens``: admins list, create and revoke API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from nightcrew import actions
from nightcrew.api.auth import Principal, require, role_extra
from nightcrew.api.deps import ClientDep, NightcrewDep
from nightcrew.api.schemas import CreateToken, TokenCreated, TokenList, TokenOut
from nightcrew.values import Role

router = APIRouter(tags=["tokens"])

Admin = Role.ADMIN
TokenName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")]


@router.get("/tokens", openapi_extra=role_extra(Admin), summary="List tokens")
def list_tokens(
    app: NightcrewDep,
    _caller: Annotated[Principal, Depends(require(Admin))],
    include_revoked: bool = False,
) -> TokenList:
    """Names, roles and last use; the tokens themselves are not stored."""
    return TokenList(
        tokens=[TokenOut.of(t) for t in actions.list_tokens(app, include_revoked=include_revoked)]
    )


@router.post(
    "/tokens",
    status_code=201,
    openapi_extra=role_extra(Admin),
    responses={409: {"description": "A token (active or revoked) has this name"}},
    summary="Create",
)
def create_token(
    body: CreateToken,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Admin, "token.create"))],
) -> TokenCreated:
    """The response holds the token, this once: only its hash is stored."""
    view, secret = actions.create_token(
        app, body.name, body.role, actor=caller.actor, client=client
    )
    return TokenCreated(**TokenOut.of(view).model_dump(), token=secret)


@router.delete("/tokens/{name}", openapi_extra=role_extra(Admin), summary="Revoke")
def revoke_token(
    name: TokenName,
    app: NightcrewDep,
    client: ClientDep,
    caller: Annotated[Principal, Depends(require(Admin, "token.revoke"))],
) -> TokenOut:
    """Refused from its next request on; the row stays (the audit log names it)."""
    return TokenOut.of(actions.revoke_token(app, name, actor=caller.actor, client=client))
