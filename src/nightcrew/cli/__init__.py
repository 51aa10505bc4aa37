"""The ``nightcrew`` command: a thin layer over the same functions the library exposes.

Each command module defines ``commands``, a Typer merged into `app`. Errors nightcrew
raises on purpose (and database and usage errors) are turned into one ``error: ...``
line on stderr by `main`, in one place, so no command can leak a traceback for bad input.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated, NoReturn

import typer
from sqlalchemy.exc import SQLAlchemyError

from nightcrew.cli.common import CliState, print_error
from nightcrew.errors import NightcrewError
from nightcrew.store import describe_database_error

# Command modules, one import per module; each is merged into `app` below.
from nightcrew.cli import db  # isort: skip
from nightcrew.cli import tasks  # isort: skip
from nightcrew.cli import worker  # isort: skip
from nightcrew.cli import demo  # isort: skip
from nightcrew.cli import pipelines  # isort: skip
from nightcrew.cli import serve  # isort: skip
from nightcrew.cli import tokens  # isort: skip
from nightcrew.cli import audit  # isort: skip
from nightcrew.cli import schedules  # isort: skip
from nightcrew.cli import observe  # isort: skip

COMMAND_MODULES = (db, tasks, worker, demo, pipelines, serve, tokens, audit, schedules, observe)

app = typer.Typer(
    name="nightcrew",
    help="Durable, database-backed maintenance tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"nightcrew {version('nightcrew')}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Database URL (postgresql://... or sqlite:///...); "
            "default: NIGHTCREW_DATABASE_URL.",
            show_default=False,
        ),
    ] = None,
    processor_modules: Annotated[
        str | None,
        typer.Option(
            "--processor-modules",
            help="Comma-separated modules processors may come from; "
            "default: NIGHTCREW_PROCESSOR_MODULES.",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = CliState(database_url=database_url, processor_modules=processor_modules)


for _module in COMMAND_MODULES:
    app.add_typer(_module.commands)


#: Options of the root command that may also be written after the subcommand.
GLOBAL_OPTIONS = ("--database-url", "--processor-modules")


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """Move global options written after a subcommand (``nightcrew tasks ls --database-url
    X``) to the front, where the root command reads them."""
    front: list[str] = []
    rest: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        item = items[i]
        name = item.partition("=")[0]
        if i > 0 and name in GLOBAL_OPTIONS:
            if "=" in item:
                front.append(item)
            else:
                front.extend(items[i : i + 2])
                i += 1
        else:
            rest.append(item)
        i += 1
    return front + rest


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the CLI and exit: 0 on success, 2 for a usage error, 1 for any other error.

    Typer runs in non-standalone mode so that its usage errors reach this function
    instead of being drawn as a multi-line panel.
    """
    code: int
    # Processors are found by their module path: like uvicorn and celery, look in the
    # directory the command runs from, so `myapp.maintenance` next to you just works.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        result = app(
            args=hoist_global_options(sys.argv[1:] if argv is None else argv),
            prog_name="nightcrew",
            standalone_mode=False,
        )
        code = result if isinstance(result, int) else 0
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            # Typer's own check: the class is not public. Its message is the help text.
            typer.echo(exc.format_message(), err=True)
        else:
            print_error(exc.format_message())
        code = exc.exit_code
    except typer.Abort:
        print_error("aborted")
        code = 1
    except NightcrewError as exc:
        print_error(str(exc) or type(exc).__name__)
        code = 1
    except SQLAlchemyError as exc:
        print_error(describe_database_error(exc))
        code = 1
    except KeyboardInterrupt:
        print_error("interrupted")
        code = 130
    raise SystemExit(code)
