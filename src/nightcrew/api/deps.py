"""What routes receive: the `Nightcrew` app the API was made with, and the caller's address.

The app lives on the FastAPI application's state (set by `create_api` or its lifespan),
never in a module global, so two APIs on two databases can live in one process.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from nightcrew.api.problem import NotReady
from nightcrew.app import Nightcrew


def nightcrew_of(request: Request) -> Nightcrew:
    app = getattr(request.app.state, "nightcrew", None)
    if not isinstance(app, Nightcrew):
        raise NotReady("the admin API has not started (its lifespan did not run)")
    return app


def client_of(request: Request) -> str | None:
    """The caller's address for the audit log (None when the server does not know it)."""
    return request.client.host if request.client else None


NightcrewDep = Annotated[Nightcrew, Depends(nightcrew_of)]
ClientDep = Annotated[str | None, Depends(client_of)]
