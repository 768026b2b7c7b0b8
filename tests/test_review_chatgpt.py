"""Reviews through the ChatGPT bridge: real Chromium over CDP driving the local imitation of
ChatGPT, with the review job run by planegate's own workers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from planegate.bridge import LaunchedBrowser
from planegate.store import verify_ledger
from planegate.tools.env import Env
from planegate.tools.review.review import request_review, review_result
from tests.execution import calc_repo, drain, finish_calc, open_env, planned_run
from tests.fakechat import FakeChat
from tests.helpers import commit_all

pytest_plugins = ["tests.fakechat.fixtures"]
pytestmark = pytest.mark.browser


def approving(prompt: str, files: list[str], turn: int) -> str:
    nonce = re.search(r'"review_id": "([0-9a-f]{24})"', prompt)
    assert nonce, "the prompt carries the nonce"
    body = {
        "review_id": nonce.group(1),
        "verdict": "approve",
        "summary": f"read {', '.join(files)}",
        "findings": [{"severity": "low", "file": "src/calc.py", "line": 4, "title": "name the operands"}],
    }
    return f"Looks right.\n\nBEGIN_PLANEGATE_REVIEW\n```json\n{json.dumps(body)}\n```\nEND_PLANEGATE_REVIEW"


@pytest.fixture
def chatgpt_run(
    tmp_path: Path,
    fresh_machine: Path,
    chromium: LaunchedBrowser,
    fakechat: FakeChat,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Env, str]]:
    monkeypatch.setenv("PLANEGATE_CDP_URL", chromium.endpoint.url)
    fakechat.responder = approving
    repo = calc_repo(tmp_path / "calc", require_review=True)
    policy = repo / ".planegate" / "policy.toml"
    policy.write_text(
        policy.read_text() + f'\n[review]\nreviewer = "chatgpt"\nbase_url = "{fakechat.url}"\nproject = "planegate"\n'
    )
    commit_all(repo, "chatgpt reviews")
    env = open_env(fresh_machine)
    run = planned_run(env, repo)
    finish_calc(env, run)
    yield env, run
    env.close()


def test_a_task_is_reviewed_in_the_chatgpt_session_with_the_packet_uploaded(
    chatgpt_run: tuple[Env, str], fakechat: FakeChat
) -> None:
    env, run = chatgpt_run
    requested = request_review(env, run, "calc")
    assert drain(env) == ["succeeded"]
    result = review_result(env, requested.review)
    assert (result.state, result.verdict) == ("completed", "approve")
    assert result.conversation_url and "/c/" in result.conversation_url
    assert [f.title for f in result.findings] == ["name the operands"]
    [prompt] = fakechat.prompts
    assert sorted(prompt.file_names) == ["diff.patch", "envelope.md", "evidence.md", "requirements.md", "tests.md"]
    assert prompt.project == "planegate"
    assert b"def mul(a, b)" in prompt.files["diff.patch"]
    assert env.task_row(run, "calc")["status"] == "approved"


def test_selector_drift_fails_the_review_and_is_recorded_as_an_incident(
    chatgpt_run: tuple[Env, str], fakechat: FakeChat
) -> None:
    env, run = chatgpt_run
    fakechat.variant = "drift"
    requested = request_review(env, run, "calc")
    assert drain(env) == ["failed"]
    result = review_result(env, requested.review)
    assert result.state == "failed" and "selector" in (result.error or "")
    assert not fakechat.prompts
    risks = env.store.rows("SELECT kind, detail FROM risks WHERE run_id = ?", (run,))
    assert [r["kind"] for r in risks] == ["incident"] and "drift" in risks[0]["detail"]
    assert env.store.scalar("SELECT COUNT(*) FROM events WHERE kind = 'bridge.incident'") == 1
    assert env.task_row(run, "calc")["status"] == "in_progress"


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_review_job_whose_worker_died_is_finished_by_another_without_sending_again(
    chatgpt_run: tuple[Env, str], fakechat: FakeChat, fresh_machine: Path, chromium: LaunchedBrowser
) -> None:
    env, run = chatgpt_run
    fakechat.thinking_s = 4.0  # the reply is still coming when the first worker dies
    requested = request_review(env, run, "calc")
    worker_env = {
        **os.environ,
        "PLANEGATE_HOME": str(fresh_machine),
        "PLANEGATE_JOB_LEASE_S": "2",
        "PLANEGATE_CDP_URL": chromium.endpoint.url,
    }
    command = [sys.executable, "-m", "planegate.server.cli", "worker"]
    first = subprocess.Popen(command, env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: review_result(env, requested.review).conversation_url is not None, 60, "the prompt to be sent")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = subprocess.run(
            [*command, "--exit-when-idle"], env=worker_env, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 0, second.stderr
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
    result = review_result(env, requested.review)
    assert (result.state, result.verdict) == ("completed", "approve")
    assert len(fakechat.prompts) == 1, "the restarted job re-read the conversation instead of sending again"
    job = env.store.one("SELECT status, attempts FROM jobs WHERE id = ?", (requested.job,))
    assert job == {"status": "succeeded", "attempts": 2}
    assert verify_ledger(env.store).ok
