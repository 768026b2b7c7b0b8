"""Every failed job and refused call says what kind of failure it is, for an agent to branch on.

Real processes throughout: the checks and executors are real commands run by the server's own
job worker, in real git worktrees, through the MCP client in memory. The browser's selector
drift is covered where real Chromium drives the imitation of ChatGPT (test_review_chatgpt).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from planegate.server.app import build_server
from planegate.tools.config import Settings
from planegate.tools.errors import DISPOSITIONS
from planegate.tools.execution.jobs import claim, enqueue, job_disposition
from planegate.tools.execution.jobview import job_result
from tests.execution import MUL, PYTEST, calc_repo, drain, open_env, planned_run, write
from tests.helpers import commit_all

pytestmark = pytest.mark.anyio


def repo_with(tmp_path: Path, policy: str) -> Path:
    repo = calc_repo(tmp_path / "calc")
    (repo / ".planegate" / "policy.toml").write_text(policy)
    commit_all(repo, "policy")
    return repo


def plan(home: Path, repo: Path) -> str:
    env = open_env(home)
    try:
        return planned_run(env, repo)
    finally:
        env.close()


async def answer(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """The structured answer of a call, result or error alike."""
    result = await client.call_tool(tool, arguments)
    data = dict(result.structured_content or {})
    data["is_error"] = bool(result.is_error)
    data["text"] = " ".join(getattr(block, "text", "") for block in result.content)
    return data


async def checks_of(home: Path, repo: Path, files: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Dispatch calc, commit ``files``, run its checks to the end: (run_checks' answer, get_job's)."""
    run = plan(home, repo)
    server = build_server(Settings(home=home, actor="agent:test"), worker_delay_s=0)
    with anyio.fail_after(90):
        async with Client(server) as client:
            worktree = Path((await answer(client, "dispatch_task", run=run, task="calc"))["worktree"])
            write(worktree, files)
            commit_all(worktree, "work")
            checks = await answer(client, "run_checks", run=run, task="calc")
            job = await answer(client, "get_job", job=checks["job"], wait_seconds=30)
    return checks, job


async def test_a_failing_check_is_check_failed_in_run_checks_and_get_job(tmp_path: Path, fresh_machine: Path) -> None:
    lint = [sys.executable, "-c", "import sys; print('E501 line too long'); sys.exit(3)"]
    policy = f"require_review = false\nrequire_red_green = false\n\n[checks]\ntest = {json.dumps(PYTEST)}\n"
    repo = repo_with(tmp_path, policy + f"lint = {json.dumps(lint)}\n")
    checks, job = await checks_of(fresh_machine, repo, {"src/calc.py": MUL})
    assert (checks["state"], checks["all_passed"], checks["disposition"]) == ("failed", False, "check_failed")
    assert (job["state"], job["disposition"]) == ("failed", "check_failed")
    assert "fix what failed" in checks["next_step"]


async def test_a_check_past_its_timeout_is_timeout(tmp_path: Path, fresh_machine: Path) -> None:
    slow = [sys.executable, "-c", "import time; time.sleep(30)"]
    policy = "require_review = false\nrequire_red_green = false\ncheck_timeout_s = 1\n\n"
    policy += f"[checks]\nslow = {json.dumps(slow)}\n"
    repo = repo_with(tmp_path, policy)
    checks, job = await checks_of(fresh_machine, repo, {"src/calc.py": MUL})
    assert (checks["state"], checks["disposition"]) == ("failed", "timeout")
    assert job["disposition"] == "timeout" and "timed out after" in job["checks"][0]["summary"]


@pytest.mark.parametrize(
    ("command", "disposition", "said"),
    [
        (["/nonexistent/planegate-agent"], "bad_config", "is not an executable file"),
        (["planegate-no-such-agent"], "bad_config", "was not found on PATH"),
        ([sys.executable, "-c", "import sys; sys.exit(2)"], "executor_failed", "exited 2"),
        ([sys.executable, "-c", "import time; time.sleep(30)"], "timeout", "timed out"),
    ],
)
async def test_an_executor_that_cannot_start_fails_or_runs_out_of_time_says_which(
    tmp_path: Path, fresh_machine: Path, command: list[str], disposition: str, said: str
) -> None:
    policy = (
        f"require_review = false\n\n[checks]\ntest = {json.dumps(PYTEST)}\n\n"
        f"[executor]\ncommand = {json.dumps(command)}\ntimeout_s = 1\n"
    )
    run = plan(fresh_machine, repo_with(tmp_path, policy))
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=0)
    with anyio.fail_after(90):
        async with Client(server) as client:
            dispatched = await answer(client, "dispatch_task", run=run, task="calc", executor="command")
            job = await answer(client, "get_job", job=dispatched["job"], wait_seconds=30)
    assert (job["state"], job["disposition"]) == ("failed", disposition), job["error"]
    assert said in job["error"]


