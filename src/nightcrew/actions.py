"""Operator actions: the Python API for reading and steering tasks.

The CLI calls these, and so will the admin API and the dashboard; each mutating action
names its ``actor`` (who asked: ``"cli:alice"``, a token's name, ``"python"``), which the
events of the transition carry. Every action is one store operation in one transaction, so
a refused action (an unknown id, a transition the task's status forbids) changes nothing::

    from nightcrew import Nightcrew, actions
    with Nightcrew() as app:
        page = actions.list_tasks(app, statuses=["ERROR"], limit=20)
        for task in page.tasks:
            actions.retry(app, task.id, actor="ops:night-shift")
"""

from __future__ import annotations

from collections.abc import Iterable

from nightcrew.app import Nightcrew
from nightcrew.models import MaintenanceTaskStatus, PipelineStatus
from nightcrew.store import ops, pipeline_ops
from nightcrew.store.pipeline_ops import PipelineDetail, PipelineView
from nightcrew.values import TaskFilter, TaskPage, TaskView

#: The actor of actions taken from Python without saying who.
PYTHON_ACTOR = "python"


def get(app: Nightcrew, task_id: int) -> TaskView:
    """One task, everything stored about it; `nightcrew.TaskNotFound` if there is none."""
    return app.store.run(ops.get_task, task_id)


def list_tasks(
    app: Nightcrew,
    *,
    statuses: Iterable[MaintenanceTaskStatus | str] = (),
    processor: str | None = None,
    queue: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> TaskPage:
    """Tasks newest first, ``limit`` per page (at most 1000); pass the page's
    ``next_before_id`` as ``before_id`` for the next one. ``processor`` is a class path
    or just the class name."""
    task_filter = TaskFilter(
        statuses=tuple(MaintenanceTaskStatus(s) for s in statuses),
        processor=processor,
        queue=queue,
        before_id=before_id,
        limit=limit,
    )
    return app.store.run(ops.list_tasks, task_filter)


def ping(app: Nightcrew) -> None:
    """Check that the database answers and holds nightcrew's schema; raises
    `nightcrew.DatabaseError` (`SchemaMissing`: run ``nightcrew db upgrade``) if not."""
    app.store.run(ops.probe)


def count(app: Nightcrew) -> dict[MaintenanceTaskStatus, int]:
    """How many tasks are in each status (every status present, zeros included)."""
    return app.store.run(ops.count_by_status)


def cancel(app: Nightcrew, task_id: int, *, actor: str = PYTHON_ACTOR) -> TaskView:
    """INACTIVE or PENDING: CANCELLED at once. WORKING: its worker is asked to stop it
    (at once on PostgreSQL, within a second on SQLite) and it ends CANCELLED."""
    return app.store.run_as(actor, ops.cancel, task_id)


def retry(app: Nightcrew, task_id: int, *, actor: str = PYTHON_ACTOR) -> TaskView:
    """ERROR or CANCELLED back to PENDING, due now, with fresh attempts and rescues."""
    return app.store.run_as(actor, ops.retry, task_id)


def activate(app: Nightcrew, task_id: int, *, actor: str = PYTHON_ACTOR) -> TaskView:
    """INACTIVE (staged) to PENDING."""
    return app.store.run_as(actor, ops.activate, task_id)


# ---------------------------------------------------------------- pipelines


def list_pipelines(
    app: Nightcrew,
    *,
    statuses: Iterable[PipelineStatus | str] = (),
    before_id: int | None = None,
    limit: int = 50,
) -> tuple[list[PipelineView], int | None]:
    """Pipelines newest first, and the cursor of the next page (None: the last)."""
    wanted = [PipelineStatus(s) for s in statuses]
    return app.store.run(pipeline_ops.list_pipelines, wanted, before_id, limit)


def get_pipeline(app: Nightcrew, pipeline_id: int) -> PipelineDetail:
    """A pipeline with its steps and edges; `PipelineNotFound` if there is none."""
    return app.store.run(pipeline_ops.pipeline_detail, pipeline_id)


def cancel_pipeline(app: Nightcrew, pipeline_id: int, *, actor: str = PYTHON_ACTOR) -> PipelineView:
    """CANCELLED now: waiting steps are cancelled at once, running ones asked to stop."""
    return app.store.run_as(actor, pipeline_ops.cancel_pipeline, pipeline_id)


def retry_step(
    app: Nightcrew, pipeline_id: int, step: str, *, actor: str = PYTHON_ACTOR
) -> TaskView:
    """Run a failed step again; the steps its failure cancelled are re-armed and the
    pipeline reopens."""
    task_id = app.store.run(pipeline_ops.step_id, pipeline_id, step)
    return app.store.run_as(actor, ops.retry, task_id)
