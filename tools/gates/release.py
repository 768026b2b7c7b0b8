"""Accepting a whole run: the run gates, human approval, and the acceptance record.

Human approval never comes from a value the agent passes. It is recorded by ``planegate
approve RUN`` (the OS user and the time), or by the MCP surface when the user confirms an
elicitation in their own client. Either way it is bound to the integration head it approved, so
a later merge needs a new approval.

The run's ledger gate confirms the rows the run gates read (the run row, the current
requirements, the run's evidence, the release reviews, the approvals) against their events;
accepting the run also verifies the whole ledger (``verify_ledger`` with the run's checkpoint
tags as anchors), so an edit, insertion or deletion anywhere in the ledger refuses it.
"""

from __future__ import annotations

import json
from typing import Any

from planegate.store import EDITED, verify_ledger

from ..control.runs import current_requirements, set_stage
from ..env import Env
from ..errors import WrongState
from ..models import ApprovalResult
from .accept import checkpoint_anchors
from .facts import review_facts, trusted_evidence, vouched
from .gates import GateResult, GatesUnmet, RunFacts, run_gates


def run_facts(env: Env, run: str) -> RunFacts:
    run_row = env.run_row(run)
    ledger: list[str] = []
    vouched(env, "runs", [run_row], ledger)
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
        approvals=vouched(
            env,
            "approvals",
            env.store.rows("SELECT * FROM approvals WHERE run_id = ? ORDER BY id DESC", (run,)),
            ledger,
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


def approve(env: Env, run: str, by: str, via: str) -> ApprovalResult:
    """Record a human's approval of the run's current integration head.

    Raises:
        WrongState: the run is not executing or in its release review.
    """
    run_row = env.run_row(run)
    if run_row["stage"] not in ("executing", "release_review"):
        raise WrongState(f"run {run!r} is {run_row['stage']}; approve a run once its tasks are being accepted")
    facts = run_facts(env, run)
    assert facts.integration_head is not None
    with env.write() as w:
        approval = w.insert(
            "approvals", {"run_id": run, "by": by, "via": via, "head_sha": facts.integration_head, "at": w.at}
        )
        w.event("run.approved", run=run, approval=approval, by=by, via=via, head_sha=facts.integration_head)
    open_tasks = [t["id"] for t in facts.tasks if t["status"] not in ("accepted", "cancelled")]
    return ApprovalResult(run=run, by=by, via=via, head_sha=facts.integration_head, open_tasks=open_tasks)


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


def confirmation_question(env: Env, run: str) -> str | None:
    """The question to put to the human, when their approval is the only gate left; else None."""
    run_row = env.run_row(run)
    if run_row["stage"] in ("accepted", "abandoned"):
        return None
    facts, gates = evaluate_run(env, run)
    unmet = [g for g in gates if not g.ok]
    if [g.gate for g in unmet] != ["human_approval"]:
        return None
    accepted = sum(1 for t in facts.tasks if t["status"] == "accepted")
    return (
        f"planegate asks you to accept run {run} — {run_row['goal']} — into {run_row['integration_branch']} "
        f"at {str(facts.integration_head)[:12]}: {accepted} task(s) accepted, checks pass, the release review "
        "approves. Accept it?"
    )
