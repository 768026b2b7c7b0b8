"""Cleaning up after runs: task worktrees, merged task branches, and git's stale worktree entries.

The rules ``planegate gc`` applies, each to the task worktrees under ``PLANEGATE_HOME/worktrees``
that the ledger knows (orphans no task accounts for are ``reconcile``'s):

1. **merged**: an accepted task's worktree is removed (unless the run's policy says
   ``retain_worktrees``); once the run is accepted its task branch is deleted too when the
   integration branch contains its head (unless ``retain_branches``; the ledger keeps the sha).
2. **parked**: a worktree about to be removed that holds uncommitted changes first gets them
   committed on its task branch as ``planegate: parked`` (the branch then keeps them).
3. **retention**: a cancelled task's worktree, and every worktree of an abandoned run, is kept
   ``retain_days`` (policy, default 7) after the cancellation or abandonment, then removed.
   Their branches are kept: they hold work that was never merged.
4. **pruned**: git's entries for worktree directories that no longer exist (deleted by hand) are
   pruned in every repository a run uses (``git worktree prune``).

A task still being worked on (dispatched, in a run that is not abandoned) is never touched. Tags
(checkpoints ``planegate/<run>/cp-<n>``, ``planegate/<run>/approved``) and integration branches
are never removed: checkpoints anchor the ledger and the integration branch is what a run
delivered. ``--dry-run`` reports the same actions and changes nothing. Every removal, park and
branch deletion is recorded as an event of its run.

``cleanup_accepted`` applies rules 1 and 2 right after ``accept_run``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planegate.store import now_iso

from ..env import Env
from ..errors import GitError, InvalidInput
from ..gitrepo import GitRepo, trailers

PARKED = "planegate: parked"


@dataclass
class GcAction:
    rule: str  # merged, parked, retention, branch, pruned, kept
    run: str | None
    task: str | None
    path: str
    detail: str

    def line(self) -> str:
        subject = f"{self.run}/{self.task}" if self.task else (self.run or "")
        return f"{self.rule:<9} {subject}: {self.detail}" if subject else f"{self.rule:<9} {self.detail}"


@dataclass
class GcReport:
    dry_run: bool
    done: list[GcAction] = field(default_factory=list)
    kept: list[GcAction] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [("[dry run] " if self.dry_run else "") + a.line() for a in self.done]
        out += [a.line() for a in self.kept]
        return out


def _when(at: str) -> dt.datetime:
    return dt.datetime.fromisoformat(at.replace("Z", "+00:00"))


def uncommitted(path: Path) -> list[str]:
    try:
        return GitRepo(path).dirty_paths()
    except (InvalidInput, GitError):
        return []


def park(path: Path, run: str, task: str, why: str) -> str | None:
    """Commit everything uncommitted in a task worktree as ``planegate: parked``; the new head."""
    message = f"{PARKED}\n\n{why}\n\n" + trailers({"Planegate-Run": run, "Planegate-Task": task})
    return GitRepo(path).commit_all(message)


def remove_worktree(
    repo: GitRepo, path: Path, run: str, task: str, why: str, *, dry_run: bool, rule: str = "removed"
) -> list[GcAction]:
    """Park (when dirty) and remove one task worktree; what was done (the removal under ``rule``),
    or why it was kept."""
    actions: list[GcAction] = []
    dirty = uncommitted(path)
    if dirty:
        if dry_run:
            actions.append(GcAction("parked", run, task, str(path), f"{len(dirty)} uncommitted path(s) to commit"))
        else:
            try:
                sha = park(path, run, task, why)
            except GitError as exc:
                return [GcAction("kept", run, task, str(path), f"could not park its uncommitted work: {exc}")]
            actions.append(
                GcAction("parked", run, task, str(path), f"{len(dirty)} uncommitted path(s) committed as {sha}")
            )
    if not dry_run:
        try:
            repo.remove_worktree(path)
        except GitError as exc:
            return [*actions, GcAction("kept", run, task, str(path), f"git would not remove it: {exc}")]
    actions.append(GcAction(rule, run, task, str(path), why))
    return actions


def delete_merged_branch(
    repo: GitRepo, integration: str | None, run: str, task: str, branch: str, *, dry_run: bool
) -> GcAction | None:
    """Delete a task branch whose head the integration branch contains; None when it is not there."""
    sha = repo.branch_sha(branch)
    if sha is None:
        return None
    if integration is None or not repo.is_ancestor(sha, integration):
        return GcAction("kept", run, task, branch, f"branch {branch} has commits the integration branch lacks")
    if not dry_run and not repo.delete_ref(f"refs/heads/{branch}", sha):
        return GcAction("kept", run, task, branch, f"branch {branch} moved while deleting it")
    return GcAction(
        "branch",
        run,
        task,
        branch,
        f"deleted merged branch {branch} (was {sha}; `git branch {branch} {sha}` restores it)",
    )


def _record(env: Env, run: str, kind: str, actions: list[GcAction]) -> None:
    if not actions:
        return
    with env.write() as w:
        w.event(
            kind,
            run=run,
            actions=[{"rule": a.rule, "task": a.task, "path": a.path, "detail": a.detail} for a in actions],
        )


def cleanup_accepted(env: Env, run: str) -> list[GcAction]:
    """After ``accept_run``: remove accepted tasks' worktrees and merged task branches (rules 1, 2)."""
    run_row = env.run_row(run)
    policy = env.policy(run_row)
    repo = env.repo(run_row["repo"])
    integration = repo.branch_sha(run_row["integration_branch"])
    actions: list[GcAction] = []
    for row in env.store.rows("SELECT * FROM tasks WHERE run_id = ? AND status = 'accepted' ORDER BY seq", (run,)):
        actions += _accepted_task(
            repo, integration, row, policy.retain_worktrees, policy.retain_branches, True, dry_run=False
        )
    _record(env, run, "run.cleaned", [a for a in actions if a.rule != "kept"])
    return actions


