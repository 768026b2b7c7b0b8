"""Accepting a whole run: the run gates, human approval, and the acceptance record.

Human approval never comes from a value the agent passes. It is recorded by ``planegate
approve RUN`` at the human's terminal, or by the MCP surface when the user confirms an elicitation
in their own client (interactive mode only). In signed mode (``[approval] mode = "signed"``) the
approval is a statement signed with the human's SSH key, checked against the allowed signers
committed at the run's base before it is recorded and again every time the gates are evaluated,
and carried by a signed tag ``planegate/<run>/approved`` (see ``approval``). Either way it is
bound to the integration head it approved, so a later merge needs a new approval.

The run's ledger gate confirms the rows the run gates read (the run row, the current
requirements, the run's evidence, the release reviews, the approvals) against their events;
accepting the run also verifies the whole ledger (``verify_ledger`` with the run's checkpoint
tags as anchors), so an edit, insertion or deletion anywhere in the ledger refuses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from planegate.store import EDITED, verify_ledger

from ..control.runs import current_requirements, set_stage
from ..env import Env
from ..errors import Conflict, InvalidInput, PlanegateError, WrongState
from ..models import ApprovalResult
from . import approval, signing
from .accept import checkpoint_anchors
from .adopt import adoption_problems
from .facts import review_facts, trusted_evidence, vouched
from .gates import GateResult, GatesUnmet, RunFacts, run_gates


def run_facts(env: Env, run: str) -> RunFacts:
    run_row = env.run_row(run)
    ledger: list[str] = []
    vouched(env, "runs", [run_row], ledger)
    ledger += adoption_problems(env, run_row)
    vouched(
        env,
        "requirement_versions",
        env.store.rows(
            "SELECT * FROM requirement_versions WHERE run_id = ? AND version = ?",
            (run, run_row["requirements_version"]),
        ),
        ledger,
    )
    head = env.repo(run_row["repo"]).branch_sha(run_row["integration_branch"])
    tasks = env.store.rows(
        "SELECT id, status, cancel_reason, requirements FROM tasks WHERE run_id = ? ORDER BY seq", (run,)
    )
    coverage: dict[str, list[str]] = {rid: [] for rid in sorted(current_requirements(env, run))}
    for task in tasks:
        if task["status"] == "accepted":
            for rid in json.loads(task["requirements"]):
                if rid in coverage:
                    coverage[rid].append(task["id"])
    return RunFacts(
        run=run,
        tasks=tasks,
        coverage=coverage,
        integration_head=head,
        evidence=trusted_evidence(
            env,
            env.store.rows(
                "SELECT * FROM evidence WHERE run_id = ? AND task_id IS NULL ORDER BY id DESC LIMIT 200", (run,)
            ),
            head,
            ledger,
        ),
        release_reviews=review_facts(env, run, None, ledger=ledger),
        approvals=approval.check_approvals(
            env,
            run_row,
            vouched(
                env,
                "approvals",
                env.store.rows("SELECT * FROM approvals WHERE run_id = ? ORDER BY id DESC", (run,)),
                ledger,
            ),
            head,
        ),
        ledger=ledger,
    )


def whole_ledger_gate(env: Env, run: str) -> GateResult:
    """``ledger verify`` over the whole ledger and the run's checkpoint tags (accepting a run only)."""
    anchors, _ = checkpoint_anchors(env, [run])
    report = verify_ledger(env.store, anchors=anchors, artifact_runs={run})
    if report.ok:
        return GateResult(
            "ledger",
            True,
            f"ledger verified: {report.events_verified} events, {report.rows_verified} vouched rows, "
            f"{report.anchors_verified} checkpoint tag(s) match",
        )
    found = (
        [f"the event chain breaks at event {report.chain_break.event_id}: {report.chain_break.what}"]
        if report.chain_break
        else []
    ) + report.problems
    shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
    return GateResult(
        "ledger",
        False,
        f"ledger verify found {len(found)} problem(s): {shown}; {EDITED}.",
        "restore the ledger from a backup (or undo the edit), then accept_run again",
    )


def evaluate_run(env: Env, run: str) -> tuple[RunFacts, list[GateResult]]:
    facts = run_facts(env, run)
    return facts, run_gates(facts, env.policy(env.run_row(run)))


