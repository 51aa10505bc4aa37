"""``nightcrew db ...``: schema management through the Alembic migrations in the package."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import make_url

from nightcrew.cli.common import say, state

commands = typer.Typer()
db_app = typer.Typer(help="Create or upgrade nightcrew's schema.", no_args_is_help=True)
commands.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(
    ctx: typer.Context,
    revision: Annotated[
        str, typer.Option("--revision", help="Alembic revision to upgrade to.")
    ] = "head",
) -> None:
    """Create the schema, or bring it up to REVISION; safe to run on every deploy."""
    # Alembic is imported only here: every other command starts faster without it.
    from nightcrew.migrate import upgrade as run_upgrade

    settings = state(ctx).settings()
    run_upgrade(settings.database_url, revision)
    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    say(f"database {shown} upgraded to {revision}")
