"""``nightcrew enqueue`` and ``nightcrew tasks ...``: creating, reading and steering tasks.

Every input is checked before anything is written (allowlist, JSON, the processor's own
validation, the options), and each change is one store operation in one transaction, so
a refused command leaves the database as it was.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from nightcrew.cli.common import console, format_time, open_store, say, state
from nightcrew.enqueue import create_maintenance_task
from nightcrew.models import MaintenanceTaskStatus, utcnow
from nightcrew.processors import loader_for
from nightcrew.store import operations

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
    if parsed.tzinfo is None:
        raise typer.BadParameter(
            f"{value!r} has no timezone; end it with Z (UTC) or an offset such as +02:00"
        )
    return parsed


def _check_json_object(text: str) -> None:
    """Catch malformed ``--json`` as a usage error, before the processor is even resolved."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="'--json'") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(
            f"must be a JSON object, got {type(data).__name__}", param_hint="'--json'"
        )


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
        str, typer.Option("--json", help="The processor's configuration as a JSON object.")
    ] = "{}",
    start_at: Annotated[
        datetime | None,
        typer.Option(
            "--start-at",
            parser=parse_aware_datetime,
            metavar="ISO8601",
            help="When the task becomes due; needs Z or an offset. Default: now + delay.",
            show_default=False,
        ),
    ] = None,
    delay: Annotated[
        int,
        typer.Option("--delay", min=0, help="Seconds from now (or from activation) until due."),
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
    _check_json_object(config_json)
    processor = loader_for(settings).load(processor_path, config_json)
    before = utcnow()
    with open_store(settings) as store:
        task = create_maintenance_task(
            processor,
            start_at,
            delay=delay,
            priority=priority,
            queue=queue,
            max_attempts=max_attempts,
            timeout=timeout,
            unique_key=unique_key,
            inactive=inactive,
            database=store.database,
            settings=settings,
        )
    if unique_key is not None and task.created_at < before:
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
            "--processor", help="Only this processor (full class path).", show_default=False
        ),
    ] = None,
    queue: Annotated[
        str | None, typer.Option("--queue", help="Only this queue.", show_default=False)
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
) -> None:
    """List tasks, newest first."""
    settings = state(ctx).settings()
    with open_store(settings) as store:
        rows = store.run(
            operations.list_tasks(
                statuses=status or (),
                processor=processor,
                queue=queue,
                before_id=before_id,
                limit=limit,
            )
        )
    if not rows:
        say("no tasks")
        return
    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("processor", overflow="fold", min_width=10)
    table.add_column("queue", overflow="fold", min_width=7)
    table.add_column("prio", justify="right", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    # Times may wrap at the space between date and time: the table fits 80 columns.
    table.add_column("start_at", min_width=10)
    table.add_column("updated_at", min_width=10)
    table.add_column("progress", justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            str(row.id),
            _status_text(row.status),
            Text(row.processor_type.rpartition(".")[2]),
            Text(row.queue),
            str(row.priority),
            f"{row.attempts}/{row.max_attempts}",
            format_time(row.start_at),
            format_time(row.updated_at),
            _progress(row.progress),
        )
    if len(rows) == limit:
        table.caption = f"next page: --before-id {rows[-1].id}"
    console.print(table)


@tasks_app.command("show")
def show_task(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(metavar="ID", min=1, show_default=False)],
) -> None:
    """Everything about one task: fields, configuration, info and error."""
    settings = state(ctx).settings()
    with open_store(settings) as store:
        row = store.run(operations.get_task(task_id))
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
    """Make an INACTIVE task PENDING, due after its delay."""
    settings = state(ctx).settings()
    with open_store(settings) as store:
        row = store.run(operations.activate(store.dialect, task_id, utcnow()))
    say(f"task {row.id} is now {row.status}, due {format_time(row.start_at)}")


@tasks_app.command("cancel")
def cancel_task(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(metavar="ID", min=1, show_default=False)],
) -> None:
    """Cancel a task; a WORKING one is asked to stop and is cancelled by its worker."""
    settings = state(ctx).settings()
    with open_store(settings) as store:
        row = store.run(operations.cancel(store.dialect, task_id, utcnow()))
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
    with open_store(settings) as store:
        row = store.run(operations.retry(store.dialect, task_id, utcnow()))
    say(f"task {row.id} is now {row.status}, due {format_time(row.start_at)}")


def _status_text(status: MaintenanceTaskStatus) -> Text:
    return Text(status.value, style=STATUS_STYLES.get(status, ""))


def _progress(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _fields(row: Any) -> list[tuple[str, Text | str]]:
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
