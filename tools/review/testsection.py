"""The review packet's section on test and harness changes (``tests.md``).

A weakened test or a harness that turns failures into passes makes every other piece of evidence
worthless, so the reviewer gets them apart from the diff: the test files the change adds, changes
and deletes, the harness files it touches, what the plan declared about them (with the reasons),
and the server's red→green and test-integrity verdicts on the commit, with a question asked
explicitly about each.
"""

from __future__ import annotations

from ..env import Env
from ..gitrepo import DiffFacts, GitRepo
from ..globs import matches_any
from ..policy import Policy

TESTS_HEADING = "## Test and harness changes"
TESTS_QUESTION = (
    "Test and harness changes: read them before anything else. Does any change delete a test, weaken an assertion, "
    "skip or xfail a test, loosen a fixture, or change the harness (conftest.py, pytest/tox/jest configuration, test "
    "scripts) so that failures pass or tests stop running? Is every declared removal, rewrite and harness change "
    "justified by the requirements, with a reason that holds? Report each problem as a finding of severity high, "
    "and list tests the change should have in missing_tests."
)


def _name_status(repo: GitRepo, base: str, head: str) -> dict[str, str]:
    out = repo.git("diff", "--name-status", "-z", "--no-renames", "--no-ext-diff", base, head, "--")
    fields = [f for f in out.split("\0") if f]
    return {fields[i + 1]: fields[i] for i in range(0, len(fields) - 1, 2)}


def tests_section(
    env: Env,
    run: str,
    task: str | None,
    policy: Policy,
    repo: GitRepo,
    diff: DiffFacts,
    harness: list[str],
    declarations: dict[str, list[str]],
) -> str:
    """The packet's section on test and harness changes (see the module docstring)."""
    statuses = _name_status(repo, diff.base, diff.head)
    words = {"A": "added", "M": "changed", "D": "deleted", "T": "changed type"}
    tests = [f for f in diff.files if matches_any(f.path, policy.test_paths)]
    lines = ["### Test files", ""]
    lines += [
        f"- {f.path}: {words.get(statuses.get(f.path, 'M'), 'changed')} (+{f.added} -{f.deleted})" for f in tests
    ] or ["- none"]
    lines += ["", "### Test-harness files (they decide how tests run and what counts as a pass)", ""]
    lines += [f"- {h}" for h in harness] or ["- none"]
    lines += ["", "### Declared in the plan", ""]
    declared = [f"- {owner}: {line}" for owner, items in declarations.items() for line in items]
    lines += declared or ["- nothing: the task may not remove or rewrite tests nor change the harness"]
    rows = env.store.rows(
        "SELECT kind, label, exit_code, summary FROM evidence WHERE run_id = ? AND task_id IS ? AND head_sha = ?"
        " AND kind IN ('red_green', 'test_integrity') ORDER BY id",
        (run, task, diff.head),
    )
    lines += ["", "### The server's verdicts on this commit", ""]
    lines += [f"- [{r['label']}] {r['summary'].splitlines()[0]}" for r in rows] or ["- none recorded"]
    return "\n".join(lines) + "\n"
