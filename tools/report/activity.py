"""What is happening on a run right now: its active tasks, its risks, and the next action.

Used by ``get_status``; each function takes the snapshot reader it is given and stays within
``limit`` rows.
"""

from __future__ import annotations

import json
from typing import Any

from planegate.store import now_iso, placeholders

from ..control.tasks import first_dispatchable
from ..env import Env
from ..execution.jobview import attention_step
from ..gates.early import gate_step, run_next_step
from ..gates.facts import GitFrom, RunReads, evaluate_task
from ..gates.gates import GateResult
from ..gates.release import evaluate_run
from ..models import ACTIVE_STATUSES, ActiveTask, EvidenceLine, GateLine, RunStatus
from .remote import publish_remote_url

EVIDENCE_SHOWN = 8


def active_tasks(
    env: Env, reader: Any, run_row: dict[str, Any], limit: int, *, wait_for_git: bool = True
) -> tuple[list[ActiveTask], int, list[str]]:
    """The first ``limit`` active tasks with their gates, how many there are, and the tasks whose
    git facts are still being computed (only without ``wait_for_git``: see ``get_status``)."""
    run = run_row["id"]
    marks = placeholders(ACTIVE_STATUSES)
    rows = reader.rows(
        f"SELECT * FROM tasks WHERE run_id = ? AND status IN ({marks}) ORDER BY seq LIMIT ?",
        (run, *ACTIVE_STATUSES, limit),
    )
    total = int(
        reader.scalar(
            f"SELECT COUNT(*) FROM tasks WHERE run_id = ? AND status IN ({marks})",
            (run, *ACTIVE_STATUSES),
        )
    )
    now = now_iso()
    tasks = []
    pending = []
    git_from: GitFrom = "stored_or_git" if wait_for_git else "stored"
    shared = RunReads(env, run_row, git_from=git_from) if rows else None
    for row in rows:
        facts, gates = evaluate_task(env, run_row, row, live=False, git_from=git_from, shared=shared)
        if facts.git_pending:
            pending.append(row["id"])
        tasks.append(
            ActiveTask(
                task=row["id"],
                status=row["status"],
                branch=row["branch"],
                worktree=row["worktree"],
                head_sha=facts.head_sha,
                lease_expires=row["lease_expires"],
                lease_expired=bool(row["lease_expires"] and row["lease_expires"] < now),
                evidence=[
                    EvidenceLine(
                        id=e["id"],
                        kind=e["kind"],
                        label=e["label"],
                        exit_code=e["exit_code"],
                        stale=e["head_sha"] != facts.head_sha,
                        summary=e["summary"].splitlines()[0][:160],
                    )
                    for e in facts.evidence[:EVIDENCE_SHOWN]
                ],
                gates=[
                    GateLine(gate=g.gate, ok=g.ok, reason=g.reason, next_step=g.next_step) for g in gates if not g.ok
                ],
                met=[g.gate for g in gates if g.ok],
                # A gate that holds says nothing worth a status line, except a secret scan that
                # could not read everything: that caveat stays visible.
                notes=[
                    f"{g.gate}: {g.reason}" for g in gates if g.ok and g.gate == "secrets" and facts.secrets_truncated
                ],
            )
        )
    return tasks, total, pending


def unproven_claims(task: ActiveTask) -> list[str]:
    """Reported successes on the head with no direct evidence of the same kind on it."""
    direct = {e.kind for e in task.evidence if e.label == "direct" and not e.stale}
    return sorted(
        {
            e.kind
            for e in task.evidence
            if e.label in ("local", "proxy") and e.exit_code == 0 and not e.stale and e.kind not in direct
        }
    )


def attention_jobs(reader: Any, run: str, limit: int = 10) -> list[dict[str, Any]]:
    """Jobs of the run in ``attention`` that still matter: no later job of the same kind for the
    same task, and the task (if any) not accepted or cancelled."""
    return list(
        reader.rows(
            "SELECT j.* FROM jobs j LEFT JOIN tasks t ON t.run_id = j.run_id AND t.id = j.task_id"
            " WHERE j.run_id = ? AND j.status = 'attention'"
            " AND (t.status IS NULL OR t.status NOT IN ('accepted', 'cancelled'))"
            " AND NOT EXISTS (SELECT 1 FROM jobs k WHERE k.run_id = j.run_id AND k.task_id IS j.task_id"
            " AND k.kind = j.kind AND k.id > j.id)"
            " ORDER BY j.id DESC LIMIT ?",
            (run, limit),
        )
    )


def run_risks(env: Env, reader: Any, run_row: dict[str, Any], active: list[ActiveTask]) -> list[str]:
    risks = [attention_step(job) for job in attention_jobs(reader, run_row["id"])]
    risks += [
        f"task {t.task}: lease expired at {t.lease_expires} (its worker may be gone); "
        f"dispatch_task again to take it over, or cancel_task"
        for t in active
        if t.lease_expired
    ]
    for task in active:
        claims = unproven_claims(task)
        if claims:
            risks.append(
                f"task {task.task}: reports {', '.join(claims)} passed, with no direct evidence on its head; "
                f"run_checks(run={run_row['id']!r}, task={task.task!r})"
            )
    for row in reader.rows(
        "SELECT task_id, kind, detail FROM risks WHERE run_id = ? ORDER BY id DESC LIMIT 10", (run_row["id"],)
    ):
        risks.append(f"{row['kind']}{' on ' + row['task_id'] if row['task_id'] else ''}: {row['detail']}")
    return risks


