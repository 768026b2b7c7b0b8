"""A dispatched task's lease, and its status as its head moves.

Any activity on a task (evidence, checks) renews the caller's lease. A task that was reviewed (or
is being reviewed) on an older commit than its branch's head goes back to ``in_progress``: an
approval holds only for the commit it was made on.
"""

from __future__ import annotations

import os
from typing import Any

from planegate.store import Writer, now_iso

from ..env import Env
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
