"""The shapes clients send and receive: typed inputs and the pydantic results every tool returns.

Inputs forbid unknown fields, so a misspelt key is an error naming it rather than a silently
dropped value. Field descriptions are short on purpose: they are sent to every client in
``tools/list`` and agents pay for each token.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .errors import Disposition

# What kind of failure, to branch on; the server's instructions name the words once for every tool.
FailureKind = Annotated[Disposition | None, Field()]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Link(BaseModel):
    """A big payload a reply names instead of carrying: its ``links`` field maps the URI to the
    name, and the reply adds a ``resource_link`` block with the type and size (kept here)."""

    uri: str
    name: str
    mime_type: str
    bytes: int | None = None


def set_links(result: Any, links: list[Link]) -> None:
    """Name ``links`` in ``result.links`` and keep their details for the reply's link blocks."""
    result.links = {link.uri: link.name for link in links}
    result._link_details = list(links)


def link_details(result: Any) -> list[Link]:
    """The links of ``result`` with their details (a result rebuilt from JSON has only names)."""
    details: list[Link] = list(getattr(result, "_link_details", None) or [])
    known = {link.uri for link in details}
    named: dict[str, str] = getattr(result, "links", None) or {}
    return details + [Link(uri=uri, name=name, mime_type="") for uri, name in named.items() if uri not in known]


def artifact_uri(run: str, artifact: int) -> str:
    """Where an artifact row is served (re-hashed against its recorded sha256 on every read)."""
    return f"planegate://runs/{run}/artifacts/{artifact}"


def task_uri(run: str, task: str) -> str:
    """Where a task's envelope is served."""
    return f"planegate://runs/{run}/tasks/{task}"


def report_uri(run: str) -> str:
    """Where a run's report is served, rendered from the ledger on each read."""
    return f"planegate://runs/{run}/report"


class Requirement(_In):
    id: str = Field(description="e.g. R1")
    statement: str
    acceptance_criteria: list[str] = Field(description="at least one, each checkable")


class Module(_In):
    name: str
    owns: list[str] = Field(description="path globs it owns, e.g. src/api/**")
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
    acceptance: list[str] = Field(default_factory=list)
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
    policy: str  # where the policy came from, and its sha256
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
    gates: list[GateLine] = Field(default_factory=list, description="unmet gates")
    met: list[str] = Field(default_factory=list, description="gates that hold")
    notes: list[str] = Field(default_factory=list)


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
    disk: str | None = Field(default=None, description="its worktrees' disk use")


class StatusResult(BaseModel):
    runs: list[RunLine] | None = None
    runs_total: int | None = None
    runs_hidden: int | None = None
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
    job: int | None = None
    job_state: str | None = None
    taken_over: bool = False
    bootstrap: str | None = None
    envelope_path: str
    links: dict[str, str] = Field(default_factory=dict)
    _link_details: list[Link] = PrivateAttr(default_factory=list)
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
    counted: bool  # whether a gate counts it: never for reported evidence
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
    links: dict[str, str] = Field(default_factory=dict)
    _link_details: list[Link] = PrivateAttr(default_factory=list)
    gates: list[GateLine] = Field(default_factory=list, description="unmet diff gates")
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
    checks: list[CheckLine] | None = None
    all_passed: bool | None = None
    links: dict[str, str] = Field(default_factory=dict)
    _link_details: list[Link] = PrivateAttr(default_factory=list)
    disposition: FailureKind = None
    next_step: str


class CancelJobResult(BaseModel):
    job: int
    kind: str
    run: str
    task: str | None
    state: Literal["cancelled"]
    was: str  # its state before: queued, running or cancelled
    reason: str
    stopped: list[str] = Field(default_factory=list)
    next_step: str


class ReviewRequestResult(BaseModel):
    review: str
    run: str
    task: str | None
    state: str
    reviewer: str
    head_sha: str
    job: int | None
    packet: str  # the folder holding the packet files and the prompt
    verdict: str | None = None
    links: dict[str, str] = Field(default_factory=dict)
    _link_details: list[Link] = PrivateAttr(default_factory=list)
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
    task: str | None = Field(description="null: the release review")
    state: str = Field(
        description="queued, running, waiting, pending (reply still coming), completed, incomplete, failed"
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
    progress: str | None = None
    notes: list[str] = Field(default_factory=list)
    links: dict[str, str] = Field(default_factory=dict)
    _link_details: list[Link] = PrivateAttr(default_factory=list)
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
    report: str = Field(description="markdown, usable as a pull-request body")
    report_html: str
    links: dict[str, str] = Field(default_factory=dict)
    _link_details: list[Link] = PrivateAttr(default_factory=list)
    cleaned: list[str] = Field(default_factory=list)
    next_step: str


class AbandonResult(BaseModel):
    run: str
    cancelled_tasks: list[str]
    cancelled_jobs: list[int]
    removed_worktrees: list[str]
    kept_worktrees: list[str] = Field(description="uncommitted work inside")
    next_step: str


class AmendResult(BaseModel):
    run: str
    version: int
    added: list[str]
    cancelled: list[str]
    changed: list[str]
    waves: list[list[str]]
    coverage: dict[str, list[str]]
    ready: list[str]
    cancelled_jobs: list[int] = Field(default_factory=list)
    next_step: str


class PublishResult(BaseModel):
    run: str
    branch: str
    base: str
    sha: str
    pushed: bool
    pull_request: str | None  # the draft pull request's URL
    body: str
    truncated: bool
    commands: list[str] = Field(default_factory=list, description="to run when gh could not")
    next_step: str
