"""Flask: an extension with the app-factory pattern (seed 002), and ``flask nightcrew``.

Seed 002's factory started its services (threads polling SQLite) inside ``create_app``.
Here the app only enqueues: tasks are rows written in the request's own SQLAlchemy session
(Flask-SQLAlchemy's ``db.session`` when the extension is given one), so a task exists if and
only if the request's transaction commits; workers run as their own processes with
``flask nightcrew worker`` (the factory's configuration, signals handled like
``nightcrew worker``)::

    db = SQLAlchemy()
    crew = NightcrewFlask(db=db)

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///app.db"
        app.config["NIGHTCREW_PROCESSOR_MODULES"] = ["myapp.jobs"]
        db.init_app(app)
        crew.init_app(app)
        return app

    @bp.post("/reports")
    def make_report():
        task = crew.enqueue(Report(month="2026-11"))   # in db.session
        db.session.commit()                              # the task exists from here on
        return {"task": task.id}

Configuration: ``NIGHTCREW_*`` keys of ``app.config`` (``NIGHTCREW_DATABASE_URL``, else
``SQLALCHEMY_DATABASE_URI``; any `nightcrew.Settings` field), over the environment's. Flask
and Flask-SQLAlchemy are an optional extra: ``pip install nightcrew[flask]``.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import click
from flask import Flask, current_app
from sqlalchemy.engine import make_url

from nightcrew.app import Nightcrew
from nightcrew.enqueue import create_maintenance_task
from nightcrew.loop import run_loop
from nightcrew.models import MaintenanceTask
from nightcrew.processors import MaintenanceTaskProcessor
from nightcrew.settings import Settings

EXTENSION = "nightcrew"


def settings_from_config(
    config: Any, base: Settings | None = None, instance_path: str | None = None
) -> Settings:
    """`Settings` from a Flask config: its ``NIGHTCREW_*`` keys over ``base`` (or the
    environment's), the database falling back on ``SQLALCHEMY_DATABASE_URI``.

    A relative SQLite path there is read as Flask-SQLAlchemy reads it, inside the app's
    ``instance_path``: the tasks go to the file the app's own session writes.
    """
    fields = Settings.model_fields
    values: dict[str, Any] = {}
    for key, value in config.items():
        if key.startswith("NIGHTCREW_") and key[10:].lower() in fields:
            values[key[10:].lower()] = value
    if "database_url" not in values and config.get("SQLALCHEMY_DATABASE_URI"):
        values["database_url"] = _as_flask_sqlalchemy_reads(
            str(config["SQLALCHEMY_DATABASE_URI"]), instance_path
        )
    start = base if base is not None else Settings()
    return start.model_copy(update=values) if values else start


def _as_flask_sqlalchemy_reads(uri: str, instance_path: str | None) -> str:
    url = make_url(uri)
    database = url.database
    if (
        instance_path is None
        or url.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file:")
        or os.path.isabs(database)
    ):
        return uri
    return url.set(database=os.path.join(instance_path, database)).render_as_string(
        hide_password=False
    )


class NightcrewFlask:
    """The extension: one `Nightcrew` per Flask app (in ``app.extensions["nightcrew"]``).

    ``db`` is a Flask-SQLAlchemy ``SQLAlchemy`` (or anything with a ``session`` scoped
    session); without one, `enqueue` writes in a transaction of its own.
    """

    def __init__(
        self, app: Flask | None = None, *, db: Any = None, settings: Settings | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        nightcrew = Nightcrew(settings_from_config(app.config, self.settings, app.instance_path))
        app.extensions[EXTENSION] = nightcrew
        app.cli.add_command(_cli_group(self))

    @staticmethod
    def nightcrew_of(app: Flask | None = None) -> Nightcrew:
        """The `Nightcrew` of ``app`` (default: the current app)."""
        flask_app = app if app is not None else current_app
        found = flask_app.extensions.get(EXTENSION)
        if not isinstance(found, Nightcrew):
            raise RuntimeError("NightcrewFlask.init_app(app) was not called for this app")
        return found

    @property
    def app(self) -> Nightcrew:
        return self.nightcrew_of()

    def session(self) -> Any:
        """The request's SQLAlchemy session (Flask-SQLAlchemy's), or None."""
        if self.db is None:
            return None
        scoped = self.db.session
        return scoped() if callable(scoped) else scoped

    def enqueue(self, processor: MaintenanceTaskProcessor, **options: Any) -> MaintenanceTask:
        """Create a task in the request's session (committed with it); the options are
        `nightcrew.create_maintenance_task`'s."""
        session = self.session()
        if session is not None:
            options.setdefault("session", session)
        return create_maintenance_task(processor, database=self.app, **options)

    def close(self, app: Flask | None = None) -> None:
        """Dispose of the app's engines (tests, or a process that made many apps)."""
        flask_app = app if app is not None else current_app
        found = flask_app.extensions.pop(EXTENSION, None)
        if isinstance(found, Nightcrew):
            found.close()


def _cli_group(ext: NightcrewFlask) -> click.Group:
    @click.group("nightcrew", help="nightcrew's worker, with this app's configuration.")
    def group() -> None:
        pass

    @group.command("worker", help="Run a worker until SIGTERM/SIGINT.")
    @click.option("--queues", "-q", default=None, help="Comma-separated queues (default: all).")
    @click.option("--concurrency", "-c", type=int, default=None, help="Tasks run at once.")
    @click.option("--once", is_flag=True, help="Run every task due now, then exit.")
    def worker(queues: str | None, concurrency: int | None, once: bool) -> None:
        nightcrew = ext.nightcrew_of()
        served = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
        processed = run_worker(nightcrew, served, concurrency, until_idle=once)
        click.echo(f"nightcrew worker stopped: {processed} task(s) processed")

    return group


def run_worker(
    nightcrew: Nightcrew,
    queues: list[str] | None,
    concurrency: int | None,
    *,
    until_idle: bool = False,
) -> int:
    """Run a worker on ``nightcrew`` with ``nightcrew worker``'s signal handling: the first
    SIGTERM/SIGINT drains within the grace period, a second stops at once."""

    async def main() -> int:
        worker = nightcrew.worker(queues=queues, concurrency=concurrency)
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                worker.hurry()
            else:
                worker.request_stop()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await worker.run(until_idle=until_idle)
        finally:
            await nightcrew.store.aclose()
            await nightcrew.database.adispose()
        return worker.processed

    return run_loop(main(), nightcrew.settings)


__all__ = ["NightcrewFlask", "run_worker", "settings_from_config"]
