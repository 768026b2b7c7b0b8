"""`planegate hook stop`: the Stop hook, driven like the clients drive it — the real command, fed the
payloads Claude Code and Codex recorded (tests/data/hooks/), answering on stdout with exit 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from planegate.server.hook import MAX_BLOCKS
from planegate.tools.control.evidence import record_evidence
from planegate.tools.control.runs import freeze_requirements
from planegate.tools.env import Env
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import cancel_task, dispatch_task
from planegate.tools.gates.accept import accept_task
from planegate.tools.gates.release import approve
from planegate.tools.report.acceptance import accept_run
from planegate.tools.report.status import get_status
from planegate.tools.review.review import request_review
from tests.execution import Requirement, calc_repo, drain, finish_calc, open_env, planned_run
from tests.helpers import planegate_in_terminal
from tests.test_review import review, review_repo

PAYLOADS = Path(__file__).parent / "data" / "hooks"
PLANEGATE = str(Path(sys.executable).parent / "planegate")
CLIENTS = ["claude", "codex"]
# Codex validates a Stop hook's output strictly (additionalProperties: false); Claude accepts these too.
OUTPUT_KEYS = {"continue", "decision", "reason", "stopReason", "suppressOutput", "systemMessage"}


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


def payload(client: str, cwd: Path, *, after_block: bool = False, **changes: Any) -> str:
    """A recorded payload of ``client`` with the test's working directory in it."""
    data = json.loads((PAYLOADS / f"{client}-stop{'-after-block' if after_block else ''}.json").read_text())
    return json.dumps({**data, "cwd": str(cwd), **changes})


