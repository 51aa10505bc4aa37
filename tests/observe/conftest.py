"""What the observability tests share: settings allowing their processors, a real HTTP
server for the admin API (a stream needs a real connection), and metric parsing."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from nightcrew import Nightcrew
from nightcrew.api import create_api
from nightcrew.settings import Settings
from tests.conftest import TEST_MODULES, Backend

MODULES = [*TEST_MODULES, "tests.observe_processors"]


def observe_settings(backend: Backend, **overrides: Any) -> Settings:
    return backend.settings(processor_modules=MODULES, **overrides)


@pytest.fixture
def osettings(backend: Backend) -> Settings:
    return observe_settings(backend)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(app: Nightcrew) -> Iterator[str]:
    """The admin API for ``app`` on a loopback port, in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_api(app), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the API server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


async def until(check: Any, what: str, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g}s: {what}")
        await asyncio.sleep(0.05)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by (name, sorted labels), parsed by prometheus-client."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)