def _accepted_task(
    repo: GitRepo,
    integration: str | None,
    row: dict[str, Any],
    retain_worktrees: bool,
    retain_branches: bool,
    run_accepted: bool,
    *,
    dry_run: bool,
) -> list[GcAction]:
    run, task = row["run_id"], row["id"]
    actions: list[GcAction] = []
    path = Path(row["worktree"]) if row["worktree"] else None
    present = path is not None and path.is_dir()
    if present and path is not None:
        if retain_worktrees:
            actions.append(GcAction("kept", run, task, str(path), "retain_worktrees is set in the run's policy"))
        else:
            actions += remove_worktree(repo, path, run, task, "accepted and merged", dry_run=dry_run, rule="merged")
            present = dry_run or path.is_dir()
    if run_accepted and row["branch"] and not retain_branches and not (present and not dry_run):
        branch = delete_merged_branch(repo, integration, run, task, row["branch"], dry_run=dry_run)
        if branch is not None:
            actions.append(branch)
    return actions


def _stopped_at(env: Env, run: str, task: str, abandoned: bool) -> str | None:
    """When the task's work stopped: its cancellation, or its run's abandonment, whichever is later."""
    times = []
    cancelled = env.store.scalar(
        "SELECT at FROM events WHERE run_id = ? AND task_id = ? AND kind = 'task.cancelled' ORDER BY id DESC LIMIT 1",
        (run, task),
    )
    if cancelled:
        times.append(cancelled)
    if abandoned:
        ended = env.store.scalar(
            "SELECT at FROM events WHERE run_id = ? AND kind = 'run.abandoned' ORDER BY id DESC LIMIT 1", (run,)
        )
        if ended:
            times.append(ended)
    return max(times) if times else None


def collect_garbage(env: Env, *, dry_run: bool = False, now: dt.datetime | None = None) -> GcReport:
    """Apply the module's rules to every run in the ledger; ``dry_run`` changes nothing."""
    moment = now or _when(now_iso())
    report = GcReport(dry_run=dry_run)
    runs = env.store.rows("SELECT * FROM runs ORDER BY created_at")
    repos: dict[str, GitRepo] = {}
    for run_row in runs:
        run = run_row["id"]
        try:
            repo = env.repo(run_row["repo"])
        except InvalidInput as exc:
            report.kept.append(GcAction("kept", run, None, run_row["repo"], f"its repository is gone: {exc}"))
            continue
        repos[str(repo.root)] = repo
        policy = env.policy(run_row)
        abandoned = run_row["stage"] == "abandoned"
        integration = repo.branch_sha(run_row["integration_branch"])
        actions: list[GcAction] = []
        for row in env.store.rows("SELECT * FROM tasks WHERE run_id = ? ORDER BY seq", (run,)):
            path = Path(row["worktree"]) if row["worktree"] else None
            if row["status"] == "accepted":
                found = _accepted_task(
                    repo,
                    integration,
                    row,
                    policy.retain_worktrees,
                    policy.retain_branches,
                    run_row["stage"] == "accepted",
                    dry_run=dry_run,
                )
            elif (row["status"] == "cancelled" or abandoned) and path is not None and path.is_dir():
                found = _retained(env, repo, row, path, policy.retain_days, abandoned, moment, dry_run=dry_run)
            else:
                continue  # still being worked on, or never had a worktree
            actions += [a for a in found if a.rule != "kept"]
            report.kept += [a for a in found if a.rule == "kept"]
        report.done += actions
        if not dry_run:
            _record(env, run, "gc.cleaned", actions)
    for repo in repos.values():
        report.done += _prune(repo, dry_run=dry_run)
    return report


def _retained(
    env: Env,
    repo: GitRepo,
    row: dict[str, Any],
    path: Path,
    retain_days: float,
    abandoned: bool,
    moment: dt.datetime,
    *,
    dry_run: bool,
) -> list[GcAction]:
    run, task = row["run_id"], row["id"]
    why = "run abandoned" if abandoned and row["status"] != "cancelled" else "task cancelled"
    stopped = _stopped_at(env, run, task, abandoned) or row["updated_at"]
    until = _when(stopped) + dt.timedelta(days=retain_days)
    if moment < until:
        return [
            GcAction(
                "kept",
                run,
                task,
                str(path),
                f"{why} at {stopped}; kept until {until.strftime('%Y-%m-%dT%H:%MZ')} (retain_days = {retain_days:g})",
            )
        ]
    why = f"{why} at {stopped}, retain_days ({retain_days:g}) passed"
    return remove_worktree(repo, path, run, task, why, dry_run=dry_run, rule="retention")


def stale_worktrees(repo: GitRepo) -> list[str]:
    """Worktrees git lists whose directory is gone (``prunable`` in ``git worktree list``)."""
    out = repo.git("worktree", "list", "--porcelain")
    stale = []
    for block in out.split("\n\n"):
        lines = block.splitlines()
        path = next((line[len("worktree ") :] for line in lines if line.startswith("worktree ")), None)
        if path and any(line.startswith("prunable") for line in lines):
            stale.append(path)
    return stale


def _prune(repo: GitRepo, *, dry_run: bool) -> list[GcAction]:
    """git's entries for worktrees whose directory is gone."""
    try:
        stale = stale_worktrees(repo)
        if stale and not dry_run:
            repo.prune_worktrees()
    except GitError as exc:
        return [GcAction("kept", None, None, str(repo.root), f"git worktree prune failed: {exc}")]
    return [
        GcAction("pruned", None, None, path, f"git's entry for {path} (its directory is gone) in {repo.root}")
        for path in stale
    ]
