"""The shapes clients send and receive: typed inputs and the pydantic results every tool returns.

Inputs forbid unknown fields, so a misspelt key is an error naming it rather than a silently
dropped value. Field descriptions are short on purpose: they are sent to every client in
``tools/list`` and agents pay for each token.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import Disposition

FailureKind = Annotated[
    Disposition | None,
    Field(description="set when it did not succeed: what kind of failure, to branch on (see next_step)"),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Requirement(_In):
    id: str = Field(description="e.g. R1")
    statement: str
    acceptance_criteria: list[str] = Field(description="at least one, each checkable")


class Module(_In):
    name: str
    owns: list[str] = Field(description="path globs this module owns, e.g. src/api/**")
    depends_on: list[str] = Field(default_factory=list)
    shared: bool = Field(default=False, description="may overlap other modules' ownership")


class Decision(_In):
    title: str
    decision: str
    rationale: str = ""


class DeclaredTests(_In):
    tests: list[str] = Field(description="test ids, files or globs")
    reason: str


class DeclaredHarness(_In):
    paths: list[str] = Field(description="path globs")
    reason: str


class TaskSpec(_In):
    id: str = Field(description="a-z0-9._- (becomes a branch name)")
    title: str
    goal: str
    depends_on: list[str] = Field(default_factory=list)
    scope: list[str] = Field(description="path globs the task may change")
    requirements: list[str] = Field(description="requirement ids it serves")
    acceptance: list[str] = Field(default_factory=list, description="acceptance notes")
    removes_tests: DeclaredTests | None = Field(default=None, description="passing tests it removes")
    rewrites_tests: DeclaredTests | None = Field(default=None, description="changed tests that may pass on the base")
    changes_harness: DeclaredHarness | None = Field(default=None, description="test-harness files it changes")


Executor = Literal["agent", "command", "codex"]
Reported = Literal["local", "proxy", "blocked"]

RunStage = Literal[
    "draft",
    "requirements_frozen",
    "architecture_frozen",
    "planned",
    "executing",
    "release_review",
    "accepted",
    "abandoned",
]
STAGES: tuple[str, ...] = RunStage.__args__  # type: ignore[attr-defined]

TaskStatus = Literal[
    "blocked", "ready", "in_progress", "in_review", "changes_requested", "approved", "accepted", "cancelled"
]
ACTIVE_STATUSES = ("in_progress", "in_review", "changes_requested", "approved")


def stage_at_least(stage: str, wanted: str) -> bool:
    """Is ``stage`` at or past ``wanted`` on the linear path (abandoned is past nothing)?"""
    if stage == "abandoned":
        return False
    return STAGES.index(stage) >= STAGES.index(wanted)


class StartRunResult(BaseModel):
    run: str
    repo: str
    base_sha: str
    integration_branch: str
    stage: RunStage
    policy: str = Field(description="where the policy came from and its sha256")
    next_step: str


class FreezeResult(BaseModel):
    run: str
    version: int
    content_sha256: str
    stage: RunStage
    added: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    stale_tasks: list[str] = Field(default_factory=list, description="tasks whose approvals are now stale")
    next_step: str


class GraphResult(BaseModel):
    run: str
    version: int
    tasks: int
    waves: list[list[str]]
    coverage: dict[str, list[str]] = Field(description="requirement id -> tasks serving it")
    ready: list[str]
    next_step: str


class RunLine(BaseModel):
    run: str
    goal: str
    stage: RunStage
    repo: str
    created_at: str
    tasks: int


class Blocked(BaseModel):
    task: str
    reason: str


class EvidenceLine(BaseModel):
    id: int
    kind: str
    label: str
    exit_code: int | None = None
    stale: bool = Field(description="made on an older head commit")
    summary: str


class GateLine(BaseModel):
    gate: str
    ok: bool
    reason: str
    next_step: str = ""


class ActiveTask(BaseModel):
    task: str
    status: TaskStatus
    branch: str | None = None
    worktree: str | None = None
    head_sha: str | None = None
    lease_expires: str | None = None
    lease_expired: bool = False
    evidence: list[EvidenceLine] = Field(default_factory=list)
    gates: list[GateLine] = Field(default_factory=list)


class RunStatus(BaseModel):
    run: str
    goal: str
    stage: RunStage
    repo: str
    base_sha: str
    integration_branch: str
    counts: dict[str, int]
    ready: list[str]
    blocked: list[Blocked]
    active: list[ActiveTask] = Field(default_factory=list)
    risks: list[str] = Field(default_factory=list)
    more: dict[str, int] = Field(default_factory=dict, description="entries left out of each list")


class StatusResult(BaseModel):
    runs: list[RunLine] | None = None
    runs_total: int | None = None
    status: RunStatus | None = None
    workers: str | None = Field(default=None, description="set while job workers are paused or draining")
    next_action: str


class DispatchResult(BaseModel):
    run: str
    task: str
    worktree: str
    branch: str
    base_sha: str
    lease_expires: str
    executor: Executor
    job: int | None = Field(default=None, description="executor job id (command/codex)")
    taken_over: bool = False
    envelope_path: str
    envelope: str
    next_step: str


class CancelResult(BaseModel):
    run: str
    task: str
    status: Literal["cancelled"]
    worktree: str | None
    cancelled_jobs: list[int]
    next_step: str


class ArtifactLine(BaseModel):
    name: str
    path: str
    sha256: str
    bytes: int


class EvidenceResult(BaseModel):
    id: int
    run: str
    task: str
    kind: str
    label: Reported
    head_sha: str | None
    artifacts: list[ArtifactLine] = Field(default_factory=list)
    counted: bool = Field(description="whether any gate counts it: never for reported evidence")
    next_step: str


class CheckLine(BaseModel):
    check: str
    evidence: int
    exit_code: int
    duration_ms: int
    label: Literal["direct", "proxy"]
    summary: str


class ChecksResult(BaseModel):
    run: str
    task: str | None
    job: int
    state: str = Field(description="queued, running, succeeded, failed, attention or cancelled")
    head_sha: str
    results: list[CheckLine] = Field(default_factory=list)
    all_passed: bool | None = None
    progress: str | None = None
    error: str | None = None
    disposition: FailureKind = None
    next_step: str


class AcceptResult(BaseModel):
    run: str
    task: str
    merge_sha: str
    checkpoint: str
    unlocked: list[str]
    worktree_removed: bool
    note: str = ""
    next_step: str


class RollbackResult(BaseModel):
    run: str
    checkpoint: str
    integration_sha: str
    reverted: list[str]
    statuses: dict[str, str]


class JobResult(BaseModel):
    job: int
    kind: str
    run: str
    task: str | None
    state: str = Field(description="queued, running, succeeded, failed, attention or cancelled")
    attempts: int
    progress: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    checks: list[CheckLine] | None = Field(default=None, description="for a checks job: its evidence")
    all_passed: bool | None = None
    disposition: FailureKind = None
    next_step: str


class CancelJobResult(BaseModel):
    job: int
    kind: str
    run: str
    task: str | None
    state: Literal["cancelled"]
    was: str = Field(description="its state before: queued, running or cancelled")
    reason: str
    stopped: list[str] = Field(default_factory=list, description="what happened to its processes")
    next_step: str


class ReviewRequestResult(BaseModel):
    review: str
    run: str
    task: str | None
    state: str
    reviewer: str
    head_sha: str
    job: int | None
    packet: str = Field(description="folder holding the packet files and prompt")
    next_step: str


class FindingLine(BaseModel):
    severity: str
    title: str
    file: str | None
    line: int | None
    detail: str


class ReviewResult(BaseModel):
    review: str
    run: str
    task: str | None = Field(description="null for the release review")
    state: str = Field(
        description="queued, running, waiting, pending (sent, the reply still coming), completed, incomplete, failed"
    )
    reviewer: str
    verdict: str | None
    summary: str | None
    head_sha: str
    stale: bool = Field(description="the head moved since this review")
    findings: list[FindingLine]
    missing_tests: list[str]
    requirements: dict[str, str] = Field(description="requirement id -> met, partial or unmet")
    conversation_url: str | None
    error: str | None
    progress: str | None = Field(default=None, description="liveness of a reply still coming")
    notes: list[str] = Field(default_factory=list, description="the reviewer's notes, e.g. an unverified model")
    disposition: FailureKind = None
    next_step: str


class ApprovalResult(BaseModel):
    run: str
    by: str
    via: str
    head_sha: str
    open_tasks: list[str]
    mode: str = "interactive"
    principal: str | None = None
    tag: str | None = None


class AcceptRunResult(BaseModel):
    run: str
    stage: RunStage
    integration_sha: str
    integration_branch: str
    gates: list[GateLine]
    report: str = Field(description="markdown report, usable as a pull-request body")
    report_html: str
    next_step: str