def stop(stdin: str, env: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, str]:
    """Run the hook as a client does; its JSON answer (None when it printed nothing) and stderr."""
    done = subprocess.run(
        [PLANEGATE, "hook", "stop"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    if not done.stdout.strip():
        return None, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer) <= OUTPUT_KEYS, answer
    if answer.get("decision") is not None:
        assert answer["decision"] == "block" and answer["reason"].strip()
    return answer, done.stderr


def blocked(answer: dict[str, Any] | None) -> bool:
    return bool(answer and answer.get("decision") == "block")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_premature_done_is_blocked_with_the_remaining_tasks_and_the_next_call(
    tmp_path: Path, env: Env, client: str
) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    next_action = get_status(env, run).next_action
    for where in (tmp_path / "calc", tmp_path / "calc" / "src", worktree):
        answer, _ = stop(payload(client, where))
        assert blocked(answer), where
        assert answer is not None
        reason = answer["reason"]
        assert f"run {run}" in reason and "calc in_progress (unmet: checks, tests, merge)" in reason, reason
        assert "not dispatched yet: text" in reason and "waiting on dependencies: docs" in reason
        assert f"Next call: {next_action}" in reason
        assert "planegate hook off" in reason
    inside_an_executor = {"PLANEGATE_TASK": "calc", "PLANEGATE_RUN": run}
    assert stop(payload(client, worktree), env=inside_an_executor) == (None, ""), "a worker is not the orchestrator"


def test_no_run_under_the_working_directory_means_no_answer_and_no_ledger(tmp_path: Path, fresh_machine: Path) -> None:
    repo = calc_repo(tmp_path / "calc")
    answer, err = stop(payload("claude", repo))
    assert answer is None and err == ""
    assert not fresh_machine.exists(), "the hook must not create a ledger in a home that has none"
    env = open_env(fresh_machine)
    try:
        run = planned_run(env, repo)
        assert stop(payload("codex", repo)) == (None, ""), "a planned run has nothing dispatched yet"
        dispatch_task(env, run, "calc")
    finally:
        env.close()
    assert stop(payload("codex", tmp_path)) == (None, ""), "the parent of the repository is outside it"
    elsewhere = calc_repo(tmp_path / "other")
    assert stop(payload("claude", elsewhere)) == (None, "")
    assert stop(payload("claude", repo, hook_event_name="SubagentStop")) == (None, "")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_stop_after_a_block_goes_through_unless_the_run_moved_and_blocks_are_bounded(
    tmp_path: Path, env: Env, client: str
) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    dispatch_task(env, run, "calc")
    first, _ = stop(payload(client, repo))
    assert blocked(first)
    again, _ = stop(payload(client, repo, after_block=True))
    assert again == {
        "systemMessage": f"planegate: run {run} is not finished; the agent ended its turn again without moving it."
    }
    for n in range(2, MAX_BLOCKS + 1):  # the agent moves the run between stops: it is held again, up to the bound
        record_evidence(env, run, "calc", "lint", "local", f"ran the linter, round {n}")
        answer, _ = stop(payload(client, repo, after_block=True))
        assert blocked(answer), f"stop {n} after moving the run"
    record_evidence(env, run, "calc", "lint", "local", "one more round")
    answer, _ = stop(payload(client, repo, after_block=True))
    assert answer == {
        "systemMessage": f"planegate: run {run} is not finished; the stop hook let the turn end after "
        f"{MAX_BLOCKS} blocks in a row."
    }
    fresh_turn, _ = stop(payload(client, repo))
    assert blocked(fresh_turn), "a new turn starts a new count"
    other_session, _ = stop(payload(client, repo, after_block=True, session_id="another-session"))
    assert blocked(other_session), "counts are per session"


def test_the_run_is_held_until_it_is_released_and_a_persons_steps_never_block(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, review_repo(tmp_path / "calc"))
    repo = tmp_path / "calc"
    finish_calc(env, run)
    review(env, run)
    accept_task(env, run, "calc")
    cancel_task(env, run, "docs", "folded into calc")
    cancel_task(env, run, "text", "out of scope")
    freeze_requirements(
        env,
        run,
        [Requirement(id="R1", statement="mul multiplies", acceptance_criteria=["mul(2, 3) == 6"])],
        amend_reason="whisper moves to another run",
    )
    answer, _ = stop(payload("claude", repo))
    assert blocked(answer) and answer is not None
    assert "run gate checks: required checks without passing direct evidence" in answer["reason"]
    assert "Next call: checks: required checks" in answer["reason"]
    start_checks(env, run, None)
    drain(env)
    review(env, run, None, release=True)
    assert env.run_row(run)["stage"] == "release_review"
    answer, _ = stop(payload("codex", repo))
    assert answer == {
        "systemMessage": f"planegate: waiting for you — run {run}: approve the run yourself: `planegate approve {run}`"
    }
    approve(env, run, "tester", "test")
    answer, _ = stop(payload("claude", repo))
    assert blocked(answer) and answer is not None, "approved but not accepted: accept_run is the agent's"
    assert f"Next call: accept_run(run={run!r})" in answer["reason"]
    accept_run(env, run)
    assert stop(payload("claude", repo)) == (None, ""), "an accepted run lets the stop through"


def test_a_manual_review_waiting_for_its_answer_does_not_block(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, review_repo(tmp_path / "calc", reviewer="manual"))
    cancel_task(env, run, "docs", "folded into calc")
    cancel_task(env, run, "text", "out of scope")
    finish_calc(env, run)
    requested = request_review(env, run, "calc")
    assert requested.state == "waiting"
    answer, _ = stop(payload("codex", tmp_path / "calc"))
    assert answer == {
        "systemMessage": f"planegate: waiting for you — run {run}: task calc: answer manual review "
        f"{requested.review} (`planegate review submit {requested.review}`)"
    }


def test_only_a_person_at_a_terminal_turns_the_hook_off_for_a_run(tmp_path: Path, env: Env) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    dispatch_task(env, run, "calc")
    piped = subprocess.run(
        [PLANEGATE, "hook", "off", run], input=f"{run}\n", capture_output=True, text=True, timeout=60
    )
    assert piped.returncode == 2 and "needs you at a terminal" in piped.stderr
    code, out = planegate_in_terminal("hook", "off", run, answer="yes")
    assert code == 1 and "stays on" in out
    assert blocked(stop(payload("claude", repo))[0])
    code, out = planegate_in_terminal("hook", "off", run, answer=run)
    assert code == 0 and f"run {run}: the stop hook is off" in out, out
    assert stop(payload("claude", repo)) == (None, "")
    assert stop(payload("codex", tmp_path / "calc" / "src")) == (None, "")
    toggle = env.store.one("SELECT actor, payload FROM events WHERE kind = 'run.stop_hook'")
    assert toggle is not None and toggle["actor"].startswith("user:") and '"enabled":false' in toggle["payload"]
    on = subprocess.run([PLANEGATE, "hook", "on", run], capture_output=True, text=True, timeout=60)
    assert on.returncode == 0 and "the stop hook is on" in on.stdout
    assert blocked(stop(payload("claude", repo))[0])
    unknown = subprocess.run([PLANEGATE, "hook", "on", "no-such-run"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "'no-such-run' not found" in unknown.stderr


def test_the_hook_lets_the_stop_through_with_one_line_when_anything_goes_wrong(
    tmp_path: Path, fresh_machine: Path
) -> None:
    repo = calc_repo(tmp_path / "calc")
    for stdin, expected in (
        ("", "stdin is not JSON"),
        ("[1, 2]", "stdin holds a JSON list"),
        ('{"session_id": "s"}', "the payload has no cwd"),
        (payload("claude", repo, session_id=None), "the payload has no session_id"),
    ):
        answer, err = stop(stdin)
        assert answer is None and expected in err
        assert err.startswith("planegate hook stop: let the stop through after an error:") and err.count("\n") == 1
    fresh_machine.mkdir()
    (fresh_machine / "ledger.db").write_bytes(b"this is not a database" * 100)
    answer, err = stop(payload("codex", repo))
    assert answer is None and "DatabaseError" in err and err.count("\n") == 1


def test_the_hooks_common_case_loads_nothing_of_the_domain(tmp_path: Path, env: Env) -> None:
    # bench/bench_hook.py measures the time; this keeps an import from making every turn end slow.
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    dispatch_task(env, run, "calc")
    # the whole command as the client runs it, then what it loaded (on stderr, after its answer)
    script = (
        "import json, sys\n"
        "from planegate.server.cli import main\n"
        "main(['hook', 'stop'])\n"
        "heavy = ('planegate.tools', 'planegate.store', 'pydantic', 'git', 'sqlite_utils', 'dataclasses')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy))), file=sys.stderr)\n"
    )
    probe = subprocess.run(
        [sys.executable, "-c", script], input=payload("claude", tmp_path), capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0 and probe.stdout == "", probe.stderr
    assert json.loads(probe.stderr) == [], "no run under the directory: nothing but sqlite3 is needed"
    blocking = subprocess.run(
        [sys.executable, "-c", script], input=payload("claude", repo), capture_output=True, text=True, timeout=60
    )
    assert "planegate.tools.report.status" in json.loads(blocking.stderr)
    assert '"decision": "block"' in blocking.stdout
