"""The review plane with a scripted reviewer CLI: packets, parsing, repair, nonce, the review gate,
manual answers, the release review, and accepting a run with a human's approval."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import ElicitResult

from planegate.server.app import build_server
from planegate.store import verify_ledger
from planegate.tools.config import Settings
from planegate.tools.control.runs import freeze_requirements
from planegate.tools.env import Env
from planegate.tools.errors import InvalidInput, WrongState
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import cancel_task, dispatch_task
from planegate.tools.gates.accept import accept_task
from planegate.tools.gates.gates import GatesUnmet
from planegate.tools.report.acceptance import accept_run
from planegate.tools.report.status import get_status
from planegate.tools.review.review import request_review, review_result
from planegate.tools.review.review_parse import BEGIN, END, ReplyProblem, parse_reply
from tests.execution import MUL, MUL_TEST, Requirement, calc_repo, drain, finish_calc, open_env, planned_run, write
from tests.helpers import call, commit_all, git, planegate_in_terminal, refused

FAKES = Path(__file__).parent / "fakes"
NONCE = "ab" * 12


def review_policy_tail(reviewer: str = "command") -> str:
    command = json.dumps([sys.executable, str(FAKES / "reviewer")])
    return f'\n[review]\nreviewer = "{reviewer}"\ncommand = {command}\nenv_allow = ["REVIEWER_MODE", "REVIEWER_LOG"]\n'


def review_repo(path: Path, reviewer: str = "command", **policy: Any) -> Path:
    repo = calc_repo(path, require_review=True, **policy)
    target = repo / ".planegate" / "policy.toml"
    target.write_text(target.read_text() + review_policy_tail(reviewer))
    commit_all(repo, "review policy")
    return repo


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


def review(env: Env, run: str, task: str | None = "calc", release: bool = False) -> str:
    requested = request_review(env, run, task, release)
    drain(env)
    return requested.review


def reply(body: dict[str, Any]) -> str:
    return f"Thoughts.\n\n{BEGIN}\n```json\n{json.dumps(body)}\n```\n{END}\n"


GOOD = {"review_id": NONCE, "verdict": "approve", "summary": "fine", "findings": [], "missing_tests": []}


def test_the_parser_finds_a_marked_then_fenced_then_bare_block_and_checks_the_nonce() -> None:
    assert parse_reply(reply(GOOD), NONCE).verdict == "approve"
    fenced = f"The block:\n```json\n{json.dumps(GOOD)}\n```\n"
    assert parse_reply(fenced, NONCE).summary == "fine"
    bare = f"inline {json.dumps(dict(GOOD, verdict='reject'))} and text {{not json}} after"
    assert parse_reply(bare, NONCE).verdict == "reject"
    example = dict(GOOD, verdict="approve | request_changes | reject")
    assert parse_reply(f"```json\n{json.dumps(example)}\n```\n{reply(GOOD)}", NONCE).verdict == "approve"
    with pytest.raises(ReplyProblem, match="is not this review's id"):
        parse_reply(reply(dict(GOOD, review_id="f" * 24)), NONCE)
    with pytest.raises(ReplyProblem, match="verdict"):
        parse_reply(reply(dict(GOOD, verdict="lgtm")), NONCE)
    with pytest.raises(ReplyProblem, match="no JSON block"):
        parse_reply("looks good to me", NONCE)


def test_an_approving_review_of_the_head_opens_the_review_gate(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, review_repo(tmp_path / "calc"))
    finish_calc(env, run)
    with pytest.raises(GatesUnmet) as before:
        accept_task(env, run, "calc")
    assert {g.gate for g in before.value.unmet} == {"review"}
    review_id = review(env, run)
    result = review_result(env, review_id)
    assert (result.state, result.verdict, result.stale) == ("completed", "approve", False)
    assert {f.file for f in result.findings} == {"src/calc.py", "tests/test_mul.py"}
    assert result.requirements == {"R1": "met"}
    assert env.task_row(run, "calc")["status"] == "approved"
    packet = Path(env.settings.artifacts / run / "calc" / review_id)
    assert {p.name for p in packet.iterdir()} >= {"prompt.md", "diff.patch", "envelope.md", "reply.md", "review.json"}
    accepted = accept_task(env, run, "calc")
    repo = Path(env.run_row(run)["repo"])
    assert f"Planegate-Review: {review_id}" in git(repo, "log", "-1", "--format=%B", accepted.merge_sha)
    assert verify_ledger(env.store).ok


def test_request_review_refuses_unverified_work_and_an_empty_change(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, review_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    with pytest.raises(WrongState, match="not sending unverified work"):
        request_review(env, run, "calc")
    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    commit_all(worktree, "mul")
    with pytest.raises(WrongState, match="no direct evidence"):
        request_review(env, run, "calc")
    with pytest.raises(InvalidInput, match="give the task"):
        request_review(env, run)


def test_a_request_for_changes_sends_the_task_back_and_a_high_finding_blocks_acceptance(
    tmp_path: Path, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = planned_run(env, review_repo(tmp_path / "calc"))
    worktree = finish_calc(env, run)
    monkeypatch.setenv("REVIEWER_MODE", "request_changes")
    review(env, run)
    assert env.task_row(run, "calc")["status"] == "changes_requested"
    with pytest.raises(GatesUnmet, match="says request_changes"):
        accept_task(env, run, "calc")
    write(worktree, {"src/calc.py": MUL + "\n# validated\n"})
    commit_all(worktree, "address the finding")
    start_checks(env, run, "calc")
    drain(env)
    monkeypatch.setenv("REVIEWER_MODE", "approve_high")
    review(env, run)
    assert env.task_row(run, "calc")["status"] == "approved"
    with pytest.raises(GatesUnmet, match="leaves open findings: high: unsafe input handling"):
        accept_task(env, run, "calc")


def test_a_commit_after_the_approval_makes_it_stale(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, review_repo(tmp_path / "calc"))
    worktree = finish_calc(env, run)
    review_id = review(env, run)
    write(worktree, {"README.md": "a later change\n"})
    commit_all(worktree, "after the approval")
    start_checks(env, run, "calc")
    drain(env)
    with pytest.raises(GatesUnmet) as refused_accept:
        accept_task(env, run, "calc")
    reasons = {g.gate: g.reason for g in refused_accept.value.unmet}
    assert f"review {review_id} was made on" in reasons["review"] and "older commit" in reasons["review"]
    assert env.task_row(run, "calc")["status"] == "in_progress"
    assert review_result(env, review_id).stale


def test_an_unusable_reply_gets_one_repair_prompt(tmp_path: Path, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "reviewer.log"
    monkeypatch.setenv("REVIEWER_LOG", str(log))
    monkeypatch.setenv("REVIEWER_MODE", "no_json_once")
    run = planned_run(env, review_repo(tmp_path / "calc"))
    finish_calc(env, run)
    review_id = review(env, run)
    assert review_result(env, review_id).state == "completed"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["repair"] for c in calls] == [False, True]
    stored = (env.settings.artifacts / run / "calc" / review_id / "reply.md").read_text()
    assert "seems fine to me" in stored and BEGIN in stored


@pytest.mark.parametrize(("mode", "problem"), [("never_json", "no JSON block"), ("wrong_nonce", "stale")])
def test_a_reply_still_unusable_after_the_repair_leaves_the_review_incomplete(
    tmp_path: Path, env: Env, monkeypatch: pytest.MonkeyPatch, mode: str, problem: str
) -> None:
    monkeypatch.setenv("REVIEWER_MODE", mode)
    run = planned_run(env, review_repo(tmp_path / "calc"))
    finish_calc(env, run)
    result = review_result(env, review(env, run))
    assert result.state == "incomplete" and problem in (result.error or "")
    assert env.task_row(run, "calc")["status"] == "in_progress"
    with pytest.raises(GatesUnmet, match="no completed review"):
        accept_task(env, run, "calc")


def test_a_model_reviewing_its_own_work_is_refused(tmp_path: Path, env: Env) -> None:
    repo = review_repo(tmp_path / "calc")
    target = repo / ".planegate" / "policy.toml"
    same_program = json.dumps([sys.executable, str(FAKES / "reviewer")])
    target.write_text(target.read_text().replace("[review]", f"[executor]\ncommand = {same_program}\n\n[review]"))
    commit_all(repo, "the reviewer's program is also the executor")
    run = planned_run(env, repo)
    worktree = Path(dispatch_task(env, run, "calc", executor="command").worktree)
    drain(env)
    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    commit_all(worktree, "mul")
    start_checks(env, run, "calc")
    drain(env)
    with pytest.raises(InvalidInput, match=r"reviewer 'command:reviewer' is the task's own executor"):
        request_review(env, run, "calc")


def planegate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_a_manual_review_waits_for_planegate_review_submit(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, review_repo(tmp_path / "calc", reviewer="manual"))
    finish_calc(env, run)
    requested = request_review(env, run, "calc")
    assert requested.state == "waiting" and requested.job is None
    nonce = env.store.scalar("SELECT nonce FROM reviews WHERE id = ?", (requested.review,))
    answer = tmp_path / "answer.json"
    answer.write_text(reply(dict(GOOD, review_id="0" * 24)))
    code, out = planegate_in_terminal(
        "review", "submit", requested.review, "--file", str(answer), answer=requested.review
    )
    assert code == 1 and "still waits" in out
    assert review_result(env, requested.review).state == "waiting"
    answer.write_text(reply(dict(GOOD, review_id=nonce)))
    piped = planegate("review", "submit", requested.review, "--file", str(answer))
    assert piped.returncode == 2 and "needs you at a terminal" in piped.stderr
    code, out = planegate_in_terminal(
        "review", "submit", requested.review, "--file", str(answer), answer=requested.review
    )
    assert code == 0, out
    assert review_result(env, requested.review).verdict == "approve"
    assert env.task_row(run, "calc")["status"] == "approved"
    assert env.store.one("SELECT actor FROM events WHERE kind = 'review.completed'")["actor"].startswith("user:")


def release_ready(env: Env, tmp_path: Path) -> str:
    """A run whose only open gate is the human's approval."""
    run = planned_run(env, review_repo(tmp_path / "calc"))
    finish_calc(env, run)
    review(env, run)
    accept_task(env, run, "calc")
    with pytest.raises(WrongState, match=r"not ready for the release review: open: text \(ready\), docs \(ready\)"):
        request_review(env, run, release=True)
    cancel_task(env, run, "docs", "folded into calc")
    cancel_task(env, run, "text", "out of scope")
    with pytest.raises(GatesUnmet, match="R2"):
        accept_run(env, run)
    freeze_requirements(
        env,
        run,
        [Requirement(id="R1", statement="mul multiplies", acceptance_criteria=["mul(2, 3) == 6"])],
        amend_reason="whisper moves to another run",
    )
    with pytest.raises(WrongState, match="integration head"):
        request_review(env, run, release=True)
    assert get_status(env, run).next_action.startswith("checks: required checks without passing direct evidence")
    start_checks(env, run, None)
    drain(env)
    review(env, run, None, release=True)
    return run


def test_a_run_is_accepted_only_after_the_human_approves_with_planegate_approve(tmp_path: Path, env: Env) -> None:
    run = release_ready(env, tmp_path)
    assert env.run_row(run)["stage"] == "release_review"
    assert "human_approval: no human approval" in get_status(env, run).next_action
    with pytest.raises(GatesUnmet) as waiting:
        accept_run(env, run)
    assert [g.gate for g in waiting.value.unmet] == ["human_approval"]
    assert f"planegate approve {run}" in str(waiting.value)
    from_agent = planegate("approve", run, stdin=f"{run}\n")
    assert from_agent.returncode == 2 and "needs you at a terminal" in from_agent.stderr
    code, out = planegate_in_terminal("approve", run, answer="not-the-run")
    assert code == 1 and "not approved" in out
    code, out = planegate_in_terminal("approve", run, answer=run)
    assert code == 0, out
    assert "OPEN human_approval" in out and "approved by" in out
    accepted = accept_run(env, run)
    assert accepted.stage == "accepted" and all(g.ok for g in accepted.gates)
    report = Path(accepted.report).read_text()
    assert "folded into calc" in report and "```mermaid" in report
    approval = env.store.one("SELECT by, via FROM approvals WHERE run_id = ?", (run,))
    assert approval is not None and approval["via"] == "cli" and approval["by"]
    assert verify_ledger(env.store).ok


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("answer", ["accept", "decline"])
async def test_accept_run_asks_the_user_through_elicitation(
    tmp_path: Path, fresh_machine: Path, mode: str, answer: str
) -> None:
    env = open_env(fresh_machine)
    run = release_ready(env, tmp_path)
    env.close()
    asked: list[str] = []

    async def elicit(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        if answer == "accept":
            return ElicitResult(action="accept", content={"accept": True})
        return ElicitResult(action="decline")

    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=60)
    with anyio.fail_after(60):
        async with Client(server, elicitation_callback=elicit, mode=mode) as client:
            if answer == "accept":
                accepted = await call(client, "accept_run", run=run)
                assert accepted["stage"] == "accepted"
            else:
                text = await refused(client, "accept_run", run=run)
                assert f"planegate approve {run}" in text
    assert len(asked) == 1 and run in asked[0]
    env = open_env(fresh_machine)
    assert env.run_row(run)["stage"] == ("accepted" if answer == "accept" else "release_review")
    vias = [r["via"] for r in env.store.rows("SELECT via FROM approvals WHERE run_id = ?", (run,))]
    assert vias == (["elicitation"] if answer == "accept" else [])
    env.close()


@pytest.mark.anyio
async def test_accept_run_without_elicitation_support_points_at_the_cli(tmp_path: Path, fresh_machine: Path) -> None:
    env = open_env(fresh_machine)
    run = release_ready(env, tmp_path)
    env.close()
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=60)
    async with Client(server) as client:
        text = await refused(client, "accept_run", run=run)
    assert "human_approval" in text and f"planegate approve {run}" in text


@pytest.mark.anyio
async def test_the_review_task_prompt_gives_a_manual_reviewer_the_whole_packet(
    tmp_path: Path, fresh_machine: Path
) -> None:
    env = open_env(fresh_machine)
    run = planned_run(env, review_repo(tmp_path / "calc", reviewer="manual"))
    finish_calc(env, run)
    requested = request_review(env, run, "calc")
    nonce = env.store.scalar("SELECT nonce FROM reviews WHERE id = ?", (requested.review,))
    env.close()
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=60)
    async with Client(server) as client:
        prompt = (await client.get_prompt("review_task", {"review": requested.review})).messages[0].content.text
    assert f'"review_id": "{nonce}"' in prompt and "def mul(a, b)" in prompt and "mul(2, 3) == 6" in prompt
