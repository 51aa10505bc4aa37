"""``nightcrew db ...``: schema management through the Alembic migrations in the package."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy import make_url

from nightcrew.cli.common import say, state

if TYPE_CHECKING:
    from nightcrew.migrate import Migration

commands = typer.Typer()
db_app = typer.Typer(help="Create, upgrade or downgrade nightcrew's schema.", no_args_is_help=True)
commands.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(
    ctx: typer.Context,
    revision: Annotated[
        str, typer.Option("--revision", help="Alembic revision to upgrade to.")
    ] = "head",
) -> None:
    """Create the schema, or bring it up to REVISION; safe to run on every deploy.

    Also adopts an existing table: the origin's own ``maintenance_tasks`` is converted in
    place, rows kept.
    """
    # Alembic is imported only here: every other command starts faster without it.
    from nightcrew.migrate import upgrade as run_upgrade

    settings = state(ctx).settings()
    done = run_upgrade(settings.database_url, revision)
    _report(settings.database_url, done, "upgraded", revision, other="downgrade")


@db_app.command("downgrade")
def downgrade(
    ctx: typer.Context,
    revision: Annotated[
        str,
        typer.Option(
            "--revision",
            help="Alembic revision to go back to: 'origin' hands the table back to the "
            "origin's code, rows kept; 'base' drops it.",
        ),
    ],
) -> None:
    """Take the schema back to REVISION (required: a downgrade can lose data)."""
    from nightcrew.migrate import downgrade as run_downgrade

    settings = state(ctx).settings()
    done = run_downgrade(settings.database_url, revision)
    _report(settings.database_url, done, "downgraded", revision, other="upgrade")


def _report(url: str, done: Migration, verb: str, asked: str, *, other: str) -> None:
    """One line per thing that happened, the last one naming the revisions before and after.

    An upgrade to an older revision (``--revision base``) changes nothing: say that, and
    which command does what was asked, rather than claim the target was reached.
    """
    shown = make_url(url).render_as_string(hide_password=True)
    for note in done.notes:
        say(f"database {shown}: {note}")
    after = done.after or "base (no nightcrew schema)"
    if done.changed:
        say(f"database {shown}: {verb} from {done.before or 'base'} to {after}")
    elif asked in ("head", done.after or "base"):
        say(f"database {shown}: already at {after}, nothing to do")
    else:
        say(
            f"database {shown}: still at {after}, nothing to do "
            f"(to reach {asked} from there, use `nightcrew db {other} --revision {asked}`)"
        )
