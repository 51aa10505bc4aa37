"""Schedules, pipelines, the admin API's tokens and audit log, the worker registry.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- ``maintenance_tasks`` gains ``schedule_name`` and ``scheduled_for`` (the schedule and tick
  a task stands for, unique together: one task per tick, whatever the workers, restores or
  clocks do), ``pipeline_id`` and ``step_name`` (the pipeline a task is a step of),
  ``critical`` and ``run_anyway`` (how a step's failure counts and whether it runs after a
  failed dependency); partial indexes for a schedule's open tasks and a pipeline's steps.
- ``nightcrew_schedules``: triggers (cron in a timezone, interval, one date), the task to
  enqueue, misfire/coalesce/max-instances/jitter, the next and last tick.
- ``nightcrew_pipelines`` and ``nightcrew_task_dependencies`` (``task_id`` waits for
  ``depends_on``; a task's ``waiting_on`` counts its unfinished dependencies).
- ``nightcrew_api_tokens`` (hashes only), ``nightcrew_audit_log`` (append-only),
  ``nightcrew_workers`` (live workers), ``nightcrew_secrets`` (keys nightcrew makes for
  itself: the dashboard's session-signing key).

On SQLite the task table is rebuilt as in revision 0002 (its stored ``CREATE TABLE`` then
equals what the models make). Downgrade drops all of it. Hand-written, never importing
``nightcrew.models``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "maintenance_tasks"
SCRATCH = "_nightcrew_rebuild"

ALL_STATUSES = "'INACTIVE', 'PENDING', 'WORKING', 'COMPLETED', 'ERROR', 'CANCELLED'"
OPEN_STATUSES = "'INACTIVE', 'PENDING', 'WORKING'"
CLAIMABLE = "status = 'PENDING' AND waiting_on = 0 AND delay = 0"
SPACED = "status = 'PENDING' AND waiting_on = 0 AND delay > 0"
IN_FLIGHT = "status = 'WORKING'"
OPEN_UNIQUE_KEY = f"unique_key IS NOT NULL AND status IN ({OPEN_STATUSES})"
PIPELINE_STATUSES = "'PENDING', 'WORKING', 'COMPLETED', 'PARTIAL_SUCCESS', 'ERROR', 'CANCELLED'"
PIPELINE_OPEN = "'PENDING', 'WORKING'"

NOW = {
    "postgresql": "CURRENT_TIMESTAMP",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f000', 'now')",
}

#: The task table's columns as revision 0002 left them.
COLUMNS_0002 = (
    "id",
    "status",
    "processor_type",
    "processor_json",
    "queue",
    "priority",
    "delay",
    "start_at",
    "attempts",
    "max_attempts",
    "rescues",
    "timeout",
    "lease_token",
    "lease_expires_at",
    "cancel_requested_at",
    "unique_key",
    "waiting_on",
    "progress",
    "progress_message",
    "info",
    "error",
    "started_at",
    "finished_at",
    "created_at",
    "updated_at",
)


def _dialect() -> str:
    return op.get_context().dialect.name


def _now() -> sa.TextClause:
    return sa.text(NOW[_dialect()])


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _new_task_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("schedule_name", sa.String(200), nullable=True),
        sa.Column("scheduled_for", _when(), nullable=True),
        sa.Column("pipeline_id", _id(), nullable=True),
        sa.Column("step_name", sa.String(200), nullable=True),
        sa.Column("critical", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("run_anyway", sa.Boolean(), server_default=sa.false(), nullable=False),
    ]


def create_task_table(*, with_0003: bool = True) -> None:
    """SQLite's rebuild: the task table as this revision leaves it (or 0002's)."""
    now = _now()
    op.create_table(
        TABLE,
        sa.Column("id", _id(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("processor_type", sa.String(255), nullable=False),
        sa.Column("processor_json", sa.Text(), nullable=False),
        sa.Column("queue", sa.String(64), server_default="default", nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("delay", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("start_at", _when(), server_default=now, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("rescues", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=True),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", _when(), nullable=True),
        sa.Column("cancel_requested_at", _when(), nullable=True),
        sa.Column("unique_key", sa.String(255), nullable=True),
        sa.Column("waiting_on", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("progress_message", sa.Text(), nullable=True),
        sa.Column("info", _json(), nullable=True),
        sa.Column("error", _json(), nullable=True),
        sa.Column("started_at", _when(), nullable=True),
        sa.Column("finished_at", _when(), nullable=True),
        sa.Column("created_at", _when(), server_default=now, nullable=False),
        sa.Column("updated_at", _when(), server_default=now, nullable=False),
        *(_new_task_columns() if with_0003 else []),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maintenance_tasks")),
        sa.CheckConstraint(f"status IN ({ALL_STATUSES})", name=op.f("ck_maintenance_tasks_status")),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_maintenance_tasks_max_attempts")),
        sa.CheckConstraint("waiting_on >= 0", name=op.f("ck_maintenance_tasks_waiting_on")),
    )


def _partial(name: str, columns: list[Any], where: str, *, unique: bool = False) -> None:
    op.create_index(
        name,
        TABLE,
        columns,
        unique=unique,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def create_0002_task_indexes() -> None:
    """The task table's indexes of revision 0002 (SQLite's rebuild drops them)."""
    order: list[Any] = [sa.text("priority DESC"), "created_at", "id"]
    _partial("ix_maintenance_tasks_claimable", ["queue", *order], CLAIMABLE)
    _partial("ix_maintenance_tasks_claimable_any", order, CLAIMABLE)
    _partial("ix_maintenance_tasks_spaced", order, SPACED)
    op.create_index("ix_maintenance_tasks_status_updated", TABLE, ["status", "updated_at"])
    _partial("ix_maintenance_tasks_lease", ["lease_expires_at"], IN_FLIGHT)
    _partial("uq_maintenance_tasks_unique_key_open", ["unique_key"], OPEN_UNIQUE_KEY, unique=True)


def create_task_indexes() -> None:
    """The task table's indexes this revision adds."""
    op.create_index("ix_maintenance_tasks_status_id", TABLE, ["status", "id"])
    _partial(
        "ix_maintenance_tasks_schedule_id", ["schedule_name", "id"], "schedule_name IS NOT NULL"
    )
    _partial(
        "uq_maintenance_tasks_schedule_tick",
        ["schedule_name", "scheduled_for"],
        "schedule_name IS NOT NULL",
        unique=True,
    )
    _partial(
        "ix_maintenance_tasks_schedule_open",
        ["schedule_name"],
        f"schedule_name IS NOT NULL AND status IN ({OPEN_STATUSES})",
    )
    _partial("ix_maintenance_tasks_pipeline", ["pipeline_id"], "pipeline_id IS NOT NULL")


