"""The admin API on each backend: an app, one token per role, and an in-process client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from nightcrew import Nightcrew, actions, create_maintenance_task
from nightcrew.api import create_api
from nightcrew.values import Role
from tests.conftest import Backend
from tests.processors import Echo


@dataclass
class ApiEnv:
    """What an API test needs: the app, the API on it, a client, a token per role."""

    backend: Backend
    app: Nightcrew
    api: FastAPI
    client: TestClient
    tokens: dict[Role, str]

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.auth(Role.ADMIN)

    @property
    def operator(self) -> dict[str, str]:
        return self.auth(Role.OPERATOR)

    @property
    def viewer(self) -> dict[str, str]:
        return self.auth(Role.VIEWER)

    def task(self, **options: Any) -> int:
        """A task made through Python (no audit row: not an operator's call)."""
        return create_maintenance_task(Echo(value=1), database=self.app, **options).id


#: The actor a role's test token acts as.
def actor(role: Role) -> str:
    return f"token:test-{role.value}"


@pytest.fixture
def api_env(backend: Backend, app: Nightcrew) -> Iterator[ApiEnv]:
    tokens = {role: actions.create_token(app, f"test-{role.value}", role)[1] for role in Role}
    api = create_api(app)
    with TestClient(api) as client:
        yield ApiEnv(backend, app, api, client, tokens)
