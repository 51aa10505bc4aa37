"""``nightcrew stats`` (seed 004's ``/tasks/status`` as a command) and ``nightcrew workers ls``.

Both read the database only, so they tell the same story from any host: counts by status
and queue, how long the oldest due task has waited, how many workers are alive, what
finished in the last hour; and the worker registry, live and dead rows apart.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from nightcrew import actions
from nightcrew.cli.common import console, format_time, open_app, say, state
from nightcrew.models import MaintenanceTaskStatus
from nightcrew.values import TaskStats, WorkerView

commands = typer.Typer()
workers = typer.Typer(help="The worker registry: who is running, where, with what.")
commands.add_typer(workers, name="workers")

S = MaintenanceTaskStatus
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def stats_document(stats: TaskStats, alive: int) -> dict[str, Any]:
    """What ``stats --json`` prints: the counts, the oldest wait, workers, last hour."""
    last_hour = {
        "completed": sum(m.completed for m in stats.finished_per_minute),
        "error": sum(m.error for m in stats.finished_per_minute),
        "cancelled": sum(m.cancelled for m in stats.finished_per_minute),
    }
    return {
        "at": stats.at.isoformat(),
        "by_status": {s.value: n for s, n in stats.by_status.items()},
        "by_queue": {q: {s.value: n for s, n in c.items()} for q, c in stats.by_queue.items()},
        "oldest_pending_seconds": stats.oldest_pending_seconds,
        "workers_alive": alive,
        "finished_last_hour": {**last_hour, "total": sum(last_hour.values())},
        "finished_per_minute": [
            {
                "minute": m.minute.isoformat(),
                "completed": m.completed,
                "error": m.error,
                "cancelled": m.cancelled,
            }
            for m in stats.finished_per_minute
        ],
    }


@commands.command("stats")
def stats_command(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Counts by status and queue, oldest pending, workers alive, throughput last hour."""
    with open_app(state(ctx).settings()) as app:
        stats = actions.stats(app)
        alive = actions.workers_alive(app)
    doc = stats_document(stats, alive)
    if as_json:
        say(json.dumps(doc, indent=2))
        return
    statuses = [s for s in S]
    table = Table(title="tasks by queue", title_justify="left")
    table.add_column("queue")
    for s in statuses:
        table.add_column(s.value, justify="right")
    for queue, counts in sorted(stats.by_queue.items()):
        table.add_row(queue, *(str(counts.get(s, 0)) for s in statuses))
    table.add_row("all", *(str(stats.by_status.get(s, 0)) for s in statuses), style="bold")
    console.print(table)
    hour = doc["finished_last_hour"]
    say(f"oldest pending: {_seconds(stats.oldest_pending_seconds)}")
    say(f"workers alive: {alive}")
    say(
        f"last hour: {hour['total']} finished ({hour['completed']} completed, "
        f"{hour['error']} error, {hour['cancelled']} cancelled), "
        f"{hour['total'] / 60:.1f}/min"
    )


def worker_document(w: WorkerView) -> dict[str, Any]:
    return {
        "id": w.id,
        "host": w.host,
        "pid": w.pid,
        "version": w.version,
        "queues": None if w.queues is None else list(w.queues),
        "concurrency": w.concurrency,
        "in_flight": w.in_flight,
        "started_at": w.started_at.isoformat(),
        "last_heartbeat_at": w.last_heartbeat_at.isoformat(),
        "alive": w.alive,
    }


@workers.command("ls")
def workers_ls(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    alive: Annotated[bool, typer.Option("--alive", help="Only workers that beat lately.")] = False,
) -> None:
    """Registered workers, newest first; a dead one (no heartbeat lately) is marked."""
    with open_app(state(ctx).settings()) as app:
        found = actions.list_workers(app, alive_only=alive)
    if as_json:
        say(json.dumps([worker_document(w) for w in found], indent=2))
        return
    if not found:
        say("no workers registered")
        return
    now = datetime.now(UTC)
    table = Table()
    for name in ("id", "host", "pid", "queues", "in flight", "started", "last beat", "state"):
        table.add_column(name)
    for w in found:
        beat = (now - w.last_heartbeat_at).total_seconds()
        table.add_row(
            w.id,
            w.host,
            str(w.pid),
            "all" if w.queues is None else ",".join(w.queues),
            f"{w.in_flight}/{w.concurrency}",
            format_time(w.started_at),
            f"{_seconds(max(0.0, beat))} ago",
            "alive" if w.alive else "dead",
        )
    console.print(table)