def create_other_tables() -> None:
    now = _now()
    op.create_table(
        "nightcrew_schedules",
        sa.Column("id", _id(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("trigger_kind", sa.String(8), nullable=False),
        sa.Column("cron", sa.String(200), nullable=True),
        sa.Column("timezone", sa.String(64), server_default="UTC", nullable=False),
        sa.Column("every_seconds", sa.BigInteger(), nullable=True),
        sa.Column("run_at", _when(), nullable=True),
        sa.Column("anchor_at", _when(), nullable=True),
        sa.Column("processor_type", sa.String(255), nullable=False),
        sa.Column("processor_json", sa.Text(), nullable=False),
        sa.Column("queue", sa.String(64), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("max_attempts", sa.Integer(), nullable=True),
        sa.Column("timeout", sa.Float(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("source", sa.String(8), server_default="runtime", nullable=False),
        sa.Column("declared_hash", sa.String(64), nullable=True),
        sa.Column("misfire_grace_seconds", sa.Float(), nullable=True),
        sa.Column("coalesce", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("max_instances", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("jitter_seconds", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_run_at", _when(), nullable=True),
        sa.Column("last_run_at", _when(), nullable=True),
        sa.Column("last_task_id", _id(), nullable=True),
        sa.Column("misfires", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("skipped_instances", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_skip_at", _when(), nullable=True),
        sa.Column("last_skip_reason", sa.Text(), nullable=True),
        sa.Column("created_at", _when(), server_default=now, nullable=False),
        sa.Column("updated_at", _when(), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nightcrew_schedules")),
        sa.UniqueConstraint("name", name=op.f("uq_nightcrew_schedules_name")),
        sa.CheckConstraint(
            "trigger_kind IN ('cron', 'interval', 'date')",
            name=op.f("ck_nightcrew_schedules_trigger_kind"),
        ),
        sa.CheckConstraint(
            "source IN ('code', 'runtime')", name=op.f("ck_nightcrew_schedules_source")
        ),
        sa.CheckConstraint("max_instances >= 1", name=op.f("ck_nightcrew_schedules_max_instances")),
    )
    op.create_index(
        "ix_nightcrew_schedules_due",
        "nightcrew_schedules",
        ["next_run_at"],
        postgresql_where=sa.text("enabled"),
        sqlite_where=sa.text("enabled"),
    )
    op.create_table(
        "nightcrew_pipelines",
        sa.Column("id", _id(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("unique_key", sa.String(255), nullable=True),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("steps_open", sa.Integer(), nullable=False),
        sa.Column("critical_failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("optional_failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("cancelled", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("info", _json(), nullable=True),
        sa.Column("created_at", _when(), server_default=now, nullable=False),
        sa.Column("updated_at", _when(), server_default=now, nullable=False),
        sa.Column("finished_at", _when(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nightcrew_pipelines")),
        sa.CheckConstraint(
            f"status IN ({PIPELINE_STATUSES})", name=op.f("ck_nightcrew_pipelines_status")
        ),
        sa.CheckConstraint("steps_open >= 0", name=op.f("ck_nightcrew_pipelines_steps_open")),
    )
    op.create_index(
        "uq_nightcrew_pipelines_unique_key_open",
        "nightcrew_pipelines",
        ["unique_key"],
        unique=True,
        postgresql_where=sa.text(f"unique_key IS NOT NULL AND status IN ({PIPELINE_OPEN})"),
        sqlite_where=sa.text(f"unique_key IS NOT NULL AND status IN ({PIPELINE_OPEN})"),
    )
    op.create_index(
        "ix_nightcrew_pipelines_status_updated",
        "nightcrew_pipelines",
        ["status", "updated_at"],
    )
    op.create_table(
        "nightcrew_task_dependencies",
        sa.Column("depends_on", _id(), nullable=False),
        sa.Column("task_id", _id(), nullable=False),
        sa.ForeignKeyConstraint(
            ["depends_on"],
            [f"{TABLE}.id"],
            name=op.f("fk_nightcrew_task_dependencies_depends_on_maintenance_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            [f"{TABLE}.id"],
            name=op.f("fk_nightcrew_task_dependencies_task_id_maintenance_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "depends_on", "task_id", name=op.f("pk_nightcrew_task_dependencies")
        ),
    )
    op.create_index(
        "ix_nightcrew_task_dependencies_task_id", "nightcrew_task_dependencies", ["task_id"]
    )
    op.create_table(
        "nightcrew_api_tokens",
        sa.Column("id", _id(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("created_at", _when(), server_default=now, nullable=False),
        sa.Column("last_used_at", _when(), nullable=True),
        sa.Column("revoked_at", _when(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nightcrew_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_nightcrew_api_tokens_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_nightcrew_api_tokens_token_hash")),
        sa.CheckConstraint(
            "role IN ('viewer', 'operator', 'admin')", name=op.f("ck_nightcrew_api_tokens_role")
        ),
    )
    op.create_table(
        "nightcrew_audit_log",
        sa.Column("id", _id(), nullable=False),
        sa.Column("at", _when(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=True),
        sa.Column("parameters", _json(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("client", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nightcrew_audit_log")),
        sa.CheckConstraint(
            "outcome IN ('ok', 'refused', 'error')", name=op.f("ck_nightcrew_audit_log_outcome")
        ),
    )
    op.create_index("ix_nightcrew_audit_log_at", "nightcrew_audit_log", ["at"])
    op.create_index("ix_nightcrew_audit_log_actor_at", "nightcrew_audit_log", ["actor", "at"])
    op.create_table(
        "nightcrew_workers",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("queues", _json(), nullable=True),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("started_at", _when(), nullable=False),
        sa.Column("last_heartbeat_at", _when(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nightcrew_workers")),
    )
    op.create_index(
        "ix_nightcrew_workers_last_heartbeat_at", "nightcrew_workers", ["last_heartbeat_at"]
    )
    op.create_table(
        "nightcrew_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(128), nullable=False),
        sa.Column("created_at", _when(), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_nightcrew_secrets")),
    )


def rebuild_sqlite(*, with_0003: bool) -> None:
    """SQLite: the task table dropped and made again with its rows (see revision 0002)."""
    listed = ", ".join(COLUMNS_0002)
    op.execute("PRAGMA defer_foreign_keys = ON")
    op.execute(f"CREATE TEMP TABLE {SCRATCH} AS SELECT * FROM {TABLE}")
    op.execute(f"DROP TABLE {TABLE}")
    create_task_table(with_0003=with_0003)
    op.execute(f"INSERT INTO {TABLE} ({listed}) SELECT {listed} FROM temp.{SCRATCH}")
    op.execute(f"DROP TABLE temp.{SCRATCH}")
    create_0002_task_indexes()


def upgrade() -> None:
    if _dialect() == "sqlite":
        rebuild_sqlite(with_0003=True)
    else:
        for column in _new_task_columns():
            op.add_column(TABLE, column)
    create_task_indexes()
    create_other_tables()


def downgrade() -> None:
    for table in (
        "nightcrew_secrets",
        "nightcrew_workers",
        "nightcrew_audit_log",
        "nightcrew_api_tokens",
        "nightcrew_task_dependencies",
        "nightcrew_pipelines",
        "nightcrew_schedules",
    ):
        op.drop_table(table)
    if _dialect() == "sqlite":
        rebuild_sqlite(with_0003=False)
        return
    op.drop_index("ix_maintenance_tasks_pipeline", table_name=TABLE)
    op.drop_index("ix_maintenance_tasks_schedule_open", table_name=TABLE)
    op.drop_index("uq_maintenance_tasks_schedule_tick", table_name=TABLE)
    op.drop_index("ix_maintenance_tasks_schedule_id", table_name=TABLE)
    op.drop_index("ix_maintenance_tasks_status_id", table_name=TABLE)
    for column in reversed(_new_task_columns()):
        op.drop_column(TABLE, column.name)
