"""A dispatched task's lease, and its status as its head moves.

Any activity on a task (evidence, checks) renews the caller's lease. A task that was reviewed (or
is being reviewed) on an older commit than its branch's head goes back to ``in_progress``: an
approval holds only for the commit it was made on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from planegate.store import Writer, now_iso, placeholders

from .. import globs
from ..env import Env
from ..errors import Conflict, PlanegateError, WrongState
from ..models import ACTIVE_STATUSES
from ..policy import Policy
from .runs import move_task


def lease_holder(env: Env) -> str:
    return f"{env.settings.actor}@{os.getpid()}"


def renew_lease(w: Writer, env: Env, run: str, task: str, row: dict[str, Any], policy: Policy) -> None:
    """Extend the caller's lease on a task it is working on (any activity counts)."""
    if row["status"] in ACTIVE_STATUSES:
        w.execute(
            "UPDATE tasks SET lease_owner = ?, lease_expires = ? WHERE run_id = ? AND id = ?",
            (lease_holder(env), now_iso(policy.lease_minutes * 60), run, task),
        )


def settle_status(env: Env, run: str, task: str) -> dict[str, Any]:
    """A task reviewed (or being reviewed) on an older commit is back in progress; its row after that."""
    row = env.task_row(run, task)
    if row["status"] not in ("approved", "in_review") or not row["branch"]:
        return row
    head = env.repo(env.run_row(run)["repo"]).branch_sha(row["branch"])
    latest = env.store.one(
        "SELECT head_sha FROM reviews WHERE run_id = ? AND task_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
        (run, task),
    )
    if latest is None or latest["head_sha"] == head:
        return row
    with env.write() as w:
        move_task(
            w,
            run,
            task,
            row["status"],
            "in_progress",
            "task.head_moved",
            head_sha=head,
            reviewed_sha=latest["head_sha"],
        )
    return env.task_row(run, task)


def dispatch_refusal(
    reader: Any, run_row: dict[str, Any], row: dict[str, Any], policy: Policy, now: str
) -> tuple[PlanegateError | None, bool]:
    """Why ``dispatch_task`` would refuse this task now (None when it would not), and whether
    dispatching it would be a takeover. Read-only: ``dispatch_task`` raises the refusal under the
    write lock, and every tool that names ``dispatch_task`` as the next step asks here first.

    A takeover is a dispatch of a task that is already dispatched: its lease expired, or its
    worktree is gone (deleted by hand; nobody can be working in it), so the worktree is made again
    on the task's branch.
    """
    run, task = run_row["id"], row["id"]
    if run_row["stage"] not in ("planned", "executing"):
        if run_row["stage"] in ("draft", "requirements_frozen", "architecture_frozen"):
            return WrongState(f"run {run!r} is {run_row['stage']}, not planned; register_graph first"), False
        return WrongState(f"run {run!r} is {run_row['stage']}; no task can be dispatched now"), False
    status = row["status"]
    takeover = False
    if status == "blocked":
        waiting = reader.rows(
            "SELECT d.id, d.status FROM task_edges e JOIN tasks d ON d.run_id = e.run_id AND d.id = e.depends_on"
            " WHERE e.run_id = ? AND e.task_id = ? AND d.status != 'accepted'",
            (run, task),
        )
        names = ", ".join(f"{d['id']} ({d['status']})" for d in waiting)
        refusal = f"task {task!r} depends on {names}, not yet accepted; accept those first or get_status"
        return WrongState(refusal), False
    if status in ("accepted", "cancelled"):
        return WrongState(f"task {task!r} is {status}; it cannot be dispatched again"), False
    if status in ACTIVE_STATUSES:
        gone = bool(row["worktree"]) and not Path(row["worktree"]).is_dir()
        if row["lease_expires"] and row["lease_expires"] >= now and not gone:
            return (
                Conflict(
                    f"task {task!r} is already dispatched ({status}); its lease is held by {row['lease_owner']} "
                    f"until {row['lease_expires']}; work in {row['worktree']} or wait for the lease to expire"
                ),
                True,
            )
        takeover = True
    others = reader.rows(
        f"SELECT id, scope FROM tasks WHERE run_id = ? AND id != ? AND status IN ({placeholders(ACTIVE_STATUSES)})",
        (run, task, *ACTIVE_STATUSES),
    )
    if not takeover and len(others) >= policy.max_parallel:
        return (
            Conflict(
                f"max_parallel is {policy.max_parallel} and {len(others)} tasks are running "
                f"({', '.join(o['id'] for o in others)}); accept or cancel one first"
            ),
            False,
        )
    scope = json.loads(row["scope"])
    for other in others:
        hit = globs.first_overlap(scope, json.loads(other["scope"]))
        if hit:
            mine, theirs, witness = hit
            return (
                Conflict(
                    f"task {task!r} ({mine}) overlaps running task {other['id']!r} ({theirs}) at {witness!r}; "
                    f"shared paths are serialised: accept or cancel {other['id']!r} first"
                ),
                takeover,
            )
    return None, takeover


def first_dispatchable(env: Env, run_row: dict[str, Any], candidates: list[str]) -> str | None:
    """The first of ``candidates`` that ``dispatch_task`` would accept now."""
    policy = env.policy(run_row)
    now = now_iso()
    for task in candidates:
        row = env.store.one("SELECT * FROM tasks WHERE run_id = ? AND id = ?", (run_row["id"], task))
        if row is not None and dispatch_refusal(env.store, run_row, row, policy, now)[0] is None:
            return task
    return None
