"""Start-up reconciliation: the worktrees on disk against the ledger, stale job leases, and
processes left by job attempts that are over.

Run when a server or worker starts. Running jobs whose lease expired, or whose owner is a dead
process on this host, go back to the queue — or to ``attention`` when their attempts are used up
(see ``jobs.release_stale``). Process groups recorded on this host for attempts that are over are
ended (SIGTERM, then SIGKILL) and the end recorded. A worktree
directory no task row accounts for (a dispatch that crashed between its two steps, or leftovers
of a deleted run) is an orphan: it is removed only when it holds no uncommitted work — its
branch is always kept — and reported either way. A dispatched task whose worktree is gone is
reported as a risk. Scratch worktrees of check jobs that are no longer running are removed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel, Field

from planegate.store import placeholders

from ..env import Env
from ..errors import GitError, InvalidInput
from ..gitrepo import RETIRED_PREFIX, GitRepo
from ..models import ACTIVE_STATUSES
from .jobs import end_stale_processes, release_stale


class ReconcileReport(BaseModel):
    released_jobs: list[int] = Field(default_factory=list)
    attention_jobs: list[int] = Field(default_factory=list)
    ended_groups: list[str] = Field(default_factory=list)
    removed_orphans: list[str] = Field(default_factory=list)
    kept_orphans: list[str] = Field(default_factory=list)
    missing_worktrees: list[str] = Field(default_factory=list)
    removed_scratch: int = 0

    def lines(self) -> list[str]:
        out = [f"job {j}: its worker is gone; back in the queue" for j in self.released_jobs]
        out += [f"job {j}: its worker is gone, its attempts used up; needs attention" for j in self.attention_jobs]
        out += [f"process group of an attempt that is over: {g}" for g in self.ended_groups]
        out += [f"orphan worktree removed (no uncommitted work; branch kept): {p}" for p in self.removed_orphans]
        out += [f"orphan worktree kept (uncommitted work inside): {p}" for p in self.kept_orphans]
        out += [f"worktree missing for a dispatched task: {p}" for p in self.missing_worktrees]
        return out


def _repo_of(path: Path) -> GitRepo | None:
    try:
        return GitRepo(path)
    except InvalidInput:
        return None


def reconcile(env: Env) -> ReconcileReport:
    released = release_stale(env)
    report = ReconcileReport(released_jobs=released.queued, attention_jobs=released.attention)
    report.ended_groups = [
        f"{g.pgid} {g.outcome}" for g in end_stale_processes(env, actor="planegate:reconcile") if g.outcome != "gone"
    ]
    rows = env.store.rows(
        "SELECT t.run_id, t.id, t.status, t.worktree, r.repo FROM tasks t JOIN runs r"
        " ON r.id = t.run_id WHERE t.worktree IS NOT NULL"
    )
    known = {str(Path(r["worktree"]).resolve()): r for r in rows}
    root = env.settings.worktrees
    for path in sorted(root.glob("*/*")) if root.is_dir() else []:
        if path.name.startswith(RETIRED_PREFIX):  # set aside by accept_task; its process stopped before deleting it
            shutil.rmtree(path, ignore_errors=True)
            continue
        if not path.is_dir() or str(path.resolve()) in known:
            continue
        worktree = _repo_of(path)
        if worktree is not None and worktree.dirty_paths():
            report.kept_orphans.append(str(path))
            continue
        run_row = env.store.one("SELECT repo FROM runs WHERE id = ?", (path.parent.name,))
        try:
            if run_row is not None:
                env.repo(run_row["repo"]).remove_worktree(path, force=True)
            else:
                shutil.rmtree(path)
            report.removed_orphans.append(str(path))
        except (GitError, InvalidInput, OSError):  # InvalidInput: the run's repository is gone
            report.kept_orphans.append(str(path))
    for row in rows:
        if row["status"] in ACTIVE_STATUSES and not Path(row["worktree"]).is_dir():
            report.missing_worktrees.append(f"{row['run_id']}/{row['id']}: {row['worktree']}")
    report.removed_scratch = _sweep_scratch(env)
    if report.removed_orphans or report.kept_orphans or report.missing_worktrees:
        with env.write(actor="planegate:reconcile") as w:
            w.event(
                "reconcile.report",
                **report.model_dump(exclude={"released_jobs", "attention_jobs", "ended_groups", "removed_scratch"}),
            )
            risks = [
                (line.split("/", 1)[0], f"worktree missing for a dispatched task: {line}")
                for line in report.missing_worktrees
            ]
            risks += [
                (Path(p).parent.name, f"orphan worktree kept (uncommitted work inside): {p}")
                for p in report.kept_orphans
            ]
            for run_id, detail in risks:
                seen = w.scalar("SELECT COUNT(*) FROM risks WHERE detail = ?", (detail,))
                if not seen and w.scalar("SELECT COUNT(*) FROM runs WHERE id = ?", (run_id,)):
                    w.insert(
                        "risks",
                        {
                            "run_id": run_id,
                            "task_id": None,
                            "kind": "worktree",
                            "detail": detail,
                            "event_id": w.events[-1],
                            "created_at": w.at,
                        },
                    )
    return report


def _sweep_scratch(env: Env) -> int:
    root = env.settings.home / "scratch"
    if not root.is_dir():
        return 0
    running = env.store.rows(
        f"SELECT id FROM jobs WHERE status IN ({placeholders(('queued', 'running'))})", ("queued", "running")
    )
    live = {f"job{r['id']}-" for r in running}
    removed = 0
    for path in root.glob("*/*"):
        if any(tag in path.name for tag in live):
            continue
        run_row = env.store.one("SELECT repo FROM runs WHERE id = ?", (path.parent.name,))
        if run_row is not None:
            try:
                env.repo(run_row["repo"]).remove_worktree(path, force=True)
            except (GitError, InvalidInput):
                shutil.rmtree(path, ignore_errors=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed
