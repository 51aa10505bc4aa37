"""``nightcrew enqueue`` and ``nightcrew tasks ...``: creating, reading and steering tasks.

Every input is checked before anything is written (allowlist, JSON, the processor's own
validation, the options), and each change is one store operation in one transaction, so
a refused command leaves the database as it was.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from nightcrew import actions
from nightcrew.cli.common import cli_actor, console, format_time, open_app, say, state, warn
from nightcrew.enqueue import TaskOptions
from nightcrew.models import MaintenanceTaskStatus
from nightcrew.values import TaskView

commands = typer.Typer()
tasks_app = typer.Typer(help="List, inspect and steer tasks.", no_args_is_help=True)
commands.add_typer(tasks_app, name="tasks")

S = MaintenanceTaskStatus

STATUS_STYLES = {
    S.INACTIVE: "dim",
    S.PENDING: "yellow",
    S.WORKING: "cyan",
    S.COMPLETED: "green",
    S.ERROR: "bold red",
    S.CANCELLED: "magenta",
}


def parse_aware_datetime(value: str) -> datetime:
    """ISO 8601 with a zone: a naive time would silently mean different instants per host."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date-time (e.g. 2030-01-31T08:00:00Z)"
        ) from None
    require_zone(value, parsed)
    return parsed


def require_zone(value: str, parsed: datetime | None = None) -> None:
    """Refuse a date-time written without a zone (one that does not parse is left to its
    reader's own message). On a command line a naive time would mean UTC to the server and
    local time to the person typing it, so every CLI option taking one wants Z or an offset
    (the Python and HTTP APIs read naive as UTC, as the origin did)."""
    if parsed is None:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return
    if parsed.tzinfo is None:
        raise typer.BadParameter(
            f"{value!r} has no timezone; end it with Z (UTC) or an offset such as +02:00"
        )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_config(value: str) -> str:
    """The configuration text of ``--json``: inline, ``@FILE``, or ``-`` for stdin.

    Checked as a JSON object before the processor is even resolved: malformed JSON, NaN
    or Infinity (which JSON does not have, and a database would store as null), and
    nesting too deep to parse are usage errors, not tracebacks.
    """
    if value == "-":
        text = sys.stdin.read()
    elif value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {value[1:]}: {exc}", param_hint="'--json'"
            ) from None
    else:
        text = value
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise typer.BadParameter("nested too deeply", param_hint="'--json'") from None
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="'--json'") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(
            f"must be a JSON object, got {type(data).__name__}", param_hint="'--json'"
        )
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def task_json(task: TaskView) -> dict[str, Any]:
    """A task as the ``--json`` output shows it: columns, times as ISO 8601, the
    configuration as an object."""
    data = {k: _plain(v) for k, v in dataclasses.asdict(task).items()}
    try:
        data["config"] = json.loads(task.processor_json)
    except ValueError:
        data["config"] = None
    return data


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


JsonOutOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


