"""Test integrity: every test that passes on a task's base still exists and passes on its head.

Compared by test id between two JUnit reports of the same test check: the base's (from the cache
by tree id, or a full run on a scratch worktree at the base, made while the head runs) and the
head's (the run ``run_checks`` makes anyway). A test that passed on the base and is gone from the
head, or is there but failed, errored or was skipped (an xfail or skip marker added to hide a
failure is skipped), breaks integrity unless the task declared it in ``removes_tests`` with a
reason. The outcome is ``direct`` evidence of kind ``test_integrity`` that the ``tests`` gate
reads; tests that did not pass on the base (already failing or skipped) are not held against the
head.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..gitrepo import DiffFacts
from .checkrun import record_check
from .jobs import JobContext
from .junit import JUnitReport
from .procs import ProcessResult
from .testchanges import declared
from .testreports import CachedReport, SuiteRun


@dataclass(frozen=True)
class Integrity:
    ok: bool
    text: str
    gone: list[str]
    broken: list[str]
    declared: list[str]


def _shown(items: list[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def compare(base: JUnitReport, head: JUnitReport, removes: list[str], base_note: str) -> Integrity:
    passed = sorted(base.passed_ids())
    gone = [i for i in passed if i not in head.cases]
    broken = [f"{i} ({head.cases[i].outcome})" for i in passed if i in head.cases and head.cases[i].outcome != "passed"]
    broken_ids = [i for i in passed if i in head.cases and head.cases[i].outcome != "passed"]
    allowed = [i for i in [*gone, *broken_ids] if declared(i, removes)]
    gone_undeclared = [i for i in gone if i not in allowed]
    broken_undeclared = [b for b, i in zip(broken, broken_ids, strict=True) if i not in allowed]
    problems = []
    if gone_undeclared:
        problems.append(
            f"{len(gone_undeclared)} test(s) passing on the base are gone from the head: {_shown(gone_undeclared)}"
        )
    if broken_undeclared:
        problems.append(f"{len(broken_undeclared)} no longer pass on the head: {_shown(broken_undeclared)}")
    note = f"; declared in removes_tests: {_shown(allowed)}" if allowed else ""
    if problems:
        text = (
            "broken: "
            + "; ".join(problems)
            + note
            + ". Restore them, or plan the removal: the task must declare removes_tests with a reason"
            + f" ({base_note})"
        )
        return Integrity(False, text, gone_undeclared, broken_undeclared, allowed)
    text = (
        f"holds: all {len(passed) - len(allowed)} test(s) passing on the base still pass on the head "
        f"({head.describe()}; base: {base_note}){note}"
    )
    return Integrity(True, text, [], [], allowed)


def base_note(base: SuiteRun | CachedReport, commit: str, tree: str) -> str:
    if isinstance(base, CachedReport):
        return f"{base.report.describe()} at {commit[:12]}, cached for tree {tree[:12]} from {base.source}"
    report = base.report.describe() if base.report else "no report"
    return f"{report} at {commit[:12]}, full run now (tree {tree[:12]})"


def record_integrity(
    ctx: JobContext,
    diff: DiffFacts,
    ok: bool,
    text: str,
    *,
    base: SuiteRun | CachedReport | None,
    head: SuiteRun | None,
    label: str = "direct",
) -> int:
    logs = ctx.artifacts_dir("test-integrity")
    note = logs / "test_integrity.txt"
    note.write_text(text + "\n", encoding="utf-8")
    attached = []
    if isinstance(base, CachedReport):
        attached.append(base.path)
    elif base is not None:
        attached += base.logs
    if head is not None and head.report_path is not None:
        attached.append(head.report_path)
    result = ProcessResult(
        argv=("test_integrity",),
        exit_code=0 if ok else 1,
        duration_s=0.0 if not isinstance(base, SuiteRun) else base.result.duration_s,
        timed_out=False,
        stdout_path=note,
        stderr_path=note,
    )
    return record_check(
        ctx,
        kind="test_integrity",
        label=label,
        result=result,
        head=diff.head,
        diff_sha=diff.sha256,
        summary=f"test_integrity: {text}",
        extra_logs=attached,
    )
