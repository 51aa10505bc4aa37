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

import hashlib
import hmac
import json
import logging
import math
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import nightcrew.store.admin_ops as admin_ops
import nightcrew.store.observe_ops as observe_ops
import nightcrew.store.schedule_ops as schedule_ops
from nightcrew.app import Nightcrew
from nightcrew.catalog import ProcessorCatalog, discover
from nightcrew.enqueue import TaskOptions, build_rows
from nightcrew.errors import (
    ConfigurationError,
    InvalidProcessorConfig,
    InvalidTaskOptions,
    InvalidTokenRequest,
    InvalidTransition,
    NightcrewError,
    PayloadTooLarge,
    PipelineNotFound,
    ProcessorNotAllowed,
    ScheduleExists,
    ScheduleNotFound,
    TaskNotFound,
    TokenNameTaken,
    TokenNotFound,
)
from nightcrew.events import EventKind
from nightcrew.models import MaintenanceTaskStatus, PipelineStatus
from nightcrew.processors import MaintenanceTaskProcessor, unknown_fields
from nightcrew.schedules.declare import Schedule, define
from nightcrew.schedules.sync import declared_schedules
from nightcrew.schedules.values import ScheduleView, SyncReport
from nightcrew.store import ops, pipeline_ops
from nightcrew.store.pipeline_ops import PipelineDetail, PipelineView
from nightcrew.store.plans import Plan, Tx
from nightcrew.values import (
    AuditFilter,
    AuditPage,
    AuditRecord,
    BulkResult,
    Role,
    TaskFilter,
    TaskPage,
    TaskStats,
    TaskView,
    TokenView,
    WorkerView,
)

log = logging.getLogger("nightcrew.actions")

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
    schedule_name: str | None = None,
    pipeline_id: int | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> TaskPage:
    """Tasks newest first, ``limit`` per page (at most 1000); pass the page's
    ``next_before_id`` as ``before_id`` for the next one. ``processor`` is a class path
    or just the class name; ``schedule_name`` and ``pipeline_id`` pick a schedule's tasks
    or a pipeline's steps; ``created_after`` (inclusive) and ``created_before`` bound the
    creation time."""
    task_filter = TaskFilter(
        statuses=tuple(MaintenanceTaskStatus(s) for s in statuses),
        processor=processor,
        queue=queue,
        before_id=before_id,
        limit=limit,
        schedule_name=schedule_name,
        pipeline_id=pipeline_id,
        created_after=created_after,
        created_before=created_before,
    )
    return app.store.run(ops.list_tasks, task_filter)


def ping(app: Nightcrew) -> None:
    """Check that the database answers and holds nightcrew's schema; raises
    `nightcrew.DatabaseError` (`SchemaMissing`: run ``nightcrew db upgrade``) if not."""
    app.store.run(ops.probe)


def count(app: Nightcrew) -> dict[MaintenanceTaskStatus, int]:
    """How many tasks are in each status (every status present, zeros included)."""
    return app.store.run(ops.count_by_status)


def cancel(
    app: Nightcrew, task_id: int, *, actor: str = PYTHON_ACTOR, client: str | None = None
) -> TaskView:
    """INACTIVE or PENDING: CANCELLED at once. WORKING: its worker is asked to stop it
    (at once on PostgreSQL, within a second on SQLite) and it ends CANCELLED."""
    record = AuditRecord(actor, "task.cancel", f"task:{task_id}", None, "ok", client=client)
    return run_audited(app, record, lambda tx: ops.cancel(tx, task_id))


def retry(
    app: Nightcrew, task_id: int, *, actor: str = PYTHON_ACTOR, client: str | None = None
) -> TaskView:
    """ERROR or CANCELLED back to PENDING, due now, with fresh attempts and rescues."""
    record = AuditRecord(actor, "task.retry", f"task:{task_id}", None, "ok", client=client)
    return run_audited(app, record, lambda tx: ops.retry(tx, task_id))


def activate(
    app: Nightcrew, task_id: int, *, actor: str = PYTHON_ACTOR, client: str | None = None
) -> TaskView:
    """INACTIVE (staged) to PENDING."""
    record = AuditRecord(actor, "task.activate", f"task:{task_id}", None, "ok", client=client)
    return run_audited(app, record, lambda tx: ops.activate(tx, task_id))


