"""``nightcrew demo``: the origin's user-settings upgrade on a fresh SQLite database, live.

Everything runs in this process: nightcrew's schema, a few thousand seeded users (a few
with corrupt settings), one task per 100 outdated users, and workers draining them while
a progress bar follows the task counts in the database. The summary is read back from the
database, not from the workers' memory, so it shows what ``nightcrew tasks ls`` would.

The demo ignores ``NIGHTCREW_*`` variables on purpose: it deletes and recreates its
database file, so it must never be pointed at a real database by an exported variable,
and it should look the same on every machine.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Table
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from nightcrew import actions, logs
from nightcrew.app import Nightcrew
from nightcrew.cli.common import console, one_line, say, state
from nightcrew.errors import ConfigurationError, NightcrewError
from nightcrew.loop import run_loop
from nightcrew.models import Base, MaintenanceTaskStatus
from nightcrew.settings import Settings
from nightcrew.store import ops
from nightcrew.values import TaskFilter
from nightcrew.worker import Worker

if TYPE_CHECKING:
    from nightcrew.demo import SeedReport

commands = typer.Typer()

S = MaintenanceTaskStatus
DEFAULT_DATABASE_URL = "sqlite:///./nightcrew-demo.db"
#: Tables a demo database may hold (nightcrew's own, the demo's users, Alembic's version
#: tables old and new); a file with any other table is not ours to delete.
DEMO_TABLES = frozenset(
    {*Base.metadata.tables, "user_settings", "nightcrew_alembic_version", "alembic_version"}
)
#: How often the progress bar re-reads the task counts (seconds).
POLL_SECONDS = 0.1
#: ERROR tasks listed one by one under the summary; the rest are counted.
SHOWN_ERRORS = 10


class DemoFailed(NightcrewError):
    """The demo itself went wrong (not a task: ERROR tasks are part of the show)."""


def demo_settings(database_url: str, concurrency: int) -> Settings:
    """Settings built from the class defaults, never from the environment.

    Every field is passed explicitly, because pydantic-settings only lets the environment
    fill fields that were not given; this way the demo's database and allowlist cannot be
    redirected by whatever ``NIGHTCREW_*`` the shell exports.
    """
    values: dict[str, Any] = {
        name: info.get_default(call_default_factory=True)
        for name, info in Settings.model_fields.items()
    }
    values.update(
        database_url=database_url,
        processor_modules=["nightcrew.demo"],
        concurrency=concurrency,
        poll_interval=0.05,
        shutdown_grace_seconds=5.0,
    )
    return Settings(**values)


def sqlite_path(database_url: str) -> Path:
    """The file behind a ``sqlite:///`` URL; the demo recreates a file, so nothing else will do."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ConfigurationError(f"not a database URL: {database_url!r}") from None
    if url.get_backend_name() != "sqlite":
        raise ConfigurationError(
            f"the demo creates a fresh SQLite file and cannot use a {url.get_backend_name()} "
            "database; give --database-url sqlite:///PATH"
        )
    if not url.database or url.database == ":memory:":
        raise ConfigurationError(
            "the demo needs an SQLite file (sqlite:///PATH): an in-memory database is not "
            "shared between the demo's connections"
        )
    return Path(url.database)


