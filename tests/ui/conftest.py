"""The dashboard in a real browser: a uvicorn server, a worker process, Debian's Chromium.

One `Dashboard` per test module (per xdist worker): a database of its own (PostgreSQL when
reachable, else SQLite outside CI), the admin API with its dashboard served by uvicorn on
a free loopback port in a thread, a ``nightcrew worker`` process running the tasks, a
token per role, and some history so every page has something to show. Playwright drives
``/usr/bin/chromium`` (never a downloaded browser); without it the tests are skipped,
except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from nightcrew import Nightcrew, actions, create_maintenance_task
from nightcrew.api import create_api
from nightcrew.models import Base
from nightcrew.pipelines import Pipeline
from nightcrew.settings import Settings
from nightcrew.store import Database
from nightcrew.values import Role
from tests.conftest import _PG_ERROR, IN_CI, ROOT, Backend, _drop_pg, _make_pg
from tests.ui.ui_processors import Flaky, Report, Steps

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "docs" / "screenshots"
MODULES = ["tests.ui.ui_processors", "nightcrew.processors"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dashboard:
    """A running dashboard: its URL, the app on its database, a token per role."""

    url: str
    app: Nightcrew
    backend: Backend
    tokens: dict[Role, str]
    seeded: dict[str, Any] = field(default_factory=dict)

    def ui(self, path: str = "/") -> str:
        return f"{self.url}/ui{path}"

    def wait_for(self, check: Callable[[], bool], seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.05)


def _backend(tmp: Path) -> tuple[Backend, Callable[[], None]]:
    if not _PG_ERROR:
        schema = f"t_ui_{uuid.uuid4().hex[:12]}"
        backend = _make_pg(schema)
        return backend, lambda: _drop_pg(schema)
    if IN_CI:
        pytest.fail(f"CI=true and PostgreSQL is unreachable: {_PG_ERROR}")
    return Backend("sqlite", f"sqlite:///{tmp / 'ui.db'}"), lambda: None


def _seed(app: Nightcrew) -> dict[str, Any]:
    """History for the pages: finished, failed, staged tasks, a pipeline, schedules."""
    for i in range(24):
        create_maintenance_task(Report(title=f"weekly report {i}", copies=1 + i % 3), database=app)
    for _ in range(3):
        create_maintenance_task(Flaky(), database=app)
    create_maintenance_task(Report(title="staged"), database=app, inactive=True)
    p = Pipeline("nightly-upgrade")
    extract = p.add(Report(title="extract"), name="extract")
    batches = [
        p.add(Steps(seconds=1.0 + i * 0.5, steps=10), name=f"batch-{i}", depends_on=[extract])
        for i in range(3)
    ]
    p.add(Report(title="summary"), name="summary", depends_on=batches)
    pipeline_id = p.enqueue(database=app)
    actions.add_schedule(
        app,
        "nightly-report",
        "tests.ui.ui_processors.Report",
        {"title": "nightly"},
        cron="0 2 * * *",
    )
    actions.add_schedule(
        app, "cache-warmup", "tests.ui.ui_processors.Report", {"title": "warm"}, every="15m"
    )
    return {"pipeline_id": pipeline_id}


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    backend, drop = _backend(tmp_path_factory.mktemp("ui"))
    db = Database(backend.url)
    Base.metadata.create_all(db.sync_engine)
    db.dispose()
    settings = Settings(
        database_url=backend.url,
        processor_modules=MODULES,
        poll_interval=0.05,
        lease_seconds=5.0,
    )
    app = Nightcrew(settings)
    tokens = {role: actions.create_token(app, f"ui-{role.value}", role)[1] for role in Role}
    seeded = _seed(app)
    port = _free_port()
    config = uvicorn.Config(
        create_api(app),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ui-server", daemon=True)
    thread.start()
    env = backend.env(NIGHTCREW_PROCESSOR_MODULES=",".join(MODULES))
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nightcrew",
            "worker",
            "--concurrency",
            "8",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard's server did not start")
        time.sleep(0.02)
    dash = Dashboard(f"http://127.0.0.1:{port}", app, backend, tokens, seeded)
    try:
        yield dash
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        server.should_exit = True
        thread.join(10)
        app.close()
        drop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None or not os.path.exists(CHROMIUM):
        message = f"Playwright and {CHROMIUM} are needed (./dev test installs chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def open_as(dashboard: Dashboard, browser: Browser) -> Iterator[Callable[..., Page]]:
    """``open_as(Role.OPERATOR)``: a new browser context signed in with that role's token."""
    contexts = []

    def open_page(
        role: Role, viewport: dict[str, int] = DESKTOP, color_scheme: str = "light"
    ) -> Page:
        context = browser.new_context(
            viewport=viewport,  # type: ignore[arg-type]
            base_url=dashboard.url,
            color_scheme=color_scheme,  # type: ignore[arg-type]
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.goto("/ui/login")
        page.get_by_label("API token").fill(dashboard.tokens[role])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/ui/")
        return page

    yield open_page
    for context in contexts:
        context.close()