def next_action(env: Env, run_row: dict[str, Any], status: RunStatus) -> str:
    """The one call that moves this run forward now."""
    run = run_row["id"]
    stage = run_row["stage"]
    if stage == "draft":
        return f"freeze_requirements(run={run!r}, requirements=[...])"
    if stage == "requirements_frozen":
        if env.policy(run_row).require_architecture:
            return f"freeze_architecture(run={run!r}, modules=[...], decisions=[...])"
        return f"register_graph(run={run!r}, tasks=[...])"
    if stage == "architecture_frozen":
        return f"register_graph(run={run!r}, tasks=[...])"
    if stage == "accepted":
        return publish_step(env, run_row)
    if stage == "abandoned":
        return "done: the run was abandoned; start_run to begin again"
    counts = status.counts
    ready_to_accept = [t.task for t in status.active if t.met and not t.gates]
    if ready_to_accept:
        return f"accept_task(run={run!r}, task={ready_to_accept[0]!r})"
    by_status: dict[str, list[str]] = {}
    for active in status.active:
        by_status.setdefault(active.status, []).append(active.task)
    if by_status.get("changes_requested"):
        task = by_status["changes_requested"][0]
        return f"fix task {task!r} in its worktree, commit, then run_checks(run={run!r}, task={task!r})"
    # A job planegate gave up on comes before new work: re-running it blindly (what an unmet gate
    # would suggest) repeats whatever failed every attempt.
    attention = {job["task_id"]: job for job in reversed(attention_jobs(env.store, run))}
    for active in status.active:
        if active.task in attention and active.gates:
            return attention_step(attention[active.task])
    policy = env.policy(run_row)
    active_count = sum(counts.get(s, 0) for s in ACTIVE_STATUSES)
    dispatchable = first_dispatchable(env, run_row, status.ready) if active_count < policy.max_parallel else None
    if dispatchable:
        return f"dispatch_task(run={run!r}, task={dispatchable!r})"
    for active in status.active:
        unmet = [g for g in active.gates if g.gate != "dependencies"]
        if unmet and active.status in ("in_progress", "approved"):
            first = unmet[0]
            if first.gate == "merge" and "changes nothing" in first.reason:
                call = f"run_checks(run={run!r}, task={active.task!r})"
                return f"work on task {active.task!r} in {active.worktree}, commit, then {call}"
            step = gate_step(GateResult(first.gate, first.ok, first.reason, first.next_step), run, active.task)
            return f"task {active.task!r}: {first.gate}: {first.reason} Next: {step}"
    if by_status.get("in_review"):
        return f"get_status({run!r}) again shortly: task {by_status['in_review'][0]!r} is being reviewed"
    total = sum(counts.values())
    done = counts.get("accepted", 0) + counts.get("cancelled", 0)
    if total and done == total:
        _, gates = evaluate_run(env, run)
        unmet_run = next((g for g in gates if not g.ok), None)
        if unmet_run is None:
            return f"accept_run(run={run!r})"
        review = env.store.one(
            "SELECT id FROM reviews WHERE run_id = ? AND task_id IS NULL AND status IN ('queued', 'running', 'pending')"
            " ORDER BY created_at DESC LIMIT 1",
            (run,),
        )
        if review is not None and unmet_run.gate == "release_review":
            return f"get_review({review['id']!r}): the release review is under way"
        if None in attention:
            return attention_step(attention[None])
        return f"{unmet_run.gate}: {unmet_run.reason} Next: {run_next_step(env, run)}"
    if status.blocked:
        stuck = _stuck(env, run)
        if stuck:
            return stuck
        return (
            f"tasks are blocked: {status.blocked[0].task} is {status.blocked[0].reason}; "
            f"get_status({run!r}) again once a running task is accepted"
        )
    return f"get_status({run!r})"


def _stuck(env: Env, run: str) -> str | None:
    """Blocked tasks waiting on a cancelled task can never start: say how to change course."""
    row = env.store.one(
        "SELECT e.task_id, e.depends_on FROM task_edges e JOIN tasks t ON t.run_id = e.run_id AND t.id = e.task_id"
        " JOIN tasks d ON d.run_id = e.run_id AND d.id = e.depends_on"
        " WHERE e.run_id = ? AND t.status = 'blocked' AND d.status = 'cancelled' LIMIT 1",
        (run,),
    )
    if row is None:
        return None
    return (
        f"task {row['task_id']!r} waits for {row['depends_on']!r}, which is cancelled, so it can never start: "
        f"amend_graph(run={run!r}, change=[...] dropping that dependency, or cancel=[{row['task_id']!r}], "
        "reason=...), or abandon_run if the run will not be finished"
    )


def publish_step(env: Env, run_row: dict[str, Any]) -> str:
    """After acceptance: publish, unless it is done or there is nowhere to publish to."""
    run = run_row["id"]
    published = env.store.one(
        "SELECT payload FROM events WHERE run_id = ? AND kind = 'run.published' ORDER BY id DESC LIMIT 1", (run,)
    )
    if published is not None:
        url = json.loads(published["payload"]).get("pull_request")
        where = f"the draft pull request {url}" if url else "the pushed branch (open its pull request by hand)"
        return f"done: the run is accepted and published; a human reviews {where}"
    remote = env.policy(run_row).publish.remote
    if publish_remote_url(env.repo(run_row["repo"]), remote) is None:
        return (
            f"done: the run is accepted. To publish it, the repository needs the git remote {remote!r} "
            f"([publish] remote in the policy); `planegate report {run}` writes the pull-request body meanwhile"
        )
    return f"publish_run(run={run!r})"
