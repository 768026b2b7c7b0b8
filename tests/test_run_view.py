"""The run view in real headless Chromium: ``planegate dashboard`` (a 2-task and a 200-task run, live
updates, refusals without the token or with a foreign Host) and the same page as an MCP App
rendered inside a host page that speaks the Apps bridge. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID

from planegate.server.app import RUN_VIEW_URI, build_server
from planegate.tools.config import Settings
from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.gates.accept import accept_task
from planegate.tools.models import Module, Requirement, TaskSpec
from tests.execution import TASKS, calc_repo, finish_calc, open_env, planned_run

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="needs Debian's chromium")


@contextmanager
def dashboard(home: Path, run: str) -> Iterator[str]:
    """``planegate dashboard RUN`` as a user starts it; yields the URL it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "planegate.server.cli", "dashboard", run],
        env={**os.environ, "PLANEGATE_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("planegate dashboard: http://127.0.0.1:"), line + (
            proc.stderr.read() if proc.stderr else ""
        )
        yield line.split(": ", 1)[1].strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def get(url: str, host: str | None = None, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def shot(page: Any, folder: Path, name: str) -> Path:
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("PLANEGATE_SHOTS"):  # somewhere to look at them after the run
        shutil.copy(path, Path(os.environ["PLANEGATE_SHOTS"]) / name)
    return path


def rows(page: Any) -> dict[str, str]:
    return dict(page.eval_on_selector_all("#task-rows tr", "rs => rs.map(r => [r.dataset.task, r.dataset.status])"))


@needs_chromium
def test_the_dashboard_shows_a_run_follows_it_and_refuses_strangers(tmp_path: Path, fresh_machine: Path) -> None:
    repo = calc_repo(tmp_path / "calc")
    env = open_env(fresh_machine)
    try:
        run = planned_run(env, repo, TASKS[:2])
        finish_calc(env, run)
        with dashboard(fresh_machine, run) as url, chromium() as page:
            page.goto(url)
            page.wait_for_selector("#graph g.task")
            assert page.locator("#graph g.task").count() == 2
            assert rows(page) == {"calc": "in_progress", "text": "ready"}
            assert page.locator("#goal").inner_text() == "Grow the library"
            assert "next: accept_task" in page.locator("#next").inner_text()
            assert page.get_attribute('#graph g.task[data-task="calc"]', "data-status") == "in_progress"
            page.click('#graph g.task[data-task="calc"]')
            details = page.locator("#details").inner_text()
            assert "every gate holds" in details and "hold: ledger" in details and "exit 0" in details
            before = shot(page, tmp_path, "dashboard-2-tasks.png")
            version = page.get_attribute("body", "data-version")

            accept_task(env, run, "calc")  # the ledger moves; the page follows without a reload
            page.wait_for_function("v => document.body.dataset.version !== v", arg=version, timeout=10_000)
            page.wait_for_selector('#task-rows tr[data-task="calc"][data-status="accepted"]', timeout=10_000)
            assert page.get_attribute('#graph g.task[data-task="calc"]', "data-status") == "accepted"
            assert "accepted: merged as" in page.locator("#details").inner_text()
            after = shot(page, tmp_path, "dashboard-2-tasks-accepted.png")
            assert before.stat().st_size > 10_000 and after.stat().st_size > 10_000

            base, _, token = url.partition("?token=")
            port = base.split(":")[2].split("/")[0]
            assert get(base)[0] == 403 and "has the token" in get(base)[1]
            assert get(base + "?token=wrong")[0] == 403
            status, text = get(url, host=f"evil.example:{port}")
            assert status == 403 and "evil.example" in text
            assert get(url, method="POST")[0] == 405
            assert get(url)[0] == 200
            version_url = f"http://127.0.0.1:{port}/api/version?token={token}"
            assert json.loads(get(version_url)[1])["version"] > int(version or 0)
    finally:
        env.close()


def wide_run(home: Path, repo: Path, count: int) -> str:
    env = open_env(home)
    try:
        run = start_run(env, str(repo), f"A {count}-task change").run
        freeze_requirements(env, run, [Requirement(id="R1", statement="it works", acceptance_criteria=["tested"])])
        freeze_architecture(env, run, [Module(name="src", owns=["src/**"])], [])
        tasks = [
            TaskSpec(
                id=f"t{i:03d}",
                title=f"Part {i}",
                goal=f"Part {i}",
                depends_on=[f"t{i // 3:03d}"] if i >= 3 else [],
                scope=[f"src/p{i}.py"],
                requirements=["R1"],
            )
            for i in range(count)
        ]
        register_graph(env, run, tasks)
        return run
    finally:
        env.close()


@needs_chromium
def test_the_dashboard_renders_a_200_task_run(tmp_path: Path, fresh_machine: Path) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = wide_run(fresh_machine, repo, 200)
    with dashboard(fresh_machine, run) as url, chromium() as page:
        page.goto(url)
        page.wait_for_selector("#graph g.task")
        assert page.locator("#graph g.task").count() == 200
        assert page.locator("#graph path.edge").count() == 197
        statuses = rows(page)
        assert len(statuses) == 200 and statuses["t000"] == "ready" and statuses["t199"] == "blocked"
        assert page.locator("#shown").inner_text() == "200 tasks"
        page.hover('#graph g.task[data-task="t150"]')
        assert "waiting for t050 (blocked)" in page.locator("#details").inner_text()
        shot(page, tmp_path, "dashboard-200-tasks.png")


HOST_PAGE = """<!DOCTYPE html><html><body>
<iframe id="app" sandbox="allow-scripts" style="width:1350px;height:950px;border:0"></iframe>
<script>
window.hostLog = [];
window.startApp = (html, toolResult, viewUri, viewText) => {
  const frame = document.getElementById("app");
  window.addEventListener("message", (event) => {
    const msg = event.data || {};
    window.hostLog.push(msg.method || ("answer " + msg.id));
    const reply = (result) => frame.contentWindow.postMessage({ jsonrpc: "2.0", id: msg.id, result }, "*");
    if (msg.method === "ui/initialize") {
      reply({ protocolVersion: "2026-01-26", hostInfo: { name: "test host" }, hostCapabilities: {} });
    } else if (msg.method === "ui/notifications/initialized") {
      const note = { jsonrpc: "2.0", method: "ui/notifications/tool-result", params: toolResult };
      frame.contentWindow.postMessage(note, "*");
    } else if (msg.method === "resources/read") {
      const found = msg.params.uri === viewUri;
      reply({ contents: found ? [{ uri: viewUri, mimeType: "application/json", text: viewText }] : [] });
    }
  });
  frame.srcdoc = html;
};
</script></body></html>"""


@needs_chromium
def test_the_mcp_app_renders_the_run_from_the_get_status_result(tmp_path: Path, fresh_machine: Path) -> None:
    repo = calc_repo(tmp_path / "calc")
    env = open_env(fresh_machine)
    try:
        run = planned_run(env, repo, TASKS[:2])
        finish_calc(env, run)
    finally:
        env.close()
    newer = wide_run(fresh_machine, repo, 5)  # the page's own data is the newest run until the host speaks

    async def through_mcp() -> tuple[dict[str, Any], str, str, dict[str, Any], str]:
        app = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=3600)
        ad = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
        async with Client(app, extensions=[ad]) as client:
            listed = await client.list_tools()
            meta = next(t for t in listed.tools if t.name == "get_status").meta or {}
            page = (await client.read_resource(RUN_VIEW_URI)).contents[0]
            status = await client.call_tool("get_status", {"run": run})
            view_uri = f"planegate://runs/{run}/view"
            view = (await client.read_resource(view_uri)).contents[0].text  # type: ignore[union-attr]
        app.env_holder.close()
        wire = status.model_dump(by_alias=True, mode="json", exclude_none=True)
        return meta, page.mime_type or "", page.text, wire, view  # type: ignore[union-attr]

    meta, mime, html, tool_result, view_text = anyio.run(through_mcp)
    assert meta == {"ui": {"resourceUri": RUN_VIEW_URI}} and mime == APP_MIME_TYPE
    assert f'"run":"{newer}"' in html  # embedded: the newest run
    with dashboard(fresh_machine, run) as url, chromium() as page:
        page.goto(url)
        page.wait_for_selector("#graph g.task")
        on_dashboard = rows(page)
        page.goto("about:blank")  # a host page of its own, not under the dashboard's policy
        page.set_content(HOST_PAGE)
        page.evaluate(
            "([html, result, uri, text]) => window.startApp(html, result, uri, text)",
            [html, tool_result, f"planegate://runs/{run}/view", view_text],
        )
        frame = page.frame_locator("#app")
        frame.locator('#task-rows tr[data-task="calc"]').wait_for(timeout=10_000)
        in_app = dict(
            frame.locator("#task-rows tr").evaluate_all("rs => rs.map(r => [r.dataset.task, r.dataset.status])")
        )
        assert in_app == on_dashboard == {"calc": "in_progress", "text": "ready"}
        assert frame.locator("#graph g.task").count() == 2
        assert frame.locator("#goal").inner_text() == "Grow the library"
        log = page.evaluate("window.hostLog")
        assert log[:3] == ["ui/initialize", "ui/notifications/initialized", "resources/read"]
        shot(page, tmp_path, "mcp-app-2-tasks.png")
