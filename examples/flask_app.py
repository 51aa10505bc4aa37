"""A Flask app (the app-factory pattern of seed 002) that enqueues in its own transaction.

Seed 002's factory started background threads polling SQLite inside ``create_app``. Here the
app only writes tasks, in the request's Flask-SQLAlchemy session: a signup and its welcome
task commit together, or neither does. Workers are processes of their own, started with the
app's configuration::

    cd examples
    export DATABASE_URL=sqlite:///$PWD/flask-example.db   # absolute: Flask-SQLAlchemy reads
    #   a relative SQLite path inside the app's instance/ folder (nightcrew does the same)
    NIGHTCREW_DATABASE_URL=$DATABASE_URL nightcrew db upgrade
    flask --app flask_app:create_app run &
    flask --app flask_app:create_app nightcrew worker
    curl -X POST localhost:5000/signup -d 'email=ada@example.org'
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from pydantic import Field

from nightcrew import MaintenanceTask, MaintenanceTaskProcessor, actions
from nightcrew.contrib.flask import NightcrewFlask

db = SQLAlchemy()
crew = NightcrewFlask(db=db)


class SendWelcome(MaintenanceTaskProcessor):
    """The signup's follow-up: runs on a worker once the signup committed."""

    email: str = Field(min_length=3, max_length=320)

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        return {"sent_to": self.email}


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The factory: configuration, then the extensions, then the routes."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get(
        "DATABASE_URL", "sqlite:///flask-example.db"
    )
    app.config["NIGHTCREW_PROCESSOR_MODULES"] = [__name__]
    app.config.update(config or {})
    db.init_app(app)
    crew.init_app(app)

    @app.post("/signup")
    def signup() -> dict[str, Any]:
        task = crew.enqueue(SendWelcome(email=request.form["email"]))
        db.session.commit()  # the task exists from here on, with the request's other rows
        return {"task": task.id}

    @app.get("/tasks/<int:task_id>")
    def show_task(task_id: int) -> dict[str, Any]:
        view = actions.get(crew.app, task_id)
        return {"status": view.status.value, "info": view.info}

    return app
