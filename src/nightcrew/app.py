"""The composition root: one object owns settings, database, processor loader, store and bus.

Everything else receives what it needs from a `Nightcrew`; nothing keeps engines or settings
in module globals. An application makes one at start-up, hands it to enqueue calls, workers
and operator actions, and closes it at shutdown::

    app = Nightcrew(Settings(database_url="postgresql://...", processor_modules=["myapp.jobs"]))
    create_maintenance_task(Reindex(), database=app)
    await app.worker(concurrency=20).run()
    app.close()
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from nightcrew.events import EventBus
from nightcrew.instrument import ErrorHook, load_error_hook
from nightcrew.live import LiveEvents
from nightcrew.logs import log_events
from nightcrew.metrics import Metrics
from nightcrew.processors import ProcessorLoader, loader_for
from nightcrew.settings import Settings
from nightcrew.store import Database, TaskStore, open_store

if TYPE_CHECKING:
    from nightcrew.worker import Worker


class Nightcrew:
    """Settings, the `Database` (its engines), the `ProcessorLoader`, the `TaskStore` and
    the `EventBus`, made once and shared by everything that works on one database.

    ``database_url`` overrides the settings' URL; ``database`` shares an existing `Database`
    (its engines), which the app then does not dispose of. The log subscribes to the bus at once
    (failures, retries, rescues at INFO/WARNING; completions at DEBUG).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        database_url: str | None = None,
        database: Database | None = None,
        events: EventBus | None = None,
        on_error: ErrorHook | None = None,
    ) -> None:
        settings = settings or Settings()
        if database is not None:
            database_url = database.url.render_as_string(hide_password=False)
        if database_url is not None:
            settings = settings.model_copy(update={"database_url": database_url})
        self.settings = settings
        #: A `Database` handed in stays the caller's to dispose of.
        self._owns_database = database is None
        self.database = database if database is not None else Database(settings.database_url)
        self.loader: ProcessorLoader = loader_for(settings)
        self.events = events if events is not None else EventBus()
        self.store: TaskStore = open_store(self.database, self.events)
        log_events(self.events)
        #: Called with the task and the exception on every failed attempt of this app's
        #: workers (``on_error``, else the ``NIGHTCREW_ERROR_HOOK`` path).
        self.on_error: ErrorHook | None = on_error or load_error_hook(settings.error_hook)
        #: Prometheus registries (`nightcrew.metrics`) and live events (`nightcrew.live`).
        self.metrics = Metrics(
            self.events,
            self.store,
            dead_after=settings.worker_dead_after_seconds,
            count_events=settings.metrics,
        )
        self.live = LiveEvents(self.database, self.events, publish=settings.publish_events)

    def worker(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        queue_limits: dict[str, int] | None = None,
        worker_id: str | None = None,
    ) -> Worker:
        """A worker on this app's store (it does not close the app when it stops)."""
        from nightcrew.worker import Worker

        return Worker(
            app=self,
            queues=queues,
            concurrency=concurrency,
            queue_limits=queue_limits,
            worker_id=worker_id,
        )

    def close(self) -> None:
        """Dispose of the engines (sync callers: CLI, scripts)."""
        self.live.close()
        if self._owns_database:
            self.database.dispose()

    async def aclose(self) -> None:
        await self.live.aclose()
        await self.store.aclose()
        if self._owns_database:
            await self.database.adispose()

    def __enter__(self) -> Nightcrew:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Nightcrew:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        shown = self.database.url.render_as_string(hide_password=True)
        return f"<Nightcrew {shown}>"


def app_for(
    database: Nightcrew | Database | str | None = None, settings: Settings | None = None
) -> tuple[Nightcrew, bool]:
    """The app to use for ``database`` (an app, a `Database`, a URL or None: the settings'
    URL), and whether the caller made it and must close it."""
    if isinstance(database, Nightcrew):
        return database, False
    if isinstance(database, Database):
        return Nightcrew(settings, database=database), True
    return Nightcrew(settings, database_url=database), True
