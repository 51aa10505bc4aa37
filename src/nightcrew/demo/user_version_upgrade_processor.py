"""The origin's ``UserVersionUpgradeProcessor``, made real on the `user_settings` table.

One task upgrades at most 100 users, so a task stays short (the origin's rule: well under
a minute), a failure touches few users, and many workers can share a large backlog.
`enqueue_upgrades` cuts the backlog into such tasks.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field, field_validator
from sqlalchemy import bindparam, select, update

from nightcrew import (
    Database,
    FailTask,
    MaintenanceTask,
    MaintenanceTaskProcessor,
    Pipeline,
    Settings,
    TaskOptions,
    adependency_results,
    create_maintenance_tasks,
    report_progress,
)
from nightcrew.demo.user_settings import (
    CURRENT_USER_SETTINGS_VERSION,
    CorruptSettings,
    upgrade_settings,
    user_settings,
)

#: The origin's limit of user ids per task.
MAX_USERS_PER_TASK = 100
#: How many per-user failures an error message spells out (the rest are counted).
_SHOWN_FAILURES = 5

_users = user_settings.c


class UpgradeIncomplete(FailTask):
    """Some users of the task could not be upgraded; all the others were.

    A `FailTask`, so the task ends ERROR at once: corrupt settings do not heal on a
    retry, and spending attempts on them would only delay the report.
    """


class UserVersionUpgradeProcessor(MaintenanceTaskProcessor):
    """Bring up to 100 users to `CURRENT_USER_SETTINGS_VERSION`.

    Idempotent: users already current are skipped, and each write is a compare-and-set on
    the version it read, so running a task twice, or two tasks on one user, is harmless.
    A user whose settings cannot be upgraded is left as it was and reported; the task then
    ends ERROR (via `UpgradeIncomplete`) after committing the users that did upgrade, so
    the failure is visible without holding the healthy users back.
    """

    user_ids: list[str]
    #: The database holding ``user_settings``. ``None`` means the worker's own
    #: ``NIGHTCREW_DATABASE_URL``, read when the task runs; a URL given here is stored in
    #: the task row (``processor_json``), so do not put a password in it.
    database_url: str | None = None
    #: Time spent per user to stand in for the origin's call to its settings store;
    #: 0 outside demos. It makes concurrency visible in ``nightcrew demo``.
    simulated_ms_per_user: float = Field(default=0.0, ge=0, le=10_000)

    @field_validator("user_ids")
    @classmethod
    def _between_1_and_100(cls, value: list[str]) -> list[str]:
        """Refuse oversized tasks when they are built, so enqueueing one fails loudly."""
        if not value:
            raise ValueError("at least one user id is required")
        if len(value) > MAX_USERS_PER_TASK:
            raise ValueError(
                f"at most {MAX_USERS_PER_TASK} user ids per task, got {len(value)}; "
                "split them over several tasks (enqueue_upgrades does)"
            )
        return value

    def _database_url(self) -> str:
        return self.database_url or Settings().database_url

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        # An engine per task, disposed at the end: a task is a batch of 100 users, so the
        # connection costs little, and nothing outlives the event loop that made it.
        database = Database(self._database_url())
        try:
            return await self._upgrade(database)
        finally:
            await database.adispose()

    async def _upgrade(self, database: Database) -> dict[str, Any]:
        engine = database.async_engine
        # Read, compute, then write in a second short transaction: the per-user work
        # happens outside any transaction, so on SQLite the write lock is held for
        # milliseconds, not for the whole task.
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(_users.user_id, _users.user_version, _users.settings_json).where(
                        _users.user_id.in_(self.user_ids)
                    )
                )
            ).all()
        found = {row.user_id: row for row in rows}

        planned: list[tuple[str, int, str]] = []
        failures: dict[str, str] = {}
        skipped = missing = 0
        total = len(self.user_ids)
        for done, user_id in enumerate(self.user_ids, start=1):
            row = found.get(user_id)
            if row is None:
                missing += 1
            elif row.user_version >= CURRENT_USER_SETTINGS_VERSION:
                skipped += 1
            else:
                try:
                    upgraded_json = upgrade_settings(row.settings_json, row.user_version)
                except CorruptSettings as exc:
                    failures[user_id] = str(exc)
                else:
                    planned.append((user_id, row.user_version, upgraded_json))
                if self.simulated_ms_per_user:
                    await asyncio.sleep(self.simulated_ms_per_user / 1000)
            await report_progress(90 * done / total, f"{done}/{total} users checked")

        upgraded = 0
        if planned:
            # One executemany: one round trip, and on SQLite the write lock is held for
            # one statement's time. Each row is a compare-and-set on the version read.
            stmt = (
                update(user_settings)
                .where(_users.user_id == bindparam("b_user_id"))
                .where(_users.user_version == bindparam("b_read_version"))
                .values(
                    user_version=CURRENT_USER_SETTINGS_VERSION, settings_json=bindparam("b_json")
                )
            )
            params = [{"b_user_id": u, "b_read_version": v, "b_json": j} for u, v, j in planned]
            async with engine.begin() as conn:
                if conn.dialect.supports_sane_multi_rowcount:
                    upgraded = (await conn.execute(stmt, params)).rowcount
                else:  # pragma: no cover - both supported dialects count executemany rows
                    for one in params:
                        upgraded += (await conn.execute(stmt, one)).rowcount
            # A row that changed since it was read belongs to whoever changed it.
            skipped += len(planned) - upgraded
        await report_progress(100, f"{upgraded} upgraded, {len(failures)} failed")

        if failures:
            shown = "; ".join(f"{u}: {why}" for u, why in list(failures.items())[:_SHOWN_FAILURES])
            more = len(failures) - _SHOWN_FAILURES
            raise UpgradeIncomplete(
                f"{len(failures)} of {total} users not upgraded ({shown}"
                f"{f'; and {more} more' if more > 0 else ''}); "
                f"{upgraded} upgraded, {skipped} skipped"
            )
        return {
            "upgraded": upgraded,
            "skipped": skipped,
            "missing": missing,
            "failed": 0,
            "version": CURRENT_USER_SETTINGS_VERSION,
        }


def enqueue_upgrades(
    database_url: str,
    *,
    settings: Settings | None = None,
    options: TaskOptions | None = None,
    batch_size: int = MAX_USERS_PER_TASK,
    simulated_ms_per_user: float = 0.0,
) -> list[int]:
    """Enqueue one upgrade task per ``batch_size`` outdated users; return the task ids.

    The users are read and the tasks inserted (one multi-row insert) in one transaction,
    so the tasks cover exactly the users that were outdated at that moment. ``settings``
    supplies the processor allowlist, which must include ``nightcrew.demo``
    (default: the environment's ``NIGHTCREW_PROCESSOR_MODULES``).
    """
    if not 1 <= batch_size <= MAX_USERS_PER_TASK:
        raise ValueError(f"batch_size must be between 1 and {MAX_USERS_PER_TASK}")
    database = Database(database_url)
    try:
        with database.sync_engine.begin() as conn:
            outdated = list(
                conn.execute(
                    select(_users.user_id)
                    .where(_users.user_version < CURRENT_USER_SETTINGS_VERSION)
                    .order_by(_users.user_id)
                ).scalars()
            )
            processors = [
                UserVersionUpgradeProcessor(
                    user_ids=outdated[i : i + batch_size],
                    database_url=database_url,
                    simulated_ms_per_user=simulated_ms_per_user,
                )
                for i in range(0, len(outdated), batch_size)
            ]
            return create_maintenance_tasks(processors, options, session=conn, settings=settings)
    finally:
        database.dispose()


class UpgradeSummary(MaintenanceTaskProcessor):
    """The fan-in step after every upgrade batch: adds up their results.

    It runs once all batches have finished, failed ones included (it is added with
    ``run_anyway``), and reads them through `adependency_results`: a failed batch's result
    is its error, counted as such.
    """

    async def __call__(self, task: MaintenanceTask) -> dict[str, Any]:
        results = await adependency_results()
        total = {"batches": len(results), "failed_batches": 0, "upgraded": 0, "skipped": 0}
        for info in results.values():
            info = info or {}
            if "error" in info:
                total["failed_batches"] += 1
            total["upgraded"] += int(info.get("upgraded", 0))
            total["skipped"] += int(info.get("skipped", 0))
        return total


def enqueue_upgrade_pipeline(
    database_url: str,
    *,
    settings: Settings | None = None,
    batch_size: int = MAX_USERS_PER_TASK,
    simulated_ms_per_user: float = 0.0,
) -> tuple[int, int]:
    """`enqueue_upgrades` as a pipeline: one step per batch of outdated users, then an
    `UpgradeSummary` step depending on all of them. Returns (pipeline id, step count).

    The batches are not critical (a batch holding a corrupt user fails without failing the
    upgrade: the pipeline then ends PARTIAL_SUCCESS); the summary runs anyway.
    """
    if not 1 <= batch_size <= MAX_USERS_PER_TASK:
        raise ValueError(f"batch_size must be between 1 and {MAX_USERS_PER_TASK}")
    database = Database(database_url)
    try:
        with database.sync_engine.begin() as conn:
            outdated = list(
                conn.execute(
                    select(_users.user_id)
                    .where(_users.user_version < CURRENT_USER_SETTINGS_VERSION)
                    .order_by(_users.user_id)
                ).scalars()
            )
            pipeline = Pipeline("user settings upgrade")
            batches = [
                pipeline.add(
                    UserVersionUpgradeProcessor(
                        user_ids=outdated[i : i + batch_size],
                        database_url=database_url,
                        simulated_ms_per_user=simulated_ms_per_user,
                    ),
                    name=f"batch-{i // batch_size + 1}",
                    critical=False,
                )
                for i in range(0, len(outdated), batch_size)
            ]
            pipeline.add(UpgradeSummary(), name="summary", depends_on=batches, run_anyway=True)
            pipeline_id = pipeline.enqueue(session=conn, settings=settings)
            return pipeline_id, len(batches) + 1
    finally:
        database.dispose()
