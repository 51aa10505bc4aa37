"""Settings read from the environment (``NIGHTCREW_*``) and overridable by flags."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./nightcrew.db"


class Settings(BaseSettings):
    """Everything a worker, the CLI or an embedding application needs to reach the engine.

    Unknown ``NIGHTCREW_*`` variables are ignored by the environment source, but an unknown
    keyword passed in code is an error (``extra="forbid"``), so typos do not pass silently.
    """

    model_config = SettingsConfigDict(env_prefix="NIGHTCREW_", extra="forbid", allow_inf_nan=False)

    database_url: str = DEFAULT_DATABASE_URL
    processor_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["nightcrew.processors"]
    )
    concurrency: int = Field(default=10, ge=1, le=10_000)
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_interval: float = Field(default=0.5, gt=0)
    max_processor_json_bytes: int = Field(default=64 * 1024, ge=2)
    max_info_bytes: int = Field(default=1024 * 1024, ge=2)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    #: Times a task may lose its worker (lease expired) before it ends ERROR as poison.
    max_rescues: int = Field(default=3, ge=0, le=1000)
    #: A WORKING row without any lease (left by the origin's runner, or by a crash during a
    #: deploy) ends ERROR once its ``started_at`` is this old: the origin's one hour.
    stale_working_seconds: float = Field(default=3600.0, gt=0)
    #: The event loop of ``nightcrew worker`` / ``run``: uvloop when installed ("auto").
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    #: Freeze the objects alive when a worker starts out of the cyclic garbage collector
    #: (``gc.freeze``) until it stops: a drain's allocations trigger full collections, and
    #: each one rescans every module, class and engine of the process (about 90 ms for a
    #: worker's 110,000 objects: a fifth of a 20,000-task drain). False for a host process
    #: that wants garbage it made before the worker started to be collected meanwhile.
    #: ``nightcrew serve`` freezes what its start-up made too (for its streams' latency).
    gc_freeze: bool = True
    #: The young generation's threshold of Python's cyclic garbage collector while a worker
    #: runs (``gc.set_threshold``'s first value; Python's own back when it stops; 0 leaves
    #: it alone). Python's 700 makes a drain collect about every 700 objects it keeps, 400
    #: times in 20,000 no-op tasks, a tenth of the worker's CPU; at 20,000 a drain's objects
    #: mostly die before the count is reached (measured: 140 against 4 ms of collection in
    #: that drain). Garbage held only by reference cycles then waits a little longer.
    gc_threshold: int = Field(default=20_000, ge=0)
    #: Schedules declared in code, ``module:ATTR`` naming a list of `nightcrew.Schedule`;
    #: every worker syncs them by name when it starts (and ``nightcrew schedules sync``).
    #: Unset: code schedules are left as they are (a worker of another app never disables
    #: them); set it to an empty list to retire them all.
    schedules: str | None = None
    #: Upkeep (nightcrew's own maintenance), on schedules named ``nightcrew.*`` and synced
    #: like code schedules. A cron of ``off`` turns one off (its row is disabled).
    upkeep_prune_cron: str = "17 3 * * *"
    upkeep_cancel_pending_cron: str = "*/5 * * * *"
    upkeep_timezone: str = "UTC"
    upkeep_queue: str = Field(default="default", min_length=1, max_length=64)
    #: Finished tasks are deleted once their ``updated_at`` is this many days old; 0
    #: keeps that status forever.
    prune_completed_days: float = Field(default=30.0, ge=0)
    prune_error_days: float = Field(default=90.0, ge=0)
    prune_cancelled_days: float = Field(default=90.0, ge=0)
    #: Audit log rows are deleted once this many days old (by ``at``); 0, the default, keeps
    #: the log forever: who did what is often kept for as long as the law asks, which only
    #: the operator knows.
    prune_audit_days: float = Field(default=0.0, ge=0)
    #: Rows deleted per transaction, and the pause between two such transactions, so a
    #: prune never holds locks for long nor starves the workers.
    prune_batch_size: int = Field(default=1000, ge=1, le=100_000)
    prune_pause_seconds: float = Field(default=0.05, ge=0, le=60)
    #: PENDING tasks due for longer than this many minutes are cancelled; 0 (the default)
    #: turns that off. Seed 002's MaintenanceService used 240.
    cancel_pending_after_minutes: float = Field(default=0.0, ge=0)
    #: The key the dashboard signs its session cookies with (at least 32 characters).
    #: Unset: a random key made once and kept in the database (``nightcrew_secrets``), so
    #: every process serving the dashboard shares it; set it to rotate the key (all
    #: sessions end) or to keep it out of the database.
    ui_secret: SecretStr | None = None

    #: Observability (DESIGN §8). ``metrics``: count task events in the app's Prometheus
    #: registry; ``metrics_public``: serve the API's ``/metrics`` without a token;
    #: ``publish_events``: send task events to other processes (NOTIFY on PostgreSQL, a
    #: journal file on SQLite) for live streams.
    metrics: bool = True
    metrics_public: bool = False
    publish_events: bool = True
    #: A worker whose registry row has not been refreshed for this long is dead: left out
    #: of "workers alive" and pruned by upkeep (``nightcrew.prune-dead-workers``).
    worker_dead_after_seconds: float = Field(default=60.0, gt=0)
    upkeep_prune_workers_cron: str = "*/10 * * * *"
    #: ``module:function`` called with the task and the exception on every failed attempt
    #: (see `nightcrew.instrument`); or pass ``on_error=`` to `nightcrew.Nightcrew`.
    error_hook: str | None = None

    @field_validator("processor_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("processor_modules")
    @classmethod
    def _check_modules(cls, value: list[str]) -> list[str]:
        for module in value:
            if not all(part.isidentifier() for part in module.split(".")):
                raise ValueError(f"not a module path: {module!r}")
        return value

    @field_validator("ui_secret")
    @classmethod
    def _check_ui_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("NIGHTCREW_UI_SECRET must be at least 32 characters")
        return value

    @field_validator("schedules")
    @classmethod
    def _check_schedules(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        module, sep, attr = value.strip().partition(":")
        if (
            not sep
            or not attr.isidentifier()
            or not all(p.isidentifier() for p in module.split("."))
        ):
            raise ValueError(
                f"expected module:ATTR (e.g. myapp.schedules:SCHEDULES), got {value!r}"
            )
        return value.strip()

    @property
    def heartbeat_interval(self) -> float:
        """Heartbeats run three times per lease so one slow beat never loses a lease."""
        return self.lease_seconds / 3
