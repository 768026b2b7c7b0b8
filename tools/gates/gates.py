"""The gates: pure functions of ledger rows, git facts and the policy.

Each gate returns ``GateResult(gate, ok, reason, next_step)``. Nothing here reads the disk, the
ledger or git: ``facts.py`` gathers what a gate needs, so every gate is testable on its own and
the same evaluation serves ``get_status`` (shown) and ``accept_*`` (enforced).

Task gates, all on the task's current head commit: ledger, dependencies, scope, budget, secrets,
checks, red_green, review, merge. Run gates: ledger, tasks, coverage, checks, release_review,
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
from .secrets import SecretFinding

SERIOUS = ("critical", "high")


@dataclass(frozen=True)
class GateResult:
    gate: str
    ok: bool
    reason: str
    next_step: str = ""


class GatesUnmet(PlanegateError):
    """Acceptance was refused; ``unmet`` lists every gate that does not hold."""

    def __init__(self, subject: str, unmet: Sequence[GateResult]) -> None:
        self.unmet = list(unmet)
        lines = [f"{subject}: {len(self.unmet)} gate(s) unmet, nothing was merged or changed:"]
        lines += [f"- {g.gate}: {g.reason} Next: {g.next_step}" for g in self.unmet]
        super().__init__("\n".join(lines))


@dataclass
class ReviewFacts:
    id: str
    status: str
    verdict: str | None
    head_sha: str
    reviewer: str
    requirements_version: int
    open_serious: list[str] = field(default_factory=list)


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
    ledger: list[str] = field(default_factory=list)


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
    if facts.secrets:
        found = ", ".join(f"{s.kind} at {s.path}:{s.line}" for s in facts.secrets[:10])
        return GateResult(
            "secrets",
            False,
            f"secrets in added lines: {found}.",
            "remove them in a new commit and rotate them (they are in the branch history)",
        )
    return GateResult("secrets", True, "no secret in added lines")


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
    runtime = [
        f.path
        for f in facts.files
        if matches_any(f.path, policy.runtime_paths) and not matches_any(f.path, policy.test_paths)
    ]
    if not policy.require_red_green:
        return GateResult("red_green", True, "not required by the policy")
    if not runtime:
        return GateResult("red_green", True, "not needed: no runtime path changed")
    row = _latest(facts.evidence, "red_green", facts.head_sha)
    if row is None:
        return GateResult(
            "red_green",
            False,
            f"runtime paths changed ({', '.join(runtime[:5])}) and red→green is not proven on the head.",
            _call(facts, "run_checks") + " (it runs red→green when runtime paths change)",
        )
    if row["exit_code"] != 0:
        return GateResult(
            "red_green",
            False,
            row["summary"].removeprefix("red_green: ") + ".",
            "add or fix a test that fails without the change, commit, then " + _call(facts, "run_checks"),
        )
    return GateResult("red_green", True, "proven on the head")


_INTERPRETERS = ("python", "node", "bash", "sh", "ruby", "perl", "uv", "uvx", "npx", "deno", "bun", "env")


def command_identity(argv: Sequence[str]) -> str:
    """``command:<program>``, naming the program an interpreter runs rather than the interpreter."""
    name = PurePosixPath(argv[0]).name
    if name.rstrip("0123456789.").startswith(_INTERPRETERS):
        rest = list(argv[1:])
        if "-m" in rest and rest.index("-m") + 1 < len(rest):
            return f"command:{rest[rest.index('-m') + 1]}"
        target = next((a for a in rest if not a.startswith("-")), None)
        if target:
            return f"command:{PurePosixPath(target).name}"
    return f"command:{name}"


def same_identity(a: str, b: str) -> bool:
    """Whether two actor names denote the same tool (``command:codex`` and ``codex`` do)."""

    def core(name: str) -> str:
        tail = name.split(":", 1)[-1].split("@", 1)[0]
        return "".join(ch for ch in PurePosixPath(tail.split(" ", 1)[0]).name.lower() if ch.isalnum())

    x, y = core(a), core(b)
    return bool(x and y) and (x == y or x in y or y in x)


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
    if same_identity(latest.reviewer, facts.executor_identity):
        return GateResult(
            "review",
            False,
            f"review {latest.id} was made by {latest.reviewer}, the same as the task's executor "
            f"({facts.executor_identity}); a second model must review.",
            "configure another reviewer ([review] in the policy) and request_review again",
        )
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
    if not policy.require_human_approval:
        return GateResult("human_approval", True, "not required by the policy")
    on_head = [a for a in facts.approvals if a["head_sha"] == facts.integration_head]
    if on_head:
        return GateResult("human_approval", True, f"approved by {on_head[0]['by']} via {on_head[0]['via']}")
    stale = " (an earlier approval was for another integration head)" if facts.approvals else ""
    return GateResult(
        "human_approval",
        False,
        f"no human approval of the integration head{stale}.",
        f"a human runs `planegate approve {facts.run}`, or answers accept_run's confirmation in the client",
    )


def run_gates(facts: RunFacts, policy: Policy) -> list[GateResult]:
    return [
        ledger_gate(facts.ledger),
        tasks_gate(facts),
        coverage_gate(facts),
        run_checks_gate(facts, policy),
        release_review_gate(facts),
        human_gate(facts, policy),
    ]
