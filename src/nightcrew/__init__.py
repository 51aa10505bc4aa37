"""nightcrew: durable, database-backed maintenance tasks.

The public API; everything else is an implementation detail.
"""

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
    FailTask,
    InvalidProcessorConfig,
    InvalidTaskOptions,
    InvalidTransition,
    NightcrewError,
    PayloadTooLarge,
    ProcessorNotAllowed,
    RetryTask,
    TaskNotFound,
)
from nightcrew.execution import (
    current_attempt,
    current_task_id,
    is_cancel_requested,
    report_progress,
)
from nightcrew.models import MaintenanceTask, MaintenanceTaskStatus
from nightcrew.processors import MaintenanceTaskProcessor, ProcessorLoader
from nightcrew.settings import Settings
from nightcrew.store import Database
from nightcrew.worker import Worker

__all__ = [
    "ConfigurationError",
    "Database",
    "DatabaseError",
    "FailTask",
    "InvalidProcessorConfig",
    "InvalidTaskOptions",
    "InvalidTransition",
    "MaintenanceTask",
    "MaintenanceTaskProcessor",
    "MaintenanceTaskStatus",
    "NightcrewError",
    "PayloadTooLarge",
    "ProcessorLoader",
    "ProcessorNotAllowed",
    "RetryTask",
    "Settings",
    "TaskNotFound",
    "TaskOptions",
    "Worker",
    "acreate_maintenance_task",
    "acreate_maintenance_tasks",
    "create_maintenance_task",
    "create_maintenance_tasks",
    "current_attempt",
    "current_task_id",
    "is_cancel_requested",
    "report_progress",
]
