"""What every command module shares: settings from flags and environment, the store, output.

Command modules import from here, never from ``nightcrew.cli`` itself, so the package's
``__init__`` can import them without a cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console

from nightcrew.app import Nightcrew
from nightcrew.errors import ConfigurationError
from nightcrew.settings import Settings

#: Tables and panels go to stdout; one-line messages are written with `say`/`print_error`
#: instead, because Rich wraps long lines at the terminal width (80 when piped) and a
#: message split over lines is harder to grep and to test.
console = Console(highlight=False)


@dataclass
class CliState:
    """The global flags, turned into `Settings` only when a command needs them.

    Deferring the build means ``--help`` and usage errors work even when the environment
    holds an invalid ``NIGHTCREW_*`` value.
    """

    database_url: str | None = None
    processor_modules: str | None = None
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            overrides: dict[str, Any] = {}
            if self.database_url is not None:
                overrides["database_url"] = self.database_url
            if self.processor_modules is not None:
                overrides["processor_modules"] = self.processor_modules
            try:
                self._settings = Settings(**overrides)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                    for err in exc.errors()
                )
                raise ConfigurationError(f"invalid settings: {problems}") from None
        return self._settings


def state(ctx: typer.Context) -> CliState:
    found = ctx.find_object(CliState)
    return found if found is not None else CliState()


@contextmanager
def open_app(settings: Settings) -> Iterator[Nightcrew]:
    """An app whose connections are closed when the command ends (SQLite keeps a file lock)."""
    app = Nightcrew(settings)
    try:
        yield app
    finally:
        app.close()


def cli_actor() -> str:
    """Who runs this command, for the events and the audit log: ``cli:<login name>``."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name in this environment (a container, say)
        return "cli"


def one_line(text: str) -> str:
    """Driver and import errors span lines; the CLI promises one line per error."""
    return " ".join(text.split())


def say(message: str) -> None:
    typer.echo(message)


def warn(message: str) -> None:
    typer.echo(f"warning: {one_line(message)}", err=True)


def print_error(message: str) -> None:
    typer.echo(f"error: {one_line(message)}", err=True)


def format_time(value: datetime | None) -> str:
    """``YYYY-MM-DD HH:MM:SSZ`` in UTC, with the year always four digits (year 1 too)."""
    if value is None:
        return "-"
    v = value.astimezone(UTC)
    return f"{v.year:04d}-{v:%m-%d %H:%M:%S}Z"
