"""Tokens are random, shown once, stored only as a SHA-256, and never logged."""

from __future__ import annotations

import hashlib
import logging

import pytest
from sqlalchemy import select

from nightcrew import actions
from nightcrew.models import ApiToken
from nightcrew.values import Role
from tests.api.conftest import ApiEnv
from tests.conftest import run_cli


def _rows(env: ApiEnv) -> list[ApiToken]:
    from sqlalchemy.orm import Session

    with Session(env.app.database.sync_engine) as session:
        return list(session.scalars(select(ApiToken).order_by(ApiToken.name)))


def test_the_cli_prints_a_token_once_and_stores_its_hash(api_env: ApiEnv) -> None:
    made = run_cli(api_env.backend, "tokens", "create", "--name", "deploy", "--role", "operator")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("nct_") and len(token) >= 4 + 43  # 32 random bytes, base64url
    assert "shown only now" in made.stderr
    (row,) = [r for r in _rows(api_env) if r.name == "deploy"]
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(vars(row))

    listed = run_cli(api_env.backend, "tokens", "ls", "--json")
    assert token not in listed.stdout and '"deploy"' in listed.stdout
    assert (
        api_env.client.get(
            "/api/v1/tasks", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 200
    )

    revoked = run_cli(api_env.backend, "tokens", "revoke", "deploy")
    assert revoked.returncode == 0, revoked.stderr
    assert (
        api_env.client.get(
            "/api/v1/tasks", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 401
    )
    again = run_cli(api_env.backend, "tokens", "revoke", "deploy")
    assert again.returncode == 1 and "no active token" in again.stderr


def test_the_api_shows_a_token_only_in_the_create_response(api_env: ApiEnv) -> None:
    made = api_env.client.post(
        "/api/v1/tokens", json={"name": "ui", "role": "viewer"}, headers=api_env.admin
    )
    assert made.status_code == 201
    token = made.json()["token"]
    listed = api_env.client.get(
        "/api/v1/tokens", params={"include_revoked": True}, headers=api_env.admin
    )
    assert token not in listed.text and "token_hash" not in listed.text
    assert {t["name"] for t in listed.json()["tokens"]} >= {"ui", "test-admin"}


def test_tokens_differ_and_roles_are_checked(api_env: ApiEnv) -> None:
    made = {actions.create_token(api_env.app, f"t{i}", Role.VIEWER)[1] for i in range(20)}
    assert len(made) == 20
    bad = run_cli(api_env.backend, "tokens", "create", "--name", "x", "--role", "root")
    assert bad.returncode == 2


def test_no_token_reaches_the_logs(api_env: ApiEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = api_env.tokens[Role.ADMIN]
    api_env.client.get("/api/v1/tasks", headers=api_env.admin)
    api_env.client.post(
        "/api/v1/tokens", json={"name": "logged", "role": "viewer"}, headers=api_env.admin
    )
    api_env.client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {token}x"})
    assert token not in caplog.text
    assert "nct_" not in caplog.text


def test_last_use_is_written_at_most_once_a_minute(api_env: ApiEnv) -> None:
    for _ in range(3):
        api_env.client.get("/api/v1/tasks", headers=api_env.viewer)
    (row,) = [r for r in _rows(api_env) if r.name == "test-viewer"]
    first = row.last_used_at
    assert first is not None
    api_env.client.get("/api/v1/tasks", headers=api_env.viewer)
    (row,) = [r for r in _rows(api_env) if r.name == "test-viewer"]
    assert row.last_used_at == first
