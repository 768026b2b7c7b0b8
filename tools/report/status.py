"""``get_status``: where a run stands and the one next action that makes sense.

Output stays small on big runs: counts, then at most ``LIMIT`` entries of each list with a
``more`` count. Everything is read in one snapshot through indexes; no query here walks the
events table.
"""

from __future__ import annotations

from typing import Any

from ..env import Env
from ..execution.diskuse import cached
from ..execution.jobs import wake_local_workers, workers_note
from ..models import Blocked, RunLine, RunStatus, StatusResult
from .activity import active_tasks, next_action, run_risks

LIMIT = 10
RUNS_LIMIT = 20


def list_runs(env: Env, include_abandoned: bool = False) -> StatusResult:
    """Runs newest first; abandoned runs only when asked for (they are done with)."""
    hide = "" if include_abandoned else " WHERE r.stage != 'abandoned'"
    rows = env.store.rows(
        "SELECT r.id, r.goal, r.stage, r.repo, r.created_at,"
        " (SELECT COUNT(*) FROM tasks t WHERE t.run_id = r.id) AS tasks"
        f" FROM runs r{hide} ORDER BY r.created_at DESC, r.rowid DESC LIMIT ?",
        (RUNS_LIMIT,),
    )
    total = int(env.store.scalar(f"SELECT COUNT(*) FROM runs r{hide}"))
    hidden = 0 if include_abandoned else int(env.store.scalar("SELECT COUNT(*) FROM runs WHERE stage = 'abandoned'"))
    lines = [
        RunLine(
            run=r["id"],
            goal=_short(r["goal"]),
            stage=r["stage"],
            repo=r["repo"],
            created_at=r["created_at"],
            tasks=r["tasks"],
        )
        for r in rows
    ]
    next_action = (
        "start_run(repo=..., goal=...)"
        if not lines
        else f"get_status(run={lines[0].run!r}) for the newest run's details"
    )
    if hidden:
        next_action += f"; {hidden} abandoned run(s) hidden: get_status(include_abandoned=True) lists them"
    return StatusResult(
        runs=lines,
        runs_total=total,
        runs_hidden=hidden or None,
        workers=workers_note(env.store),
        next_action=next_action,
    )


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def blocked_reasons(reader: Any, run: str, limit: int) -> list[Blocked]:
    rows = reader.rows(
        "SELECT t.id, e.depends_on, d.status FROM"
        " (SELECT id, seq FROM tasks WHERE run_id = ? AND status = 'blocked' ORDER BY seq LIMIT ?) t"
        " JOIN task_edges e ON e.run_id = ? AND e.task_id = t.id"
        " JOIN tasks d ON d.run_id = ? AND d.id = e.depends_on"
        " ORDER BY t.seq",
        (run, limit, run, run),
    )
    waiting: dict[str, list[str]] = {}
    for row in rows:
        if row["status"] != "accepted":
            waiting.setdefault(row["id"], []).append(f"{row['depends_on']} ({row['status']})")
    return [Blocked(task=task, reason="waiting for " + ", ".join(deps)) for task, deps in waiting.items()]


def run_status(env: Env, run: str, *, measure_disk: bool = False, wait_for_git: bool = True) -> StatusResult:
    with env.store.snapshot() as reader:
        run_row = env.run_row(run)
        counts = {
            r["status"]: r["n"]
            for r in reader.rows("SELECT status, n FROM task_counts WHERE run_id = ? AND n > 0 ORDER BY status", (run,))
        }
        ready = [
            r["id"]
            for r in reader.rows(
                "SELECT id FROM tasks WHERE run_id = ? AND status = 'ready' ORDER BY seq LIMIT ?", (run, LIMIT)
            )
        ]
        blocked = blocked_reasons(reader, run, LIMIT)
        active, active_total, pending = active_tasks(env, reader, run_row, LIMIT, wait_for_git=wait_for_git)
        risks = run_risks(env, reader, run_row, active)
        workers = workers_note(reader)
    if pending:
        wake_local_workers()  # the worker that computes them looks now, not at its next poll
    more = {
        name: total - len(shown)
        for name, total, shown in (
            ("ready", counts.get("ready", 0), ready),
            ("blocked", counts.get("blocked", 0), blocked),
            ("active", active_total, active),
        )
        if total > len(shown)
    }
    status = RunStatus(
        run=run,
        goal=_short(run_row["goal"], 300),
        stage=run_row["stage"],
        repo=run_row["repo"],
        base_sha=run_row["base_sha"],
        integration_branch=run_row["integration_branch"],
        counts=counts,
        ready=ready,
        blocked=blocked,
        active=active,
        risks=risks,
        more=more,
        disk=cached(env, run, wait=measure_disk).text(),
    )
    return StatusResult(status=status, workers=workers, next_action=next_action(env, run_row, status))


def get_status(
    env: Env,
    run: str | None = None,
    include_abandoned: bool = False,
    *,
    measure_disk: bool = False,
    wait_for_git: bool = True,
) -> StatusResult:
    """The runs (newest first, abandoned ones only with ``include_abandoned``) without ``run``;
    one run's state and next action with it. ``measure_disk`` measures the run's worktrees now
    when the cached figure is stale (the CLI does; a tool call never waits for it).

    A task's git facts (diff, merge check, secret scan) are read as a worker stored them for its
    head. ``wait_for_git``: compute the missing ones here (a process with no worker); without
    it no git runs at all, and a head whose facts are not stored yet shows its git gates as
    "computing for head …" (the server, whose worker computes them as soon as a head moves).

    Raises:
        NotFound: an unknown run.
    """
    if run is None:
        return list_runs(env, include_abandoned)
    return run_status(env, run, measure_disk=measure_disk, wait_for_git=wait_for_git)


WARM_RUNS = 3


def warm_up(env: Env) -> int:
    """Answer ``get_status`` once, unseen, for the newest runs in progress (at most ``WARM_RUNS``),
    as a server does in the background after start-up: the first call a client makes then finds
    the modules loaded, the ledger's pages read and the scope patterns compiled. Runs no git.
    Returns how many runs it looked at."""
    rows = env.store.rows(
        "SELECT id FROM runs WHERE stage NOT IN ('accepted', 'abandoned') ORDER BY created_at DESC LIMIT ?",
        (WARM_RUNS,),
    )
    for row in rows:
        get_status(env, row["id"], wait_for_git=False)
    get_status(env)
    return len(rows)
