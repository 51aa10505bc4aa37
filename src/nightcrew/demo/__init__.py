"""Worked examples for nightcrew: the origin's user-settings upgrade, end to end.

``nightcrew demo`` runs it on a fresh SQLite database; see ``examples/README.md``.
Allow these processors with ``NIGHTCREW_PROCESSOR_MODULES=nightcrew.demo``. Shipped inside
the package (so ``nightcrew demo`` works wherever nightcrew is installed), never imported
by nightcrew itself except by the demo command.
"""

from nightcrew.demo.user_settings import (
    CURRENT_USER_SETTINGS_VERSION,
    CorruptSettings,
    SeedReport,
    count_users_by_version,
    create_table,
    seed_users,
    upgrade_settings,
    user_settings,
)
from nightcrew.demo.user_version_upgrade_processor import (
    MAX_USERS_PER_TASK,
    UpgradeIncomplete,
    UpgradeSummary,
    UserVersionUpgradeProcessor,
    enqueue_upgrade_pipeline,
    enqueue_upgrades,
)

__all__ = [
    "CURRENT_USER_SETTINGS_VERSION",
    "MAX_USERS_PER_TASK",
    "CorruptSettings",
    "SeedReport",
    "UpgradeIncomplete",
    "UpgradeSummary",
    "UserVersionUpgradeProcessor",
    "count_users_by_version",
    "create_table",
    "enqueue_upgrade_pipeline",
    "enqueue_upgrades",
    "seed_users",
    "upgrade_settings",
    "user_settings",
]
