"""The gates: pure functions of ledger rows, git facts and the policy.

Each gate returns ``GateResult(gate, ok, reason, next_step)``. Nothing here reads the disk, the
ledger or git: ``facts.py`` gathers what a gate needs, so every gate is testable on its own and
the same evaluation serves ``get_status`` (shown) and ``accept_*`` (enforced).

Task gates, all on the task's current head commit: ledger, dependencies, scope, budget, secrets,
checks, red_green, tests, review, merge. Run gates: ledger, tasks, coverage, checks, release_review,
human_approval. Only ``direct`` evidence made on the head commit counts; reported evidence never
does. The ledger gate holds when every row the other gates read is vouched for by its event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from planegate.store import EDITED

from ..errors import PlanegateError
from ..gitrepo import FileChange, MergeResult
from ..globs import matches_any
from ..policy import Policy
from .identity import Identity, compare, legacy_identity
from .links import LinkEscape
from .secrets import BLOB_SCAN_LIMIT, SecretFinding

SERIOUS = ("critical", "high")


@dataclass(frozen=True)
class GateResult:
    gate: str
    ok: bool
    reason: str
    next_step: str = ""


class GatesUnmet(PlanegateError):
    """Acceptance was refused; ``unmet`` lists every gate that does not hold.

    Its disposition is ``needs_human`` when only a person can unblock it (the human approval is
    the one gate left, or the ledger was edited outside planegate), else ``not_ready``.
    """

    def __init__(self, subject: str, unmet: Sequence[GateResult]) -> None:
        self.unmet = list(unmet)
        lines = [f"{subject}: {len(self.unmet)} gate(s) unmet, nothing was merged or changed:"]
        lines += [f"- {g.gate}: {g.reason} Next: {g.next_step}" for g in self.unmet]
        names = {g.gate for g in self.unmet}
        human = names == {"human_approval"} or "ledger" in names
        super().__init__("\n".join(lines), disposition="needs_human" if human else "not_ready")


@dataclass
class ReviewFacts:
    id: str
    status: str
    verdict: str | None
    head_sha: str
    reviewer: str
    requirements_version: int
    open_serious: list[str] = field(default_factory=list)
    identity: Identity | None = None  # the reviewer as resolved when the review was requested


@dataclass
class TaskFacts:
    run: str
    task: str
    status: str
    scope: list[str]
    deps: list[tuple[str, str]]
    head_sha: str | None
    base_sha: str
    files: list[FileChange]
    secrets: list[SecretFinding]
    evidence: list[dict[str, Any]]
    executor_identity: str
    reviews: list[ReviewFacts]
    requirements_changed_at: int
    merge: MergeResult | None
    dirty: list[str] | None = None
    executor: Identity | None = None
    links_outside: list[LinkEscape] = field(default_factory=list)
    secrets_truncated: list[tuple[str, int]] = field(default_factory=list)  # (binary path, full size)
    harness: list[str] = field(default_factory=list)
    declarations: dict[str, Any] = field(default_factory=dict)
    ledger: list[str] = field(default_factory=list)
    git_pending: str | None = None  # the head whose git facts are not computed yet (files, merge, … left empty)


def ledger_gate(problems: Sequence[str]) -> GateResult:
    """Refuses when a row the gates read does not match the event that vouched for it."""
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        return GateResult(
            "ledger",
            False,
            f"{shown}; {EDITED}.",
            "find every edit with `planegate ledger verify`, then restore the ledger from a backup; "
            "planegate trusts no gate on rows it cannot vouch for",
        )
    return GateResult("ledger", True, "every row the gates read matches the event that wrote it")


def _call(facts: TaskFacts, tool: str) -> str:
    return f"{tool}(run={facts.run!r}, task={facts.task!r})"


def dependencies_gate(facts: TaskFacts) -> GateResult:
    waiting = [f"{d} ({s})" for d, s in facts.deps if s != "accepted"]
    if waiting:
        return GateResult(
            "dependencies", False, f"dependencies not accepted: {', '.join(waiting)}.", "accept those tasks first"
        )
    return GateResult("dependencies", True, "every dependency is accepted")


def scope_gate(facts: TaskFacts, policy: Policy) -> GateResult:
    # A committed link out of the repository reaches paths no scope can cover: checks, red→green
    # and reviews run in the worktree and would read (or write) through it.
    if facts.links_outside:
        return GateResult(
            "scope",
            False,
            "commits symlinks that point outside the repository: "
            + ", ".join(link.describe() for link in facts.links_outside[:10])
            + ".",
            "remove them (git rm the link) or point them at a path inside the repository, in a new commit",
        )
    denied = [f.path for f in facts.files if matches_any(f.path, policy.denied)]
    if denied:
        return GateResult(
            "scope",
            False,
            f"changes denied paths: {', '.join(denied[:10])}.",
            "revert those files in a new commit (deny_paths in the policy)",
        )
    outside = [
        f.path
        for f in facts.files
        if not matches_any(f.path, facts.scope) and not matches_any(f.path, policy.test_paths)
    ]
    if outside:
        return GateResult(
            "scope",
            False,
            f"changes paths outside the task's scope ({', '.join(facts.scope)}): {', '.join(outside[:10])}.",
            "revert them in a new commit, or give that work to the task that owns those paths",
        )
    if policy.allowed_extensions is not None:
        wrong = [f.path for f in facts.files if PurePosixPath(f.path).suffix not in policy.allowed_extensions]
        if wrong:
            return GateResult(
                "scope",
                False,
                f"changes file types outside allowed_extensions "
                f"({', '.join(policy.allowed_extensions)}): {', '.join(wrong[:10])}.",
                "remove those files in a new commit",
            )
    return GateResult("scope", True, f"{len(facts.files)} changed path(s), all in scope")


def budget_gate(facts: TaskFacts, policy: Policy) -> GateResult:
    files = len(facts.files)
    lines = sum(f.added + f.deleted for f in facts.files)
    problems = []
    if files > policy.max_files:
        problems.append(f"{files} files changed (max_files {policy.max_files})")
    if lines > policy.max_changed_lines:
        problems.append(f"{lines} lines changed (max_changed_lines {policy.max_changed_lines})")
    if problems:
        return GateResult(
            "budget",
            False,
            "; ".join(problems) + ".",
            "split the task (cancel_task and plan smaller tasks) or shrink the change",
        )
    return GateResult("budget", True, f"{files} file(s), {lines} line(s) within budget")


def secrets_gate(facts: TaskFacts) -> GateResult:
    limit = f"{BLOB_SCAN_LIMIT // (1024 * 1024)} MiB"
    truncated = "".join(
        f" {path} was scanned only in its first {limit} ({size} bytes in all)."
        for path, size in facts.secrets_truncated
    )
    if facts.secrets:
        found = ", ".join(f"{s.kind} at {s.location()}" for s in facts.secrets[:10])
        return GateResult(
            "secrets",
            False,
            f"secrets in the change: {found}.{truncated}",
            "remove them in a new commit and rotate them (they are in the branch history)",
        )
    return GateResult("secrets", True, f"no secret in added lines, lock files or binary files.{truncated}")


def _latest(evidence: Sequence[dict[str, Any]], kind: str, head: str | None) -> dict[str, Any] | None:
    """The newest direct evidence of ``kind`` on ``head`` (rows are newest first)."""
    return next((e for e in evidence if e["kind"] == kind and e["label"] == "direct" and e["head_sha"] == head), None)


def checks_gate(facts: TaskFacts, policy: Policy) -> GateResult:
    if policy.required_checks is None and not policy.checks:
        return GateResult(
            "checks",
            False,
            "the policy defines no checks, so nothing proves this task works.",
            "add one under [checks] in .planegate/policy.toml (or required_checks = [] to waive)",
        )
    missing, failing = [], []
    for name in policy.required:
        row = _latest(facts.evidence, name, facts.head_sha)
        if row is None:
            missing.append(name)
        elif row["exit_code"] != 0:
            failing.append(f"{name} (exit {row['exit_code']}, evidence {row['id']})")
    if failing:
        return GateResult(
            "checks",
            False,
            f"required checks fail on head {str(facts.head_sha)[:12]}: {', '.join(failing)}.",
            "fix the failures, commit, then " + _call(facts, "run_checks"),
        )
    if missing:
        stale = [n for n in missing if any(e["kind"] == n and e["label"] == "direct" for e in facts.evidence)]
        reported = [n for n in missing if any(e["kind"] == n and e["label"] != "direct" for e in facts.evidence)]
        notes = []
        if stale:
            notes.append(f"evidence for {', '.join(stale)} is stale (made on an older commit)")
        if reported:
            notes.append(f"{', '.join(reported)} only has reported evidence, which is never counted")
        detail = f" ({'; '.join(notes)})" if notes else ""
        return GateResult(
            "checks",
            False,
            f"no direct evidence on head {str(facts.head_sha)[:12]} for {', '.join(missing)}{detail}.",
            _call(facts, "run_checks"),
        )
    return GateResult("checks", True, f"{', '.join(policy.required) or 'no'} required check(s) pass on the head")


def red_green_gate(facts: TaskFacts, policy: Policy) -> GateResult:
    if not policy.require_red_green:
        return GateResult("red_green", True, "not required by the policy")
    runtime = [
        f.path
        for f in facts.files
        if matches_any(f.path, policy.runtime_paths) and not matches_any(f.path, policy.test_paths)
    ]
    tests = [f.path for f in facts.files if matches_any(f.path, policy.test_paths)]
    if not runtime and not tests:
        return GateResult("red_green", True, "not needed: no runtime path or test changed")
    row = _latest(facts.evidence, "red_green", facts.head_sha)
    if row is None:
        changed = (
            f"runtime paths changed ({', '.join(runtime[:5])})"
            if runtime
            else f"tests changed ({', '.join(tests[:5])})"
        )
        return GateResult(
            "red_green",
            False,
            f"{changed} and red→green is not checked on the head.",
            _call(facts, "run_checks") + " (it runs red→green when runtime paths or tests change)",
        )
    verdict = row["summary"].removeprefix("red_green: ").split("\n", 1)[0]
    if row["exit_code"] != 0:
        return GateResult(
            "red_green",
            False,
            verdict + ".",
            "add or fix a test that fails without the change, commit, then " + _call(facts, "run_checks"),
        )
    return GateResult("red_green", True, verdict[:300])


def _declared_globs(facts: TaskFacts, key: str) -> list[str]:
    item = facts.declarations.get(key) or {}
    return list(item.get("paths") or item.get("tests") or [])


def tests_gate(facts: TaskFacts, policy: Policy) -> GateResult:
    """Test integrity (tests passing on the base still pass on the head, from the evidence the
    checks job recorded) and declared harness changes."""
    problems: list[str] = []
    steps: list[str] = []
    declared_harness = _declared_globs(facts, "changes_harness")
    undeclared = [h for h in facts.harness if not matches_any(h.split("#", 1)[0], declared_harness)]
    if undeclared:
        problems.append(
            f"changes test-harness paths the task did not declare: {', '.join(undeclared[:10])} "
            "(they decide how tests run and what counts as a pass)"
        )
        steps.append(
            "revert them in a new commit; if the task must change them, cancel_task and plan a task whose graph "
            "entry declares changes_harness with a reason (declarations are part of the plan a human approves)"
        )
    integrity = policy.tests.integrity and policy.test_check in policy.checks
    if integrity:
        row = _latest(facts.evidence, "test_integrity", facts.head_sha)
        if row is None:
            problems.append(f"test integrity is not checked on head {str(facts.head_sha)[:12]}")
            steps.append(_call(facts, "run_checks"))
        elif row["exit_code"] != 0:
            problems.append(row["summary"].removeprefix("test_integrity: ").split("\n", 1)[0])
            steps.append(
                "restore the tests in a new commit, then "
                + _call(facts, "run_checks")
                + "; a removal the task needs must be planned: removes_tests with a reason in its graph entry"
            )
    if problems:
        return GateResult("tests", False, "; ".join(problems) + ".", "; ".join(steps))
    if integrity:
        parts = ["every test passing on the base still passes on the head"]
    elif policy.tests.integrity:
        parts = [f"no test check to compare by (the policy defines no check named {policy.test_check!r})"]
    else:
        parts = ["test integrity not required by the policy"]
    if facts.harness:
        parts.append(f"declared harness changes: {', '.join(facts.harness[:5])}")
    removed = _declared_globs(facts, "removes_tests")
    if removed:
        parts.append(f"declared removals: {', '.join(removed[:5])}")
    return GateResult("tests", True, "; ".join(parts))


def identity_gate(review: ReviewFacts, facts: TaskFacts) -> GateResult | None:
    """The review gate's refusal when ``review``'s reviewer is the task's executor (see identity.py)."""
    reviewer = review.identity or legacy_identity(review.reviewer)
    executor = facts.executor or legacy_identity(facts.executor_identity)
    check = compare(reviewer, executor)
    if not check.same:
        return None
    return GateResult("review", False, f"review {review.id}: {check.reason(reviewer, executor)}.", check.next_step())


