"""Who an executor or reviewer really is: wrappers unwrapped, symlinks followed, declared models
compared — on their own, through request_review, and through the review gate."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from planegate.tools.config import Settings
from planegate.tools.env import Env
from planegate.tools.errors import InvalidInput
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.gates.accept import accept_task
from planegate.tools.gates.gates import GatesUnmet, ReviewFacts, TaskFacts, review_gate
from planegate.tools.gates.identity import (
    Identity,
    agent_identity,
    compare,
    executor_identity,
    resolve_command,
    reviewer_identity,
    tool_core,
)
from planegate.tools.gates.unwrap import unwrap
from planegate.tools.policy import parse_policy
from planegate.tools.report.status import get_status
from planegate.tools.review.review import request_review
from tests.execution import MUL, MUL_TEST, calc_repo, drain, finish_calc, open_env, planned_run, write
from tests.helpers import commit_all

FAKES = Path(__file__).parent / "fakes"
PY = sys.executable


# --- unwrapping: every wrapper form names the program it finally runs -------------------------

WRAPPED = [
    (["nice", "/opt/ai/claude", "-p"], ["nice"]),
    (["nice", "-n", "10", "claude", "-p"], ["nice"]),
    (["nice", "-n10", "--", "claude"], ["nice"]),
    (["nice", "--adjustment=5", "claude"], ["nice"]),
    (["env", "claude", "-p"], ["env"]),
    (["env", "-i", "HOME=/tmp", "-u", "OPENAI_API_KEY", "LANG=C", "claude", "-p"], ["env"]),
    (["env", "--chdir=/tmp", "--unset", "X", "--", "claude"], ["env"]),
    (["/usr/bin/env", "-S", "A=1 claude -p"], ["env"]),
    (["timeout", "600", "claude", "-p"], ["timeout"]),
    (["timeout", "-k", "5", "--signal=TERM", "--preserve-status", "10m", "claude"], ["timeout"]),
    (["nohup", "claude", "-p"], ["nohup"]),
    (["nohup", "--", "claude"], ["nohup"]),
    (["stdbuf", "-oL", "-e", "0", "claude"], ["stdbuf"]),
    (["stdbuf", "--output=L", "claude"], ["stdbuf"]),
    (["ionice", "-c", "3", "-n7", "claude"], ["ionice"]),
    (["setsid", "-w", "claude"], ["setsid"]),
    (["sh", "-c", "exec claude -p"], ["sh"]),
    (["bash", "-lc", "cd /work && FOO=1 claude -p 2>/dev/null | tee log"], ["bash"]),
    (["bash", "-e", "-o", "pipefail", "-c", "claude -p"], ["bash"]),
    (["bash", "-c", 'exec "$@"', "_", "claude", "-p"], ["bash"]),
    (["sh", "-c", '"$0" -p', "claude"], ["sh"]),
    (["sh", "-c", "true\nclaude -p"], ["sh"]),
    (["sh", "-c", "echo `claude -p`"], ["sh"]),
    (["python3", "-m", "claude"], ["python3"]),
    (["python3.11", "-u", "-X", "dev", "/opt/ai/claude.py", "--flag"], ["python3.11"]),
    (["npx", "claude"], ["npx"]),
    (["npx", "-y", "--registry", "https://r.example", "claude@latest", "-p"], ["npx"]),
    (["npx", "--package", "@acme/tools", "claude", "-p"], ["npx"]),
    (["npm", "exec", "--yes", "--", "claude"], ["npm"]),
    (["pnpm", "dlx", "claude", "-p"], ["pnpm"]),
    (["pnpm", "--silent", "dlx", "--package=@acme/tools", "claude"], ["pnpm"]),
    (["yarn", "dlx", "-q", "claude"], ["yarn"]),
    (["bunx", "--bun", "claude"], ["bunx"]),
    (["bun", "x", "claude"], ["bun"]),
    (["uvx", "claude"], ["uvx"]),
    (["uvx", "--python", "3.12", "--with", "rich", "claude==1.0", "-p"], ["uvx"]),
    (["uv", "tool", "run", "--from", "claude-cli", "claude"], ["uv"]),
    (["uv", "run", "--with", "x", "python", "claude.py"], ["uv", "python"]),
    (["pipx", "run", "--spec", "claude-cli", "claude"], ["pipx"]),
    (["node", "--require", "ts-node/register", "/opt/ai/claude.js"], ["node"]),
    (["node", "--no-warnings", "claude.mjs"], ["node"]),
    (["poetry", "run", "claude"], ["poetry"]),
    (["env", "A=1", "nice", "-n", "5", "timeout", "60", "nohup", "sh", "-c", "exec python -m claude"], None),
]


@pytest.mark.parametrize(("argv", "via"), WRAPPED, ids=[" ".join(a)[:60] for a, _ in WRAPPED])
def test_a_wrapped_command_is_named_by_the_program_it_finally_runs(argv: list[str], via: list[str] | None) -> None:
    unwrapped = unwrap(argv)
    assert unwrapped.opaque == []
    assert "claude" in {tool_core(Path(f.program).name) for f in unwrapped.finals}
    if via is not None:
        assert unwrapped.via == via
    executor = Identity(kind="agent", name="agent:claude-code", tools=("claude-code",))
    reviewer = resolve_command(argv, search_path="")
    assert compare(reviewer, executor).same, (argv, reviewer)


def test_an_unknown_option_cannot_hide_the_program_behind_it() -> None:
    finals = {f.program for f in unwrap(["npx", "--some-new-flag", "value", "claude"]).finals}
    assert "claude" in finals
    finals = {f.program for f in unwrap(["uvx", "--frobnicate", "claude"]).finals}
    assert "claude" in finals


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["sh", "-c", "$REVIEWER -p"], "shell expansion"),
        (["python3", "-c", "import subprocess; subprocess.run(['claude'])"], "inline code"),
        (["node", "-e", "require('child_process')"], "inline code"),
        (["bash", "-c", "eval $X"], "eval"),
        (["bash", "-s"], "stdin"),
        (["python3"], "stdin"),
        (["timeout", "10"], "names no program"),
    ],
)
def test_a_program_that_cannot_be_told_makes_the_comparison_refuse(argv: list[str], why: str) -> None:
    reviewer = resolve_command(argv, search_path="")
    assert any(why in reason for reason in reviewer.opaque)
    check = compare(reviewer, Identity(kind="codex", name="codex", tools=("codex",)))
    assert check.same and check.unknown
    assert "cannot tell whether reviewer" in check.reason(reviewer, Identity(kind="codex", name="codex"))


def test_shell_utilities_around_the_command_do_not_make_two_tools_alike() -> None:
    reviewer = resolve_command(["sh", "-c", "cd /tmp && cat prompt.md | codex exec - | tee out"])
    executor = resolve_command(["sh", "-c", "cd /work && cat task.md | claude -p | tee log"])
    assert not compare(reviewer, executor).same
    assert "codex" in reviewer.tools and "cat" not in reviewer.tools


# --- real files: symlinks, copies, disguised wrappers ----------------------------------------


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    folder = tmp_path / "tools"
    folder.mkdir()
    (folder / "agent.py").write_text("import sys\nsys.exit(0)\n")
    (folder / "other.py").write_text("print('a different program')\n")
    return folder


def test_a_symlink_to_the_executors_script_is_the_executors_script(tools: Path) -> None:
    (tools / "review-bot").symlink_to(tools / "agent.py")
    (tools / "links").mkdir()
    (tools / "links" / "chain").symlink_to(tools / "review-bot")
    executor = resolve_command([PY, str(tools / "agent.py")])
    for argv in (
        [PY, str(tools / "review-bot")],
        ["nice", "-n", "5", PY, str(tools / "links" / "chain")],
        [str(tools / "review-bot")],
        ["sh", "-c", f"exec {PY} {tools / 'links' / 'chain'} --fast"],
    ):
        reviewer = resolve_command(argv)
        check = compare(reviewer, executor)
        assert check.same, argv
        assert any(str((tools / "agent.py").resolve()) in m for m in check.matched), check.matched
    assert not compare(resolve_command([PY, str(tools / "other.py")]), executor).same


def test_a_copy_of_the_executors_script_is_recognised_by_content(tools: Path) -> None:
    shutil.copy(tools / "agent.py", tools / "reviewer-copy.py")
    check = compare(
        resolve_command([PY, str(tools / "reviewer-copy.py")]), resolve_command([PY, str(tools / "agent.py")])
    )
    assert check.same and "same file content" in check.matched[0]


def test_relative_programs_are_found_in_the_repository(tools: Path) -> None:
    (tools / "bot").symlink_to("agent.py")
    executor = resolve_command([PY, "agent.py"], cwd=tools)
    assert executor.programs == (str((tools / "agent.py").resolve()),)
    assert compare(resolve_command(["./bot"], cwd=tools), executor).same


def test_a_wrapper_behind_a_link_with_another_name_is_still_unwrapped(tools: Path) -> None:
    nice = shutil.which("nice")
    assert nice is not None
    (tools / "calm").symlink_to(nice)
    reviewer = resolve_command([str(tools / "calm"), "-n", "5", PY, str(tools / "agent.py")])
    assert reviewer.via[0] == "nice"
    assert compare(reviewer, resolve_command([PY, str(tools / "agent.py")])).same


def test_a_program_found_on_path_is_followed_to_its_real_file(tools: Path) -> None:
    bin_dir = tools / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").symlink_to(tools / "agent.py")
    (tools / "agent.py").chmod(0o755)
    reviewer = resolve_command(["timeout", "60", "claude", "-p"], search_path=str(bin_dir))
    assert reviewer.programs == (str((tools / "agent.py").resolve()),)
    assert reviewer.name == "command:claude"
    assert compare(reviewer, resolve_command([PY, str(tools / "agent.py")])).same


def test_status_views_may_reuse_a_recent_answer_but_acceptance_resolves_again(tools: Path) -> None:
    (tools / "bot").symlink_to(tools / "other.py")
    argv = [PY, str(tools / "bot")]
    first = resolve_command(argv)
    (tools / "bot").unlink()
    (tools / "bot").symlink_to(tools / "agent.py")
    assert resolve_command(argv, fresh=False) == first
    assert resolve_command(argv).programs == (str((tools / "agent.py").resolve()),)


# --- declared models and the agent executor ---------------------------------------------------


def test_declared_models_are_compared_ignoring_case_date_stamps_and_providers() -> None:
    declared = parse_policy(
        '[executor]\nagent_model = "Claude-Opus-4-1"\n\n'
        '[review]\nreviewer = "chatgpt"\nmodel = "anthropic/claude-opus-4-1-20250805"\n'
    )
    executor = agent_identity("agent:vscode-extension", declared)
    reviewer = reviewer_identity(declared)
    check = compare(reviewer, executor)
    assert check.same and check.matched == ("both declare model 'anthropic/claude-opus-4-1-20250805'",)
    other = parse_policy('[executor]\nagent_model = "claude-opus-4-1"\n\n[review]\nmodel = "gpt-5"\n')
    assert not compare(reviewer_identity(other), agent_identity("agent:vscode-extension", other)).same


def test_a_model_named_in_the_reviewers_command_counts_as_declared() -> None:
    declared = parse_policy('[executor]\nagent_model = "o3"\n')
    reviewer = resolve_command(["some-cli", "--model", "o3", "-p"], search_path="")
    check = compare(reviewer, agent_identity("agent:ide", declared))
    assert check.same and "both declare model 'o3'" in check.matched
    codex = parse_policy('[executor]\ncodex_args = ["-c", "model=o3"]\n')
    assert compare(reviewer, executor_identity("codex", None, codex)).same


def test_the_agent_executor_is_compared_by_client_name_and_by_declared_model() -> None:
    bare = parse_policy('[review]\nreviewer = "command"\ncommand = ["claude", "-p"]\n')
    reviewer = reviewer_identity(bare)
    by_name = compare(reviewer, agent_identity("agent:claude-code", bare))
    assert by_name.same and "tool 'claude' is 'claude-code'" in by_name.matched
    # A client that calls itself something else is still caught by the declared models.
    declared = parse_policy(
        '[executor]\nagent_model = "claude-sonnet-4-5"\n\n'
        '[review]\nreviewer = "command"\ncommand = ["claude", "-p"]\nmodel = "claude-sonnet-4-5"\n'
    )
    renamed = agent_identity("agent:totally-different", declared)
    assert compare(reviewer_identity(declared), renamed).same
    unnamed = compare(reviewer, agent_identity("agent:totally-different", bare))
    assert not unnamed.same and any("self-chosen name" in c for c in unnamed.compared)


def test_a_human_reviewer_is_never_the_executor() -> None:
    manual = parse_policy('[review]\nreviewer = "manual"\n')
    assert not compare(reviewer_identity(manual), agent_identity("agent:manual", manual)).same


def test_the_review_gate_refuses_a_recorded_reviewer_that_is_the_executor() -> None:
    reviewer = Identity(kind="command", name="command:rev", tools=("rev",), programs=("/opt/x/agent.py",))
    executor = Identity(kind="command", name="command:agent", tools=("agent",), programs=("/opt/x/agent.py",))
    review = ReviewFacts("rv-1", "completed", "approve", "h" * 40, "command:rev", 1, identity=reviewer)
    facts = TaskFacts(
        run="r", task="t", status="approved", scope=[], deps=[], head_sha="h" * 40, base_sha="b" * 40, files=[],
        secrets=[], evidence=[], executor_identity="command:agent", reviews=[review], requirements_changed_at=0,
        merge=None, executor=executor,
    )  # fmt: skip
    gate = review_gate(facts, parse_policy(""))
    assert not gate.ok and "both run /opt/x/agent.py" in gate.reason and "request_review" in gate.next_step


# --- through request_review and the review gate ----------------------------------------------


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


def identity_repo(
    path: Path, *, executor: list[str] | None, reviewer: list[str], extra: str = "", **policy: object
) -> Path:
    repo = calc_repo(path, require_review=True, **policy)
    target = repo / ".planegate" / "policy.toml"
    executor_line = f"command = {json.dumps(executor)}\n" if executor else ""
    target.write_text(
        target.read_text()
        + f'\n[executor]\n{executor_line}{extra}\n[review]\nreviewer = "command"\ncommand = {json.dumps(reviewer)}\n'
        + 'env_allow = ["REVIEWER_MODE"]\n'
    )
    commit_all(repo, "identity policy")
    return repo


def committed_work(env: Env, run: str, executor: str = "agent") -> Path:
    worktree = Path(dispatch_task(env, run, "calc", executor=executor).worktree)
    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    commit_all(worktree, "mul")
    return worktree


@pytest.mark.parametrize(
    "reviewer",
    [
        pytest.param(lambda t: ["nice", "-n", "5", PY, str(t / "agent.py")], id="nice"),
        pytest.param(lambda t: ["env", "-i", "LANG=C", "timeout", "600", PY, str(t / "agent.py")], id="env-timeout"),
        pytest.param(lambda t: ["sh", "-c", f"exec {PY} {t / 'agent.py'} 2>/dev/null"], id="sh-c"),
        pytest.param(lambda t: [PY, str(t / "review-bot")], id="symlink"),
        pytest.param(lambda t: ["stdbuf", "-oL", str(t / "review-bot")], id="stdbuf-symlink"),
    ],
)
def test_request_review_refuses_a_wrapped_or_linked_executor(
    tmp_path: Path, env: Env, tools: Path, reviewer: Callable[[Path], list[str]]
) -> None:
    (tools / "review-bot").symlink_to(tools / "agent.py")
    (tools / "agent.py").chmod(0o755)
    repo = identity_repo(tmp_path / "calc", executor=[PY, str(tools / "agent.py")], reviewer=reviewer(tools))
    run = planned_run(env, repo)
    committed_work(env, run, executor="command")
    before = env.store.event_count()
    with pytest.raises(InvalidInput) as refused:
        request_review(env, run, "calc")
    message = str(refused.value)
    assert "is the task's own executor ('command:agent.py')" in message
    assert f"both run {(tools / 'agent.py').resolve()}" in message
    assert "Next: configure a reviewer that is another tool and model" in message
    assert env.store.event_count() == before
    assert env.store.scalar("SELECT COUNT(*) FROM reviews") == 0


def test_request_review_refuses_declared_models_that_match(tmp_path: Path, env: Env) -> None:
    repo = identity_repo(
        tmp_path / "calc",
        executor=None,
        reviewer=[PY, str(FAKES / "reviewer")],
        extra='agent_model = "claude-opus-4-1"\n',
    )
    target = repo / ".planegate" / "policy.toml"
    target.write_text(target.read_text() + 'model = "claude-opus-4-1-20250805"\n')
    commit_all(repo, "the reviewer runs the same model")
    run = planned_run(env, repo)
    committed_work(env, run)
    with pytest.raises(InvalidInput, match=r"both declare model 'claude-opus-4-1-20250805'"):
        request_review(env, run, "calc")


def test_a_distinct_reviewer_is_recorded_with_what_was_compared(tmp_path: Path, env: Env, tools: Path) -> None:
    repo = identity_repo(
        tmp_path / "calc",
        executor=None,
        reviewer=["nice", "-n", "5", PY, str(FAKES / "reviewer")],
        extra='agent_model = "claude-opus-4-1"\n',
    )
    run = planned_run(env, repo)
    finish_calc(env, run)
    requested = request_review(env, run, "calc")
    row = env.store.one("SELECT reviewer, executor, identity FROM reviews WHERE id = ?", (requested.review,))
    assert row is not None and (row["reviewer"], row["executor"]) == ("command:reviewer", "agent:test")
    recorded = json.loads(row["identity"])
    assert recorded["same"] is False
    assert recorded["reviewer"]["via"] == ["nice", Path(PY).name]
    assert recorded["reviewer"]["programs"] == [str((FAKES / "reviewer").resolve())]
    assert recorded["executor"]["models"] == [["claude-opus-4-1", "[executor] agent_model"]]
    assert any(c.startswith("tool ['reviewer'") and "['test']" in c for c in recorded["compared"])
    assert any("model not declared vs claude-opus-4-1" in c for c in recorded["compared"])
    event = env.store.one("SELECT payload FROM events WHERE kind = 'review.requested'")
    assert event is not None and json.loads(event["payload"])["identity"]["same"] is False
    drain(env)
    assert accept_task(env, run, "calc").merge_sha


def review_then(env: Env, run: str) -> None:
    request_review(env, run, "calc")
    drain(env)
    assert env.task_row(run, "calc")["status"] == "approved"


def test_the_review_gate_refuses_when_the_executors_program_became_the_reviewer(
    tmp_path: Path, env: Env, tools: Path
) -> None:
    shutil.copy(FAKES / "reviewer", tools / "rev.py")
    repo = identity_repo(
        tmp_path / "calc",
        executor=[PY, str(tools / "agent.py")],
        reviewer=["nice", "-n", "5", PY, str(tools / "rev.py")],
    )
    run = planned_run(env, repo)
    committed_work(env, run, executor="command")
    drain(env)
    start_checks(env, run, "calc")
    drain(env)
    review_then(env, run)
    (tools / "agent.py").unlink()
    (tools / "agent.py").symlink_to(tools / "rev.py")
    with pytest.raises(GatesUnmet) as refused:
        accept_task(env, run, "calc")
    gates = {g.gate: g for g in refused.value.unmet}
    assert list(gates) == ["review"]
    assert f"both run {(tools / 'rev.py').resolve()}" in gates["review"].reason
    status = get_status(env, run).status
    assert status is not None
    shown = {g.gate: g for t in status.active for g in t.gates}
    assert not shown["review"].ok and "is the task's own executor" in shown["review"].reason


def test_the_review_gate_refuses_when_the_reviewers_tool_took_the_task_over(
    tmp_path: Path, fresh_machine: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(FAKES / "reviewer", bin_dir / "claude")
    repo = identity_repo(tmp_path / "calc", executor=None, reviewer=[PY, str(bin_dir / "claude")], lease_minutes=0.02)
    alpha = Env.open(Settings(home=fresh_machine, actor="agent:alpha", job_lease_s=30))
    run = planned_run(alpha, repo)
    finish_calc(alpha, run)
    review_then(alpha, run)
    alpha.close()
    time.sleep(1.5)  # the lease (1.2 s) expires; another client takes the task over
    claude = Env.open(Settings(home=fresh_machine, actor="agent:claude-code", job_lease_s=30))
    try:
        dispatch_task(claude, run, "calc")
        with pytest.raises(GatesUnmet) as refused:
            accept_task(claude, run, "calc")
        reason = {g.gate: g.reason for g in refused.value.unmet}["review"]
        assert "reviewer 'command:claude' is the task's own executor ('agent:claude-code')" in reason
        assert "tool 'claude' is 'claude-code'" in reason
    finally:
        claude.close()