@commands.command("enqueue")
def enqueue(
    ctx: typer.Context,
    processor_path: Annotated[
        str,
        typer.Argument(
            metavar="PROCESSOR_PATH",
            help="Fully qualified processor class, e.g. myapp.tasks.Reindex.",
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
    start_at: Annotated[
        datetime | None,
        typer.Option(
            "--start-at",
            parser=parse_aware_datetime,
            metavar="ISO8601",
            help="When the task becomes due; needs Z or an offset. Default: now.",
            show_default=False,
        ),
    ] = None,
    start_in: Annotated[
        float | None,
        typer.Option("--start-in", min=0, help="Seconds from now until due.", show_default=False),
    ] = None,
    delay: Annotated[
        int,
        typer.Option(
            "--delay",
            min=0,
            help="The origin's delay: seconds a worker pauses after this task before the "
            "next task with a delay (spacing, for rate limits).",
        ),
    ] = 0,
    priority: Annotated[
        int | None,
        typer.Option(
            "--priority", help="Higher runs first. Default: the processor's.", show_default=False
        ),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option("--queue", help="Queue name. Default: the processor's.", show_default=False),
    ] = None,
    unique_key: Annotated[
        str | None,
        typer.Option(
            "--unique-key",
            help="While a task with this key is open, return it instead of adding another.",
            show_default=False,
        ),
    ] = None,
    inactive: Annotated[
        bool,
        typer.Option("--inactive", help="Create INACTIVE; it waits for `tasks activate`."),
    ] = False,
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
) -> None:
    """Create a task for PROCESSOR_PATH, configured by --json."""
    settings = state(ctx).settings()
    if start_at is not None and start_in is not None:
        raise typer.BadParameter(
            "give --start-at or --start-in, not both", param_hint="'--start-in'"
        )
    config = read_config(config_json)
    options = TaskOptions(
        start_at=start_at,
        start_in=start_in,
        delay=delay,
        priority=priority,
        queue=queue,
        max_attempts=max_attempts,
        timeout=timeout,
        unique_key=unique_key,
        inactive=inactive,
    )
    with open_app(settings) as app:
        # Through the operator action, so the audit log records the call (refusals too).
        done = actions.enqueue(app, processor_path, config, options, actor=cli_actor())
    if done.unknown_keys:
        warn(
            f"{processor_path} declares no field {', '.join(map(repr, done.unknown_keys))}: "
            "kept in the configuration, ignored by the processor"
        )
    task = done.task
    if unique_key is not None and not done.created:
        say(
            f"task {task.id} ({task.status}) already holds unique key {unique_key!r}; "
            "nothing enqueued"
        )
        return
    due = "on activation" if task.status == S.INACTIVE else f"due {format_time(task.start_at)}"
    say(
        f"enqueued task {task.id}: {task.processor_type} on queue {task.queue!r}, "
        f"{task.status}, {due}"
    )


@tasks_app.command("ls")
def list_tasks(
    ctx: typer.Context,
    status: Annotated[
        list[MaintenanceTaskStatus] | None,
        typer.Option(
            "--status",
            "-s",
            case_sensitive=False,
            help="Only this status; repeat for several.",
            show_default=False,
        ),
    ] = None,
    processor: Annotated[
        str | None,
        typer.Option(
            "--processor",
            help="Only this processor: its class path, or the class name tasks ls shows.",
            show_default=False,
        ),
    ] = None,
    queue: Annotated[
        str | None, typer.Option("--queue", help="Only this queue.", show_default=False)
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option("--schedule", help="Only the tasks this schedule made.", show_default=False),
    ] = None,
    pipeline: Annotated[
        int | None,
        typer.Option("--pipeline", min=1, help="Only this pipeline's steps.", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Rows per page.")] = 50,
    before_id: Annotated[
        int | None,
        typer.Option(
            "--before-id",
            min=1,
            help="Page cursor: only tasks with a smaller id.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOutOpt = False,
) -> None:
    """List tasks, newest first."""
    settings = state(ctx).settings()
    with open_app(settings) as app:
        page = actions.list_tasks(
            app,
            statuses=status or (),
            processor=processor,
            queue=queue,
            before_id=before_id,
            limit=limit,
            schedule_name=schedule,
            pipeline_id=pipeline,
        )
    rows = page.tasks
    if as_json:
        print_json({"tasks": [task_json(t) for t in rows], "next_before_id": page.next_before_id})
        return
    if not rows:
        say("no tasks")
        return
    # One row per task on one line at 80 columns: short UTC times (month-day time; --json
    # and `tasks show` give full ones), and only names are cut, with an ellipsis, when the
    # terminal is narrower still.
    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    table.add_column("id", justify="right", no_wrap=True, min_width=2)
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("processor", no_wrap=True, overflow="ellipsis", min_width=8)
    table.add_column("queue", no_wrap=True, overflow="ellipsis", min_width=5)
    table.add_column("prio", justify="right", no_wrap=True, min_width=4)
    table.add_column("tries", justify="right", no_wrap=True, min_width=5)
    table.add_column("start UTC", no_wrap=True, min_width=14)
    table.add_column("updated UTC", no_wrap=True, min_width=14)
    table.add_column("done", justify="right", no_wrap=True, min_width=4)
    # Tasks a schedule made: the schedule and the tick each stands for, where the terminal
    # has room for them (100 columns); at 80 a caption points to `tasks show` and --json.
    scheduled = any(row.schedule_name for row in rows) and console.width >= 100
    if scheduled:
        table.add_column("schedule", no_wrap=True, overflow="ellipsis", max_width=24)
        table.add_column("tick UTC", no_wrap=True, min_width=14)
    elif any(row.schedule_name for row in rows):
        table.caption = "schedule and tick: tasks show ID, --json, or 100 columns"
    for row in rows:
        extra = (Text(row.schedule_name or "-"), short_time(row.scheduled_for)) if scheduled else ()
        table.add_row(
            str(row.id),
            _status_text(row.status),
            Text(row.processor_name),
            Text(row.queue),
            str(row.priority),
            f"{row.attempts}/{row.max_attempts}",
            short_time(row.start_at),
            short_time(row.updated_at),
            _progress(row.progress),
            *extra,
        )
    if page.next_before_id is not None:
        table.caption = f"next page: --before-id {page.next_before_id}" + (
            f"; {table.caption}" if table.caption else ""
        )
    console.print(table)


@tasks_app.command("show")
def show_task(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(metavar="ID", min=1, show_default=False)],
    as_json: JsonOutOpt = False,
) -> None:
    """Everything about one task: fields, configuration, info and error."""
    settings = state(ctx).settings()
    with open_app(settings) as app:
        row = actions.get(app, task_id)
    if as_json:
        print_json(task_json(row))
        return
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")
    for name, value in _fields(row):
        fields.add_row(name, value)
    console.print(fields)
    console.print(Text("\nconfig", style="bold"))
    console.print(_json_block(row.processor_json))
    console.print(Text("\ninfo", style="bold"))
    console.print(_json_block(row.info))
    console.print(Text("\nerror", style="bold"))
    console.print(_error_block(row.error))


@tasks_app.command("activate")
def activate_task(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(metavar="ID", min=1, show_default=False)],
) -> None:
    """Make an INACTIVE task PENDING, due now (or at its later start_at)."""
    settings = state(ctx).settings()
    with open_app(settings) as app:
        row = actions.activate(app, task_id, actor=cli_actor())
    say(f"task {row.id} is now {row.status}, due {format_time(row.start_at)}")


@tasks_app.command("cancel")
def cancel_task(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(metavar="ID", min=1, show_default=False)],
) -> None:
    """Cancel a task; a WORKING one is asked to stop and is cancelled by its worker."""
    settings = state(ctx).settings()
    with open_app(settings) as app:
        row = actions.cancel(app, task_id, actor=cli_actor())
    if row.status == S.WORKING:
        say(f"task {row.id} is WORKING: cancel requested, its worker will stop it")
    else:
        say(f"task {row.id} is now {row.status}")


@tasks_app.command("retry")
def retry_task(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(metavar="ID", min=1, show_default=False)],
) -> None:
    """Run an ERROR or CANCELLED task again, now, with fresh attempts."""
    settings = state(ctx).settings()
    with open_app(settings) as app:
        row = actions.retry(app, task_id, actor=cli_actor())
    say(f"task {row.id} is now {row.status}, due {format_time(row.start_at)}")


def short_time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%m-%d %H:%M:%S")


def _status_text(status: MaintenanceTaskStatus) -> Text:
    return Text(status.value, style=STATUS_STYLES.get(status, ""))


def _progress(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _fields(row: TaskView) -> list[tuple[str, Text | str]]:
    progress = _progress(row.progress)
    if row.progress_message:
        progress += f" {row.progress_message}"
    return [
        ("id", str(row.id)),
        ("status", _status_text(row.status)),
        ("processor", Text(row.processor_type)),
        ("queue", Text(row.queue)),
        ("priority", str(row.priority)),
        ("attempts", f"{row.attempts}/{row.max_attempts}"),
        ("rescues", str(row.rescues)),
        ("timeout", "-" if row.timeout is None else f"{row.timeout:g}s"),
        ("delay", f"{row.delay}s"),
        ("unique_key", Text(row.unique_key or "-")),
        ("waiting_on", str(row.waiting_on)),
        ("progress", Text(progress)),
        ("start_at", format_time(row.start_at)),
        ("started_at", format_time(row.started_at)),
        ("finished_at", format_time(row.finished_at)),
        ("created_at", format_time(row.created_at)),
        ("updated_at", format_time(row.updated_at)),
        ("cancel_requested_at", format_time(row.cancel_requested_at)),
        ("lease_token", Text(row.lease_token or "-")),
        ("lease_expires_at", format_time(row.lease_expires_at)),
        ("schedule_name", Text(row.schedule_name or "-")),
        ("scheduled_for", format_time(row.scheduled_for)),
    ]


def _json_block(value: Any) -> JSON | Text:
    if value is None:
        return Text("-")
    if isinstance(value, str):
        try:
            return JSON(value)
        except ValueError:
            return Text(value)
    return JSON.from_data(value)


def _error_block(error: dict[str, Any] | None) -> Text:
    if not error:
        return Text("-")
    text = Text(f"{error.get('type') or 'Error'}: {error.get('message') or ''}", style="red")
    traceback = error.get("traceback")
    if traceback:
        text.append("\n" + str(traceback).rstrip())
    return text