def review_gate(facts: TaskFacts, policy: Policy) -> GateResult:
    if not policy.require_review:
        return GateResult("review", True, "not required by the policy")
    on_head = [r for r in facts.reviews if r.head_sha == facts.head_sha and r.status == "completed"]
    if not on_head:
        older = [r for r in facts.reviews if r.status == "completed" and r.head_sha != facts.head_sha]
        detail = f" (review {older[0].id} was made on {older[0].head_sha[:12]}, an older commit)" if older else ""
        return GateResult(
            "review",
            False,
            f"no completed review on head {str(facts.head_sha)[:12]}{detail}.",
            _call(facts, "request_review"),
        )
    latest = on_head[0]
    if latest.verdict != "approve":
        return GateResult(
            "review",
            False,
            f"review {latest.id} says {latest.verdict}.",
            "address its findings, commit, run_checks, then " + _call(facts, "request_review"),
        )
    clash = identity_gate(latest, facts)
    if clash is not None:
        return clash
    if latest.requirements_version < facts.requirements_changed_at:
        return GateResult(
            "review",
            False,
            f"review {latest.id} predates the amendment of this task's requirements "
            f"(version {facts.requirements_changed_at}).",
            _call(facts, "request_review"),
        )
    if latest.open_serious:
        return GateResult(
            "review",
            False,
            f"review {latest.id} approves but leaves open findings: {'; '.join(latest.open_serious[:5])}.",
            "fix them, commit, run_checks and request_review again",
        )
    return GateResult("review", True, f"review {latest.id} approves the head")


