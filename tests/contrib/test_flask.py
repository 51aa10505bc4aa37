"""The Flask example: the extension's app factory, a task enqueued in the request's
Flask-SQLAlchemy session (it exists only once that commits), and ``flask nightcrew
worker`` running it and stopping cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import make_url

from nightcrew import Nightcrew, actions
from nightcrew.settings import Settings
from tests.conftest import TEST_MODULES, Backend
from tests.contrib.conftest import EXAMPLES


def _sqlalchemy_url(url: str) -> str:
    """Flask-SQLAlchemy picks the driver from the URL: psycopg 3 for PostgreSQL here."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def test_the_flask_example_enqueues_in_the_request_and_its_worker_runs_it(
    backend: Backend,
) -> None:
    import flask_app

    config = {
        "SQLALCHEMY_DATABASE_URI": _sqlalchemy_url(backend.url),
        "NIGHTCREW_PROCESSOR_MODULES": [*TEST_MODULES, "flask_app"],
    }
    app = flask_app.create_app(config)
    client = app.test_client()
    made = client.post("/signup", data={"email": "ada@example.org"})
    assert made.status_code == 200
    task_id = made.get_json()["task"]
    with app.app_context():
        # Enqueued in a session that rolls back: no task.
        before = actions.count(flask_app.crew.app)
        flask_app.crew.enqueue(flask_app.SendWelcome(email="nobody@example.org"))
        flask_app.db.session.rollback()
        assert actions.count(flask_app.crew.app) == before
        flask_app.crew.close()
        flask_app.db.engine.dispose()

    env = {
        **backend.env(),
        "DATABASE_URL": _sqlalchemy_url(backend.url),
        "PYTHONPATH": os.pathsep.join([str(EXAMPLES), backend.env()["PYTHONPATH"]]),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "flask_app:create_app", "nightcrew", "worker"],
        env=env,
        cwd=EXAMPLES,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Nightcrew(Settings(database_url=backend.url)) as nc:
            deadline = time.monotonic() + 60
            view = actions.get(nc, task_id)
            while view.status.value != "COMPLETED" and time.monotonic() < deadline:
                if worker.poll() is not None:
                    break
                time.sleep(0.1)
                view = actions.get(nc, task_id)
            assert view.status.value == "COMPLETED", worker.stderr.read() if worker.stderr else ""
            assert view.info == {"sent_to": "ada@example.org"}
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "nightcrew worker stopped: 1 task(s) processed" in out


def test_a_relative_sqlite_uri_is_read_inside_the_instance_folder_as_flask_sqlalchemy_does() -> (
    None
):
    from nightcrew.contrib.flask import settings_from_config

    config = {"SQLALCHEMY_DATABASE_URI": "sqlite:///app.db"}
    settings = settings_from_config(config, Settings(), instance_path="/srv/app/instance")
    assert make_url(settings.database_url).database == "/srv/app/instance/app.db"
    absolute = {"SQLALCHEMY_DATABASE_URI": "sqlite:////var/db/app.db"}
    assert settings_from_config(absolute, Settings(), "/x").database_url.endswith("/var/db/app.db")
    named = {"NIGHTCREW_DATABASE_URL": "sqlite:///mine.db", **config}
    assert settings_from_config(named, Settings(), "/x").database_url == "sqlite:///mine.db"
