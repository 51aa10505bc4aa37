"""``nightcrew schedules ...``: listing, adding and steering durable schedules.

Thin commands over the operator actions (`nightcrew.actions`), which the API will call
too; every read command takes ``--json`` for scripts, and every refusal is one ``error:``
line (the CLI's ``main`` prints nightcrew's errors so).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from nightcrew import actions
from nightcrew.cli.common import (
    cli_actor,
    console,
    format_time,
    open_app,
    say,
    state,
    warn,
)
from nightcrew.cli.tasks import STATUS_STYLES, print_json, read_config, require_zone
from nightcrew.errors import ConfigurationError
from nightcrew.schedules.values import ScheduleView, SyncReport

commands = typer.Typer()
schedules_app = typer.Typer(
    help="Durable schedules: cron, interval and one-off.", no_args_is_help=True
)
commands.add_typer(schedules_app, name="schedules")

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name.")]
JsonOutOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]

STATE_STYLES = {"active": "green", "paused": "yellow", "retired": "dim", "done": "dim"}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def schedule_json(view: ScheduleView) -> dict[str, Any]:
    """A schedule as ``--json`` prints it: its columns, times in ISO 8601, plus its
    trigger described, its state and its configuration as an object."""
    data = {k: _plain(v) for k, v in dataclasses.asdict(view).items()}
    data["trigger"] = view.describe_trigger()
    data["state"] = view.state
    try:
        data["config"] = json.loads(view.processor_json)
    except ValueError:
        data["config"] = None
    return data


def _short(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%m-%d %H:%M:%S")


def _last(view: ScheduleView) -> Text:
    if view.last_task_id is None:
        return Text("-")
    if view.last_task_status is None:
        return Text(f"#{view.last_task_id} gone", style="dim")
    status = view.last_task_status
    return Text(f"#{view.last_task_id} {status.value}", style=STATUS_STYLES.get(status, ""))


@schedules_app.command("ls")
def list_schedules(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="Most schedules listed.")
    ] = 200,
    after: Annotated[
        str | None,
        typer.Option("--after", help="Page cursor: only names after this one.", show_default=False),
    ] = None,
    as_json: JsonOutOpt = False,
) -> None:
    """List schedules by name: trigger, next and last run, last task's status, state."""
    with open_app(state(ctx).settings()) as app:
        rows = actions.list_schedules(app, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    if as_json:
        print_json(
            {
                "schedules": [schedule_json(v) for v in rows],
                "next_after": rows[-1].name if more else None,
            }
        )
        return
    if not rows:
        say("no schedules")
        return
    # One line per schedule, fitting the terminal (80 columns when piped): the times and
    # the state keep their width, names and triggers are cut with an ellipsis (``show`` and
    # ``--json`` give them whole).
    last_width = 16 if console.width >= 100 else 11
    room = max(20, console.width - 41 - last_width)
    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    for title, width in (("name", room // 2), ("trigger", room - room // 2)):
        table.add_column(title, no_wrap=True, overflow="ellipsis", min_width=4, max_width=width)
    table.add_column("next UTC", no_wrap=True, min_width=14)
    table.add_column("last UTC", no_wrap=True, min_width=14)
    table.add_column("last task", no_wrap=True, overflow="ellipsis", max_width=last_width)
    table.add_column("state", no_wrap=True, min_width=7)
    for v in rows:
        table.add_row(
            Text(v.name),
            Text(v.describe_trigger()),
            _short(v.next_run_at) if v.state == "active" else "-",
            _short(v.last_run_at),
            _last(v),
            Text(v.state, style=STATE_STYLES.get(v.state, "")),
        )
    if more:
        table.caption = f"next page: --after {rows[-1].name}"
    console.print(table)


def _fields(v: ScheduleView) -> list[tuple[str, Text | str]]:
    timeout = "-" if v.timeout is None else f"{v.timeout:g}s"
    skip = v.last_skip_reason or "-"
    if v.last_skip_at is not None:
        skip = f"{format_time(v.last_skip_at)}: {skip}"
    return [
        ("name", Text(v.name)),
        ("state", Text(v.state, style=STATE_STYLES.get(v.state, ""))),
        ("source", v.source),
        ("trigger", Text(v.describe_trigger())),
        ("processor", Text(v.processor_type)),
        ("queue", Text(v.queue or "default")),
        ("priority", str(v.priority or 0)),
        ("max_attempts", str(v.max_attempts or 1)),
        ("timeout", timeout),
        ("misfire_grace", v.misfire_grace),
        ("coalesce", "yes" if v.coalesce else "no"),
        ("max_instances", str(v.max_instances)),
        ("jitter", f"{v.jitter_seconds:g}s"),
        ("next_run_at", format_time(v.next_run_at)),
        ("last_run_at", format_time(v.last_run_at)),
        ("last_task", _last(v)),
        ("misfires", str(v.misfires)),
        ("skipped_instances", str(v.skipped_instances)),
        ("last_skip", Text(skip)),
        ("created_at", format_time(v.created_at)),
        ("updated_at", format_time(v.updated_at)),
    ]


@schedules_app.command("show")
def show_schedule(ctx: typer.Context, name: NameArg, as_json: JsonOutOpt = False) -> None:
    """Everything about one schedule: trigger, task options, runs, skips, configuration."""
    with open_app(state(ctx).settings()) as app:
        view = actions.get_schedule(app, name)
    if as_json:
        print_json(schedule_json(view))
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for field, value in _fields(view):
        grid.add_row(field, value)
    console.print(grid)
    console.print(Text("\nconfig", style="bold"))
    console.print(Text(view.processor_json))


@schedules_app.command("pause")
def pause_schedule(ctx: typer.Context, name: NameArg) -> None:
    """Stop enqueueing this schedule's ticks until it is resumed."""
    with open_app(state(ctx).settings()) as app:
        view = actions.pause_schedule(app, name, actor=cli_actor())
    say(f"schedule {view.name} paused")


@schedules_app.command("resume")
def resume_schedule(ctx: typer.Context, name: NameArg) -> None:
    """Tick again, from the next tick after now (the paused ticks are not caught up)."""
    with open_app(state(ctx).settings()) as app:
        view = actions.resume_schedule(app, name, actor=cli_actor())
    if view.next_run_at is None:
        say(f"schedule {view.name} resumed; it has no run ahead")
    else:
        say(f"schedule {view.name} resumed, next run {format_time(view.next_run_at)}")


@schedules_app.command("run-now")
def run_now(ctx: typer.Context, name: NameArg) -> None:
    """Enqueue the schedule's task now, leaving its next run where it is."""
    with open_app(state(ctx).settings()) as app:
        task = actions.run_schedule_now(app, name, actor=cli_actor())
    say(f"enqueued task {task.id} for schedule {name} on queue {task.queue!r}")


@schedules_app.command("delete")
def delete_schedule(ctx: typer.Context, name: NameArg) -> None:
    """Delete a schedule; the tasks it made are kept."""
    with open_app(state(ctx).settings()) as app:
        view = actions.delete_schedule(app, name, actor=cli_actor())
    say(f"deleted schedule {view.name} (its tasks are kept)")
    if view.source == "code" and not view.retired:
        warn(
            f"{view.name} is declared in code: the next sync (a worker start) creates it "
            "again; remove it from the code, or pause it, to stop it for good"
        )


def _report_lines(report: SyncReport) -> list[str]:
    lines = []
    for change in report.changes:
        if change.action == "retired":
            lines.append(
                f"disabled {change.name}: no longer declared in code (kept with its history)"
            )
        else:
            lines.append(f"{change.action} {change.name}: {change.detail}")
    lines.append(f"{report.unchanged} unchanged")
    return lines


@schedules_app.command("sync")
def sync_schedules(
    ctx: typer.Context,
    schedules: Annotated[
        str | None,
        typer.Option(
            "--schedules",
            metavar="MODULE:ATTR",
            help="The declared schedules; default: NIGHTCREW_SCHEDULES.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOutOpt = False,
) -> None:
    """Sync the schedules declared in code (and the upkeep's), as a worker does at start."""
    settings = state(ctx).settings()
    if schedules is not None:
        try:
            settings = type(settings)(**{**settings.model_dump(), "schedules": schedules})
        except ValidationError as exc:
            problems = "; ".join(str(err["msg"]) for err in exc.errors())
            raise ConfigurationError(f"--schedules: {problems}") from None
    with open_app(settings) as app:
        report = actions.sync_schedules(app, actor=cli_actor())
    if as_json:
        print_json(
            {
                "changes": [dataclasses.asdict(c) for c in report.changes],
                "unchanged": report.unchanged,
                "schedules_setting": settings.schedules,
            }
        )
        return
    if settings.schedules is None:
        warn(
            "NIGHTCREW_SCHEDULES is not set: only the upkeep schedules were synced; "
            "schedules declared in code were left as they are"
        )
    for line in _report_lines(report):
        say(line)


@schedules_app.command("add")
def add_schedule(
    ctx: typer.Context,
    name: NameArg,
    processor_path: Annotated[
        str,
        typer.Argument(
            metavar="PROCESSOR_PATH",
            help="Fully qualified processor class, e.g. myapp.jobs.Reindex.",
            show_default=False,
        ),
    ],
    config_json: Annotated[
        str,
        typer.Option(
            "--json",
            help="The processor's configuration as a JSON object; @FILE reads a file, - stdin.",
        ),
    ] = "{}",
    cron: Annotated[
        str | None,
        typer.Option(
            "--cron", metavar="EXPR", help="Five-field cron expression.", show_default=False
        ),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            "--timezone",
            metavar="TZ",
            help="IANA zone of --cron (default UTC).",
            show_default=False,
        ),
    ] = None,
    every: Annotated[
        str | None,
        typer.Option(
            "--every",
            metavar="DURATION",
            help="Interval: 30s, 15m, 6h, 2d, 1h30m (at least 1s).",
            show_default=False,
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="DATETIME",
            help="Once, at this ISO 8601 time; needs Z or an offset.",
            show_default=False,
        ),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option("--queue", help="Default: the processor's.", show_default=False),
    ] = None,
    priority: Annotated[
        int | None,
        typer.Option("--priority", help="Default: the processor's.", show_default=False),
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option("--max-attempts", min=1, help="Default: the processor's.", show_default=False),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="Seconds one attempt may run. Default: the processor's.",
            show_default=False,
        ),
    ] = None,
    misfire_grace: Annotated[
        str | None,
        typer.Option(
            "--misfire-grace",
            metavar="DURATION",
            help="Skip a tick found later than this (default: never skip).",
            show_default=False,
        ),
    ] = None,
    no_coalesce: Annotated[
        bool,
        typer.Option("--no-coalesce", help="Run every missed tick, not one for all of them."),
    ] = False,
    max_instances: Annotated[
        int,
        typer.Option("--max-instances", min=1, help="Skip a tick while this many tasks are open."),
    ] = 1,
    jitter: Annotated[
        float,
        typer.Option("--jitter", min=0, help="Start each task up to this many seconds late."),
    ] = 0.0,
) -> None:
    """Add a schedule at run time: PROCESSOR_PATH configured by --json, on one trigger."""
    settings = state(ctx).settings()
    config = read_config(config_json)
    if at is not None:
        require_zone(at)
    with open_app(settings) as app:
        view = actions.add_schedule(
            app,
            name,
            processor_path,
            config,
            cron=cron,
            timezone=timezone,
            every=every,
            at=at,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            misfire_grace=misfire_grace,
            coalesce=not no_coalesce,
            max_instances=max_instances,
            jitter=jitter,
            actor=cli_actor(),
        )
    nxt = (
        "no run ahead" if view.next_run_at is None else f"next run {format_time(view.next_run_at)}"
    )
    say(f"added schedule {view.name}: {view.describe_trigger()}, {nxt}")