# ---------------------------------------------------------------- the audit log

#: Errors that refuse an action (bad input, a transition the status forbids): the audit
#: row says "refused". Anything else that stops an action is recorded as "error".
REFUSALS: tuple[type[NightcrewError], ...] = (
    TaskNotFound,
    InvalidTransition,
    ProcessorNotAllowed,
    InvalidProcessorConfig,
    InvalidTaskOptions,
    PayloadTooLarge,
    InvalidTokenRequest,
    TokenNameTaken,
    TokenNotFound,
)

#: Parameter names whose values never reach the audit log: anything that looks like a
#: token, secret, password, credential, API key or authorization (``author`` is not).
_SECRET_KEY = re.compile(
    r"token|secret|passw|credential|api_?key|private_?key|authori[sz]ation|(^|[_-])auth($|[_-])",
    re.IGNORECASE,
)
#: A configuration larger than this is summarised in the audit log, not copied.
MAX_AUDITED_JSON = 4096
REDACTED = "[redacted]"

R = TypeVar("R")


def redact(value: Any) -> Any:
    """``value`` fit for the audit log: values under secret-looking keys (token, password,
    secret, auth...) replaced, and text made storable by both databases (PostgreSQL's JSON
    holds neither NUL characters nor lone surrogates)."""
    if isinstance(value, Mapping):
        return {
            _clean_text(str(k)): REDACTED if _SECRET_KEY.search(str(k)) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _clean_text(text: str) -> str:
    text = text.replace("\x00", "\N{REPLACEMENT CHARACTER}")
    return text.encode("utf-8", "replace").decode("utf-8")


def _summarised(config: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration as the audit log keeps it: redacted, or only its size when large."""
    text = json.dumps(config, default=str)
    if len(text) > MAX_AUDITED_JSON:
        return {"omitted_bytes": len(text.encode("utf-8", "replace"))}
    redacted: dict[str, Any] = redact(config)
    return redacted


def record(app: Nightcrew, entry: AuditRecord) -> AuditRecord:
    """Append one audit row in a transaction of its own (a refusal, a failure, a denied
    request: anything whose own transaction did not commit)."""
    return app.store.run(admin_ops.record_audit, entry)


def _record_quietly(app: Nightcrew, entry: AuditRecord) -> None:
    """`record`, for failure paths: a database too broken to take the row must not hide
    the error that is being raised."""
    try:
        record(app, entry)
    except Exception:
        log.warning(
            "could not write an audit row",
            extra={"action": entry.action, "actor": entry.actor, "outcome": entry.outcome},
            exc_info=True,
        )


@contextmanager
def _refusal_recorded(app: Nightcrew, entry: AuditRecord) -> Iterator[None]:
    """Record a refusal or failure of the block as its own audit row, then re-raise."""
    try:
        yield
    except REFUSALS as exc:
        _record_quietly(app, replace(entry, outcome="refused", detail=_clean_text(str(exc))))
        raise
    except Exception as exc:
        detail = _clean_text(f"{type(exc).__name__}: {exc}")
        _record_quietly(app, replace(entry, outcome="error", detail=detail))
        raise


def run_audited(app: Nightcrew, entry: AuditRecord, op: Callable[[Tx], Plan[R]]) -> R:
    """Run a mutating operation as ``entry.actor`` with its audit row ("ok") written in the
    same transaction, so the row exists exactly when the change does; a refusal or failure
    is recorded in a transaction of its own (the operation's rolled back) and re-raised."""
    with _refusal_recorded(app, entry):
        return app.store.run_as(entry.actor, admin_ops.audited, entry, op)


def list_audit(app: Nightcrew, audit_filter: AuditFilter | None = None) -> AuditPage:
    """The audit log, newest first (see `AuditFilter`)."""
    return app.store.run(admin_ops.list_audit, audit_filter or AuditFilter())


# ---------------------------------------------------------------- creating tasks


@dataclass(frozen=True, slots=True)
class Enqueued:
    """A task an operator created: ``created`` False means its unique key was held and this
    is the open task holding it; ``warnings`` name configuration keys the processor does not
    declare (kept, ignored: usually a typo)."""

    task: TaskView
    created: bool
    warnings: Sequence[str]
    #: The undeclared keys themselves.
    unknown_keys: Sequence[str] = ()


def enqueue(
    app: Nightcrew,
    processor_type: str,
    config: str | Mapping[str, Any] = "{}",
    options: TaskOptions | None = None,
    *,
    actor: str = PYTHON_ACTOR,
    client: str | None = None,
) -> Enqueued:
    """Create a task from a processor's class path and its configuration (JSON text or a
    mapping), checked through the allowlist and the processor's model before anything is
    written; the operator's counterpart of `create_maintenance_task`."""
    options = options or TaskOptions()
    parameters: dict[str, Any] = {"processor": _clean_text(processor_type)}
    parameters.update(_option_parameters(options))
    entry = AuditRecord(actor, "task.create", None, parameters, "ok", client=client)
    with _refusal_recorded(app, entry):
        if isinstance(config, str):
            text = config
        else:
            try:
                text = json.dumps(dict(config), allow_nan=False)
            except ValueError as exc:  # NaN or Infinity: JSON has no such numbers
                raise InvalidProcessorConfig(f"invalid configuration: {exc}") from None
        processor = app.loader.load(processor_type, text)
        parameters["config"] = _summarised(processor.model_dump(mode="json"))
        extra = unknown_fields(processor)
        warnings = [
            f"{processor_type} declares no field {name!r}: kept in the configuration, "
            "ignored by the processor"
            for name in extra
        ]
        (row,) = build_rows([processor], options, app.loader, datetime.now(UTC))
        insert = ops.insert_one if row["unique_key"] is None else ops.insert_keyed

        def plan(tx: Tx) -> Plan[tuple[TaskView, bool]]:
            task = yield from insert(tx, row)
            # Made by this call only if it announced the row: comparing times cannot tell,
            # since a concurrent caller may create the key's task after this one started.
            made = any(e.kind is EventKind.CREATED and e.task_id == task.id for e in tx.events)
            detail = None if made else f"unique key held by task {task.id}: nothing created"
            yield from admin_ops.record_audit(
                tx, replace(entry, target=f"task:{task.id}", detail=detail)
            )
            return task, made

        task, made = app.store.run_as(actor, plan)
    return Enqueued(task, made, warnings, extra)


def _option_parameters(options: TaskOptions) -> dict[str, Any]:
    """The options an operator set, as the audit log shows them."""
    shown: dict[str, Any] = {}
    for name in TaskOptions.__slots__:
        value = getattr(options, name)
        if value is None or value is False or (name == "delay" and value == 0):
            continue
        shown[name] = value.isoformat() if isinstance(value, datetime) else redact(value)
    return shown


# ---------------------------------------------------------------- bulk actions and stats


def _filter_parameters(task_filter: TaskFilter) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for name in TaskFilter.__slots__:
        value = getattr(task_filter, name)
        if value is None or value == ():
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = [str(v) for v in value]
        shown[name] = redact(value)
    return shown


def _bulk(
    app: Nightcrew,
    action: str,
    op: Callable[[Tx, TaskFilter], Plan[BulkResult]],
    task_filter: TaskFilter,
    actor: str,
    client: str | None,
) -> BulkResult:
    entry = AuditRecord(
        actor, action, "tasks", {"filter": _filter_parameters(task_filter)}, "ok", client=client
    )

    def plan(tx: Tx) -> Plan[BulkResult]:
        result = yield from op(tx, task_filter)
        done = replace(
            entry,
            detail=f"{len(result.changed)} changed, {len(result.skipped)} skipped"
            + (", more match" if result.more else ""),
        )
        yield from admin_ops.record_audit(tx, done)
        return result

    with _refusal_recorded(app, entry):
        return app.store.run_as(actor, plan)


def bulk_cancel(
    app: Nightcrew, task_filter: TaskFilter, *, actor: str = PYTHON_ACTOR, client: str | None = None
) -> BulkResult:
    """Cancel the open tasks matching ``task_filter``, at most ``task_filter.limit`` (up to
    1000) per call, in one transaction; ``more`` says whether to call again."""
    return _bulk(app, "tasks.bulk_cancel", admin_ops.bulk_cancel, task_filter, actor, client)


def bulk_retry(
    app: Nightcrew, task_filter: TaskFilter, *, actor: str = PYTHON_ACTOR, client: str | None = None
) -> BulkResult:
    """Retry the ERROR and CANCELLED tasks matching ``task_filter``, as `bulk_cancel`."""
    return _bulk(app, "tasks.bulk_retry", admin_ops.bulk_retry, task_filter, actor, client)


def stats(app: Nightcrew) -> TaskStats:
    """Counts by status, queue and processor; the oldest due PENDING task's wait; finishes
    per minute over the last hour."""
    return app.store.run(admin_ops.stats)


def processors(app: Nightcrew) -> ProcessorCatalog:
    """Every processor the allowlist admits, with its JSON schema (see `nightcrew.catalog`)."""
    return discover(app.loader)


# ---------------------------------------------------------------- API tokens

#: What a token is made of: 32 random bytes (256 bits), URL-safe, after a recognisable prefix
#: (so a leaked one is easy to spot in a scanner's rules).
TOKEN_PREFIX = "nct_"
TOKEN_BYTES = 32
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")


def hash_token(token: str) -> str:
    """SHA-256 of the token, hex. A token is 256 random bits, so a fast hash is enough: no
    dictionary or brute force reaches it (passwords need a slow hash; these are not)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_token(
    app: Nightcrew,
    name: str,
    role: Role | str,
    *,
    actor: str = PYTHON_ACTOR,
    client: str | None = None,
) -> tuple[TokenView, str]:
    """Make a token: returns its stored view and the token itself, which exists nowhere
    else (only its hash is stored): show it once."""
    entry = AuditRecord(
        actor,
        "token.create",
        f"token:{_clean_text(name)}",
        {"name": _clean_text(name), "role": _clean_text(str(role))},
        "ok",
        client=client,
    )
    with _refusal_recorded(app, entry):
        if not _TOKEN_NAME.match(name):
            raise InvalidTokenRequest(
                "a token name is 1 to 100 letters, digits or ._@:- and starts with a letter "
                "or digit"
            )
        try:
            chosen = Role(role)
        except ValueError:
            raise InvalidTokenRequest(
                f"unknown role {role!r}: one of {', '.join(r.value for r in Role)}"
            ) from None
        secret = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        view = app.store.run_as(
            actor,
            admin_ops.audited,
            entry,
            lambda tx: admin_ops.create_token(tx, name, chosen, hash_token(secret)),
        )
    return view, secret


def list_tokens(app: Nightcrew, *, include_revoked: bool = False) -> list[TokenView]:
    """Tokens by name (never the tokens themselves: they are not stored)."""
    return app.store.run(admin_ops.list_tokens, include_revoked)


def revoke_token(
    app: Nightcrew, name: str, *, actor: str = PYTHON_ACTOR, client: str | None = None
) -> TokenView:
    """Revoke the active token ``name``: refused from its next request on."""
    entry = AuditRecord(
        actor, "token.revoke", f"token:{_clean_text(name)}", None, "ok", client=client
    )
    return run_audited(app, entry, lambda tx: admin_ops.revoke_token(tx, name))


def authenticate(app: Nightcrew, token: str) -> TokenView | None:
    """The active token ``token`` is, or None. The stored hash is compared in constant time
    (the look-up by hash already reveals nothing about the token), and its ``last_used_at``
    written at most once a minute."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    found = app.store.run(admin_ops.find_token, digest)
    if found is None:
        return None
    view, stored_hash = found
    if not hmac.compare_digest(digest, stored_hash):
        return None
    if admin_ops.needs_touch(view, datetime.now(UTC)):
        app.store.run(admin_ops.touch_token, view.id)
    return view


def shared_secret(app: Nightcrew, name: str) -> str:
    """A random secret (256 bits, URL-safe text) kept in the database under ``name`` and
    made on first use, so every process on the database gets the same one: the dashboard
    signs its session cookies with ``shared_secret(app, "ui.session")`` unless
    ``NIGHTCREW_UI_SECRET`` is set. Never logged, never audited (it is not an action)."""
    return app.store.run(admin_ops.shared_secret, name, secrets.token_urlsafe(TOKEN_BYTES))


def has_tokens(app: Nightcrew) -> bool:
    """Whether any active token exists."""
    return app.store.run(admin_ops.has_tokens)


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


def cancel_pipeline(
    app: Nightcrew, pipeline_id: int, *, actor: str = PYTHON_ACTOR, client: str | None = None
) -> PipelineView:
    """CANCELLED now: waiting steps are cancelled at once, running ones asked to stop."""
    entry = AuditRecord(
        actor, "pipeline.cancel", f"pipeline:{pipeline_id}", None, "ok", client=client
    )
    return run_audited(app, entry, lambda tx: pipeline_ops.cancel_pipeline(tx, pipeline_id))


def retry_step(
    app: Nightcrew,
    pipeline_id: int,
    step: str,
    *,
    actor: str = PYTHON_ACTOR,
    client: str | None = None,
) -> TaskView:
    """Run a failed step again; the steps its failure cancelled are re-armed and the
    pipeline reopens."""
    entry = AuditRecord(
        actor,
        "pipeline.retry_step",
        f"pipeline:{pipeline_id}",
        {"step": _clean_text(step)},
        "ok",
        client=client,
    )

    def plan(tx: Tx) -> Plan[TaskView]:
        task_id = yield from pipeline_ops.step_id(tx, pipeline_id, step)
        return (yield from ops.retry(tx, task_id))

    return run_audited(app, entry, plan)


# ---------------------------------------------------------------- schedules

#: A schedule action refused for its input (an unknown or taken name, a bad trigger or
#: option) is a refusal in the audit log too.
REFUSALS = (*REFUSALS, ScheduleNotFound, ScheduleExists, ConfigurationError, PipelineNotFound)


def list_schedules(
    app: Nightcrew,
    *,
    after: str | None = None,
    limit: int = schedule_ops.MAX_LIST,
    enabled: bool | None = None,
    source: str | None = None,
) -> list[ScheduleView]:
    """Schedules by name, each with the status of its last task; ``after`` continues a
    listing past a name, ``enabled`` (paused or not) and ``source`` (``code`` or
    ``runtime``) narrow it."""
    return app.store.run(
        schedule_ops.list_schedules, after=after, limit=limit, enabled=enabled, source=source
    )


def get_schedule(app: Nightcrew, name: str) -> ScheduleView:
    """One schedule; `nightcrew.errors.ScheduleNotFound` if there is none."""
    return app.store.run(schedule_ops.get_schedule, name)


def add_schedule(
    app: Nightcrew,
    name: str,
    processor: MaintenanceTaskProcessor | str,
    config: str | Mapping[str, Any] = "{}",
    *,
    cron: str | None = None,
    timezone: str | None = None,
    every: timedelta | str | float | None = None,
    at: datetime | str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    misfire_grace: float | timedelta | str | None = None,
    coalesce: bool = True,
    max_instances: int = 1,
    jitter: float = 0,
    actor: str = PYTHON_ACTOR,
    client: str | None = None,
) -> ScheduleView:
    """Add a schedule at run time (``source = runtime``: a sync from code never touches it).

    ``processor`` is an instance, or a class path with its ``config`` (JSON text or a
    mapping) checked against the allowlist and the processor's model. The trigger and
    options are those of `nightcrew.Schedule`. A one-off whose date has passed is refused.
    """
    where = f"schedule:{name}"
    parameters: dict[str, Any] = {
        "processor": processor if isinstance(processor, str) else processor.class_path(),
        "cron": cron,
        "timezone": timezone,
        "every": str(every) if every is not None else None,
        "at": str(at) if at is not None else None,
    }
    entry = AuditRecord(actor, "schedule.add", where, redact(parameters), "ok", client=client)
    with _refusal_recorded(app, entry):
        if isinstance(processor, str):
            text = config if isinstance(config, str) else json.dumps(dict(config))
            processor = app.loader.load(processor, text)
        schedule = Schedule(
            name,
            processor=processor,
            cron=cron,
            timezone=timezone,
            every=every,
            at=at,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            misfire_grace=misfire_grace,
            coalesce=coalesce,
            max_instances=max_instances,
            jitter=jitter,
        )
        definition = define(schedule, app.loader, source="runtime")
        if schedule_ops.one_off_in_past(definition, datetime.now(UTC)):
            raise ConfigurationError(
                f"schedule {name!r}: {definition.trigger.describe()} is in the past"
            )
    return run_audited(app, entry, lambda tx: schedule_ops.add_schedule(tx, definition))


def _schedule_action(
    app: Nightcrew, action: str, name: str, actor: str, client: str | None, op: Any
) -> Any:
    entry = AuditRecord(actor, action, f"schedule:{name}", None, "ok", client=client)
    return run_audited(app, entry, op)


def pause_schedule(
    app: Nightcrew, name: str, *, actor: str = PYTHON_ACTOR, client: str | None = None
) -> ScheduleView:
    """Stop ticking until resumed (a code schedule stays paused across restarts)."""
    view: ScheduleView = _schedule_action(
        app, "schedule.pause", name, actor, client, lambda tx: schedule_ops.pause_schedule(tx, name)
    )
    return view


def resume_schedule(
    app: Nightcrew, name: str, *, actor: str = PYTHON_ACTOR, client: str | None = None
) -> ScheduleView:
    """Tick again from the next tick after now (ticks of the paused time are not caught up)."""
    view: ScheduleView = _schedule_action(
        app,
        "schedule.resume",
        name,
        actor,
        client,
        lambda tx: schedule_ops.resume_schedule(tx, name),
    )
    return view


def run_schedule_now(
    app: Nightcrew, name: str, *, actor: str = PYTHON_ACTOR, client: str | None = None
) -> TaskView:
    """Enqueue the schedule's task now (``scheduled_for`` = now), leaving its next run."""
    task: TaskView = _schedule_action(
        app,
        "schedule.run_now",
        name,
        actor,
        client,
        lambda tx: schedule_ops.run_schedule_now(tx, name),
    )
    return task


def delete_schedule(
    app: Nightcrew, name: str, *, actor: str = PYTHON_ACTOR, client: str | None = None
) -> ScheduleView:
    """Delete a schedule (its tasks stay); returns it as it was. A schedule declared in
    code is created again by the next sync: remove it from code, or pause it, instead."""
    view: ScheduleView = _schedule_action(
        app,
        "schedule.delete",
        name,
        actor,
        client,
        lambda tx: schedule_ops.delete_schedule(tx, name),
    )
    return view


def sync_schedules(
    app: Nightcrew, *, actor: str = PYTHON_ACTOR, client: str | None = None
) -> SyncReport:
    """Sync the schedules declared in code (``NIGHTCREW_SCHEDULES``) and the upkeep's, as a
    worker does when it starts; the report says what was created, changed or retired."""
    entry = AuditRecord(actor, "schedule.sync", None, None, "ok", client=client)
    with _refusal_recorded(app, entry):
        declared = declared_schedules(app.settings, app.loader)
    return run_audited(
        app,
        entry,
        lambda tx: schedule_ops.sync_schedules(
            tx, declared.definitions, retire_user=declared.retire_user
        ),
    )


# ---------------------------------------------------------------- workers


def list_workers(app: Nightcrew, *, alive_only: bool = False) -> list[WorkerView]:
    """The worker registry, newest first; each marked alive if it beat within
    ``NIGHTCREW_WORKER_DEAD_AFTER_SECONDS`` (``alive_only`` leaves the dead out)."""
    dead_after = app.settings.worker_dead_after_seconds
    return app.store.run(observe_ops.list_workers, dead_after, alive_only=alive_only)


def workers_alive(app: Nightcrew) -> int:
    """How many workers beat within the dead-after age."""
    return app.store.run(observe_ops.count_alive_workers, app.settings.worker_dead_after_seconds)


def prune_dead_workers(app: Nightcrew) -> list[str]:
    """Delete the registry rows of dead workers now (what upkeep does every ten minutes)."""
    return app.store.run(observe_ops.prune_dead_workers, app.settings.worker_dead_after_seconds)
