"""Notifications when a human is needed: sent once, to a scripted command that records its stdin.

The command is a small Python script named in the repository's policy (``[notify] command``); it
writes what it was given (stdin, argv, the names in its environment) to a folder. The situations
are real: a job planegate gave up on, accept_run refused for want of a human's yes (through the
MCP server) and asked in the client, a manual review waiting; a real `planegate worker` process
delivers one of them. Failures of the command are recorded and never retried; without a command,
``notify-send`` (here a scripted stand-in on PATH) gets it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import ElicitResult

from planegate.server.app import build_server
from planegate.tools.config import Settings
from planegate.tools.env import Env
from planegate.tools.execution.jobs import claim, enqueue
from planegate.tools.report.notify import notifications, notify_due
from planegate.tools.review.review import request_review
from tests.execution import calc_repo, drain, finish_calc, open_env, planned_run
from tests.helpers import commit_all
from tests.test_approval import release_ready, signed_repo
from tests.test_review import review_repo

RECORDER = """\
import json, os, sys, time
out = sys.argv[1]
mode = sys.argv[2] if len(sys.argv) > 2 else "ok"
payload = sys.stdin.read()
name = os.path.join(out, f"{time.time_ns()}-{os.getpid()}.json")
with open(name, "w") as handle:
    json.dump({"stdin": payload, "argv": sys.argv, "env": sorted(os.environ), "pid": os.getpid()}, handle)
if mode == "fail":
    print("the webhook said 500", file=sys.stderr)
    sys.exit(1)
if mode == "hang":
    time.sleep(60)
"""


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    out = tmp_path / "told"
    out.mkdir()
    return script, out


def told(out: Path) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    for item in found:
        item["payload"] = json.loads(item["stdin"]) if item["stdin"] else None
    return found


def notify_policy(script: Path, out: Path, mode: str = "ok", timeout_s: float = 10) -> str:
    command = [sys.executable, str(script), str(out), mode]
    return f'\n[notify]\ncommand = {json.dumps(command)}\ntimeout_s = {timeout_s}\nenv_allow = ["NOTIFY_TOKEN"]\n'


def with_notify(repo: Path, tail: str) -> Path:
    policy = repo / ".planegate" / "policy.toml"
    policy.write_text(policy.read_text() + tail)
    commit_all(repo, "notify")
    return repo


def stuck_job(env: Env, run: str) -> int:
    """A job planegate gives up on: its only attempt's worker never came back."""
    with env.write() as w:
        job = enqueue(w, run=run, task="calc", kind="executor", payload={"executor": "command"}, max_attempts=1)
    assert claim(env, "gone", lease_s=0.01) is not None
    time.sleep(0.05)
    assert claim(env, "next", lease_s=30) is None
    return job


def test_a_job_in_attention_is_sent_once_with_its_next_step_and_a_scrubbed_environment(
    tmp_path: Path, fresh_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_TOKEN", "allowed")
    monkeypatch.setenv("SECRET_TOKEN", "never passed")
    script, out = recorder(tmp_path)
    env = open_env(fresh_machine)
    run = planned_run(env, with_notify(calc_repo(tmp_path / "calc"), notify_policy(script, out)))
    job = stuck_job(env, run)
    notify_due(env)
    notify_due(env)
    other = open_env(fresh_machine)  # another process on the same ledger
    notify_due(other)
    other.close()
    [item] = told(out)
    payload = item["payload"]
    assert payload["kind"] == "job_attention" and payload["key"] == f"job-attention:{job}"
    assert (payload["run"], payload["task"], payload["job"]) == (run, "calc", job)
    assert payload["title"] == f"planegate: job {job} (executor of calc) needs attention"
    assert "stopped retrying" in payload["message"] and "run_checks" in payload["next_step"]
    assert payload["ledger"] == str(fresh_machine / "ledger.db")
    assert "NOTIFY_TOKEN" in item["env"] and "SECRET_TOKEN" not in item["env"] and "PATH" in item["env"]
    [row] = notifications(env, run)
    assert (row["status"], row["channel"], row["error"]) == ("sent", "command", None)
    env.close()


def test_a_real_worker_process_delivers_what_needs_a_human(tmp_path: Path, fresh_machine: Path) -> None:
    script, out = recorder(tmp_path)
    env = open_env(fresh_machine)
    run = planned_run(env, with_notify(calc_repo(tmp_path / "calc"), notify_policy(script, out)))
    stuck_job(env, run)
    env.close()
    done = subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", "worker", "--exit-when-idle"],
        env={**os.environ, "PLANEGATE_HOME": str(fresh_machine)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [i["payload"]["kind"] for i in told(out)] == ["job_attention"]


@pytest.mark.anyio
async def test_an_approval_waiting_is_told_once_whether_refused_or_asked_in_the_client(
    tmp_path: Path, fresh_machine: Path
) -> None:
    script, out = recorder(tmp_path)
    repo = with_notify(signed_repo(tmp_path / "calc", [], mode="interactive"), notify_policy(script, out))
    env = open_env(fresh_machine)
    run = release_ready(env, repo)  # refused in-process: not through the server, so not a notice
    notify_due(env)
    assert told(out) == []
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=3600)
    with anyio.fail_after(60):
        async with Client(server) as client:
            for _ in range(2):
                refused = await client.call_tool("accept_run", {"run": run})
                assert refused.is_error and (refused.structured_content or {})["disposition"] == "needs_human"

        async def decline(context: Any, params: Any) -> ElicitResult:
            return ElicitResult(action="decline")

        asking = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=3600)
        async with Client(asking, elicitation_callback=decline) as client:
            declined = await client.call_tool("accept_run", {"run": run})
            assert declined.is_error and "declined" in declined.content[0].text
    notify_due(env)
    [item] = told(out)
    payload = item["payload"]
    head = env.repo(str(repo)).branch_sha(env.run_row(run)["integration_branch"])
    assert payload["kind"] == "approval_waiting" and payload["key"] == f"approval:{run}:{head}"
    assert f"`planegate approve {run}`" in payload["next_step"] and payload["head"] == head
    assert env.store.scalar("SELECT COUNT(*) FROM events WHERE kind = 'gate.refused'") == 2
    env.close()


