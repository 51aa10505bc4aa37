"""``nightcrew tokens ...``: the admin API's bearer tokens.

A token is printed once, when it is made, and stored only as its SHA-256: lost means
revoke and make another. Each command goes through the operator actions, so it is in the
audit log under ``cli:<login>``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from nightcrew import actions
from nightcrew.cli.common import cli_actor, console, format_time, open_app, say, state
from nightcrew.values import Role, TokenView

commands = typer.Typer()
tokens_app = typer.Typer(help="Make, list and revoke admin API tokens.", no_args_is_help=True)
commands.add_typer(tokens_app, name="tokens")


def token_json(token: TokenView) -> dict[str, str | None]:
    return {
        "name": token.name,
        "role": token.role.value,
        "created_at": token.created_at.isoformat(),
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
    }


@tokens_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Who or what uses it (unique).")],
    role: Annotated[
        Role,
        typer.Option("--role", case_sensitive=False, help="viewer, operator or admin."),
    ],
) -> None:
    """Make a token and print it, this once (stdout holds only the token)."""
    settings = state(ctx).settings()
    with open_app(settings) as app:
        view, secret = actions.create_token(app, name, role, actor=cli_actor())
    typer.echo(
        f"token {view.name!r} ({view.role.value}) created; it is shown only now, store it",
        err=True,
    )
    say(secret)


@tokens_app.command("ls")
def list_tokens(
    ctx: typer.Context,
    include_revoked: Annotated[
        bool, typer.Option("--all", help="Also show revoked tokens.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Tokens by name, with role and last use (the tokens themselves are not stored)."""
    settings = state(ctx).settings()
    with open_app(settings) as app:
        tokens = actions.list_tokens(app, include_revoked=include_revoked)
    if as_json:
        typer.echo(json.dumps([token_json(t) for t in tokens], indent=2))
        return
    if not tokens:
        say("no tokens")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("name", "role", "created", "last used", "revoked"):
        table.add_column(column, no_wrap=True)
    for t in tokens:
        table.add_row(
            t.name,
            t.role.value,
            format_time(t.created_at),
            format_time(t.last_used_at),
            format_time(t.revoked_at),
        )
    console.print(table)


@tokens_app.command("revoke")
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", show_default=False)],
) -> None:
    """Revoke the token NAME: refused from its next request on."""
    settings = state(ctx).settings()
    with open_app(settings) as app:
        view = actions.revoke_token(app, name, actor=cli_actor())
    say(f"token {view.name!r} revoked")
