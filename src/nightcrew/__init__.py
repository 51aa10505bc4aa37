"""nightcrew: durable, database-backed maintenance tasks.

The public API; everything else is an implementation detail.
"""

from nightcrew import actions
from nightcrew.app import Nightcrew
from nightcrew.enqueue import (
    TaskOptions,
    acreate_maintenance_task,
    acreate_maintenance_tasks,
    create_maintenance_task,
    create_maintenance_tasks,
)
from nightcrew.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    FailTask,
    InvalidProcessorConfig,
    InvalidTaskOptions,
    InvalidTransition,
    NightcrewError,
    PayloadTooLarge,
    ProcessorNotAllowed,
    RetryTask,
    SchemaMissing,
    TaskNotFound,
)
from nightcrew.events import EventBus, EventKind, TaskEvent
from nightcrew.execution import (
    adependency_results,
    current_app,
    current_attempt,
    current_task_id,
    dependency_results,
    is_cancel_requested,
    report_progress,
)
from nightcrew.functions import processor
from nightcrew.models import MaintenanceTask, MaintenanceTaskStatus, PipelineStatus
from nightcrew.pipelines import Pipeline, PipelineError, Step
from nightcrew.processors import MaintenanceTaskProcessor, ProcessorLoader
from nightcrew.schedules.declare import Schedule
from nightcrew.settings import Settings
from nightcrew.store import Database
from nightcrew.values import TaskPage, TaskView
from nightcrew.worker import Worker

__all__ = [
    "ConfigurationError",
    "Database",
    "DatabaseError",
    "DatabaseUnavailable",
    "EventBus",
    "EventKind",
    "FailTask",
    "InvalidProcessorConfig",
    "InvalidTaskOptions",
    "InvalidTransition",
    "MaintenanceTask",
    "MaintenanceTaskProcessor",
    "MaintenanceTaskStatus",
    "Nightcrew",
    "NightcrewError",
    "PayloadTooLarge",
    "Pipeline",
    "PipelineError",
    "PipelineStatus",
    "ProcessorLoader",
    "ProcessorNotAllowed",
    "RetryTask",
    "Schedule",
    "SchemaMissing",
    "Settings",
    "Step",
    "TaskEvent",
    "TaskNotFound",
    "TaskOptions",
    "TaskPage",
    "TaskView",
    "Worker",
    "acreate_maintenance_task",
    "acreate_maintenance_tasks",
    "actions",
    "adependency_results",
    "create_maintenance_task",
    "create_maintenance_tasks",
    "current_app",
    "current_attempt",
    "current_task_id",
    "dependency_results",
    "is_cancel_requested",
    "processor",
    "report_progress",
]