@dataclass(frozen=True)
class PendingApproval:
    """What a human is asked to approve right now: the run at its integration head, under its mode."""

    run_row: dict[str, Any]
    head: str
    mode: approval.Mode
    gates: list[GateResult]
    statement: approval.Statement

    @property
    def run(self) -> str:
        return str(self.run_row["id"])


def pending_approval(env: Env, run: str) -> PendingApproval:
    """The run's current state as a human would approve it.

    Raises:
        WrongState: the run is not executing or in its release review.
    """
    run_row = env.run_row(run)
    if run_row["stage"] not in ("executing", "release_review"):
        raise WrongState(f"run {run!r} is {run_row['stage']}; approve a run once its tasks are being accepted")
    facts, gates = evaluate_run(env, run)
    if facts.integration_head is None:
        raise WrongState(f"run {run!r} has no integration branch {run_row['integration_branch']!r}; was it deleted?")
    return PendingApproval(
        run_row=run_row,
        head=facts.integration_head,
        mode=env.policy(run_row).approval.mode,
        gates=gates,
        statement=approval.statement_for(env, run_row, facts.integration_head),
    )


def approve(
    env: Env,
    run: str,
    by: str,
    via: str,
    *,
    expected_head: str | None = None,
    statement: approval.Statement | None = None,
    signature: str | None = None,
    tag: str | None = None,
) -> ApprovalResult:
    """Record a human's approval of the run's current integration head.

    Unsigned (interactive) approvals are refused when the run's policy asks for signed ones. A
    signed approval is checked before it is recorded: the signature by an allowed signer at the
    base, the statement naming this run, this head and requirements version, and a ledger event
    that still has its hash.

    Raises:
        WrongState: the run is not executing or in its release review, or its policy asks for a
            signed approval and this one is not signed.
        Conflict: the integration head is no longer ``expected_head`` (the human saw another one).
        InvalidInput: the signature or statement does not hold.
    """
    pending = pending_approval(env, run)
    head = pending.head
    if expected_head is not None and head != expected_head:
        raise Conflict(
            f"the integration head of run {run!r} moved from {expected_head[:12]} to {head[:12]} while you were "
            f"deciding; nothing was recorded. Run `planegate approve {run}` again to see what changed"
        )
    if pending.mode == "signed" and signature is None:
        raise WrongState(
            f'run {run!r} needs a signed approval ([approval] mode = "signed" in its policy); '
            f"a human runs `planegate approve {run}` in their own terminal, which signs with their SSH key"
        )
    statement = statement or pending.statement
    principal: str | None = None
    row = {
        "run_id": run,
        "by": by,
        "via": via,
        "head_sha": head,
        "mode": "signed" if signature is not None else "interactive",
        "statement": statement.text(),
        "signature": signature,
        "chain_event": statement.chain_event,
        "chain_hash": statement.chain_hash,
        "tag": tag,
    }
    if signature is not None:
        run_row = pending.run_row
        _, problem = approval.statement_problem(env, run_row, row)
        if problem is None and statement.requirements_version != run_row["requirements_version"]:
            problem = f"its statement is for requirements version {statement.requirements_version}"
        if problem:
            raise InvalidInput(f"signed approval of run {run!r} refused: {problem}")
        allowed = approval.allowed_signers_at_base(env.repo(run_row["repo"]), run_row, env.policy(run_row))
        try:
            principal = approval.signer_of(allowed, statement.text(), signature)
        except InvalidInput as exc:
            raise InvalidInput(
                f"signed approval of run {run!r} refused: {exc} ({env.policy(run_row).approval.allowed_signers} "
                f"at {run_row['base_sha'][:12]})"
            ) from exc
        row["principal"] = principal
        row["by"] = principal
    with env.write() as w:
        current = env.run_row(run)
        if current["stage"] not in ("executing", "release_review"):
            raise WrongState(f"run {run!r} became {current['stage']} while approving; nothing was recorded")
        approval_id = w.insert("approvals", {**row, "at": w.at})
        w.event("run.approved", run=run, approval=approval_id, **{k: v for k, v in row.items() if k != "run_id"})
    facts = run_facts(env, run)
    open_tasks = [t["id"] for t in facts.tasks if t["status"] not in ("accepted", "cancelled")]
    return ApprovalResult(
        run=run,
        by=str(row["by"]),
        via=via,
        head_sha=head,
        open_tasks=open_tasks,
        mode=str(row["mode"]),
        principal=principal,
        tag=tag,
    )