def test_a_manual_review_waiting_is_told_once(tmp_path: Path, fresh_machine: Path) -> None:
    script, out = recorder(tmp_path)
    env = open_env(fresh_machine)
    run = planned_run(env, with_notify(review_repo(tmp_path / "calc", reviewer="manual"), notify_policy(script, out)))
    finish_calc(env, run)
    review = request_review(env, run, "calc").review
    notify_due(env)
    notify_due(env)
    [item] = told(out)
    assert item["payload"]["kind"] == "review_waiting" and item["payload"]["review"] == review
    assert f"planegate review submit {review}" in item["payload"]["next_step"]
    env.close()


@pytest.mark.parametrize(("mode", "said"), [("fail", "exited 1: the webhook said 500"), ("hang", "did not finish")])
def test_a_failing_or_hanging_command_is_recorded_logged_and_not_retried(
    tmp_path: Path, fresh_machine: Path, caplog: pytest.LogCaptureFixture, mode: str, said: str
) -> None:
    script, out = recorder(tmp_path)
    env = open_env(fresh_machine)
    run = planned_run(env, with_notify(calc_repo(tmp_path / "calc"), notify_policy(script, out, mode, timeout_s=1)))
    stuck_job(env, run)
    started = time.monotonic()
    notify_due(env)
    assert time.monotonic() - started < 8
    notify_due(env)
    [item] = told(out)  # once: a failure is not sent again
    [row] = notifications(env, run)
    assert row["status"] == "failed" and said in row["error"]
    assert any(said in r.getMessage() for r in caplog.records if r.name == "planegate.notify")
    if mode == "hang":
        with pytest.raises(ProcessLookupError):
            os.kill(item["pid"], 0)  # its process group was killed
    env.close()


def test_without_a_command_notify_send_gets_it_and_without_either_it_is_recorded_as_skipped(
    tmp_path: Path, fresh_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "notify-send.argv"
    fake = bin_dir / "notify-send"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nopen({str(record)!r}, 'w').write(json.dumps(sys.argv))\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env = open_env(fresh_machine)
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    job = stuck_job(env, run)
    notify_due(env)
    argv = json.loads(record.read_text())
    assert argv[1] == "--app-name=planegate" and argv[2] == f"planegate: job {job} (executor of calc) needs attention"
    assert "Next: " in argv[3]
    quiet = planned_run(env, with_notify(calc_repo(tmp_path / "quiet"), "\n[notify]\ndesktop = false\n"))
    stuck_job(env, quiet)
    notify_due(env)
    [row] = notifications(env, quiet)
    assert (row["status"], row["channel"]) == ("skipped", "none")
    env.close()


def test_a_review_whose_browser_cannot_be_reached_is_told_as_needing_a_human(
    tmp_path: Path, fresh_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLANEGATE_CDP_URL", "http://127.0.0.1:9")  # nothing listens there
    script, out = recorder(tmp_path)
    repo = calc_repo(tmp_path / "calc", require_review=True)
    with_notify(repo, '\n[review]\nreviewer = "chatgpt"\ntimeout_s = 5\n' + notify_policy(script, out))
    env = open_env(fresh_machine)
    run = planned_run(env, repo)
    finish_calc(env, run)
    review = request_review(env, run, "calc").review
    assert drain(env) == ["failed"]
    notify_due(env)
    [item] = told(out)
    payload = item["payload"]
    assert payload["kind"] == "job_needs_human" and payload["review"] == review
    assert "DevTools endpoint" in payload["message"] and "planegate browser doctor" in payload["next_step"]
    assert f"request_review(run={run!r}, task='calc')" in payload["next_step"]
    env.close()
