"""``nightcrew serve`` as a user runs it: a real uvicorn on a loopback port, on both backends;
it refuses a non-loopback address while no token exists, and never logs a token."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from nightcrew import Nightcrew, actions
from tests.conftest import ROOT, Backend, run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_serve_refuses_a_public_address_without_tokens(backend: Backend, host: str) -> None:
    result = run_cli(backend, "serve", "--host", host, "--port", str(_free_port()))
    assert result.returncode == 1
    assert "no API token exists" in result.stderr
    assert "nightcrew tokens create --name NAME --role" in result.stderr


def test_serve_answers_on_loopback_and_keeps_tokens_out_of_its_log(
    backend: Backend, app: Nightcrew
) -> None:
    _, token = actions.create_token(app, "e2e", "viewer")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "nightcrew", "serve", "--port", str(port)],
        env=backend.env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            assert server.poll() is None, server.communicate()
            time.sleep(0.1)
        assert httpx.get(f"{base}/api/v1/tasks").status_code == 401
        listed = httpx.get(f"{base}/api/v1/tasks", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200
        assert listed.headers["x-content-type-options"] == "nosniff"
        assert listed.headers["cache-control"] == "no-store"
        assert "access-control-allow-origin" not in listed.headers
        preflight = httpx.options(
            f"{base}/api/v1/tasks",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in preflight.headers
    finally:
        server.terminate()
        out, err = server.communicate(timeout=15)
    assert "GET /api/v1/tasks" in err + out  # the access log is on
    assert token not in err + out


def test_serve_with_a_token_may_bind_everywhere(backend: Backend, app: Nightcrew) -> None:
    """The refusal is about tokens, not addresses: with one, the check passes (the server
    is stopped right after it starts; nothing is sent to the public address)."""
    actions.create_token(app, "ops", "admin")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "nightcrew", "serve", "--host", "0.0.0.0", "--port", str(port)],
        env=backend.env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while server.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert server.poll() is None
    finally:
        server.terminate()
        server.communicate(timeout=15)


def test_serve_freezes_what_its_start_up_made_out_of_the_collector(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    import uvicorn
    from typer.testing import CliRunner

    from nightcrew.cli import app as cli

    frozen: list[int] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: frozen.append(gc.get_freeze_count()))
    runner = CliRunner()
    try:
        args = ["--database-url", backend.url, "serve", "--port", str(_free_port())]
        result = runner.invoke(cli, args, env={"NIGHTCREW_GC_FREEZE": "true"})
        assert result.exit_code == 0, result.output
        assert frozen and frozen[0] > 0
        gc.unfreeze()
        result = runner.invoke(cli, args, env={"NIGHTCREW_GC_FREEZE": "false"})
        assert result.exit_code == 0, result.output
        assert frozen[1] == 0
    finally:
        gc.unfreeze()