async def test_a_review_whose_browser_cannot_be_reached_needs_a_human(
    tmp_path: Path, fresh_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLANEGATE_CDP_URL", "http://127.0.0.1:9")  # nothing listens there
    policy = (
        f"require_red_green = false\n\n[checks]\ntest = {json.dumps(PYTEST)}\n\n"
        '[review]\nreviewer = "chatgpt"\ntimeout_s = 5\n'
    )
    run = plan(fresh_machine, repo_with(tmp_path, policy))
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=0)
    with anyio.fail_after(120):
        async with Client(server) as client:
            worktree = Path((await answer(client, "dispatch_task", run=run, task="calc"))["worktree"])
            write(worktree, {"src/calc.py": MUL})
            commit_all(worktree, "mul")
            assert (await answer(client, "run_checks", run=run, task="calc"))["all_passed"]
            requested = await answer(client, "request_review", run=run, task="calc")
            review = await answer(client, "get_review", review=requested["review"], wait_seconds=45)
            if review["state"] not in ("failed",):  # the review job has a second attempt
                review = await answer(client, "get_review", review=requested["review"], wait_seconds=45)
            job = await answer(client, "get_job", job=requested["job"], wait_seconds=0)
    assert (review["state"], review["disposition"]) == ("failed", "needs_human"), review["error"]
    assert "DevTools endpoint" in review["error"] and job["disposition"] == "needs_human"


async def test_refused_calls_carry_a_disposition_line_and_structured_content(
    tmp_path: Path, fresh_machine: Path
) -> None:
    run = plan(fresh_machine, calc_repo(tmp_path / "calc"))
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=3600)
    with anyio.fail_after(60):
        async with Client(server) as client:
            unknown = await answer(client, "get_status", run="nope")
            early = await answer(client, "accept_task", run=run, task="calc")
            gates = await answer(client, "accept_run", run=run)
    for refusal, disposition in ((unknown, "bad_input"), (early, "not_ready"), (gates, "not_ready")):
        assert refusal["is_error"] and refusal["disposition"] == disposition, refusal["text"]
        assert refusal["text"].startswith(f"disposition: {disposition}\n")
        assert refusal["next_step"] == DISPOSITIONS[disposition] and refusal["incident"] is None
        assert refusal["error"] == refusal["text"].split("\n", 1)[1]


def test_a_job_out_of_attempts_is_needs_human(fresh_machine: Path, tmp_path: Path) -> None:
    env = open_env(fresh_machine)
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    with env.write() as w:
        job_id = enqueue(w, run=run, task="calc", kind="executor", payload={"executor": "command"}, max_attempts=1)
    assert claim(env, "gone-worker", lease_s=0.01) is not None  # its worker never comes back
    anyio.run(anyio.sleep, 0.05)
    assert claim(env, "next-worker", lease_s=30) is None  # attempts used up: attention, not a second run
    row = env.store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert row is not None and row["status"] == "attention" and job_disposition(row) == "needs_human"
    assert job_result(env, job_id).disposition == "needs_human"
    env.close()


# --- incidents: what planegate did not foresee -------------------------------------------------


async def test_a_tool_that_crashes_answers_with_an_incident_id_and_records_the_traceback(
    tmp_path: Path, fresh_machine: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = open_env(fresh_machine)
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    with env.write() as w:
        job = enqueue(w, run=run, task=None, kind="checks", payload={"checks": []})
    env.close()
    # jobs are bookkeeping no event vouches for: an edit outside planegate reaches the code as it is
    conn = sqlite3.connect(fresh_machine / "ledger.db")
    conn.execute("UPDATE jobs SET payload = '{not json' WHERE id = ?", (job,))
    conn.commit()
    conn.close()
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=3600)
    with anyio.fail_after(60):
        async with Client(server) as client:
            crashed = await answer(client, "get_job", job=job, wait_seconds=0)
            still = await answer(client, "get_status", run=run)
    assert crashed["is_error"] and crashed["disposition"] == "infrastructure"
    incident = crashed["incident"]
    assert incident and incident.startswith("inc-") and f"(incident {incident};" in crashed["text"]
    assert "get_job failed unexpectedly: JSONDecodeError" in crashed["text"] and "Traceback" not in crashed["text"]
    assert not still["is_error"]
    env = open_env(fresh_machine)
    row = env.store.one("SELECT * FROM incidents WHERE id = ?", (incident,))
    assert row is not None and row["place"] == "tool get_job" and "JSONDecodeError" in row["traceback"]
    assert json.loads(row["context"])["arguments"] == {"job": job, "wait_seconds": 0}
    env.close()
    assert any(incident in r.getMessage() and "Traceback" in r.getMessage() for r in caplog.records)


def test_a_job_whose_handler_crashes_fails_as_infrastructure_with_the_incident_in_its_error(
    tmp_path: Path, fresh_machine: Path
) -> None:
    env = open_env(fresh_machine)
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    with env.write() as w:  # a checks job without the head it is to check: the handler meets a KeyError
        job_id = enqueue(w, run=run, task=None, kind="checks", payload={"checks": ["test"]})
    assert drain(env) == ["failed"]
    row = env.store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert row is not None and row["disposition"] == "infrastructure"
    incident = row["error"].split("(incident ", 1)[1].split(";", 1)[0]
    recorded = env.store.one("SELECT place, error FROM incidents WHERE id = ?", (incident,))
    assert recorded == {"place": f"job {job_id} (checks)", "error": "KeyError: 'head_sha'"}
    env.close()