def remove_previous_demo(path: Path) -> None:
    """Delete a previous demo database (and its WAL files), but nothing that is not one.

    The check reads the file's table names: a typo in ``--database-url`` must not delete
    an application's database.
    """
    if not path.exists():
        return
    if not path.is_file():
        raise ConfigurationError(f"refusing to delete {path}: it is not a file")
    if path.stat().st_size > 0:
        try:
            uri = f"{path.resolve().as_uri()}?mode=ro"
            with closing(sqlite3.connect(uri, uri=True)) as conn:
                tables = {
                    name
                    for (name,) in conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%'"
                    )
                }
        except sqlite3.Error as exc:
            raise ConfigurationError(
                f"refusing to delete {path}: it is not an SQLite database ({exc})"
            ) from None
        foreign = tables - DEMO_TABLES
        if foreign:
            raise ConfigurationError(
                f"refusing to delete {path}: it holds tables the demo did not make "
                f"({', '.join(sorted(foreign))}); choose another --database-url"
            )
    for suffix in ("", "-wal", "-shm", "-journal", "-events"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _progress_detail(counts: dict[MaintenanceTaskStatus, int], total: int) -> str:
    done = counts[S.COMPLETED] + counts[S.ERROR] + counts[S.CANCELLED]
    return (
        f"{done}/{total} done, [green]{counts[S.COMPLETED]} ok[/], "
        f"[red]{counts[S.ERROR]} error[/], [cyan]{counts[S.WORKING]} running[/]"
    )


async def run_workers(settings: Settings, workers: int, total_tasks: int) -> float:
    """Run ``workers`` workers until nothing is due, with a live bar; return their time.

    The bar is driven by ``count_by_status`` on the database every `POLL_SECONDS`, the
    same numbers any other process would see, rather than by hooks into the workers.
    A worker that crashes makes this raise (the demo broke); Ctrl-C stops the workers,
    which hand their in-flight tasks back.
    """
    async with Nightcrew(settings) as app:
        crew = [Worker(app=app) for _ in range(workers)]
        return await _drive(app, crew, total_tasks)


async def _drive(app: Nightcrew, crew: list[Worker], total_tasks: int) -> float:
    started = time.monotonic()

    async def run_all() -> float:
        await asyncio.gather(*(worker.run(until_idle=True) for worker in crew))
        return time.monotonic()

    columns = (
        TextColumn("[bold]upgrading users[/]"),
        BarColumn(bar_width=24),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console) as progress:
        # Only the engine's own failures are logged, above the bar; ERROR tasks are
        # expected here and listed in the summary instead.
        logs.configure("ERROR")
        zero = dict.fromkeys(S, 0)
        bar = progress.add_task(
            "upgrade", total=total_tasks, detail=_progress_detail(zero, total_tasks)
        )
        # More than the slots: a finished task stays WORKING until its outcome is
        # flushed, while its slot already runs the next one.
        slots = sum(worker.concurrency for worker in crew)
        running = TaskFilter(statuses=(S.WORKING,), limit=2 * slots + 100)
        runs = asyncio.ensure_future(run_all())
        try:
            while True:
                await asyncio.wait({runs}, timeout=POLL_SECONDS)
                # Reads in WAL mode never wait for, nor hold up, the workers' writes.
                counts = await app.store.arun(ops.count_by_status)
                working = (await app.store.arun(ops.list_tasks, running)).tasks
                finished = counts[S.COMPLETED] + counts[S.ERROR] + counts[S.CANCELLED]
                # Running tasks count by the progress they report (report_progress),
                # so the bar moves while a round of tasks is still in flight.
                partial = sum((task.progress or 0.0) for task in working) / 100
                progress.update(
                    bar,
                    completed=finished + partial,
                    detail=_progress_detail(counts, total_tasks),
                )
                if runs.done():
                    break
        except BaseException:
            for worker in crew:
                worker.request_stop()
            await asyncio.gather(runs, return_exceptions=True)
            raise
        ended = runs.result()  # re-raises a worker's crash
    return ended - started


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What the database says after the run: the demo's summary is made of this only."""

    counts: dict[MaintenanceTaskStatus, int]
    users_by_version: dict[int, int]
    error_tasks: list[tuple[int, int, str]]

    @property
    def tasks(self) -> int:
        return sum(self.counts.values())

    @property
    def unfinished(self) -> int:
        return self.counts[S.PENDING] + self.counts[S.WORKING]


def read_summary(settings: Settings) -> DemoSummary:
    import json

    from nightcrew.demo import count_users_by_version

    with Nightcrew(settings) as app:
        counts = actions.count(app)
        rows = actions.list_tasks(app, statuses=[S.ERROR], limit=SHOWN_ERRORS).tasks
    errors = []
    for row in sorted(rows, key=lambda r: int(r.id)):
        users = len(json.loads(row.processor_json).get("user_ids", []))
        errors.append((int(row.id), users, str((row.info or {}).get("error", "?"))))
    return DemoSummary(counts, count_users_by_version(settings.database_url), errors)


def print_summary(
    outcome: DemoSummary, report: SeedReport, *, elapsed: float, workers: int, concurrency: int
) -> None:
    from nightcrew.demo import CURRENT_USER_SETTINGS_VERSION as CURRENT

    current = sum(n for v, n in outcome.users_by_version.items() if v >= CURRENT)
    outdated = sum(n for v, n in outcome.users_by_version.items() if v < CURRENT)
    upgraded = current - report.already_current
    ran = outcome.counts[S.COMPLETED] + outcome.counts[S.ERROR]

    table = Table(title="nightcrew demo: summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("tasks", str(outcome.tasks))
    for status in S:
        if outcome.counts[status] or status in (S.COMPLETED, S.ERROR):
            style = {"COMPLETED": "green", "ERROR": "red"}.get(status.value, "yellow")
            table.add_row(f"  {status.value}", f"[{style}]{outcome.counts[status]}[/]")
    table.add_row("users", str(report.total))
    table.add_row("  already current", str(report.already_current))
    table.add_row(f"  upgraded to v{CURRENT}", f"[green]{upgraded}[/]")
    table.add_row(
        "  not upgraded", f"[red]{outdated}[/] (seeded corrupt: {len(report.corrupt_user_ids)})"
    )
    table.add_row("elapsed", f"{elapsed:.2f} s")
    table.add_row(
        "throughput",
        f"{ran / elapsed if elapsed else 0:.1f} tasks/s, "
        f"{upgraded / elapsed if elapsed else 0:.0f} users/s",
    )
    table.add_row("workers", f"{workers} x concurrency {concurrency}")
    console.print(table)

    if outcome.error_tasks:
        errors = Table(title="ERROR tasks", title_justify="left")
        errors.add_column("task", justify="right")
        errors.add_column("users", justify="right")
        errors.add_column("error", overflow="fold")
        for task_id, users, error in outcome.error_tasks:
            errors.add_row(str(task_id), str(users), one_line(error))
        console.print(errors)
        more = outcome.counts[S.ERROR] - len(outcome.error_tasks)
        if more > 0:
            say(f"... and {more} more ERROR task(s)")


def print_pipeline(settings: Settings, pipeline_id: int) -> None:
    """The pipeline's status and what its fan-in step added up from the batches."""
    with Nightcrew(settings) as app:
        detail = actions.get_pipeline(app, pipeline_id)
    summary = next((s for s in detail.steps if s.step_name == "summary"), None)
    say(f"pipeline {pipeline_id}: {detail.pipeline.status.value}")
    if summary is not None and summary.info:
        info = summary.info
        batches, failed = int(info.get("batches", 0)), int(info.get("failed_batches", 0))
        say(
            f"summary step, from its dependencies' results: {batches} batches, {failed} "
            f"failed (their errors above); {info.get('upgraded')} users upgraded by the "
            f"{batches - failed} completed ones"
        )


@commands.command("demo")
def demo(
    ctx: typer.Context,
    users: Annotated[
        int, typer.Option("--users", min=1, max=1_000_000, help="Users to seed.")
    ] = 3000,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="Workers run in this process.")
    ] = 1,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency", "-c", min=1, max=1000, help="Tasks each worker runs at once."
        ),
    ] = 10,
    corrupt: Annotated[
        int | None,
        typer.Option(
            "--corrupt",
            min=0,
            help="Users seeded with corrupt settings (default: one per 500 users, at least 1).",
            show_default=False,
        ),
    ] = None,
    work_ms: Annotated[
        float,
        typer.Option(
            "--work-ms",
            min=0,
            max=1000,
            help="Simulated work per user in ms, standing in for the origin's call to its "
            "settings store (0: database work only).",
        ),
    ] = 5.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated users.")] = 7,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="SQLite file to delete and recreate for the demo "
            f"(default: {DEFAULT_DATABASE_URL}; NIGHTCREW_DATABASE_URL is ignored).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Upgrade the settings of a few thousand users with nightcrew, on a fresh SQLite file.

    Exits 0 when the demo ran, ERROR tasks included (a few users have corrupt settings on
    purpose); non-zero only if the demo itself failed.
    """
    from nightcrew.demo import create_table, enqueue_upgrade_pipeline, seed_users
    from nightcrew.migrate import upgrade

    # The global ``nightcrew --database-url`` counts as explicit too; the environment not.
    database_url = database_url or state(ctx).database_url or DEFAULT_DATABASE_URL
    path = sqlite_path(database_url)
    remove_previous_demo(path)
    settings = demo_settings(database_url, concurrency)
    upgrade(database_url)
    create_table(database_url)
    try:
        report = seed_users(
            database_url,
            users,
            corrupt=max(1, users // 500) if corrupt is None else corrupt,
            seed=seed,
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    pipeline_id, steps = enqueue_upgrade_pipeline(
        database_url, settings=settings, simulated_ms_per_user=work_ms
    )
    say(
        f"database {path}: {report.total} users, {report.outdated} outdated, "
        f"{len(report.corrupt_user_ids)} with corrupt settings; pipeline {pipeline_id}: "
        f"{steps - 1} upgrade tasks (up to 100 users each) and a summary step after them"
    )

    elapsed = run_loop(run_workers(settings, workers, steps), settings)
    outcome = read_summary(settings)
    print_summary(outcome, report, elapsed=elapsed, workers=workers, concurrency=concurrency)
    print_pipeline(settings, pipeline_id)
    if outcome.unfinished:
        raise DemoFailed(
            f"{outcome.unfinished} task(s) still PENDING or WORKING after the workers stopped"
        )
    say(
        f"demo finished: {outcome.tasks} tasks, {outcome.counts[S.COMPLETED]} COMPLETED, "
        f"{outcome.counts[S.ERROR]} ERROR, in {elapsed:.2f} s"
    )
    say(f"look closer: nightcrew --database-url {database_url} tasks ls --status ERROR")
