"""``nightcrew audit ls``: the audit log of every mutating call, API and CLI."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

import typer
from rich.table import Table
from rich.text import Text

from nightcrew import actions
from nightcrew.cli.common import console, format_time, open_app, say, state
from nightcrew.values import AuditFilter, AuditRecord

commands = typer.Typer()
audit_app = typer.Typer(help="Read the audit log.", no_args_is_help=True)
commands.add_typer(audit_app, name="audit")

Outcome = Literal["ok", "refused", "error"]


def audit_json(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "at": record.at.isoformat() if isinstance(record.at, datetime) else None,
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "parameters": record.parameters,
        "outcome": record.outcome,
        "detail": record.detail,
        "client": record.client,
    }


@audit_app.command("ls")
def list_audit(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option("--actor", show_default=False)] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="e.g. task.cancel", show_default=False)
    ] = None,
    outcome: Annotated[
        str | None,
        typer.Option("--outcome", help="ok, refused or error.", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    before_id: Annotated[int | None, typer.Option("--before-id", min=1, show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Audit rows, newest first."""
    if outcome is not None and outcome not in ("ok", "refused", "error"):
        raise typer.BadParameter("one of ok, refused, error", param_hint="'--outcome'")
    chosen: Outcome | None = outcome  # type: ignore[assignment]
    settings = state(ctx).settings()
    audit_filter = AuditFilter(
        actor=actor, action=action, outcome=chosen, before_id=before_id, limit=limit
    )
    with open_app(settings) as app:
        page = actions.list_audit(app, audit_filter)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "entries": [audit_json(r) for r in page.records],
                    "next_before_id": page.next_before_id,
                },
                indent=2,
                default=str,
            )
        )
        return
    if not page.records:
        say("no audit entries")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("id", "at", "actor", "action", "target", "outcome", "detail"):
        table.add_column(column, overflow="fold")
    for r in page.records:
        table.add_row(
            str(r.id),
            format_time(r.at),
            Text(r.actor),
            Text(r.action),
            Text(r.target or "-"),
            r.outcome,
            Text(r.detail or ""),
        )
    if page.next_before_id is not None:
        table.caption = f"next page: --before-id {page.next_before_id}"
    console.print(table)
