"""Dispatching a task into its own worktree, and cancelling it.

Dispatch claims the task in one write transaction — status, lease, capacity and scope checks
together — so two sessions dispatching at once give one winner; only then is the worktree
created (``git worktree add -b planegate/<run>/<task> <home>/worktrees/<run>/<task>`` at the
integration head) and made ready by the policy's ``[worktree]`` bootstrap (``bootstrap``),
before the envelope is written and any executor starts. If git or the bootstrap fails, nothing
half-made is left: the worktree and the branch are removed when this dispatch created them, the
claim is undone in a second transaction (and the run goes back to ``planned`` when this dispatch
moved it), and the refusal names the failing step with the end of its log, kept as an artifact.
A task whose lease expired may be dispatched again: the new caller takes it over and keeps its
worktree (whose bootstrap runs again only if it never finished).

Shared paths are serialised: a task is not dispatched while another running task's scope
overlaps its own, nor beyond the policy's ``max_parallel``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from planegate.store import Writer, now_iso

from ..control.runs import move_task, set_stage
from ..control.tasks import dispatch_refusal, lease_holder
from ..env import Env
from ..errors import Conflict, ExecutionError, GitError, InvalidInput, WrongState
from ..gitrepo import GitRepo
from ..models import CancelResult, DispatchResult, Link, set_links, task_uri
from ..names import check_name
from ..policy import Policy
from .bootstrap import BootstrapFailed, bootstrap, record
from .envelope import ENVELOPE_NAME, render_envelope
from .jobs import after_cancel, cancel_jobs, enqueue
from .procs import resolve_argv0
from .toolchain import process_env

EXECUTORS = ("agent", "command", "codex")


def task_branch(run: str, task: str) -> str:
    return f"planegate/{run}/{task}"


def worktree_path(env: Env, run: str, task: str) -> Path:
    root = env.settings.worktrees.resolve()
    path = (root / run / task).resolve()
    if not path.is_relative_to(root):
        raise InvalidInput(f"task {task!r} would place its worktree outside {root}")
    return path


def _check_executor(executor: str, policy: Policy) -> None:
    if executor not in EXECUTORS:
        raise InvalidInput(f"executor {executor!r} is unknown; use one of {', '.join(EXECUTORS)}")
    if executor == "command" and not policy.executor.command:
        raise InvalidInput(
            "executor 'command' needs [executor] command = [...] in .planegate/policy.toml; "
            "use executor='agent' to work in the worktree yourself"
        )
    if executor == "codex":
        try:
            resolve_argv0([policy.executor.codex], os.environ)
        except ExecutionError as exc:
            raise ExecutionError(
                f"executor 'codex' needs the Codex CLI ({policy.executor.codex!r}) on PATH: {exc}"
            ) from exc


def _refuse_unless_dispatchable(
    w: Writer, env: Env, run_row: dict[str, Any], row: dict[str, Any], policy: Policy
) -> bool:
    """Raise unless the task may be dispatched now; True when this is a takeover."""
    problem, takeover = dispatch_refusal(w, run_row, row, policy, w.at)
    if problem is not None:
        raise problem
    return takeover


@contextlib.contextmanager
def _dispatching(env: Env, run: str, task: str) -> Iterator[None]:
    """One dispatch of a task at a time, across every process sharing the ledger.

    Between the claim in the ledger and the worktree on disk, a second dispatch would see a
    dispatched task without a worktree, which is also what a worktree deleted by hand looks like
    (a takeover); the lock closes that window. It is ``flock``: the kernel drops it when its
    holder dies, so a crashed dispatch never blocks the next one.
    """
    locks = env.settings.home / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"dispatch-{run}-{task}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(
                f"task {task!r} is being dispatched by another call right now; call get_status({run!r}) and work "
                "in the worktree it reports, or dispatch again once that call has answered"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def dispatch_task(env: Env, run: str, task: str, executor: str = "agent") -> DispatchResult:
    """Create the task's worktree and branch, write its envelope, take a lease.

    Raises:
        InvalidInput: malformed ids or an unknown/unconfigured executor.
        NotFound: unknown run or task.
        WrongState: run not planned, dependencies not accepted, task finished.
        Conflict: lease held, max_parallel reached, or a running task's scope overlaps.
        GitError: the worktree could not be created (the claim is undone).
    """
    check_name("run", run)
    check_name("task", task)
    with _dispatching(env, run, task):
        return _dispatch(env, run, task, executor)


def _dispatch(env: Env, run: str, task: str, executor: str) -> DispatchResult:
    run_row = env.run_row(run)
    policy = env.policy(run_row)
    _check_executor(executor, policy)
    repo = env.repo(run_row["repo"])
    path = worktree_path(env, run, task)
    branch = task_branch(run, task)
    lease_expires = now_iso(policy.lease_minutes * 60)
    with env.write() as w:
        run_row = env.run_row(run)
        row = env.task_row(run, task)
        takeover = _refuse_unless_dispatchable(w, env, run_row, row, policy)
        # Read under the ledger's write lock: accept_task moves the integration branch under the
        # same lock, so the base is the integration head as of this dispatch, not of an earlier read.
        integration_head = repo.branch_sha(run_row["integration_branch"])
        if integration_head is None:
            raise GitError(
                f"integration branch {run_row['integration_branch']!r} is missing from {run_row['repo']}; "
                f"it was deleted outside planegate: recreate it at the last checkpoint tag (`git tag -l "
                f"'planegate/{run}/*'`) or start a new run"
            )
        base_sha = row["base_sha"] if row["base_sha"] and repo.branch_sha(branch) else integration_head
        holder = lease_holder(env)
        claimed = move_task(
            w,
            run,
            task,
            row["status"],
            "in_progress",
            "task.taken_over" if takeover else "task.dispatched",
            expect={"lease_owner": row["lease_owner"]},
            also={
                "executor": executor,
                "branch": branch,
                "worktree": str(path),
                "base_sha": base_sha,
                "lease_owner": holder,
                "lease_expires": lease_expires,
                "dispatched_at": row["dispatched_at"] or w.at,
                "dispatched_by": env.settings.actor,
            },
            worktree=str(path),
            branch=branch,
            base_sha=base_sha,
            executor=executor,
            lease_owner=holder,
            lease_expires=lease_expires,
            previous_owner=row["lease_owner"],
        )
        if not claimed:
            raise Conflict(f"task {task!r} changed while dispatching; call get_status({run!r})")
        moved_stage = run_row["stage"] == "planned"
        if moved_stage:
            set_stage(w, run_row, "executing", "run.executing")
    branch_existed = repo.branch_sha(branch) is not None
    worktree_existed = (path / ".git").exists()
    bootstrapped = None
    try:
        _make_worktree(repo, path, branch, base_sha)
        bootstrapped = _bootstrap(env, run, task, policy, repo, path)
    except (GitError, BootstrapFailed, OSError) as exc:
        if not worktree_existed:
            _remove_made(repo, path, branch, None if branch_existed else base_sha)
        _undo_claim(env, run, task, row, holder, exc, moved_stage)
        if isinstance(exc, BootstrapFailed):
            raise ExecutionError(
                f"dispatch_task({run!r}, {task!r}) refused: {exc}\nNothing was kept: the claim is undone"
                + ("" if worktree_existed else " and the new worktree and branch are removed")
                + "; fix the step (or [worktree] in .planegate/policy.toml, committed at the run's base: start a "
                "new run to use a changed policy), then call dispatch_task again"
            ) from exc
        raise
    envelope = render_envelope(env, run, task)
    (path / ENVELOPE_NAME).write_text(envelope, encoding="utf-8")
    job = None
    if executor != "agent":
        with env.write() as w:
            job = enqueue(w, run=run, task=task, kind="executor", payload={"executor": executor}, max_attempts=2)
    next_step = (
        f"work in {path}, commit, then run_checks(run={run!r}, task={task!r})"
        if executor == "agent"
        else f"the {executor} executor runs as job {job}; get_job({job}) then run_checks(run={run!r}, task={task!r})"
    )
    result = DispatchResult(
        run=run,
        task=task,
        bootstrap=bootstrapped,
        worktree=str(path),
        branch=branch,
        base_sha=base_sha,
        lease_expires=lease_expires,
        executor=executor,  # type: ignore[arg-type]
        job=job,
        taken_over=takeover,
        envelope_path=str(path / ENVELOPE_NAME),
        next_step=next_step,
    )
    envelope_link = Link(
        uri=task_uri(run, task),
        name=f"envelope of task {task}",
        mime_type="text/markdown",
        bytes=len(envelope.encode()),
    )
    set_links(result, [envelope_link])
    return result


def _bootstrap(env: Env, run: str, task: str, policy: Policy, repo: GitRepo, path: Path) -> str | None:
    """Run the policy's bootstrap in the new worktree; its summary (None when there is none).

    Raises:
        BootstrapFailed: a step failed (the failure and its log are recorded before it is raised).
    """
    if not policy.worktree.configured:
        return None
    stamp = f"dispatch-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    folder = env.settings.artifacts / run / task / stamp
    try:
        outcome = bootstrap(
            worktree=path,
            checkout=repo.root,
            settings=policy.worktree,
            env=lambda: process_env(policy, run, task, path, repo.root, check=False),
            log_dir=folder,
        )
    except BootstrapFailed as exc:
        record(env, actor=env.settings.actor, run=run, task=task, where="dispatch", worktree=path, failure=exc)
        raise
    if not outcome.ran:
        return outcome.summary()
    artifact = record(
        env, actor=env.settings.actor, run=run, task=task, where="dispatch", worktree=path, outcome=outcome
    )
    return outcome.summary() + (f"; log {artifact.path} (sha256 {artifact.sha256[:12]}…)" if artifact else "")


def _remove_made(repo: GitRepo, path: Path, branch: str, created_at: str | None) -> None:
    """Remove a worktree this dispatch made, and its branch when this dispatch created it (still at
    ``created_at``, so a commit made meanwhile is never lost)."""
    try:
        if (path / ".git").exists():
            repo.remove_worktree(path, force=True)
    except GitError:
        shutil.rmtree(path, ignore_errors=True)
        repo.prune_worktrees()
    if created_at is not None:
        repo.delete_ref(f"refs/heads/{branch}", created_at)


def _undo_claim(
    env: Env, run: str, task: str, row: dict[str, Any], holder: str, exc: Exception, moved_stage: bool
) -> None:
    keys = ["lease_owner", "lease_expires", "worktree", "branch", "base_sha", "executor", "dispatched_at"]
    keys.append("dispatched_by")
    with env.write() as w:
        move_task(
            w,
            run,
            task,
            "in_progress",
            row["status"],
            "task.dispatch_failed",
            expect={"lease_owner": holder},
            also={key: row[key] for key in keys},
            error=str(exc)[:2000],
            step=getattr(exc, "step", None),
        )
        if moved_stage:
            run_row = env.run_row(run)
            dispatched = w.scalar("SELECT COUNT(*) FROM tasks WHERE run_id = ? AND dispatched_at IS NOT NULL", (run,))
            if run_row["stage"] == "executing" and not dispatched:
                set_stage(w, run_row, "planned", "run.dispatch_undone", task=task)


def _make_worktree(repo: GitRepo, path: Path, branch: str, base_sha: str) -> None:
    repo.exclude(ENVELOPE_NAME)  # idempotent and cheap: no process-wide memo that could go stale
    if path.exists() and (path / ".git").exists():
        return  # a takeover keeps the worktree it finds
    path.parent.mkdir(parents=True, exist_ok=True)
    if repo.branch_sha(branch) is not None:
        # The branch's earlier worktree may have been deleted by hand: git still lists it and
        # refuses to check the branch out again until that entry is pruned.
        repo.prune_worktrees()
    repo.add_worktree(path, branch, base_sha)


def cancel_task(env: Env, run: str, task: str, reason: str) -> CancelResult:
    """Cancel a task with a reason: release its lease, stop its jobs, keep its worktree.

    Raises:
        InvalidInput: empty reason. WrongState: the task is accepted (or already cancelled).
    """
    if not reason.strip():
        raise InvalidInput("reason is empty; say why the task is cancelled (it is recorded)")
    with env.write() as w:
        row = env.task_row(run, task)
        if row["status"] in ("accepted", "cancelled"):
            raise WrongState(
                f"task {task!r} is {row['status']}; it cannot be cancelled"
                + (" (use `planegate rollback` to undo an acceptance)" if row["status"] == "accepted" else "")
            )
        cancelled = move_task(
            w,
            run,
            task,
            row["status"],
            "cancelled",
            "task.cancelled",
            also={"cancel_reason": reason.strip(), "lease_owner": None, "lease_expires": None},
            reason=reason.strip(),
            worktree=row["worktree"],
        )
        if not cancelled:
            raise Conflict(f"task {task!r} changed while cancelling; call get_status({run!r})")
        jobs = cancel_jobs(w, run, task, "task cancelled")
    after_cancel(env, jobs, "task cancelled")  # outside the transaction: ending a group takes a while
    return CancelResult(
        run=run,
        task=task,
        status="cancelled",
        worktree=row["worktree"],
        cancelled_jobs=jobs,
        next_step=f"get_status({run!r}); dependents of {task!r} stay blocked: cancel them too (with a reason) "
        "or finish the work in another run",
    )
