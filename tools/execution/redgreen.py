"""Red→green: proof that a task's new and changed tests fail without its change and pass with it.

Precise, by test id. ``plan_red_green`` reads the diff's test files (``testchanges``): the tests
the task adds and the existing tests it changes. The server overlays the changed test files on a
scratch worktree at the task's base commit and runs only those tests there (pytest node ids,
unittest ids, or the policy's ``[tests] select``); red is read from that run's JUnit report, per
test, never from the exit code, so an unrelated failing test on the base proves nothing. Green is
the head run ``run_checks`` makes anyway. A runner that cannot select runs the whole suite on the
base instead, and the evidence says so.

The rule, recorded as ``direct`` evidence of kind ``red_green`` (exit 0 only when it holds):

- needed when the change touches a runtime path or changes an existing test; a change that only
  adds tests needs no proof (nothing it could weaken, nothing it claims to fix);
- every selected test passes on the head;
- every *changed* existing test fails on the base (a change that leaves it passing there changed
  nothing it checks, or weakened it: ``assert True`` passes everywhere) unless the task declared
  it in ``rewrites_tests`` with a reason;
- when runtime paths changed, at least one selected test fails on the base and passes on the
  head. New tests that also pass on the base are allowed, and listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..gitrepo import DiffFacts, GitRepo
from ..globs import matches_any
from ..policy import Policy
from .checkrun import record_check
from .jobs import JobContext
from .junit import JUnitCase, JUnitReport
from .procs import ProcessResult
from .testchanges import ChangedTest, FileChanges, case_matches, declared, file_changes
from .testreports import SuiteCheck, SuiteRun


@dataclass(frozen=True)
class RedGreenPlan:
    needed: bool
    why: str
    runtime: list[str]
    changes: list[FileChanges] = field(default_factory=list)
    overlay: list[str] = field(default_factory=list)

    @property
    def tests(self) -> list[ChangedTest]:
        return [t for c in self.changes for t in c.tests]

    @property
    def whole_files(self) -> list[str]:
        return [c.path for c in self.changes if not c.precise]

    @property
    def selects_anything(self) -> bool:
        return bool(self.tests or self.whole_files)


def runtime_paths(policy: Policy, paths: list[str]) -> list[str]:
    return [p for p in paths if matches_any(p, policy.runtime_paths) and not matches_any(p, policy.test_paths)]


def _shown(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def plan_red_green(policy: Policy, repo: GitRepo, diff: DiffFacts) -> RedGreenPlan:
    """What red→green must prove for this diff, and which tests it runs on the base."""
    runtime = runtime_paths(policy, diff.paths)
    overlay: list[str] = []
    changes: list[FileChanges] = []
    for path in diff.paths:
        if not matches_any(path, policy.test_paths):
            continue
        head = repo.show(diff.head, path)
        if head is None:  # deleted: the tests gate judges removals
            continue
        overlay.append(path)
        found = file_changes(path, repo.show(diff.base, path), head)
        if found.tests or not found.precise:
            changes.append(found)
    changed = [t.id for c in changes for t in c.changed]
    if runtime:
        why = f"runtime paths changed ({_shown(runtime)})"
    elif changed:
        why = f"existing tests changed ({_shown(changed)})"
    else:
        new = [t.id for c in changes for t in c.tests]
        why = (
            f"not needed: the change only adds tests ({_shown(new)}) and changes no runtime path or existing test"
            if new
            else "not needed: no runtime path or existing test changed"
        )
        return RedGreenPlan(False, why, runtime, changes, overlay)
    return RedGreenPlan(True, why, runtime, changes, overlay)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    text: str


def _cases(report: JUnitReport, test: ChangedTest) -> list[JUnitCase]:
    return [c for c in report.cases.values() if case_matches(c, test)]


def _file_tests(report: JUnitReport, path: str) -> list[ChangedTest]:
    """A whole selected file's tests as the head's report lists them (used when the file's tests
    could not be read from its source)."""
    tests = []
    for case in report.cases.values():
        if case.file and (case.file == path or path.endswith("/" + case.file)) and case.id != case.file:
            tests.append(ChangedTest(case.id, path, case.name, new=True, python=False))
    return tests


def judge(plan: RedGreenPlan, base: SuiteRun, head: SuiteRun, rewrites: list[str]) -> Verdict:
    """The verdict on a plan from the base run (selected tests, changed files overlaid) and the head run."""
    where = "selected by id" if base.selected else "full base run: the runner cannot select tests (set [tests] select)"
    if base.report is None:
        return Verdict(False, f"not proven: the base run ({where}) gave no readable report: {base.problem}")
    if head.report is None:
        return Verdict(False, f"not proven: the head run gave no readable report: {head.problem}")
    tests = plan.tests + [t for path in plan.whole_files for t in _file_tests(head.report, path)]
    if not tests:
        return Verdict(
            False,
            f"not proven: {plan.why} but no new or changed test was found in the test files (test_paths); add a "
            "test that fails without the change",
        )
    red, green, not_run_base = [], [], []
    for test in tests:
        before, after = _cases(base.report, test), _cases(head.report, test)
        if not before:
            not_run_base.append(test.id)
        if any(c.failing for c in before):
            red.append(test)
        if after and all(c.outcome == "passed" for c in after):
            green.append(test)
    not_green = [t.id for t in tests if t not in green]
    if not_green:
        return Verdict(False, f"not proven: {_shown(not_green)} do not pass on the head (failed, skipped or not run)")
    changed_passing = [t.id for t in tests if not t.new and t not in red and not declared(t.id, rewrites)]
    if changed_passing:
        return Verdict(
            False,
            f"not proven: changed existing tests do not fail on the base: {_shown(changed_passing)}; a changed test "
            "must fail without the change (a change that leaves it passing there weakened it or checks nothing new). "
            "If it is a refactor or fixes a wrong test, the task must declare it in rewrites_tests with a reason",
        )
    proven = [t.id for t in red]
    quiet = [t.id for t in tests if t.new and t not in red]
    declared_rewrites = [t.id for t in tests if not t.new and t not in red]
    notes = []
    if quiet:
        notes.append(f"new tests that also pass on the base (they prove nothing alone): {_shown(quiet)}")
    if declared_rewrites:
        notes.append(f"declared rewrites passing on the base: {_shown(declared_rewrites)}")
    if not_run_base and base.selected:
        notes.append(f"not run on the base: {_shown(not_run_base)}")
    if plan.runtime and not proven:
        return Verdict(
            False,
            f"not proven: {plan.why}, but the new and changed tests also pass on the base ({where}): "
            f"{_shown([t.id for t in tests])}; they do not show the change works: write a test that fails without it",
        )
    head_word = "pass on the head"
    text = (
        f"proven: {_shown(proven)} fail on the base and {head_word} ({len(tests)} test(s) checked, {where})"
        if proven
        else f"proven: {plan.why}; every changed test is red on the base or declared ({where})"
    )
    return Verdict(True, text + (". " + "; ".join(notes) if notes else ""))


def record_red_green(
    ctx: JobContext,
    diff: DiffFacts,
    verdict: Verdict,
    *,
    base: SuiteRun | None,
    head: SuiteRun | None,
    label: str = "direct",
) -> int:
    """Record the red→green outcome as evidence with both runs' logs and reports attached."""
    logs = ctx.artifacts_dir("red-green")
    note = logs / "red_green.txt"
    note.write_text(verdict.text + "\n", encoding="utf-8")
    attached = [*(base.logs if base else []), *(head.logs if head else [])]
    primary = base.result if base else None
    result = ProcessResult(
        argv=primary.argv if primary else ("red_green",),
        exit_code=0 if verdict.ok else 1,
        duration_s=sum(r.result.duration_s for r in (base, head) if r is not None),
        timed_out=False,
        stdout_path=note,
        stderr_path=primary.stderr_path if primary else note,
    )
    return record_check(
        ctx,
        kind="red_green",
        label=label,
        result=result,
        head=diff.head,
        diff_sha=diff.sha256,
        summary=f"red_green: {verdict.text}",
        extra_logs=[p for p in attached if p != result.stderr_path],
    )


def overlay(repo: GitRepo, head: str, scratch: Path, paths: list[str]) -> None:
    """Write the head's version of ``paths`` into the scratch worktree at the base."""
    root = scratch.resolve()
    for path in paths:
        content = repo.show(head, path)
        if content is None:
            continue
        target = (scratch / path).resolve()
        if not target.is_relative_to(root):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def missing_check(check: SuiteCheck | None, policy: Policy) -> str | None:
    if check is None:
        return f"the policy has no check named {policy.test_check!r} (test_check); define it under [checks]"
    return None