def merge_gate(facts: TaskFacts) -> GateResult:
    if facts.dirty:
        return GateResult(
            "merge",
            False,
            f"the worktree has uncommitted changes ({', '.join(facts.dirty[:5])}) that would be lost.",
            "commit them (and run_checks again) or discard them",
        )
    if not facts.files:
        return GateResult(
            "merge",
            False,
            "the task branch changes nothing beyond its base commit.",
            "commit the work on the task branch first",
        )
    if facts.merge is None:
        return GateResult("merge", True, "checked when accepting")
    if not facts.merge.ok:
        return conflict_gate(facts.merge.conflicts)
    return GateResult("merge", True, "merges cleanly into the integration branch")


def conflict_gate(conflicts: list[str]) -> GateResult:
    return GateResult(
        "merge",
        False,
        f"merging into the integration branch conflicts in {', '.join(conflicts[:10])}.",
        "merge the integration branch into the task branch, resolve, commit, run_checks and accept again",
    )


def task_gates(facts: TaskFacts, policy: Policy) -> list[GateResult]:
    return [
        ledger_gate(facts.ledger),
        dependencies_gate(facts),
        scope_gate(facts, policy),
        budget_gate(facts, policy),
        secrets_gate(facts),
        checks_gate(facts, policy),
        red_green_gate(facts, policy),
        tests_gate(facts, policy),
        review_gate(facts, policy),
        merge_gate(facts),
    ]


