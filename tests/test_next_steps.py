"""Every next step names a call that is accepted: a whole run walked by doing what each answer says.

The walker only ever makes the call the previous answer named (its arguments filled in where the
answer writes ``...``), does the work an answer asks for (write code and commit, revert an
out-of-scope file), and takes the human's part when an answer says only a human can. Every call
it makes must be accepted. On the way it checks the early feedback: an out-of-scope edit shows up
in run_checks' answer and request_review refuses until it is reverted.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from planegate.server.app import build_server
from planegate.store import verify_ledger
from planegate.tools.config import Settings
from planegate.tools.gates.release import approve
from tests.execution import MUL, MUL_TEST, PYTEST, open_env, write
from tests.helpers import commit_all, git, make_repo, refused
from tests.test_review import review_policy_tail

FAKES = Path(__file__).parent / "fakes"

TOOLS = (
    "start_run", "freeze_requirements", "freeze_architecture", "register_graph", "get_status", "dispatch_task",
    "record_evidence", "run_checks", "get_job", "accept_task", "request_review", "get_review", "accept_run",
    "cancel_job", "cancel_task", "amend_graph", "abandon_run", "publish_run",
)  # fmt: skip
CALL = re.compile(r"\b(" + "|".join(TOOLS) + r")\(")
POSITIONAL = {"get_status": "run", "get_review": "review", "get_job": "job"}

REQUIREMENTS = [
    {"id": "R1", "statement": "mul multiplies", "acceptance_criteria": ["mul(2, 3) == 6"]},
    {"id": "R2", "statement": "mul is documented", "acceptance_criteria": ["docs/calc.md explains mul"]},
]
MODULES = [{"name": "calc", "owns": ["src/calc.py"]}, {"name": "docs", "owns": ["docs/**"]}]
TASKS = [
    {"id": "calc", "title": "Multiply", "goal": "Add mul(a, b)", "scope": ["src/calc.py"], "requirements": ["R1"]},
    {"id": "docs", "title": "Document", "goal": "Document mul", "depends_on": ["calc"], "scope": ["docs/**"],
     "requirements": ["R2"]},
]  # fmt: skip
WORK = {
    # calc's first commit also edits README.md, which no scope of it covers: early feedback must catch it
    "calc": {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST, "README.md": "# scratch, edited\n"},
    "docs": {"docs/calc.md": "# mul\n\nmul(a, b) multiplies.\n"},
}
FILLERS: dict[str, dict[str, Any]] = {
    "freeze_requirements": {"requirements": REQUIREMENTS},
    "freeze_architecture": {"modules": MODULES, "decisions": []},
    "register_graph": {"tasks": TASKS},
}


def named_call(step: str) -> tuple[str, dict[str, Any]] | None:
    """The first tool call a step names, with its arguments (``...`` left for the walker to fill)."""
    found = CALL.search(step)
    if found is None:
        return None
    depth, end = 0, found.end() - 1
    for end in range(found.end() - 1, len(step)):
        depth += {"(": 1, ")": -1}.get(step[end], 0)
        if depth == 0:
            break
    node = ast.parse(step[found.start() : end + 1], mode="eval").body
    assert isinstance(node, ast.Call)
    arguments: dict[str, Any] = {}
    for arg in node.args:
        arguments[POSITIONAL[found.group(1)]] = ast.literal_eval(arg)
    for keyword in node.keywords:
        assert keyword.arg is not None
        value = keyword.value
        arguments[keyword.arg] = ... if isinstance(value, ast.List) and _ellipsis(value) else ast.literal_eval(value)
    return found.group(1), arguments


def _ellipsis(node: ast.List) -> bool:
    return any(isinstance(e, ast.Constant) and e.value is Ellipsis for e in node.elts)


def walk_repo(root: Path) -> tuple[Path, Path]:
    repo = make_repo(
        root / "calc",
        {
            "README.md": "# scratch\n",
            "src/__init__.py": "",
            "src/calc.py": "def add(a, b):\n    return a + b\n",
            "tests/__init__.py": "",
            "tests/test_calc.py": "from src.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
            ".planegate/policy.toml": f"require_review = true\n\n[checks]\ntest = {json.dumps(PYTEST)}\n"
            + review_policy_tail(),
        },
    )
    remote = root / "remote.git"
    git(root, "init", "-q", "--bare", "-b", "main", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    return repo, remote


@pytest.mark.anyio
async def test_a_whole_run_walked_by_following_each_next_step_is_never_refused(
    tmp_path: Path, fresh_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, remote = walk_repo(tmp_path)
    gh_bin = tmp_path / "bin"
    gh_bin.mkdir()
    (gh_bin / "gh").symlink_to(FAKES / "gh")
    (gh_bin / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", f"{gh_bin}:{Path(shutil.which('git') or '/usr/bin/git').parent}")
    monkeypatch.setenv("FAKE_GH_LOG", str(tmp_path / "gh.log"))
    server = build_server(Settings(home=fresh_machine, actor="agent:walker"), worker_delay_s=0)
    walked: list[str] = []
    run = ""
    worktrees: dict[str, Path] = {}
    probed_early_feedback = False
    with anyio.fail_after(600):
        async with Client(server) as client:
            result = await _accepted(client, "start_run", {"repo": str(repo), "goal": "Multiply and document"}, walked)
            run = result["run"]
            step = result["next_step"]
            for _ in range(80):
                if step.startswith("done"):
                    break
                if step.startswith("human only"):
                    env = open_env(fresh_machine, "user:human")
                    try:
                        approve(env, run, "human", "cli")  # what `planegate approve` records once a person typed yes
                    finally:
                        env.close()
                    walked.append("[human] planegate approve")
                if step.startswith("work in "):
                    task = next(t for t, path in worktrees.items() if step.startswith(f"work in {path},"))
                    write(worktrees[task], WORK[task])
                    commit_all(worktrees[task], f"{task}: the work")
                    walked.append(f"[work] {task}")
                if "revert them in a new commit" in step:
                    task = named_call(step)[1]["task"]  # type: ignore[index]
                    git(worktrees[task], "checkout", "HEAD~1", "--", "README.md")
                    commit_all(worktrees[task], "keep to the scope")
                    walked.append(f"[revert] {task}")
                called = named_call(step)
                assert called is not None, f"the next step names no call: {step!r}"
                tool, arguments = called
                if run:
                    await _status_names_an_accepted_call(client, run, walked)
                arguments = {k: (FILLERS[tool][k] if v is ... else v) for k, v in arguments.items()}
                for key, value in FILLERS.get(tool, {}).items():
                    arguments.setdefault(key, value)
                result = await _accepted(client, tool, arguments, walked)
                if tool == "dispatch_task":
                    worktrees[result["task"]] = Path(result["worktree"])
                if tool == "run_checks" and result.get("gates"):
                    assert [g["gate"] for g in result["gates"]] == ["scope"] and "README.md" in result["gates"][0][
                        "reason"
                    ]
                    text = await refused(client, "request_review", run=run, task=result["task"])
                    assert "[scope]" in text and "README.md" in text and "not sending" in text
                    probed_early_feedback = True
                step = result.get("next_step") or result["next_action"]
            else:
                raise AssertionError(f"the walk did not finish: {walked}")
    assert probed_early_feedback, walked
    tools_walked = [w.split("(")[0] for w in walked]
    last_accept = max(i for i, w in enumerate(tools_walked) if w == "accept_task")
    assert tools_walked[last_accept + 1] == "run_checks" and f"run_checks(run={run!r})" in walked[last_accept + 1]
    assert tools_walked[-3:] == ["[human] planegate approve", "accept_run", "publish_run"], walked
    assert git(remote, "rev-parse", f"refs/heads/planegate/{run}/integration")
    env = open_env(fresh_machine)
    try:
        assert env.run_row(run)["stage"] == "accepted"
        assert verify_ledger(env.store).ok
    finally:
        env.close()


async def _status_names_an_accepted_call(client: Any, run: str, walked: list[str]) -> None:
    """get_status's next action names a call too; a read-only one is made (and must be accepted)."""
    status = await client.call_tool("get_status", {"run": run})
    action = dict(status.structured_content or {})["next_action"]
    called = named_call(action)
    assert called is not None or action.startswith(("done", "human only")), f"get_status names no call: {action!r}"
    if called is not None and called[0] in ("get_status", "get_review", "get_job"):
        await _accepted(
            client, called[0], {**called[1], **({"wait_seconds": 0} if called[0] != "get_status" else {})}, []
        )


async def _accepted(client: Any, tool: str, arguments: dict[str, Any], walked: list[str]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items() if k in ("run", "task", "release", "review", "job"))
    walked.append(f"{tool}({shown})")
    text = " ".join(getattr(block, "text", "") for block in result.content)
    assert not result.is_error, f"{tool} was refused after the previous answer named it: {text}\nwalked: {walked}"
    return dict(result.structured_content or {})


def test_named_call_reads_the_call_out_of_a_step() -> None:
    assert named_call("freeze_requirements(run='r-1', requirements=[...])") == (
        "freeze_requirements",
        {"run": "r-1", "requirements": ...},
    )
    assert named_call("work in /tmp/x, commit, then run_checks(run='r', task='t')") == (
        "run_checks",
        {"run": "r", "task": "t"},
    )
    assert named_call("human only: a human runs `planegate approve r`; then accept_run(run='r')") == (
        "accept_run",
        {"run": "r"},
    )
    assert named_call("the checks are still running; call get_job(12) to wait for them") == ("get_job", {"job": 12})
    assert named_call("done: nothing left") is None
