"""Pipelines: tasks that depend on other tasks, built in Python and written in one go.

::

    p = Pipeline("upgrade-users")
    batches = [p.add(UpgradeUsers(user_ids=chunk)) for chunk in chunks]      # fan-out
    p.add(Summarize(), name="summary", depends_on=batches)                    # fan-in
    pipeline_id = p.enqueue(database=app)

A step becomes claimable once all its dependencies have finished; the claim itself never
looks at dependencies (a counter on each step, moved by the transactions that finish its
dependencies, decides). A failed or cancelled dependency cancels its dependents unless they
``run_anyway``; a step that is not ``critical`` may fail without failing the pipeline.
Inside a step, `dependency_results` returns its dependencies' results by step name.

Cycles, unknown dependencies and duplicate step names are refused when the pipeline is
built (`PipelineError`), before anything is written.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nightcrew.app import Nightcrew, app_for
from nightcrew.enqueue import DatabaseLike, TaskOptions, build_rows
from nightcrew.errors import ConfigurationError
from nightcrew.models import utcnow
from nightcrew.processors import MaintenanceTaskProcessor, ProcessorLoader, loader_for
from nightcrew.settings import Settings
from nightcrew.store import pipeline_ops
from nightcrew.store.base import AsyncTarget, SyncTarget, arun_in, run_in

#: Longest step name (the column's width).
MAX_STEP_NAME = 200


class PipelineError(ConfigurationError):
    """The pipeline cannot be built as described: a cycle, an unknown dependency, a
    duplicate step name, or no steps at all."""


@dataclass(frozen=True, eq=False)
class Step:
    """One step of a `Pipeline`, as `Pipeline.add` returns it (pass it in ``depends_on``)."""

    pipeline: Pipeline
    name: str
    processor: MaintenanceTaskProcessor
    depends_on: tuple[str, ...]
    critical: bool
    run_anyway: bool
    options: TaskOptions

    def __repr__(self) -> str:
        return f"<Step {self.name!r} of {self.pipeline.name!r}>"


@dataclass(eq=False)
class Pipeline:
    """A named group of steps with dependencies; ``unique_key`` as for single tasks (an
    open pipeline holding the key is returned instead of a new one)."""

    name: str
    unique_key: str | None = None
    _steps: dict[str, Step] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 0 < len(self.name) <= MAX_STEP_NAME:
            raise PipelineError(f"a pipeline name has 1 to {MAX_STEP_NAME} characters")
        if self.unique_key is not None and not 0 < len(self.unique_key) <= 255:
            raise PipelineError("unique_key must be 1 to 255 characters")

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(self._steps.values())

    def add(
        self,
        processor: MaintenanceTaskProcessor,
        *,
        name: str | None = None,
        depends_on: Iterable[Step | str] = (),
        critical: bool = True,
        run_anyway: bool = False,
        inactive: bool = False,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        start_at: datetime | None = None,
        start_in: float | None = None,
    ) -> Step:
        """Add a step. Its name defaults to ``<ProcessorClass>-<n>`` (unique in the
        pipeline); ``depends_on`` takes steps of this pipeline or their names (a name may
        be added later: the graph is checked when it is enqueued). An ``inactive`` step is
        staged: once its dependencies are done it still waits for an activation."""
        if not isinstance(processor, MaintenanceTaskProcessor):
            raise PipelineError(f"expected a MaintenanceTaskProcessor, got {processor!r}")
        if name is None:
            base = type(processor).__name__
            n = len(self._steps) + 1
            while f"{base}-{n}" in self._steps:
                n += 1
            name = f"{base}-{n}"
        if not 0 < len(name) <= MAX_STEP_NAME:
            raise PipelineError(f"a step name has 1 to {MAX_STEP_NAME} characters")
        if name in self._steps:
            raise PipelineError(f"pipeline {self.name!r} already has a step named {name!r}")
        needs: list[str] = []
        for dependency in depends_on:
            if isinstance(dependency, Step):
                if dependency.pipeline is not self:
                    raise PipelineError(f"{dependency!r} belongs to another pipeline")
                needs.append(dependency.name)
            else:
                needs.append(str(dependency))
        if len(set(needs)) != len(needs):
            raise PipelineError(f"step {name!r} lists a dependency twice")
        options = TaskOptions(
            start_at=start_at,
            start_in=start_in,
            priority=priority,
            queue=queue,
            max_attempts=max_attempts,
            timeout=timeout,
            inactive=inactive,
        )
        step = Step(self, name, processor, tuple(needs), critical, run_anyway, options)
        self._steps[name] = step
        return step

    def order(self) -> list[Step]:
        """The steps in an order where each comes after its dependencies.

        Raises `PipelineError` for an unknown dependency or a cycle (naming its steps).
        """
        if not self._steps:
            raise PipelineError(f"pipeline {self.name!r} has no steps")
        for step in self._steps.values():
            for dependency in step.depends_on:
                if dependency not in self._steps:
                    raise PipelineError(
                        f"step {step.name!r} depends on {dependency!r}, which is not a step "
                        f"of pipeline {self.name!r}"
                    )
        waiting = {name: len(step.depends_on) for name, step in self._steps.items()}
        dependents: dict[str, list[str]] = {name: [] for name in self._steps}
        for step in self._steps.values():
            for dependency in step.depends_on:
                dependents[dependency].append(step.name)
        # First in, first out: independent steps keep the order they were added in (their
        # ids, and so their claim order at equal priority, follow it).
        ready = deque(name for name, n in waiting.items() if n == 0)
        ordered: list[Step] = []
        while ready:
            name = ready.popleft()
            ordered.append(self._steps[name])
            for dependent in dependents[name]:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    ready.append(dependent)
        if len(ordered) < len(self._steps):
            stuck = sorted(name for name, n in waiting.items() if n > 0)
            raise PipelineError(
                f"pipeline {self.name!r} has a cycle among steps {', '.join(map(repr, stuck))}"
            )
        return ordered

    def _rows(self, loader: ProcessorLoader) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        """Each step's row (checked like a single task's) and the edges between them."""
        ordered = self.order()
        index = {step.name: i for i, step in enumerate(ordered)}
        now = utcnow()
        rows: list[dict[str, Any]] = [{}] * len(ordered)
        # Steps sharing options are checked together: a wide fan-out costs one check.
        groups: dict[TaskOptions, list[int]] = {}
        for i, step in enumerate(ordered):
            groups.setdefault(step.options, []).append(i)
        for options, members in groups.items():
            built = build_rows([ordered[i].processor for i in members], options, loader, now)
            for i, row in zip(members, built, strict=True):
                step = ordered[i]
                rows[i] = {
                    **row,
                    "step_name": step.name,
                    "critical": step.critical,
                    "run_anyway": step.run_anyway,
                }
        edges = [(index[dep], index[step.name]) for step in ordered for dep in step.depends_on]
        return rows, edges

    def enqueue(
        self,
        *,
        session: SyncTarget | None = None,
        database: DatabaseLike = None,
        settings: Settings | None = None,
    ) -> int:
        """Write the pipeline and all its steps in one transaction; returns its id.

        With ``session`` (a SQLAlchemy ``Session`` or ``Connection``) in the caller's
        transaction, as for `create_maintenance_task`.
        """
        if session is not None:
            shared = database if isinstance(database, Nightcrew) else None
            loader = shared.loader if shared else loader_for(settings or Settings())
            rows, edges = self._rows(loader)
            events = shared.events if shared else None
            pipeline_id, _ = run_in(
                session,
                events,
                pipeline_ops.insert_pipeline,
                self.name,
                self.unique_key,
                rows,
                edges,
            )
            return pipeline_id
        app, owned = app_for(database, settings)
        try:
            rows, edges = self._rows(app.loader)
            pipeline_id, _ = app.store.run(
                pipeline_ops.insert_pipeline, self.name, self.unique_key, rows, edges
            )
            return pipeline_id
        finally:
            if owned:
                app.close()

    async def aenqueue(
        self,
        *,
        session: AsyncTarget | None = None,
        database: DatabaseLike = None,
        settings: Settings | None = None,
    ) -> int:
        """`enqueue` for async code."""
        if session is not None:
            shared = database if isinstance(database, Nightcrew) else None
            loader = shared.loader if shared else loader_for(settings or Settings())
            rows, edges = self._rows(loader)
            events = shared.events if shared else None
            pipeline_id, _ = await arun_in(
                session,
                events,
                pipeline_ops.insert_pipeline,
                self.name,
                self.unique_key,
                rows,
                edges,
            )
            return pipeline_id
        app, owned = app_for(database, settings)
        try:
            rows, edges = self._rows(app.loader)
            pipeline_id, _ = await app.store.arun(
                pipeline_ops.insert_pipeline, self.name, self.unique_key, rows, edges
            )
            return pipeline_id
        finally:
            if owned:
                await app.aclose()


def text_tree(steps: Sequence[Any], edges: Sequence[tuple[int, int]]) -> list[str]:
    """The DAG as indented lines, for ``pipelines show``: each step once, under the first
    of its dependencies, with the others named (``steps`` have ``id``, ``step_name``,
    ``status``)."""
    by_id = {s.id: s for s in steps}
    parents: dict[int, list[int]] = {s.id: [] for s in steps}
    children: dict[int, list[int]] = {s.id: [] for s in steps}
    for dependency, dependent in edges:
        parents[dependent].append(dependency)
    for task_id, deps in parents.items():
        if deps:
            children[min(deps)].append(task_id)

    def label(task_id: int) -> str:
        step = by_id[task_id]
        return str(step.step_name or step.id)

    lines: list[str] = []
    stack = [(root, 0) for root in sorted((i for i in by_id if not parents[i]), reverse=True)]
    while stack:
        task_id, depth = stack.pop()
        step = by_id[task_id]
        also = sorted(parents[task_id])[1:]
        after = f"  (also after {', '.join(label(i) for i in also)})" if also else ""
        lines.append(f"{'  ' * depth}{label(task_id)} [{step.status}] task {task_id}{after}")
        stack.extend((child, depth + 1) for child in sorted(children[task_id], reverse=True))
    return lines
