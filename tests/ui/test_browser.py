"""The dashboard driven by Chromium against a real server and a real worker.

Each test pins one thing a person does or needs: sign in and out, watch a task's progress
move live and cancel it, see what a viewer may not do, create a task from a processor's
form, read a pipeline's graph, use every page at a desktop's and a phone's width, find a
name on every control. The pages' screenshots land in docs/screenshots/ for the README.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from nightcrew import actions, create_maintenance_task
from nightcrew.models import MaintenanceTaskStatus
from nightcrew.values import AuditFilter, Role
from tests.ui.conftest import DESKTOP, PHONE, SCREENSHOTS, Dashboard
from tests.ui.ui_processors import Steps

pytestmark = pytest.mark.slow

S = MaintenanceTaskStatus
OpenAs = Callable[..., Page]


def progress_of(page: Page, task_id: int) -> float:
    value = page.locator(f"#task-{task_id} progress").get_attribute("value")
    return float(value or 0)


def test_sign_in_with_a_token_and_sign_out(dashboard: Dashboard, open_as: OpenAs) -> None:
    page = open_as(Role.VIEWER)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_text("token:ui-viewer")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/login")
    page.goto("/ui/tasks")
    page.wait_for_url(re.compile(r".*/ui/login\?next=%2Fui%2Ftasks$"))
    page.get_by_label("API token").fill("nct_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")


def test_sign_in_and_move_around_with_the_keyboard_alone(
    dashboard: Dashboard, browser: Any
) -> None:
    context = browser.new_context(viewport=DESKTOP, base_url=dashboard.url)
    page = context.new_page()
    page.goto("/ui/login")
    assert page.evaluate("document.activeElement.id") == "token"  # autofocus
    page.keyboard.type(dashboard.tokens[Role.OPERATOR])
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.keyboard.press("Tab")  # skipped the header: the first status card
    assert "inactive" in page.evaluate("document.activeElement.textContent")
    # From the top, Tab walks the header in reading order; Enter follows a link.
    page.goto("/ui/")
    labels = []
    for _ in range(10):
        page.keyboard.press("Tab")
        labels.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert labels[:4] == ["Skip to content", "nightcrew", "Overview", "Tasks"], labels
    assert labels[-1] == "Sign out", labels
    for _ in range(6):
        page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Tasks"
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/tasks")
    context.close()


def test_a_running_tasks_progress_bar_moves_and_cancelling_it_shows_cancelled_and_audited(
    dashboard: Dashboard, open_as: OpenAs
) -> None:
    task = create_maintenance_task(Steps(seconds=30, steps=300), database=dashboard.app)
    page = open_as(Role.OPERATOR)
    page.goto("/ui/tasks?status=WORKING&status=PENDING")
    row = page.locator(f"#task-{task.id}")
    expect(row.locator("progress")).to_be_attached(timeout=15_000)
    first = progress_of(page, task.id)
    page.wait_for_function(
        "([id, first]) => Number(document.querySelector(`#task-${id} progress`)"
        "?.getAttribute('value')) > first + 2",
        arg=[task.id, first],
    )
    assert progress_of(page, task.id) > first
    # No reload happened: the bar moved through the event stream.
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    if SCREENSHOTS.is_dir():
        page.screenshot(path=str(SCREENSHOTS / "tasks-live.png"))

    row.get_by_role("checkbox", name=f"Select task {task.id}").check()
    page.get_by_role("button", name="Cancel selected").click()
    expect(page.get_by_role("status")).to_contain_text("Cancelled (or asked to stop): 1 task")
    page.goto(f"/ui/tasks/{task.id}")
    expect(page.locator(".live .task-head .badge").first).to_have_text("cancelled")
    assert actions.get(dashboard.app, task.id).status is S.CANCELLED

    page.goto("/ui/audit?action=task.cancel")
    audit_row = page.locator(f'tr.audit-row[data-target="task:{task.id}"]')
    expect(audit_row).to_contain_text("token:ui-operator")
    expect(audit_row).to_contain_text("ok")


def test_the_task_page_follows_progress_live_and_cancels(
    dashboard: Dashboard, open_as: OpenAs
) -> None:
    task = create_maintenance_task(Steps(seconds=30, steps=300), database=dashboard.app)
    page = open_as(Role.OPERATOR)
    page.goto(f"/ui/tasks/{task.id}")
    bar = page.get_by_role("progressbar", name=f"Progress of task {task.id}")
    expect(bar).to_be_attached(timeout=15_000)
    first = float(bar.get_attribute("value") or 0)
    expect(page.locator(".live .badge").first).to_have_text("working")
    page.wait_for_function(
        "([id, first]) => Number(document.querySelector('.live progress')"
        "?.getAttribute('value')) > first + 2",
        arg=[task.id, first],
    )
    if SCREENSHOTS.is_dir():
        page.screenshot(path=str(SCREENSHOTS / "task.png"))
    page.get_by_role("button", name="Cancel task").click()
    expect(page.locator(".live .task-head .badge").first).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Retry task")).to_be_visible()


def test_a_viewer_sees_no_action_buttons_and_is_refused_when_posting_anyway(
    dashboard: Dashboard, open_as: OpenAs
) -> None:
    task = create_maintenance_task(
        Steps(seconds=60, steps=10), database=dashboard.app, inactive=True
    )
    page = open_as(Role.VIEWER)
    allowed = {"Apply filters", "Sign out"}
    pipeline_id = dashboard.seeded["pipeline_id"]
    for path in (
        "/ui/tasks",
        f"/ui/tasks/{task.id}",
        "/ui/schedules",
        f"/ui/pipelines/{pipeline_id}",
        "/ui/processors/tests.ui.ui_processors.Report",
    ):
        page.goto(path)
        buttons = set(page.get_by_role("button").all_inner_texts())
        assert buttons <= allowed, (path, buttons - allowed)
        assert page.locator('main form[method="post"]').count() == 0, path

    csrf = page.locator('form[action$="/logout"] input[name="csrf"]').get_attribute("value")
    for path in (f"/ui/tasks/{task.id}/cancel", f"/ui/tasks/{task.id}/activate"):
        response = page.request.post(path, form={"csrf": csrf or ""}, max_redirects=0)
        assert response.status == 403, path
        assert "needs the operator role" in response.text()
    response = page.request.post(
        "/ui/processors/tests.ui.ui_processors.Report",
        form={"csrf": csrf or "", "config.title": "sneaky"},
        max_redirects=0,
    )
    assert response.status == 403
    assert actions.get(dashboard.app, task.id).status is S.INACTIVE
    refused = actions.list_audit(
        dashboard.app, AuditFilter(actor="token:ui-viewer", outcome="refused")
    ).records
    assert {r.action for r in refused} >= {"task.cancel", "task.activate", "task.create"}


def test_an_operator_creates_a_task_from_the_processor_form(
    dashboard: Dashboard, open_as: OpenAs
) -> None:
    page = open_as(Role.OPERATOR)
    page.goto("/ui/processors")
    page.get_by_role("link", name="Report", exact=True).click()
    expect(page.get_by_role("heading", name="Report")).to_be_visible()
    page.get_by_label("Title").fill("quarterly numbers")
    page.get_by_label("Copies").fill("3")
    page.get_by_label("Mode").select_option("thorough")
    page.get_by_label("Dry Run").check()
    page.get_by_label("Tags").fill('["finance", "q3"]')
    page.locator("summary", has_text="Task options").click()
    page.get_by_label("Priority").fill("5")
    if SCREENSHOTS.is_dir():
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(SCREENSHOTS / "processor-form.png"))
    page.get_by_role("button", name="Create task").click()
    expect(page.get_by_role("status")).to_contain_text("Created task")
    task_id = int(re.search(r"/ui/tasks/(\d+)$", page.url).group(1))  # type: ignore[union-attr]
    expect(page.locator(".live .badge").first).to_have_text("completed")
    task = actions.get(dashboard.app, task_id)
    assert task.priority == 5
    assert task.info == {"title": "quarterly numbers", "copies": 3, "tags": ["finance", "q3"]}
    assert '"mode":"thorough"' in task.processor_json.replace(" ", "")
    assert '"dry_run":true' in task.processor_json.replace(" ", "")

    # The processor's model refuses what it refuses, and the form comes back as sent.
    page.goto("/ui/processors/tests.ui.ui_processors.Report")
    page.get_by_label("Title").fill("too many")
    page.get_by_label("Copies").fill("99")
    page.get_by_role("button", name="Create task").click()
    expect(page.get_by_role("alert")).to_contain_text("copies")
    expect(page.get_by_label("Copies")).to_have_value("99")
    page.get_by_label("Title").fill("")
    page.get_by_role("button", name="Create task").click()
    expect(page.get_by_role("alert")).to_contain_text("need a fix")
    expect(page.get_by_role("textbox", name="Title")).to_have_attribute("aria-invalid", "true")


def test_a_pipelines_graph_shows_its_steps_and_their_statuses(
    dashboard: Dashboard, open_as: OpenAs
) -> None:
    pipeline_id = dashboard.seeded["pipeline_id"]
    page = open_as(Role.OPERATOR)
    page.goto("/ui/pipelines")
    page.get_by_role("link", name=str(pipeline_id), exact=True).click()
    graph = page.locator("svg.dag")
    expect(graph).to_be_visible()
    steps = graph.locator("a.node")
    expect(steps).to_have_count(5)
    names = {steps.nth(i).get_attribute("data-step") for i in range(5)}
    assert names == {"extract", "batch-0", "batch-1", "batch-2", "summary"}
    assert graph.locator("path.edge").count() == 6
    # The graph is live: it reaches the end without a reload.
    expect(graph.locator('a.node[data-step="summary"]')).to_have_class(
        re.compile("st-COMPLETED"), timeout=20_000
    )
    expect(page.get_by_role("link", name="summary: completed")).to_be_visible()
    # Layers by depth: extract left of the batches, the batches left of the summary.
    xs = {
        name: float(graph.locator(f'a.node[data-step="{name}"] rect').first.get_attribute("x") or 0)
        for name in ("extract", "batch-1", "summary")
    }
    assert xs["extract"] < xs["batch-1"] < xs["summary"]


PAGES = {
    "overview": "/ui/",
    "tasks": "/ui/tasks",
    "task-error": None,  # a failed task: filled in from the data
    "schedules": "/ui/schedules",
    "pipelines": "/ui/pipelines",
    "pipeline": None,
    "workers": "/ui/workers",
    "audit": "/ui/audit",
    "processors": "/ui/processors",
    "processor": "/ui/processors/tests.ui.ui_processors.Report",
    "login": "/ui/login",
}
#: The phone screenshots kept for the README (every page is still checked at 390 px).
PHONE_SHOTS = {"overview", "tasks"}
#: Pages whose desktop screenshot another test takes (with something happening on it).
NO_SHOTS = {"processor"}


def _pages(dashboard: Dashboard) -> dict[str, str]:
    failed = actions.list_tasks(dashboard.app, statuses=["ERROR"], limit=1).tasks
    dashboard.wait_for(
        lambda: bool(actions.list_tasks(dashboard.app, statuses=["ERROR"], limit=1).tasks)
    )
    failed = actions.list_tasks(dashboard.app, statuses=["ERROR"], limit=1).tasks
    found = dict(PAGES)
    found["task-error"] = f"/ui/tasks/{failed[0].id}"
    found["pipeline"] = f"/ui/pipelines/{dashboard.seeded['pipeline_id']}"
    return {k: v for k, v in found.items() if v is not None}


def _overflow(page: Page) -> int:
    return int(
        page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    )


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_every_page_fits_its_width_without_horizontal_scrolling(
    dashboard: Dashboard, open_as: OpenAs, width: str
) -> None:
    viewport = DESKTOP if width == "desktop" else PHONE
    page = open_as(Role.OPERATOR, viewport=viewport)
    dashboard.wait_for(
        lambda: (
            actions.get_pipeline(dashboard.app, dashboard.seeded["pipeline_id"]).pipeline.status
            == "COMPLETED"
        ),
        seconds=30,
    )
    for name, path in _pages(dashboard).items():
        if name == "login":
            continue
        page.goto(path)
        page.wait_for_load_state("networkidle") if name == "overview" else None
        assert _overflow(page) <= 0, f"{name} overflows at {viewport['width']} px"
        wanted = name in PHONE_SHOTS if width == "phone" else name not in NO_SHOTS
        if SCREENSHOTS.is_dir() and wanted:
            suffix = "" if width == "desktop" else "-phone"
            page.screenshot(path=str(SCREENSHOTS / f"{name}{suffix}.png"))


def test_dark_mode_follows_the_system(dashboard: Dashboard, open_as: OpenAs) -> None:
    light = open_as(Role.VIEWER)
    dark = open_as(Role.VIEWER, color_scheme="dark")
    background = "getComputedStyle(document.body).backgroundColor"
    assert light.evaluate(background) != dark.evaluate(background)
    if SCREENSHOTS.is_dir():
        dark.screenshot(path=str(SCREENSHOTS / "overview-dark.png"))


#: Roles of controls a person operates: each must have a name a screen reader can say.
INTERACTIVE = {
    "button",
    "link",
    "textbox",
    "checkbox",
    "combobox",
    "listbox",
    "spinbutton",
    "searchbox",
    "radio",
    "switch",
    "slider",
    "progressbar",
}


def test_every_control_has_an_accessible_name(dashboard: Dashboard, open_as: OpenAs) -> None:
    page = open_as(Role.OPERATOR)
    cdp = page.context.new_cdp_session(page)
    nameless: list[str] = []
    checked = 0
    for name, path in _pages(dashboard).items():
        page.goto(path)
        tree = cdp.send("Accessibility.getFullAXTree")
        for node in tree["nodes"]:
            if node.get("ignored"):
                continue
            role = node.get("role", {}).get("value")
            if role not in INTERACTIVE:
                continue
            checked += 1
            if not str(node.get("name", {}).get("value", "")).strip():
                nameless.append(f"{name}: a {role} ({node.get('nodeId')})")
    assert checked > 50
    assert not nameless, nameless
    landmarks = page.evaluate(
        "[...document.querySelectorAll('header, nav, main')].map(e => e.tagName)"
    )
    assert {"HEADER", "NAV", "MAIN"} <= set(landmarks)
