"""``nightcrew worker`` (run until signalled) and ``nightcrew run --once`` (deploy-time runner)."""

from __future__ import annotations

import asyncio
import enum
import faulthandler
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from nightcrew import actions, logs
from nightcrew.app import Nightcrew
from nightcrew.cli.common import CliState, say, state
from nightcrew.errors import ConfigurationError
from nightcrew.loop import run_loop
from nightcrew.metrics import serve_metrics
from nightcrew.settings import Settings
from nightcrew.worker import Worker

commands = typer.Typer()

QueuesOpt = Annotated[
    str | None,
    typer.Option("--queues", "-q", help="Comma-separated queues to serve (default: all)."),
]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option("--concurrency", "-c", min=1, help="Tasks run at once (NIGHTCREW_CONCURRENCY)."),
]
LimitOpt = Annotated[
    list[str] | None,
    typer.Option("--queue-limit", help="QUEUE=N: at most N tasks of QUEUE at once (repeatable)."),
]


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


LogLevelOpt = Annotated[
    LogLevel,
    typer.Option("--log-level", case_sensitive=False, help="DEBUG logs every completion."),
]
LogJsonOpt = Annotated[bool, typer.Option("--log-json", help="One JSON object per log line.")]


def _queues(value: str | None) -> list[str] | None:
    if value is None:
        return None
    queues = [q.strip() for q in value.split(",") if q.strip()]
    if not queues:
        raise ConfigurationError("--queues names no queue")
    return queues


def _limits(values: list[str] | None) -> dict[str, int]:
    limits: dict[str, int] = {}
    for item in values or []:
        queue, sep, number = item.partition("=")
        if not sep or not queue.strip() or not number.strip().isdigit():
            raise ConfigurationError(f"--queue-limit expects QUEUE=N, got {item!r}")
        limits[queue.strip()] = int(number)
    return limits


def _run(
    settings: Settings,
    queues: str | None,
    concurrency: int | None,
    limits: list[str] | None,
    *,
    until_idle: bool,
    metrics_port: int | None = None,
) -> int:
    """Run a worker with signal handling: the first SIGTERM/SIGINT drains (the grace
    period), a second one stops at once, handing running tasks back. Returns the number
    of outcomes written; raises what stopped the worker if it could not do its job."""
    served, queue_limits = _queues(queues), _limits(limits)
    # `kill -USR1 PID` prints every thread's stack to stderr: how an operator (or a test
    # that gave up waiting) sees where a worker that seems stuck is.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        signals = 0
        async with Nightcrew(settings) as app:
            worker = Worker(
                app=app, queues=served, concurrency=concurrency, queue_limits=queue_limits
            )

            def on_signal() -> None:
                nonlocal signals
                signals += 1
                if signals > 1:
                    worker.hurry()
                else:
                    worker.request_stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal)
            stop_metrics = (
                None if metrics_port is None else serve_metrics(app.metrics, metrics_port)
            )
            try:
                await worker.run(until_idle=until_idle)
            finally:
                if stop_metrics is not None:
                    stop_metrics()
            return worker.processed

    return run_loop(main(), settings)


@commands.command("worker")
def worker_command(
    ctx: typer.Context,
    queues: QueuesOpt = None,
    concurrency: ConcurrencyOpt = None,
    queue_limit: LimitOpt = None,
    log_level: LogLevelOpt = LogLevel.INFO,
    log_json: LogJsonOpt = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="Serve this worker's own Prometheus metrics on this port (/metrics).",
        ),
    ] = None,
) -> None:
    """Run a worker until SIGTERM/SIGINT (then finish or hand back in-flight tasks)."""
    settings = state(ctx).settings()
    logs.configure(log_level.value, as_json=log_json)
    _run(settings, queues, concurrency, queue_limit, until_idle=False, metrics_port=metrics_port)


def _detach(cli: CliState, log_file: Path, args: list[str]) -> None:
    command = [sys.executable, "-m", "nightcrew"]
    if cli.database_url:
        command += ["--database-url", cli.database_url]
    if cli.processor_modules:
        command += ["--processor-modules", cli.processor_modules]
    command += ["run", "--once", *args]
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ.copy(),
        )
    say(f"runner started in the background: pid {proc.pid}, log {log_file}")


@commands.command("run")
def run_command(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Run every task due now, then exit (required).")
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="Start in the background and return at once.")
    ] = False,
    log_file: Annotated[
        Path, typer.Option("--log-file", help="Where a detached runner writes its log.")
    ] = Path("nightcrew-run.log"),
    queues: QueuesOpt = None,
    concurrency: ConcurrencyOpt = None,
    queue_limit: LimitOpt = None,
    log_level: LogLevelOpt = LogLevel.INFO,
    log_json: LogJsonOpt = False,
) -> None:
    """The deploy-time runner: rescue abandoned tasks, run all due ones, exit 0.

    It never activates INACTIVE tasks. A task that fails does not fail the runner; only
    the runner's own failure (say, an unreachable database) exits non-zero.
    """
    if not once:
        raise typer.BadParameter("'run' needs --once (use 'nightcrew worker' to keep running)")
    cli = state(ctx)
    settings = cli.settings()  # validate before detaching, so errors show here
    if detach:
        # A deploy must notice a database the runner cannot use: check it before returning.
        with Nightcrew(settings) as app:
            actions.ping(app)
        args = ["--log-level", log_level.value]
        if log_json:
            args.append("--log-json")
        if queues:
            args += ["--queues", queues]
        if concurrency:
            args += ["--concurrency", str(concurrency)]
        for item in queue_limit or []:
            args += ["--queue-limit", item]
        _detach(cli, log_file, args)
        return
    logs.configure(log_level.value, as_json=log_json)
    processed = _run(settings, queues, concurrency, queue_limit, until_idle=True)
    say(f"run --once finished: {processed} task(s) processed")