def approve_signed(
    env: Env,
    run: str,
    key: signing.SigningKey,
    via: str,
    *,
    pending: PendingApproval | None = None,
    show_prompts: bool = False,
) -> ApprovalResult:
    """Sign the run's approval statement with ``key``, check it, tag the head, and record it.

    ``pending`` is what the human was shown; the statement signed is its statement, so nothing
    they did not see is signed. ssh-keygen and git sign (twice: the statement for planegate, the
    tag for git); with ``show_prompts`` they ask at the terminal for a passphrase or a touch.

    Raises:
        Conflict: the integration head moved since ``pending`` was read.
        InvalidInput: the key cannot sign, or is not an allowed signer at the run's base.
        GitError: the tag could not be signed or written (nothing recorded).
    """
    pending = pending or pending_approval(env, run)
    run_row = pending.run_row
    text = pending.statement.text()
    signature = signing.sign(key, text.encode(), show_prompts=show_prompts)
    allowed = approval.allowed_signers_at_base(env.repo(run_row["repo"]), run_row, env.policy(run_row))
    try:
        approval.signer_of(allowed, text, signature)
    except InvalidInput as exc:
        raise InvalidInput(
            f"{key.describe()} may not approve run {run!r}: {exc}. The run accepts the keys in "
            f"{env.policy(run_row).approval.allowed_signers} as committed at its base {run_row['base_sha'][:12]}; "
            "add yours there, commit, and start a new run from that commit"
        ) from exc
    current = pending_approval(env, run).head
    if current != pending.head:
        raise Conflict(
            f"the integration head of run {run!r} moved from {pending.head[:12]} to {current[:12]} while you were "
            f"deciding; nothing was recorded. Run `planegate approve {run}` again to see what changed"
        )
    repo = env.repo(run_row["repo"])
    tag = approval.create_tag(repo, run, pending.head, text, key)
    try:
        return approve(
            env,
            run,
            "",
            via,
            expected_head=pending.head,
            statement=pending.statement,
            signature=signature,
            tag=tag,
        )
    except PlanegateError:
        # A tag that no ledger approval backs would mislead whoever checks it; take back the one just made.
        approval.remove_tag(repo, tag)
        raise


def accept_run(env: Env, run: str) -> tuple[dict[str, Any], list[GateResult]]:
    """Accept the run when every run gate holds: move it to ``accepted`` with its acceptance record.

    Returns the run's row (as it was before) and the gates that held. The report is written by the
    caller (``acceptance.accept_run``), so the release rules do not depend on how it is rendered.

    Raises:
        WrongState: the run is already accepted or abandoned.
        GatesUnmet: one or more run gates do not hold (nothing changed).
    """
    run_row = env.run_row(run)
    if run_row["stage"] in ("accepted", "abandoned"):
        raise WrongState(f"run {run!r} is already {run_row['stage']}")
    facts, gates = evaluate_run(env, run)
    unmet = [g for g in gates if not g.ok]
    if unmet:
        raise GatesUnmet(f"accept_run {run!r} refused", unmet)
    whole = whole_ledger_gate(env, run)
    if not whole.ok:
        raise GatesUnmet(f"accept_run {run!r} refused", [whole])
    gates = [whole if g.gate == "ledger" else g for g in gates]
    with env.write() as w:
        current = env.run_row(run)
        set_stage(
            w,
            current,
            "accepted",
            "run.accepted",
            integration_sha=facts.integration_head,
            gates={g.gate: g.reason for g in gates},
        )
    return {**run_row, "integration_sha": facts.integration_head or ""}, gates


def awaiting_human(env: Env, run: str) -> PendingApproval | None:
    """The pending approval when the human's yes is the only run gate left; else None."""
    run_row = env.run_row(run)
    if run_row["stage"] not in ("executing", "release_review"):
        return None
    pending = pending_approval(env, run)
    return pending if [g.gate for g in pending.gates if not g.ok] == ["human_approval"] else None