@dataclass
class RunFacts:
    run: str
    tasks: list[dict[str, Any]]
    coverage: dict[str, list[str]]
    integration_head: str | None
    evidence: list[dict[str, Any]]
    release_reviews: list[ReviewFacts]
    approvals: list[dict[str, Any]]
    ledger: list[str] = field(default_factory=list)


def tasks_gate(facts: RunFacts) -> GateResult:
    open_tasks = [f"{t['id']} ({t['status']})" for t in facts.tasks if t["status"] not in ("accepted", "cancelled")]
    unexplained = [t["id"] for t in facts.tasks if t["status"] == "cancelled" and not t["cancel_reason"]]
    if open_tasks or unexplained:
        problems = ([f"open: {', '.join(open_tasks[:10])}"] if open_tasks else []) + (
            [f"cancelled without a reason: {', '.join(unexplained)}"] if unexplained else []
        )
        return GateResult("tasks", False, "; ".join(problems) + ".", "accept or cancel (with a reason) every task")
    return GateResult("tasks", True, f"{len(facts.tasks)} task(s) accepted or cancelled with a reason")


def coverage_gate(facts: RunFacts) -> GateResult:
    uncovered = [rid for rid, tasks in facts.coverage.items() if not tasks]
    if uncovered:
        return GateResult(
            "coverage",
            False,
            f"requirements served by no accepted task: {', '.join(uncovered)}.",
            "accept a task serving them, or amend the requirements with a reason",
        )
    return GateResult("coverage", True, f"all {len(facts.coverage)} requirement(s) served by accepted tasks")


