"""``/metrics``: the app's Prometheus metrics (`nightcrew.metrics`), for a scraper.

Outside ``/api/v1`` where scrapers look by default. It needs a viewer like every route,
unless the operator sets ``NIGHTCREW_METRICS_PUBLIC=true`` (a scraper inside the network
that cannot send a token). Each scrape runs the one database query of the gauges, in a
thread so the event loop never waits for it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from nightcrew.api.auth import require, role_extra
from nightcrew.api.deps import nightcrew_of
from nightcrew.values import Role

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    openapi_extra=role_extra(Role.VIEWER),
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Counters and histograms of this process, gauges of the database (text format)."""
    app = nightcrew_of(request)
    if not app.settings.metrics_public:
        await require(Role.VIEWER)(request, None)
    body, content_type = await run_in_threadpool(app.metrics.exposition)
    return Response(body, media_type=content_type)
