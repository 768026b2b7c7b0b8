"""Runs that change course: amending the task graph after dispatch, and abandoning a run.

``amend_graph`` checks an amendment whole (``control.amend``) and records it in one transaction,
in which the jobs of the tasks it cancels are cancelled too; their processes are ended after the
commit (ending a process group takes a while). ``abandon_run`` ends a run that will not be
accepted: in one transaction the stage becomes ``abandoned`` (compare-and-set: of two sessions
abandoning at once, one wins and the other is told the run is already abandoned), every open task
is cancelled with the reason and every unfinished job of the run is cancelled; then the jobs'
processes are ended and the worktrees without uncommitted work are removed. Branches, evidence,
artifacts and the ledger are kept; worktrees with uncommitted work are kept and reported
(``planegate gc`` parks them on their branches once ``retain_days`` have passed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from planegate.store import Writer

from ..control.amend import plan_amendment, record_amendment
from ..control.runs import _text, move_task, set_stage
from ..control.tasks import first_dispatchable
from ..env import Env
from ..errors import Conflict, GitError, WrongState
from ..models import AbandonResult, AmendResult, TaskSpec
from .gc import remove_worktree, uncommitted
from .jobs import after_cancel, cancel_jobs


def amend_graph(
    env: Env,
    run: str,
    add: list[TaskSpec] | None = None,
    cancel: list[str] | None = None,
    change: list[TaskSpec] | None = None,
    reason: str = "",
) -> AmendResult:
    """Add tasks, cancel tasks, or change tasks not yet dispatched; waves and coverage re-checked.

    Raises:
        InvalidInput, WrongState: see ``control.amend.plan_amendment`` (nothing is written).
        Conflict: the graph changed while the amendment was checked (nothing is written).
    """
    plan = plan_amendment(env, run, add or [], cancel or [], change or [], reason)
    jobs: list[int] = []
    with env.write() as w:
        version = record_amendment(w, env, plan)
        for task in plan.cancelled:
            jobs += cancel_jobs(w, run, task, f"task cancelled by a graph amendment: {plan.reason}")
    if jobs:
        after_cancel(env, jobs, "task cancelled by a graph amendment")
    run_row = env.run_row(run)
    ready = [
        r["id"]
        for r in env.store.rows(
            "SELECT id FROM tasks WHERE run_id = ? AND status = 'ready' ORDER BY seq LIMIT 50", (run,)
        )
    ]
    first = first_dispatchable(env, run_row, ready)
    return AmendResult(
        run=run,
        version=version,
        added=[t["id"] for t in plan.added],
        cancelled=sorted(plan.cancelled),
        changed=sorted(plan.changes),
        waves=plan.wave_lists(),
        coverage=plan.coverage,
        ready=ready,
        cancelled_jobs=jobs,
        next_step=f"dispatch_task(run={run!r}, task={first!r})" if first else f"get_status({run!r})",
    )


def abandon_run(env: Env, run: str, reason: str) -> AbandonResult:
    """End a run that will not be accepted; its branches, evidence and ledger are kept.

    Raises:
        InvalidInput: empty reason. NotFound: unknown run.
        WrongState: the run is accepted, or already abandoned.
    """
    reason = _text("reason", reason)[:2000]
    with env.write() as w:
        run_row = env.run_row(run)
        if run_row["stage"] == "accepted":
            raise WrongState(f"run {run!r} is accepted; an accepted run cannot be abandoned")
        if run_row["stage"] == "abandoned":
            raise WrongState(f"run {run!r} is already abandoned ({_abandoned_by(env, run)}); nothing changed")
        set_stage(w, run_row, "abandoned", "run.abandoned", reason=reason)
        tasks = w.rows(
            "SELECT id, status, worktree FROM tasks WHERE run_id = ? AND status NOT IN ('accepted', 'cancelled')"
            " ORDER BY seq",
            (run,),
        )
        why = f"run abandoned: {reason}"
        for task in tasks:
            if not move_task(
                w,
                run,
                task["id"],
                task["status"],
                "cancelled",
                "task.cancelled",
                also={"cancel_reason": why, "lease_owner": None, "lease_expires": None},
                reason=why,
                worktree=task["worktree"],
            ):
                raise Conflict(f"task {task['id']!r} changed while abandoning; nothing changed: call abandon_run again")
        jobs: list[int] = []
        for task in tasks:
            jobs += cancel_jobs(w, run, task["id"], why)
        jobs += _cancel_run_jobs(w, run, why)
    if jobs:
        after_cancel(env, jobs, why)
    removed, kept = _remove_clean_worktrees(env, run_row, reason)
    return AbandonResult(
        run=run,
        cancelled_tasks=[t["id"] for t in tasks],
        cancelled_jobs=jobs,
        removed_worktrees=removed,
        kept_worktrees=kept,
        next_step=f"done: run {run!r} is abandoned and hidden from get_status() (include_abandoned=True shows it); "
        "its branches, evidence and ledger stay. start_run to begin again",
    )


def _cancel_run_jobs(w: Writer, run: str, reason: str) -> list[int]:
    """Unfinished jobs of the run itself (integration checks, the release review)."""
    ids = [
        r["id"]
        for r in w.rows(
            "SELECT id FROM jobs WHERE run_id = ? AND task_id IS NULL AND status IN ('queued', 'running')", (run,)
        )
    ]
    for job_id in ids:
        w.execute(
            "UPDATE jobs SET status = 'cancelled', error = ?, finished_at = ?, lease_owner = NULL,"
            " lease_expires = NULL WHERE id = ?",
            (reason, w.at, job_id),
        )
        w.event("job.cancelled", run=run, job=job_id, reason=reason)
    return ids


def _abandoned_by(env: Env, run: str) -> str:
    event = env.store.one(
        "SELECT actor, at, payload FROM events WHERE run_id = ? AND kind = 'run.abandoned' ORDER BY id DESC LIMIT 1",
        (run,),
    )
    if event is None:
        return "no abandonment event found"
    why = json.loads(event["payload"]).get("reason", "")
    return f"by {event['actor']} at {event['at']}: {why}"


def _remove_clean_worktrees(env: Env, run_row: dict[str, Any], reason: str) -> tuple[list[str], list[str]]:
    """Remove the run's task worktrees that hold no uncommitted work; keep and name the others."""
    run = run_row["id"]
    repo = env.repo(run_row["repo"])
    removed: list[str] = []
    kept: list[str] = []
    rows = env.store.rows(
        "SELECT id, worktree FROM tasks WHERE run_id = ? AND worktree IS NOT NULL ORDER BY seq", (run,)
    )
    for row in rows:
        path = Path(row["worktree"])
        if not path.is_dir():
            continue
        if uncommitted(path):
            kept.append(str(path))
            continue
        try:
            done = remove_worktree(repo, path, run, row["id"], f"run abandoned: {reason}", dry_run=False)
        except GitError:
            kept.append(str(path))
            continue
        (removed if done[-1].rule == "removed" else kept).append(str(path))
    if removed:
        with env.write() as w:
            w.event("run.worktrees_removed", run=run, removed=removed, kept=kept)
    return removed, kept
