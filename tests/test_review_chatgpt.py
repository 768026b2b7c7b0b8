"""Reviews through the ChatGPT bridge: real Chromium over CDP driving the local imitation of
ChatGPT, with the review job run by planegate's own workers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from planegate.bridge import LaunchedBrowser
from planegate.store import now_iso, verify_ledger
from planegate.tools.env import Env
from planegate.tools.review.review import request_review, review_result, review_row
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


def chatgpt_setup(
    tmp_path: Path, fresh_machine: Path, fakechat: FakeChat, review: str = "", **settings: Any
) -> tuple[Env, str, Path]:
    """A run whose task ``calc`` is finished and checked, reviewed by ``chatgpt`` on the fake site
    (``review``: more ``[review]`` lines for the policy)."""
    fakechat.responder = approving
    repo = calc_repo(tmp_path / "calc", require_review=True)
    policy = repo / ".planegate" / "policy.toml"
    policy.write_text(
        policy.read_text()
        + f'\n[review]\nreviewer = "chatgpt"\nbase_url = "{fakechat.url}"\nproject = "planegate"\n{review}'
    )
    commit_all(repo, "chatgpt reviews")
    env = open_env(fresh_machine, **settings)
    run = planned_run(env, repo)
    finish_calc(env, run)
    return env, run, repo


@pytest.fixture
def chatgpt_run(
    tmp_path: Path,
    fresh_machine: Path,
    chromium: LaunchedBrowser,
    fakechat: FakeChat,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Env, str]]:
    monkeypatch.setenv("PLANEGATE_CDP_URL", chromium.endpoint.url)
    env, run, _ = chatgpt_setup(tmp_path, fresh_machine, fakechat)
    yield env, run
    env.close()


def artifacts_of(env: Env, review: str) -> dict[str, dict[str, object]]:
    rows = env.store.rows("SELECT name, path, sha256 FROM artifacts WHERE owner = ?", (f"review:{review}",))
    return {r["name"]: r for r in rows}


def test_a_task_is_reviewed_in_the_chatgpt_session_with_the_packet_inline(
    chatgpt_run: tuple[Env, str], fakechat: FakeChat
) -> None:
    env, run = chatgpt_run
    requested = request_review(env, run, "calc")
    assert drain(env) == ["succeeded"]
    result = review_result(env, requested.review)
    assert (result.state, result.verdict) == ("completed", "approve")
    assert result.conversation_url and "/c/" in result.conversation_url and "WEB:" not in result.conversation_url
    assert [f.title for f in result.findings] == ["name the operands"]
    [prompt] = fakechat.prompts
    assert prompt.file_names == []  # the packet fits, so it goes inline: no upload can go wrong
    assert "def mul(a, b)" in prompt.text and "## The change" in prompt.text
    assert prompt.project == "planegate"
    bridge = json.loads(Path(str(artifacts_of(env, requested.review)["bridge.json"]["path"])).read_text())
    assert (bridge["delivery"], bridge["read_via"], bridge["proof"]) == ("inline", "copy", "end marker")
    assert result.notes == [] and result.progress is None
    assert env.task_row(run, "calc")["status"] == "approved"


def test_a_packet_the_composer_cuts_is_sent_as_files(chatgpt_run: tuple[Env, str], fakechat: FakeChat) -> None:
    env, run = chatgpt_run
    fakechat.insert_limit = 2500  # the live composer can cut a long insert without a word
    requested = request_review(env, run, "calc")
    assert drain(env) == ["succeeded"], review_result(env, requested.review).error
    result = review_result(env, requested.review)
    assert (result.state, result.verdict) == ("completed", "approve")
    [prompt] = fakechat.prompts
    assert sorted(prompt.file_names) == ["diff.patch", "envelope.md", "evidence.md", "requirements.md", "tests.md"]
    assert b"def mul(a, b)" in prompt.files["diff.patch"]
    assert prompt.text.startswith("You are the second-model reviewer") and "## The change" not in prompt.text
    assert any("was cut" in note for note in result.notes)


def test_selector_drift_fails_the_review_with_an_incident_and_the_page_kept_as_artifacts(
    chatgpt_run: tuple[Env, str], fakechat: FakeChat
) -> None:
    env, run = chatgpt_run
    fakechat.variant = "drift"
    requested = request_review(env, run, "calc")
    assert drain(env) == ["failed"]
    result = review_result(env, requested.review)
    assert result.state == "failed" and "selector" in (result.error or "") and "[stage send]" in (result.error or "")
    assert result.disposition == "needs_human"  # a person updates the selectors; retrying alone cannot help
    assert not fakechat.prompts
    risks = env.store.rows("SELECT kind, detail FROM risks WHERE run_id = ?", (run,))
    assert [r["kind"] for r in risks] == ["incident"] and "drift" in risks[0]["detail"]
    assert env.store.scalar("SELECT COUNT(*) FROM events WHERE kind = 'bridge.incident'") == 1
    assert env.task_row(run, "calc")["status"] == "in_progress"
    saved = {name: row for name, row in artifacts_of(env, requested.review).items() if name.startswith("bridge-send")}
    assert sorted(Path(name).suffix for name in saved) == [".json", ".png"]
    for row in saved.values():
        assert hashlib.sha256(Path(str(row["path"])).read_bytes()).hexdigest() == row["sha256"]
    event = env.store.one("SELECT payload FROM events WHERE kind = 'review.failed'")
    assert event is not None and set(json.loads(event["payload"])["diagnostics"]) == set(saved)
    assert verify_ledger(env.store).ok


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


def _pending_review(
    tmp_path: Path, fresh_machine: Path, fakechat: FakeChat, monkeypatch: pytest.MonkeyPatch, thinking_s: float
) -> tuple[Env, str, str]:
    """A review whose reply is still thinking when its 2 s deadline passes: it becomes pending."""
    env, run, _ = chatgpt_setup(tmp_path, fresh_machine, fakechat, "timeout_s = 2\n", review_reread_s=1)
    fakechat.variant, fakechat.slow_thinking_s = "slow", thinking_s
    requested = request_review(env, run, "calc")
    assert drain(env) == ["succeeded"]
    return env, run, requested.review


def test_a_reply_still_thinking_at_the_deadline_is_pending_and_a_worker_reads_it_later(
    tmp_path: Path,
    fresh_machine: Path,
    chromium: LaunchedBrowser,
    fakechat: FakeChat,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLANEGATE_CDP_URL", chromium.endpoint.url)
    env, run, review = _pending_review(tmp_path, fresh_machine, fakechat, monkeypatch, thinking_s=8.0)

    pending = review_result(env, review)
    assert pending.state == "pending" and pending.verdict is None
    assert pending.conversation_url and "/c/" in pending.conversation_url
    assert pending.progress and "ChatGPT is thinking (pro thinking)" in pending.progress
    assert "re-reads" in pending.next_step and "without sending again" in pending.next_step
    assert env.task_row(run, "calc")["status"] == "in_review"
    assert env.store.scalar("SELECT COUNT(*) FROM events WHERE kind = 'review.pending'") == 1
    again = request_review(env, run, "calc")
    assert again.review == review, "a pending review of this commit is under way; no second one is sent"

    turn = fakechat.turn(fakechat.conversation_id(pending.conversation_url))
    _wait(lambda: time.time() > turn.finished_at + 0.5, 30, "the reply to finish in the browser")
    worker = subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", "worker", "--exit-when-idle"],
        env={**os.environ, "PLANEGATE_HOME": str(fresh_machine)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr

    done = review_result(env, review)
    assert (done.state, done.verdict) == ("completed", "approve"), done.error
    assert len(fakechat.prompts) == 1, "the pending review was re-read, never sent again"
    assert env.task_row(run, "calc")["status"] == "approved"
    kinds = [r["kind"] for r in env.store.rows("SELECT kind FROM events WHERE kind LIKE 'review.%' ORDER BY id")]
    assert kinds[-3:] == ["review.pending", "review.reread_queued", "review.completed"]
    assert verify_ledger(env.store).ok


def test_get_review_queues_the_re_read_of_a_pending_review_that_is_due(
    tmp_path: Path,
    fresh_machine: Path,
    chromium: LaunchedBrowser,
    fakechat: FakeChat,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mcp import Client

    from planegate.server.app import build_server
    from planegate.tools.config import Settings

    monkeypatch.setenv("PLANEGATE_CDP_URL", chromium.endpoint.url)
    env, _, review = _pending_review(tmp_path, fresh_machine, fakechat, monkeypatch, thinking_s=4.0)
    first_job = review_row(env, review)["job_id"]
    _wait(lambda: (review_row(env, review)["reread_after"] or "") < now_iso(), 10, "the re-read to fall due")

    async def get_review() -> dict[str, object]:
        # The server's own worker stays asleep: only get_review can have queued the re-read.
        server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=3600)
        async with Client(server) as client:
            result = await client.call_tool("get_review", {"review": review, "wait_seconds": 0})
            return dict(result.structured_content or {})

    seen = anyio.run(get_review)

    assert seen["state"] == "pending" and "ChatGPT is thinking" in str(seen["progress"])
    row = review_row(env, review)
    assert row["job_id"] != first_job and row["reread_after"] is None
    assert env.store.one("SELECT status FROM jobs WHERE id = ?", (row["job_id"],)) == {"status": "queued"}
    assert drain(env) == ["succeeded"]
    assert review_result(env, review).verdict == "approve"
    assert len(fakechat.prompts) == 1


def test_a_model_the_page_does_not_confirm_is_noted_or_refused_by_the_policy(
    tmp_path: Path,
    fresh_machine: Path,
    chromium: LaunchedBrowser,
    fakechat: FakeChat,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLANEGATE_CDP_URL", chromium.endpoint.url)
    fakechat.variant = "pill_unverifiable"
    env, run, _ = chatgpt_setup(tmp_path / "lenient", fresh_machine, fakechat, 'model_hint = "GPT-5 Thinking"\n')
    noted = request_review(env, run, "calc")
    assert drain(env) == ["succeeded"]
    result = review_result(env, noted.review)
    assert result.verdict == "approve"
    assert result.notes[0].startswith("the model could not be verified on the page")
    env.close()

    strict_home = tmp_path / "strict-home"
    monkeypatch.setenv("PLANEGATE_HOME", str(strict_home))
    review_lines = 'model_hint = "GPT-5 Thinking"\nrequire_model = true\n'
    env, run, _ = chatgpt_setup(tmp_path / "strict", strict_home, fakechat, review_lines)
    refused = request_review(env, run, "calc")
    assert drain(env) == ["failed"]
    result = review_result(env, refused.review)
    assert result.state == "failed" and "does not confirm it" in (result.error or "")
    assert "[stage compose]" in (result.error or "")
    assert any(name.startswith("bridge-compose") for name in artifacts_of(env, refused.review))
    assert len(fakechat.prompts) == 1, "the strict policy sent nothing"
    env.close()


def test_browser_doctor_reads_the_policy_of_the_repository(
    tmp_path: Path, fresh_machine: Path, chromium: LaunchedBrowser, fakechat: FakeChat
) -> None:
    repo = calc_repo(tmp_path / "calc")
    policy = repo / ".planegate" / "policy.toml"
    policy.write_text(
        policy.read_text()
        + f'\n[review]\nbase_url = "{fakechat.url}"\ncdp_urls = ["{chromium.endpoint.url}"]\nproject = "planegate"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "PLANEGATE_CDP_URL"}
    command = [sys.executable, "-m", "planegate.server.cli", "browser", "doctor"]

    by_flag = subprocess.run([*command, "--repo", str(repo)], env=env, capture_output=True, text=True, timeout=120)
    (repo / "src" / "deep").mkdir()
    from_inside = subprocess.run(
        command, cwd=repo / "src" / "deep", env=env, capture_output=True, text=True, timeout=120
    )

    for done in (by_flag, from_inside):
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"[review] of {policy}" in done.stdout
        assert f"page                         {fakechat.url}" in done.stdout
        assert f"endpoint {chromium.endpoint.url}" in done.stdout
    assert fakechat.prompts == []

    policy.write_text("[review\n")
    broken = subprocess.run([*command, "--repo", str(repo)], env=env, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 2 and "not valid TOML" in broken.stderr
