"""Settings read from the environment (``NIGHTCREW_*``) and overridable by flags."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
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

    @property
    def heartbeat_interval(self) -> float:
        """Heartbeats run three times per lease so one slow beat never loses a lease."""
        return self.lease_seconds / 3