def run_checks_gate(facts: RunFacts, policy: Policy) -> GateResult:
    missing = []
    for name in policy.required:
        row = _latest(facts.evidence, name, facts.integration_head)
        if row is None or row["exit_code"] != 0:
            missing.append(name if row is None else f"{name} (exit {row['exit_code']})")
    if missing:
        return GateResult(
            "checks",
            False,
            f"required checks without passing direct evidence on the integration head "
            f"{str(facts.integration_head)[:12]}: {', '.join(missing)}.",
            f"run_checks(run={facts.run!r})",
        )
    return GateResult("checks", True, "required checks pass on the integration head")


def release_review_gate(facts: RunFacts) -> GateResult:
    on_head = [r for r in facts.release_reviews if r.head_sha == facts.integration_head and r.status == "completed"]
    call = f"request_review(run={facts.run!r}, release=True)"
    if not on_head:
        return GateResult(
            "release_review",
            False,
            f"no completed release review of the integration head {str(facts.integration_head)[:12]}.",
            call,
        )
    latest = on_head[0]
    if latest.verdict != "approve":
        return GateResult(
            "release_review",
            False,
            f"release review {latest.id} says {latest.verdict}.",
            f"address its findings, then {call}",
        )
    if latest.open_serious:
        return GateResult(
            "release_review",
            False,
            f"release review {latest.id} leaves open findings: {'; '.join(latest.open_serious[:5])}.",
            f"fix them, then {call}",
        )
    return GateResult("release_review", True, f"release review {latest.id} approves")


def human_gate(facts: RunFacts, policy: Policy) -> GateResult:
    """Approvals arrive checked (``approval.check_approvals``): ``problem`` says why one cannot count."""
    if not policy.require_human_approval:
        return GateResult("human_approval", True, "not required by the policy")
    signed = policy.approval.mode == "signed"
    on_head = [a for a in facts.approvals if a["head_sha"] == facts.integration_head]
    good = [a for a in on_head if a.get("problem") is None]
    if good:
        a = good[0]
        if a.get("mode") == "signed":
            return GateResult("human_approval", True, f"signed by {a['principal']} (approval {a['id']})")
        return GateResult("human_approval", True, f"approved by {a['by']} via {a['via']}")
    if on_head:
        reason = f"approval {on_head[0]['id']} of the integration head does not count: {on_head[0]['problem']}."
    else:
        stale = " (an earlier approval was for another integration head)" if facts.approvals else ""
        kind = "signed human approval" if signed else "human approval"
        reason = f"no {kind} of the integration head {str(facts.integration_head)[:12]}{stale}."
    step = (
        f"a human runs `planegate approve {facts.run}` in their own terminal; it signs with their SSH key "
        "(in signed mode an answer in the client cannot approve)"
        if signed
        else f"a human runs `planegate approve {facts.run}`, or answers accept_run's confirmation in the client"
    )
    return GateResult("human_approval", False, reason, step)


def run_gates(facts: RunFacts, policy: Policy) -> list[GateResult]:
    return [
        ledger_gate(facts.ledger),
        tasks_gate(facts),
        coverage_gate(facts),
        run_checks_gate(facts, policy),
        release_review_gate(facts),
        human_gate(facts, policy),
    ]
