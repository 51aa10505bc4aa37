"""``nightcrew serve``: the admin API under uvicorn.

Closed by default: every route but ``/healthz`` needs a token, and the server refuses to
listen beyond the loopback interface while no token exists (nobody could use it, and a
forgotten open port is how tokens end up made in a hurry, with a role too high).
"""

from __future__ import annotations

import gc
import ipaddress
from typing import Annotated

import typer

from nightcrew import actions
from nightcrew.cli.common import open_app, state, warn
from nightcrew.errors import ConfigurationError

commands = typer.Typer()

#: How long a stop waits for requests in flight (open event streams are then cut; the
#: browser reconnects to the next server by itself).
SHUTDOWN_SECONDS = 5


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


@commands.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8000,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            help="Allow browser calls from this origin (repeatable); default: CORS off.",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
) -> None:
    """Serve the admin API (routes under /api/v1, OpenAPI at /api/v1/openapi.json)."""
    import uvicorn

    from nightcrew.api import create_api

    settings = state(ctx).settings()
    with open_app(settings) as app:
        actions.ping(app)
        if not actions.has_tokens(app):
            if not is_loopback(host):
                raise ConfigurationError(
                    f"refusing to listen on {host}: no API token exists, so the API would "
                    "refuse every caller; make one first with `nightcrew tokens create "
                    "--name NAME --role admin`, or serve on 127.0.0.1"
                )
            warn(
                "no API token exists: every request will be refused until one is made "
                "with `nightcrew tokens create --name NAME --role viewer|operator|admin`"
            )
        api = create_api(app, cors_origins=tuple(cors_origin or ()))
        if settings.gc_freeze:
            # What start-up made (modules, classes, the app) never becomes garbage: out of
            # the collector's full passes, which otherwise rescan it all while streams wait
            # (measured: full collections of 150-250 ms during a drain with 100 clients).
            gc.collect()
            gc.freeze()
        # The access log shows method, path and status, never headers: tokens stay out.
        # Event streams (the dashboard's live pages, /api/v1/events) never end by
        # themselves: without a bound, one open page would hold a stop until it closed.
        uvicorn.run(
            api,
            host=host,
            port=port,
            log_level=log_level.lower(),
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        )
