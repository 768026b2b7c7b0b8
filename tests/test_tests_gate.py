"""Tests cannot quietly disappear: the tests gate, harness declarations and precise red→green,
on real git repositories with real pytest runs (and a scripted stand-in for a JUnit-writing runner)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from planegate.server.app import build_server
from planegate.tools.config import Settings
from planegate.tools.env import Env
from planegate.tools.errors import WrongState
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.execution.junit import parse_report
from planegate.tools.gates.accept import accept_task
from planegate.tools.gates.gates import GatesUnmet
from planegate.tools.models import DeclaredHarness, DeclaredTests, TaskSpec
from planegate.tools.report.report import build_report
from planegate.tools.review.review import request_review
from tests.execution import CALC, MUL, MUL_TEST, PYTEST, TASKS, drain, open_env, planned_run, write
from tests.helpers import call, commit_all, git, make_repo, refused

CALC_TESTS = (
    "from src.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
    "def test_add_zero():\n    assert add(0, 0) == 0\n"
)
FLIP_FAILURES = (
    "import pytest\n\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
    "    outcome = yield\n    report = outcome.get_result()\n    if report.failed:\n        report.outcome = 'passed'\n"
)
WRONG_MUL = CALC + "\n\ndef mul(a, b):\n    return a + b\n"


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


def policy(checks: dict[str, list[str]] | None = None, tests: str = "", review: str = "") -> str:
    lines = "\n".join(f"{name} = {json.dumps(argv)}" for name, argv in (checks or {"test": PYTEST}).items())
    return (
        f"require_review = false\nmax_parallel = 4\n\n[checks]\n{lines}\n"
        + (f"\n[tests]\n{tests}\n" if tests else "")
        + (f"\n[review]\n{review}\n" if review else "")
    )


def repo_with(path: Path, extra: dict[str, str] | None = None, **policy_args: Any) -> Path:
    return make_repo(
        path,
        {
            "src/__init__.py": "",
            "src/calc.py": CALC,
            "src/text.py": "def shout(s):\n    return s.upper()\n",
            "tests/__init__.py": "",
            "tests/test_calc.py": CALC_TESTS,
            "secrets/README.md": "nothing here\n",
            ".planegate/policy.toml": policy(**policy_args),
            **(extra or {}),
        },
    )


def calc_task(**declared: Any) -> TaskSpec:
    return TaskSpec(
        id="calc", title="Calc", goal="Work on calc", scope=["src/calc.py"], requirements=["R1"], **declared
    )


TEXT = TaskSpec(id="text", title="Text", goal="Add whisper", scope=["src/text.py"], requirements=["R2"])


def checked(env: Env, run: str, task: str, files: dict[str, str | None]) -> dict[str, dict[str, Any]]:
    """Dispatch ``task``, apply ``files`` (None deletes), commit, run its checks; its evidence by kind."""
    worktree = Path(dispatch_task(env, run, task).worktree)
    for name, text in files.items():
        if text is None:
            (worktree / name).unlink()
        else:
            write(worktree, {name: text})
    commit_all(worktree, "work")
    start_checks(env, run, task)
    assert drain(env) == ["succeeded"]
    head = git(worktree, "rev-parse", "HEAD")
    rows = env.store.rows(
        "SELECT * FROM evidence WHERE run_id = ? AND task_id = ? AND head_sha = ? ORDER BY id", (run, task, head)
    )
    return {r["kind"]: r for r in rows}


def unmet(env: Env, run: str, task: str) -> dict[str, str]:
    with pytest.raises(GatesUnmet) as refusal:
        accept_task(env, run, task)
    return {g.gate: f"{g.reason} Next: {g.next_step}" for g in refusal.value.unmet}


def artifact(env: Env, evidence: int, part: str) -> Path:
    rows = env.store.rows("SELECT path FROM artifacts WHERE owner = ? ORDER BY id", (f"evidence:{evidence}",))
    return next(Path(r["path"]) for r in rows if part in r["path"])


def test_deleting_a_passing_test_is_refused_unless_the_plan_declares_it(tmp_path: Path, env: Env) -> None:
    dropped = {"tests/test_calc.py": CALC_TESTS.split("\n\n\ndef test_add_zero")[0] + "\n"}
    run = planned_run(env, repo_with(tmp_path / "undeclared"), [calc_task(), TEXT])
    evidence = checked(env, run, "calc", dropped)
    assert evidence["red_green"]["exit_code"] == 0  # nothing to prove: no runtime change, no test changed
    assert evidence["test_integrity"]["exit_code"] == 1
    refusal = unmet(env, run, "calc")
    assert set(refusal) == {"tests"}
    assert "passing on the base are gone from the head: tests/test_calc.py::test_add_zero" in refusal["tests"]
    assert "removes_tests with a reason" in refusal["tests"]

    removal = DeclaredTests(tests=["tests/test_calc.py::test_add_zero"], reason="zero is covered by R1's property test")
    run = planned_run(env, repo_with(tmp_path / "declared"), [calc_task(removes_tests=removal), TEXT])
    evidence = checked(env, run, "calc", dropped)
    assert "declared in removes_tests: tests/test_calc.py::test_add_zero" in evidence["test_integrity"]["summary"]
    accept_task(env, run, "calc")
    report = " ".join(build_report(env, run)[0].split())
    assert "removes tests: tests/test_calc.py::test_add_zero — reason: zero is covered by R1's property test" in report


def test_a_weakened_assertion_is_not_proven_unless_declared_as_a_rewrite(tmp_path: Path, env: Env) -> None:
    weakened = {"tests/test_calc.py": CALC_TESTS.replace("assert add(2, 3) == 5", "assert True")}
    run = planned_run(env, repo_with(tmp_path / "undeclared"), [calc_task(), TEXT])
    evidence = checked(env, run, "calc", weakened)
    assert evidence["test"]["exit_code"] == 0 and evidence["test_integrity"]["exit_code"] == 0
    refusal = unmet(env, run, "calc")
    assert set(refusal) == {"red_green"}
    assert "changed existing tests do not fail on the base: tests/test_calc.py::test_add" in refusal["red_green"]
    assert "rewrites_tests" in refusal["red_green"]

    rewrite = DeclaredTests(tests=["tests/test_calc.py::test_add"], reason="the sum is asserted in test_sum (R1)")
    run = planned_run(env, repo_with(tmp_path / "declared"), [calc_task(rewrites_tests=rewrite), TEXT])
    evidence = checked(env, run, "calc", weakened)
    assert evidence["red_green"]["exit_code"] == 0
    assert "declared rewrites passing on the base: tests/test_calc.py::test_add" in evidence["red_green"]["summary"]
    accept_task(env, run, "calc")


def test_a_skip_marker_on_a_passing_test_breaks_integrity_and_is_not_proven(tmp_path: Path, env: Env) -> None:
    skipped = {
        "tests/test_calc.py": "import pytest\n\n"
        + CALC_TESTS.replace("def test_add():", "@pytest.mark.skip\ndef test_add():")
    }
    run = planned_run(env, repo_with(tmp_path / "skip"), [calc_task(), TEXT])
    evidence = checked(env, run, "calc", skipped)
    assert evidence["test"]["exit_code"] == 0
    refusal = unmet(env, run, "calc")
    assert "no longer pass on the head: tests/test_calc.py::test_add (skipped)" in refusal["tests"]
    assert "tests/test_calc.py::test_add do not pass on the head (failed, skipped or not run)" in refusal["red_green"]


def test_a_conftest_that_turns_failures_into_passes_is_an_undeclared_harness_change(tmp_path: Path, env: Env) -> None:
    cheat = {"src/calc.py": WRONG_MUL, "tests/test_mul.py": MUL_TEST, "tests/conftest.py": FLIP_FAILURES}
    run = planned_run(env, repo_with(tmp_path / "undeclared", review='reviewer = "manual"'), [calc_task(), TEXT])
    evidence = checked(env, run, "calc", cheat)
    assert evidence["test"]["exit_code"] == 0  # the wrong mul "passes": that is the point of the cheat
    refusal = unmet(env, run, "calc")
    assert "changes test-harness paths the task did not declare: tests/conftest.py" in refusal["tests"]
    assert "declares changes_harness with a reason" in refusal["tests"]

    # No review is spent on it: the undeclared harness change alone keeps the task from acceptance.
    with pytest.raises(WrongState, match=r"not sending task 'calc' to a reviewer: .*\[tests\] changes test-harness"):
        request_review(env, run, "calc")

    declared = DeclaredHarness(paths=["tests/conftest.py"], reason="shared fixtures for R1")
    run = planned_run(
        env, repo_with(tmp_path / "declared", review='reviewer = "manual"'), [calc_task(changes_harness=declared), TEXT]
    )
    checked(env, run, "calc", cheat)
    packet = Path(request_review(env, run, "calc").packet)
    tests_part = (packet / "tests.md").read_text()
    harness = tests_part.split("### Test-harness files")[1].split("###")[0]
    assert "- tests/conftest.py" in harness
    assert "- tests/test_mul.py: added" in tests_part and "- tests/conftest.py: added" in tests_part
    prompt = (packet / "prompt.md").read_text()
    assert "## Test and harness changes" in prompt
    assert "so that failures pass or tests stop running" in prompt
    assert "changes test harness: tests/conftest.py — reason: shared fixtures for R1" in tests_part
    accept_task(env, run, "calc")  # declared, the harness change is the reviewer's to judge (this policy skips review)


def test_red_green_reads_the_changed_tests_not_an_unrelated_failure_on_the_base(tmp_path: Path, env: Env) -> None:
    broken = {"tests/test_clock.py": "def test_clock_is_set():\n    assert False\n"}
    run = planned_run(env, repo_with(tmp_path / "quiet", broken), [calc_task(), TEXT])
    again = "from src.calc import add\n\n\ndef test_add_again():\n    assert add(1, 1) == 2\n"
    evidence = checked(env, run, "calc", {"src/calc.py": MUL, "tests/test_again.py": again})
    summary = evidence["red_green"]["summary"]
    assert evidence["red_green"]["exit_code"] == 1
    assert "also pass on the base (selected by id): tests/test_again.py::test_add_again" in summary

    run = planned_run(env, repo_with(tmp_path / "real", broken), [calc_task(), TEXT])
    evidence = checked(env, run, "calc", {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    assert evidence["red_green"]["exit_code"] == 0
    assert "proven: tests/test_mul.py::test_mul fail on the base" in evidence["red_green"]["summary"]
    base_run = parse_report(artifact(env, evidence["red_green"]["id"], "/base/test.junit.xml"))
    assert set(base_run.cases) == {"tests/test_mul.py"}  # only the new test's file ran, and failed to import
    assert (
        evidence["test_integrity"]["exit_code"] == 0
    )  # the clock test failed on the base too: not held against the head


def test_tasks_from_one_tree_share_one_base_run(tmp_path: Path, env: Env) -> None:
    repo = repo_with(tmp_path / "calc")
    run = planned_run(env, repo, TASKS)
    calc = checked(env, run, "calc", {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    assert "full run now" in calc["test_integrity"]["summary"]
    whisper = "from src.text import whisper\n\n\ndef test_whisper():\n    assert whisper('A') == 'a'\n"
    text = checked(
        env, run, "text", {"src/text.py": "def whisper(s):\n    return s.lower()\n", "tests/test_whisper.py": whisper}
    )
    assert "cached for tree" in text["test_integrity"]["summary"] and "task calc" in text["test_integrity"]["summary"]
    accepted = accept_task(env, run, "calc")
    calc_head = git(repo, "rev-parse", f"planegate/{run}/calc")
    assert git(repo, "rev-parse", f"{accepted.merge_sha}^{{tree}}") == git(repo, "rev-parse", f"{calc_head}^{{tree}}")
    docs = checked(env, run, "docs", {"src/calc.py": MUL.replace("def mul", "# mul multiplies.\ndef mul")})
    summary = docs["test_integrity"]["summary"]
    assert docs["test_integrity"]["exit_code"] == 0
    assert f"cached for tree {git(repo, 'rev-parse', f'{calc_head}^{{tree}}')[:12]}" in summary
    jobs = [r["id"] for r in env.store.rows("SELECT id FROM jobs WHERE task_id IN ('text', 'docs')")]
    for job in jobs:
        assert not list(env.settings.artifacts.glob(f"{run}/*/job-{job}-checks/base-full"))
    assert env.store.scalar("SELECT COUNT(*) FROM test_reports WHERE run_id = ?", (run,)) >= 3


RUNNER = '''"""A stand-in for a test runner that writes JUnit XML itself (as go test + go-junit-report do)."""
import importlib.util, os, pathlib, re, sys
from xml.sax.saxutils import quoteattr

pattern = re.compile(sys.argv[2]) if sys.argv[1:2] == ["--run"] else None
sys.path.insert(0, os.getcwd())
cases = []
for path in sorted(pathlib.Path("tests").glob("test_*.py")):
    dotted = str(path.with_suffix("")).replace("/", ".")
    spec = importlib.util.spec_from_file_location(dotted, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        cases.append(("", dotted, "error"))
        continue
    for name in sorted(vars(module)):
        if name.startswith("test_") and (pattern is None or pattern.search(name)):
            try:
                getattr(module, name)()
                cases.append((dotted, name, ""))
            except Exception:
                cases.append((dotted, name, "failure"))
body = "".join(
    f"<testcase classname={quoteattr(c)} name={quoteattr(n)}>" + (f"<{o}/>" if o else "") + "</testcase>"
    for c, n, o in cases
)
pathlib.Path(os.environ["PLANEGATE_TEST_REPORT"]).write_text(f"<testsuite>{body}</testsuite>")
sys.exit(1 if any(o for _, _, o in cases) else 0)
'''


def test_a_runner_that_cannot_select_gets_a_full_base_run_and_one_that_can_is_selected(
    tmp_path: Path, env: Env
) -> None:
    checks = {"test": [sys.executable, "runtests.py"]}
    work = {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST}
    run = planned_run(env, repo_with(tmp_path / "full", {"runtests.py": RUNNER}, checks=checks), [calc_task(), TEXT])
    evidence = checked(env, run, "calc", work)
    assert evidence["red_green"]["exit_code"] == 0
    assert "full base run: the runner cannot select tests (set [tests] select)" in evidence["red_green"]["summary"]
    assert evidence["test_integrity"]["exit_code"] == 0
    assert set(parse_report(artifact(env, evidence["red_green"]["id"], "/base/test.junit.xml")).cases) == {
        "tests.test_calc::test_add",
        "tests.test_calc::test_add_zero",
        "tests.test_mul",
    }

    select = f"select = {json.dumps([sys.executable, 'runtests.py', '--run', '^{pattern}$'])}"
    repo = repo_with(tmp_path / "selected", {"runtests.py": RUNNER}, checks=checks, tests=select)
    run = planned_run(env, repo, [calc_task(), TEXT])
    evidence = checked(env, run, "calc", work)
    assert evidence["red_green"]["exit_code"] == 0
    assert "selected by id" in evidence["red_green"]["summary"]
    assert set(parse_report(artifact(env, evidence["red_green"]["id"], "/base/test.junit.xml")).cases) == {
        "tests.test_mul"
    }

    silent = repo_with(tmp_path / "silent", checks={"test": [sys.executable, "-c", "pass"]})
    run = planned_run(env, silent, [calc_task(), TEXT])
    evidence = checked(env, run, "calc", work)
    assert evidence["test_integrity"]["exit_code"] == 1
    assert "must write JUnit XML to $PLANEGATE_TEST_REPORT" in evidence["test_integrity"]["summary"]


@pytest.mark.anyio
async def test_declarations_travel_through_register_graph(tmp_path: Path, fresh_machine: Path) -> None:
    repo = repo_with(tmp_path / "calc")
    server = build_server(Settings(home=fresh_machine, actor="agent:test"))
    task = {"id": "calc", "title": "Calc", "goal": "Drop add", "scope": ["src/calc.py"], "requirements": ["R1"]}
    with anyio.fail_after(60):
        async with Client(server) as client:
            run = (await call(client, "start_run", repo=str(repo), goal="Declarations"))["run"]
            requirements = [
                {"id": "R1", "statement": "calc", "acceptance_criteria": ["works"]},
                {"id": "R2", "statement": "text", "acceptance_criteria": ["works"]},
            ]
            await call(client, "freeze_requirements", run=run, requirements=requirements)
            modules = [{"name": "calc", "owns": ["src/**"]}]
            await call(client, "freeze_architecture", run=run, modules=modules, decisions=[])
            text = {**task, "id": "text", "scope": ["src/text.py"], "requirements": ["R2"]}
            no_reason = {**task, "removes_tests": {"tests": ["tests/test_calc.py::test_add"], "reason": ""}}
            message = await refused(client, "register_graph", run=run, tasks=[no_reason, text])
            assert "task 'calc' declares removes_tests without a reason" in message
            declared = {**task, "removes_tests": {"tests": ["tests/test_calc.py::test_add"], "reason": "add is gone"}}
            await call(client, "register_graph", run=run, tasks=[declared, text])
    env = open_env(fresh_machine)
    try:
        assert json.loads(env.task_row(run, "calc")["declarations"]) == {
            "removes_tests": {"tests": ["tests/test_calc.py::test_add"], "reason": "add is gone"}
        }
    finally:
        env.close()
