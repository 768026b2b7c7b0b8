"""The execution plane through MCP and real processes: the whole loop over stdio, long checks,
executors, a worker killed mid-job, and two servers racing for one task."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from planegate.server import app
from planegate.server.app import build_server
from planegate.store import Store, verify_ledger
from planegate.tools.config import Settings
from tests.execution import MUL, MUL_TEST, calc_repo, open_env, planned_run, write
from tests.helpers import call, commit_all, git, refused

pytestmark = pytest.mark.anyio
FAKES = Path(__file__).parent / "fakes"


def serve_params(home: Path, **env: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "planegate.server.cli", "serve"],
        env={**os.environ, "PLANEGATE_HOME": str(home), **env},
    )


def plan(home: Path, repo: Path) -> str:
    env = open_env(home)
    try:
        return planned_run(env, repo)
    finally:
        env.close()


async def test_a_whole_task_loop_works_through_the_real_server(tmp_path: Path, fresh_machine: Path) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = plan(fresh_machine, repo)
    with anyio.fail_after(120):
        async with Client(serve_params(fresh_machine)) as client:
            dispatched = await call(client, "dispatch_task", run=run, task="calc")
            worktree = Path(dispatched["worktree"])
            envelope = (await client.read_resource(f"planegate://runs/{run}/tasks/calc")).contents[0].text
            assert envelope == (worktree / ".planegate-task.md").read_text()
            told = await client.get_prompt("implement_task", {"run": run, "task": "calc"})
            assert str(worktree) in told.messages[0].content.text and envelope in told.messages[0].content.text
            write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
            commit_all(worktree, "mul")
            checks = await call(client, "run_checks", run=run, task="calc")
            assert checks["state"] == "succeeded" and checks["all_passed"] is True
            assert {r["check"] for r in checks["results"]} == {"test", "red_green", "test_integrity"}
            status = await call(client, "get_status", run=run)
            active = status["status"]["active"][0]
            assert active["lease_expires"] and not active["lease_expired"]
            assert active["gates"] == [] and "checks" in active["met"]
            assert status["next_action"] == f"accept_task(run={run!r}, task='calc')"
            accepted = await call(client, "accept_task", run=run, task="calc")
            assert accepted["unlocked"] == ["docs"]
            assert "'calc' is accepted" in await refused(client, "accept_task", run=run, task="calc")
    with Store(fresh_machine / "ledger.db") as store:
        assert verify_ledger(store).ok


async def test_a_long_check_returns_a_job_id_with_progress_and_get_job_waits_for_it(
    tmp_path: Path, fresh_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = [sys.executable, "-c", "import time; time.sleep(4)"]
    repo = calc_repo(tmp_path / "calc")
    (repo / ".planegate" / "policy.toml").write_text(
        f"require_review = false\nrequire_red_green = false\n\n[checks]\nslow = {json.dumps(slow)}\n"
    )
    commit_all(repo, "slow check")
    run = plan(fresh_machine, repo)
    monkeypatch.setattr(app, "TOOL_WAIT_S", 2.5)
    progress: list[tuple[float, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, message))

    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=0)
    with anyio.fail_after(60):
        async with Client(server) as client:
            worktree = Path((await call(client, "dispatch_task", run=run, task="calc"))["worktree"])
            write(worktree, {"src/calc.py": MUL})
            commit_all(worktree, "mul")
            result = await client.call_tool("run_checks", {"run": run, "task": "calc"}, progress_callback=on_progress)
            first = dict(result.structured_content or {})
            assert first["state"] in ("queued", "running")
            assert f"get_job({first['job']})" in first["next_step"]
            assert progress and any("slow" in (m or "") for _, m in progress)
            done = await call(client, "get_job", job=first["job"], wait_seconds=30)
            assert done["state"] == "succeeded" and done["all_passed"] is True
            assert done["checks"][0]["check"] == "slow"


def fake_codex_path() -> str:
    return f"{FAKES}{os.pathsep}{os.environ['PATH']}"


async def test_the_codex_executor_runs_codex_exec_and_its_work_is_committed(
    tmp_path: Path, fresh_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            {"write": {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST}, "last_message": "added mul and a test"}
        )
    )
    log = tmp_path / "codex.log"
    monkeypatch.setenv("PATH", fake_codex_path())
    monkeypatch.setenv("FAKE_CODEX_SCENARIO", str(scenario))
    monkeypatch.setenv("FAKE_CODEX_LOG", str(log))
    repo = calc_repo(tmp_path / "calc")
    (repo / ".planegate" / "policy.toml").write_text(
        (repo / ".planegate" / "policy.toml").read_text()
        + '\n[executor]\nenv_allow = ["FAKE_CODEX_SCENARIO", "FAKE_CODEX_LOG"]\n'
    )
    commit_all(repo, "allow the fake's variables")
    run = plan(fresh_machine, repo)
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=0)
    with anyio.fail_after(60):
        async with Client(server) as client:
            dispatched = await call(client, "dispatch_task", run=run, task="calc", executor="codex")
            job = await call(client, "get_job", job=dispatched["job"], wait_seconds=30)
            assert job["state"] == "succeeded", job
            assert job["result"]["commit"]
            worktree = Path(dispatched["worktree"])
            assert git(worktree, "log", "-1", "--format=%an") == "codex executor (planegate)"
            assert (worktree / "src/calc.py").read_text() == MUL
            checks = await call(client, "run_checks", run=run, task="calc")
            assert checks["all_passed"] is True
    invocation = json.loads(log.read_text().splitlines()[0])
    argv = invocation["argv"]
    assert argv[:6] == ["exec", "--json", "--skip-git-repo-check", "-s", "workspace-write", "-C"] or argv[1:7] == [
        "exec",
        "--json",
        "--skip-git-repo-check",
        "-s",
        "workspace-write",
        "-C",
    ]
    assert ".planegate-task.md" in invocation["prompt"] and "# Task calc" in invocation["prompt"]
    artifacts = {Path(r["path"]).name for r in Store(fresh_machine / "ledger.db").rows("SELECT path FROM artifacts")}
    assert {"events.jsonl", "last-message.md"} <= artifacts


async def test_the_command_executor_and_its_failure_are_recorded(tmp_path: Path, fresh_machine: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(
        "import os, pathlib, sys\n"
        "pathlib.Path('src/calc.py').write_text(open('src/calc.py').read() + '\\n# touched by ' + "
        "os.environ['PLANEGATE_TASK'] + '\\n')\n"
        "print('partial work'); sys.exit(3)\n"
    )
    repo = calc_repo(tmp_path / "calc")
    (repo / ".planegate" / "policy.toml").write_text(
        (repo / ".planegate" / "policy.toml").read_text()
        + f"\n[executor]\ncommand = {json.dumps([sys.executable, str(script)])}\n"
    )
    commit_all(repo, "command executor")
    run = plan(fresh_machine, repo)
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=0)
    with anyio.fail_after(60):
        async with Client(server) as client:
            dispatched = await call(client, "dispatch_task", run=run, task="calc", executor="command")
            job = await call(client, "get_job", job=dispatched["job"], wait_seconds=30)
            assert job["state"] == "failed" and "exited 3" in job["error"] and "committed" in job["error"]
            worktree = Path(dispatched["worktree"])
            assert "# touched by calc" in (worktree / "src/calc.py").read_text()
            assert git(worktree, "status", "--porcelain") == ""
            text = await refused(client, "dispatch_task", run=run, task="text", executor="codex")
            assert "codex" in text


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_killed_worker_s_job_is_reclaimed_and_finished_by_another(tmp_path: Path, fresh_machine: Path) -> None:
    marker = tmp_path / "started"
    check = [sys.executable, "-c", f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(2)"]
    repo = calc_repo(tmp_path / "calc")
    (repo / ".planegate" / "policy.toml").write_text(
        f"require_review = false\nrequire_red_green = false\n\n[checks]\nslow = {json.dumps(check)}\n"
    )
    commit_all(repo, "slow check")
    env = open_env(fresh_machine)
    run = planned_run(env, repo)
    from planegate.tools.execution.checks import start_checks
    from planegate.tools.execution.dispatch import dispatch_task

    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL})
    commit_all(worktree, "mul")
    job = start_checks(env, run, "calc")
    worker_env = {**os.environ, "PLANEGATE_HOME": str(fresh_machine), "PLANEGATE_JOB_LEASE_S": "2"}
    cmd = [sys.executable, "-m", "planegate.server.cli", "worker"]
    first = subprocess.Popen(cmd, env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(marker.exists, 30, "the first worker to start the check")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = time.monotonic()
        second = subprocess.run([*cmd, "--exit-when-idle"], env=worker_env, capture_output=True, text=True, timeout=90)
        assert second.returncode == 0, second.stderr
    finally:
        if first.poll() is None:
            first.kill()
    row = env.store.one("SELECT status, attempts FROM jobs WHERE id = ?", (job,))
    assert row == {"status": "succeeded", "attempts": 2}
    assert time.monotonic() - killed_at >= 2  # the second attempt ran the whole check again
    released = env.store.one("SELECT payload FROM events WHERE kind = 'job.lease_released'")
    assert released is not None and json.loads(released["payload"])["why"] == "its worker died"  # not the lease
    evidence = env.store.rows("SELECT label, exit_code FROM evidence WHERE run_id = ?", (run,))
    assert evidence == [{"label": "direct", "exit_code": 0}]
    assert verify_ledger(env.store).ok
    env.close()


async def test_two_server_processes_dispatching_one_task_give_one_winner(tmp_path: Path, fresh_machine: Path) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = plan(fresh_machine, repo)
    outcomes: list[dict[str, Any]] = []

    async def dispatch(name: str, ready: anyio.Event, go: anyio.Event) -> None:
        async with Client(serve_params(fresh_machine)) as client:
            await client.list_tools()
            ready.set()
            await go.wait()
            result = await client.call_tool("dispatch_task", {"run": run, "task": "calc"})
            text = " ".join(getattr(b, "text", "") for b in result.content)
            outcomes.append({"error": result.is_error, "text": text})

    with anyio.fail_after(90):
        go = anyio.Event()
        readies = [anyio.Event(), anyio.Event()]
        async with anyio.create_task_group() as group:
            for index, ready in enumerate(readies):
                group.start_soon(dispatch, f"s{index}", ready, go)
            for ready in readies:
                await ready.wait()
            go.set()
    assert sorted(o["error"] for o in outcomes) == [False, True]
    loser = next(o for o in outcomes if o["error"])
    said = ("already dispatched", "changed while dispatching", "being dispatched by another call")
    assert any(words in loser["text"] for words in said), loser["text"]
    assert [p.name for p in (fresh_machine / "worktrees" / run).iterdir()] == ["calc"]
    listed = git(repo, "worktree", "list", "--porcelain").count("worktree ")
    assert listed == 2  # the repository itself and the one task worktree
    with Store(fresh_machine / "ledger.db") as store:
        assert store.scalar("SELECT COUNT(*) FROM events WHERE kind = 'task.dispatched'") == 1
        assert verify_ledger(store).ok
