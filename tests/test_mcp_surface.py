"""The MCP surface's newer parts: compact replies, big payloads as resource links (re-hashed on
read), long work as MCP tasks (the tasks extension), in memory and over the real stdio server."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types import ResourceLink

from planegate.server import app as app_module
from planegate.server import demo
from planegate.server.app import build_server
from planegate.server.tasks import (
    CancelTaskRequest,
    CancelTaskResult,
    ClientTasks,
    CreateTaskResult,
    GetTaskRequest,
    GetTaskResult,
    TaskIdParams,
)
from planegate.store import Store
from planegate.tools.config import Settings
from tests.execution import MUL, MUL_TEST, calc_repo, open_env, planned_run, write
from tests.helpers import call, commit_all, refused

pytestmark = pytest.mark.anyio


def plan(home: Path, repo: Path) -> str:
    env = open_env(home)
    try:
        return planned_run(env, repo)
    finally:
        env.close()


def server(home: Path) -> Any:
    return build_server(Settings(home=home, actor="agent:test", job_lease_s=30), worker_delay_s=0)


async def test_replies_are_compact_and_big_payloads_are_links_served_as_recorded(
    tmp_path: Path, fresh_machine: Path
) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = plan(fresh_machine, repo)
    with anyio.fail_after(120):
        async with Client(server(fresh_machine)) as client:
            dispatched = await client.call_tool("dispatch_task", {"run": run, "task": "calc"})
            data = dispatched.structured_content
            assert data is not None and "envelope" not in data
            envelope_uri = f"planegate://runs/{run}/tasks/calc"
            assert data["links"] == {envelope_uri: "envelope of task calc"}
            links = [b for b in dispatched.content if isinstance(b, ResourceLink)]
            assert [(str(b.uri), b.mime_type) for b in links] == [(envelope_uri, "text/markdown")]
            envelope = (await client.read_resource(envelope_uri)).contents[0].text
            assert links[0].size == len(envelope.encode()) and "calc" in envelope

            worktree = Path(data["worktree"])
            write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
            commit_all(worktree, "mul")
            checks = await client.call_tool("run_checks", {"run": run, "task": "calc"})
            result = checks.structured_content
            assert result is not None and result["state"] == "succeeded"
            text = checks.content[0].text  # type: ignore[union-attr]
            assert text.startswith(f"run_checks: run={run}; task=calc;") and "\nnext: " in text
            assert '{\n  "' not in text  # never a pretty-printed copy of the result
            links = [b for b in checks.content if isinstance(b, ResourceLink)]
            assert links and {str(b.uri) for b in links} == set(result["links"])

            with Store(fresh_machine / "ledger.db") as store:
                rows = {
                    f"planegate://runs/{run}/artifacts/{r['id']}": r
                    for r in store.rows("SELECT * FROM artifacts WHERE run_id = ?", (run,))
                }
            for link in links:
                row = rows[str(link.uri)]
                read = (await client.read_resource(str(link.uri))).contents[0]
                body = read.text.encode() if hasattr(read, "text") else b""
                assert body == Path(row["path"]).read_bytes() and link.size == row["bytes"]
                assert read.mime_type == link.mime_type

            # An artifact edited after it was recorded is refused, naming it and the command to run.
            target = links[0]
            path = Path(rows[str(target.uri)]["path"])
            path.write_bytes(path.read_bytes() + b"edited\n")
            with pytest.raises(MCPError) as changed:
                await client.read_resource(str(target.uri))
            artifact_id = str(target.uri).rsplit("/", 1)[1]
            assert f"artifact {artifact_id} (" in str(changed.value)
            assert "does not match its recorded sha256" in str(changed.value)
            assert "planegate ledger verify" in str(changed.value)
            with pytest.raises(MCPError) as missing:
                await client.read_resource(f"planegate://runs/{run}/artifacts/999999")
            assert "'999999' is not an artifact of run" in str(missing.value)

            report = (await client.read_resource(f"planegate://runs/{run}/report")).contents[0].text
            assert report.startswith("# Grow the library") and "## Evidence" in report

            status = await client.call_tool("get_status", {"run": run})
            text = status.content[0].text  # type: ignore[union-attr]
            assert text.startswith(f"get_status: run {run}: executing; tasks:") and "next: accept_task" in text
            active = status.structured_content["status"]["active"][0]  # type: ignore[index]
            assert active["gates"] == [] and "checks" in active["met"]


def scratch_demo_repo(tmp_path: Path) -> Path:
    repo, _ = demo.make_scratch_repo(tmp_path)
    return repo


async def plan_demo(client: Client, repo: Path) -> str:
    run = (await call(client, "start_run", repo=str(repo), goal="Add line and word statistics"))["run"]
    await call(client, "freeze_requirements", run=run, requirements=demo.REQUIREMENTS)
    await call(client, "freeze_architecture", run=run, modules=demo.MODULES)
    await call(client, "register_graph", run=run, tasks=demo.TASKS)
    return str(run)


async def test_long_work_answers_with_durable_tasks_when_the_request_declares_the_extension(
    tmp_path: Path, fresh_machine: Path
) -> None:
    repo = scratch_demo_repo(tmp_path)
    created: list[CreateTaskResult] = []
    rows_at_creation: list[dict[str, Any]] = []

    def seen(handle: CreateTaskResult) -> None:
        created.append(handle)
        with Store(fresh_machine / "ledger.db") as store:  # written before the handle was sent
            rows_at_creation.append(dict(store.one("SELECT * FROM mcp_tasks WHERE id = ?", (handle.task_id,)) or {}))

    with anyio.fail_after(240):
        async with Client(server(fresh_machine), extensions=[ClientTasks(limit_s=180, on_created=seen)]) as client:
            run = await plan_demo(client, repo)
            dispatched = await call(client, "dispatch_task", run=run, task="line-count", executor="command")
            assert dispatched["job_state"] == "succeeded" and dispatched["job"] is not None
            checks = await call(client, "run_checks", run=run, task="line-count")
            assert checks["state"] == "succeeded" and checks["all_passed"] is True and checks["links"]
            requested = await call(client, "request_review", run=run, task="line-count")
            assert requested["state"] == "completed" and requested["verdict"] == "approve"
            assert requested["next_step"] == f"accept_task(run={run!r}, task='line-count')"
            # Work that already ended is answered at once, without a task.
            reviewed = await call(client, "get_review", review=requested["review"])
            job = await call(client, "get_job", job=checks["job"], wait_seconds=0)
            assert reviewed["verdict"] == "approve" and job["state"] == "succeeded"

    assert [h.status for h in created] == ["working", "working", "working"]
    assert len({h.task_id for h in created}) == 3 and all(h.task_id.startswith("pgt-") for h in created)
    assert [(r["tool"], r["job_id"] is not None, r["review_id"]) for r in rows_at_creation] == [
        ("dispatch_task", True, None),
        ("run_checks", True, None),
        ("request_review", False, requested["review"]),
    ]
    assert rows_at_creation[1]["job_id"] == checks["job"]


async def test_tasks_get_and_cancel_end_the_jobs_processes_and_a_client_without_the_extension_waits(
    tmp_path: Path, fresh_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "TOOL_WAIT_S", 1.0)
    marker = tmp_path / "pid"
    slow = [
        sys.executable,
        "-c",
        f"import os, pathlib, time; pathlib.Path({str(marker)!r}).write_text(str(os.getpid())); time.sleep(60)",
    ]
    repo = calc_repo(tmp_path / "calc")
    policy = repo / ".planegate" / "policy.toml"
    policy.write_text(policy.read_text().split("[checks]")[0] + f"[checks]\ntest = {json.dumps(slow)}\n")
    commit_all(repo, "a slow check")
    run = plan(fresh_machine, repo)
    app = server(fresh_machine)
    with anyio.fail_after(120):
        async with Client(app, extensions=[ClientTasks()]) as client:
            dispatched = await call(client, "dispatch_task", run=run, task="calc")
            worktree = Path(dispatched["worktree"])
            write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
            commit_all(worktree, "mul")
            handle = await client.session.call_tool("run_checks", {"run": run, "task": "calc"}, allow_claimed=True)
            assert isinstance(handle, CreateTaskResult) and handle.status == "working"
            assert handle.ttl_ms is not None and handle.poll_interval_ms
            params = TaskIdParams(task_id=handle.task_id)
            while not marker.exists():
                await anyio.sleep(0.05)
            pid = int(marker.read_text())
            snapshot = await client.session.send_request(GetTaskRequest(params=params), GetTaskResult)
            assert snapshot.status == "working" and snapshot.result is None
            await client.session.send_request(CancelTaskRequest(params=params), CancelTaskResult)
            snapshot = await client.session.send_request(GetTaskRequest(params=params), GetTaskResult)
            assert snapshot.status == "cancelled" and "cancelled by the client" in (snapshot.status_message or "")
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                await anyio.sleep(0.05)
            assert not _alive(pid), "the check's process group outlived tasks/cancel"
            with pytest.raises(MCPError) as unknown:
                await client.session.send_request(
                    GetTaskRequest(params=TaskIdParams(task_id="pgt-nope")), GetTaskResult
                )
            assert "task 'pgt-nope' not found" in str(unknown.value)

        # Without the extension: today's answer (the tool waits, then names the job), and no task.
        async with Client(app) as plain:
            marker.unlink()
            answer = await call(plain, "run_checks", run=run, task="calc")
            assert answer["state"] in ("queued", "running") and answer["job"] > 0
            with pytest.raises(MCPError) as undeclared:
                await plain.session.send_request(GetTaskRequest(params=params), GetTaskResult)
            assert "io.modelcontextprotocol/tasks" in str(undeclared.value)
            await call(plain, "cancel_job", job=answer["job"], reason="test over")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


async def test_tasks_over_the_real_stdio_server(tmp_path: Path, fresh_machine: Path) -> None:
    repo = scratch_demo_repo(tmp_path)
    created: list[CreateTaskResult] = []
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "planegate.server.cli", "serve"],
        env={**os.environ, "PLANEGATE_HOME": str(fresh_machine)},
    )
    with anyio.fail_after(180):
        async with Client(params, extensions=[ClientTasks(limit_s=150, on_created=created.append)]) as client:
            run = await plan_demo(client, repo)
            dispatched = await call(client, "dispatch_task", run=run, task="line-count", executor="command")
            assert dispatched["job_state"] == "succeeded"
            checks = await call(client, "run_checks", run=run, task="line-count")
            assert checks["state"] == "succeeded" and checks["all_passed"] is True
            assert "not found" in await refused(client, "get_job", job=424242)
    assert len(created) == 2 and all(h.status == "working" for h in created)


async def test_tools_list_is_stable_and_the_handles_lifetimes_are_stated(fresh_machine: Path) -> None:
    listings = []
    for _ in range(2):
        app = server(fresh_machine)
        async with Client(app) as client:
            listings.append((await client.list_tools()).model_dump(by_alias=True, mode="json", exclude_none=True))
            instructions = client.instructions or ""
        app.env_holder.close()
    assert listings[0] == listings[1]  # same order, same bytes
    names = [t["name"] for t in listings[0]["tools"]]
    assert names[:4] == ["start_run", "freeze_requirements", "freeze_architecture", "register_graph"]
    assert next(t for t in listings[0]["tools"] if t["name"] == "get_status")["_meta"] == {
        "ui": {"resourceUri": "ui://planegate/run"}
    }
    for said in ("Job ids", "review ids", "as long as the ledger", "task id", "Links", "sha256", "30 days"):
        assert said in instructions, said
    assert "Waits up to ~45 s, then returns a job id for get_job" in next(
        t["description"] for t in listings[0]["tools"] if t["name"] == "run_checks"
    )
