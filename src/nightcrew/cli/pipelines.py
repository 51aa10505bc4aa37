"""``nightcrew pipelines ...``: reading and steering pipelines."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from nightcrew import actions
from nightcrew.cli.common import cli_actor, console, format_time, open_app, say, state
from nightcrew.cli.tasks import STATUS_STYLES, JsonOutOpt, print_json, task_json
from nightcrew.models import PipelineStatus
from nightcrew.pipelines import text_tree
from nightcrew.store.pipeline_ops import PipelineView

commands = typer.Typer()
pipelines_app = typer.Typer(help="List, inspect and steer pipelines.", no_args_is_help=True)
commands.add_typer(pipelines_app, name="pipelines")

PIPELINE_STYLES = {
    PipelineStatus.PENDING: "yellow",
    PipelineStatus.WORKING: "cyan",
    PipelineStatus.COMPLETED: "green",
    PipelineStatus.PARTIAL_SUCCESS: "bold yellow",
    PipelineStatus.ERROR: "bold red",
    PipelineStatus.CANCELLED: "magenta",
}


def pipeline_json(pipeline: PipelineView) -> dict[str, Any]:
    data = dataclasses.asdict(pipeline)
    for key, value in data.items():
        if hasattr(value, "isoformat"):
            data[key] = value.isoformat()
    data["status"] = pipeline.status.value
    return data


def _status(status: PipelineStatus) -> Text:
    return Text(status.value, style=PIPELINE_STYLES.get(status, ""))


@pipelines_app.command("ls")
def list_pipelines(
    ctx: typer.Context,
    status: Annotated[
        list[PipelineStatus] | None,
        typer.Option("--status", "-s", case_sensitive=False, help="Only this status (repeat)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Rows per page.")] = 50,
    before_id: Annotated[
        int | None, typer.Option("--before-id", min=1, help="Page cursor.", show_default=False)
    ] = None,
    as_json: JsonOutOpt = False,
) -> None:
    """List pipelines, newest first."""
    with open_app(state(ctx).settings()) as app:
        rows, cursor = actions.list_pipelines(
            app, statuses=status or (), before_id=before_id, limit=limit
        )
    if as_json:
        print_json({"pipelines": [pipeline_json(p) for p in rows], "next_before_id": cursor})
        return
    if not rows:
        say("no pipelines")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (
        ("id", "right"),
        ("name", "left"),
        ("status", "left"),
        ("steps", "right"),
        ("open", "right"),
        ("failed", "right"),
        ("updated UTC", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for p in rows:
        table.add_row(
            str(p.id),
            Text(p.name),
            _status(p.status),
            str(p.steps),
            str(p.steps_open),
            str(p.critical_failed + p.optional_failed),
            format_time(p.updated_at),
        )
    if cursor is not None:
        table.caption = f"next page: --before-id {cursor}"
    console.print(table)


@pipelines_app.command("show")
def show_pipeline(
    ctx: typer.Context,
    pipeline_id: Annotated[int, typer.Argument(metavar="ID", min=1, show_default=False)],
    as_json: JsonOutOpt = False,
) -> None:
    """A pipeline's status, its steps (status, duration) and its graph as a tree."""
    with open_app(state(ctx).settings()) as app:
        detail = actions.get_pipeline(app, pipeline_id)
    if as_json:
        print_json(
            {
                "pipeline": pipeline_json(detail.pipeline),
                "steps": [task_json(s) for s in detail.steps],
                "edges": [list(e) for e in detail.edges],
            }
        )
        return
    p = detail.pipeline
    say(f"pipeline {p.id} {p.name!r}: {p.status.value}, {p.steps} steps, {p.steps_open} open")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("task", "step", "status", "critical", "took", "finished UTC"):
        table.add_column(name, no_wrap=True)
    for step in detail.steps:
        took = "-"
        if step.started_at and step.finished_at:
            took = f"{(step.finished_at - step.started_at).total_seconds():.3f}s"
        table.add_row(
            str(step.id),
            Text(step.step_name or "-"),
            Text(step.status.value, style=STATUS_STYLES.get(step.status, "")),
            "yes" if step.critical else "no",
            took,
            format_time(step.finished_at),
        )
    console.print(table)
    say("graph:")
    for line in text_tree(detail.steps, detail.edges):
        say(f"  {line}")


@pipelines_app.command("cancel")
def cancel_pipeline(
    ctx: typer.Context,
    pipeline_id: Annotated[int, typer.Argument(metavar="ID", min=1, show_default=False)],
) -> None:
    """Cancel a pipeline: waiting steps at once, running ones are asked to stop."""
    with open_app(state(ctx).settings()) as app:
        pipeline = actions.cancel_pipeline(app, pipeline_id, actor=cli_actor())
    say(f"pipeline {pipeline.id} is now {pipeline.status.value}")


@pipelines_app.command("retry")
def retry_step(
    ctx: typer.Context,
    pipeline_id: Annotated[int, typer.Argument(metavar="ID", min=1, show_default=False)],
    step: Annotated[str, typer.Option("--step", help="The step to run again (by name).")],
) -> None:
    """Run a failed step again; the steps its failure cancelled are re-armed."""
    with open_app(state(ctx).settings()) as app:
        task = actions.retry_step(app, pipeline_id, step, actor=cli_actor())
    say(f"step {step!r} (task {task.id}) is now {task.status}; pipeline {pipeline_id} reopened")
