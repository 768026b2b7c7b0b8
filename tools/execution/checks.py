"""Server-run checks: the policy's argv lists run by planegate itself, recorded as ``direct``
evidence bound to ``(head sha, diff sha256)``.

``run_checks`` refuses a worktree with uncommitted changes (evidence must describe a commit),
then queues a ``checks`` job; any planegate process's worker runs it. For a task the checks run in
its worktree at its head; without a task they run on the integration branch's head in a scratch
worktree (the run gates need them there). Checks run without a shell, in their own process group,
with a scrubbed environment plus ``PYTHONDONTWRITEBYTECODE=1`` (so a Python check leaves no
``__pycache__`` behind), under the policy's ``check_timeout_s``.

If the worktree changes while a check runs (a new commit, an uncommitted edit), the result no
longer describes one commit: it is recorded as ``proxy`` evidence, which no gate counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from planegate.store import placeholders

from ..control.tasks import renew_lease, settle_status
from ..env import Env
from ..errors import InvalidInput, NotFound, WrongState
from ..gitrepo import GitRepo
from ..globs import matches_any
from ..models import ACTIVE_STATUSES, CheckLine, ChecksResult
from ..policy import Policy
from .checkrun import record_check, remove_scratch, run_check, scratch_worktree, summarize, unchanged
from .jobs import JobContext, enqueue, job_row, paused_note
from .procs import ProcessResult
from .redgreen import prove_red_green


def _select_checks(policy: Policy, checks: list[str] | None) -> list[str]:
    if checks is None:
        return list(policy.checks)
    unknown = [c for c in checks if c not in policy.checks and c != "red_green"]
    if unknown:
        known = ", ".join([*policy.checks, "red_green"]) or "none (add [checks] to .planegate/policy.toml)"
        raise NotFound(f"check {unknown[0]!r} is not in the run's policy; known checks: {known}")
    return [c for c in checks if c != "red_green"]


def needs_red_green(policy: Policy, paths: list[str]) -> list[str]:
    """The runtime (non-test) paths a change touches, when the policy asks for red→green."""
    if not policy.require_red_green:
        return []
    return [p for p in paths if matches_any(p, policy.runtime_paths) and not matches_any(p, policy.test_paths)]


def start_checks(env: Env, run: str, task: str | None, checks: list[str] | None = None) -> int:
    """Queue a checks job for the task's head (or the integration head); returns the job id.

    Raises:
        NotFound: unknown run, task or check name.
        WrongState: the task is not dispatched, or has uncommitted changes (commit first).
        InvalidInput: nothing to run.
    """
    run_row = env.run_row(run)
    policy = env.policy(run_row)
    names = _select_checks(policy, checks)
    repo = env.repo(run_row["repo"])
    if task is None:
        head = repo.branch_sha(run_row["integration_branch"])
        red_green = False
    else:
        row = settle_status(env, run, task)
        if row["status"] not in ACTIVE_STATUSES or not row["worktree"]:
            raise WrongState(f"task {task!r} is {row['status']}; dispatch_task it before running its checks")
        worktree = GitRepo(row["worktree"])
        dirty = worktree.dirty_paths()
        if dirty:
            shown = ", ".join(dirty[:10]) + (f" (+{len(dirty) - 10} more)" if len(dirty) > 10 else "")
            raise WrongState(
                f"task {task!r} has uncommitted changes in {row['worktree']}: {shown}; commit them (or add "
                "build outputs to .gitignore), then call run_checks again"
            )
        head = worktree.rev("HEAD")
        if checks is None:
            diff = repo.diff(row["base_sha"], head) if head else None
            red_green = bool(diff and needs_red_green(policy, diff.paths))
        else:
            red_green = "red_green" in checks
    if head is None:
        raise WrongState(f"no head commit to check for run {run!r}; was its branch deleted?")
    if not names and not red_green:
        raise InvalidInput(
            f"run {run!r} has no checks to run: its policy defines none; add [checks] to .planegate/policy.toml"
        )
    with env.write() as w:
        job = enqueue(
            w,
            run=run,
            task=task,
            kind="checks",
            payload={"checks": names, "head_sha": head, "red_green": red_green},
            max_attempts=3,
        )
        if task is not None:
            renew_lease(w, env, run, task, env.task_row(run, task), policy)
    return job


def checks_result(env: Env, job_id: int) -> ChecksResult:
    """The state of a checks job and, once finished, its evidence."""
    import json

    job = job_row(env, job_id)
    if job["kind"] != "checks":
        raise NotFound(f"job {job_id} is a {job['kind']} job, not a checks job; call get_job({job_id})")
    payload = json.loads(job["payload"])
    run, task = job["run_id"], job["task_id"]
    lines: list[CheckLine] = []
    if job["status"] == "succeeded" and job["result"]:
        ids = json.loads(job["result"])["evidence"]
        rows = env.store.rows(f"SELECT * FROM evidence WHERE id IN ({placeholders(ids)}) ORDER BY id", ids)
        lines = [
            CheckLine(
                check=r["kind"],
                evidence=r["id"],
                exit_code=r["exit_code"],
                duration_ms=r["duration_ms"] or 0,
                label=r["label"],
                summary=r["summary"],
            )
            for r in rows
        ]
    passed = all(line.exit_code == 0 and line.label == "direct" for line in lines) if lines else None
    # The job ran to its end but a check failed: callers branch on the state, so it says failed.
    state = "failed" if job["status"] == "succeeded" and passed is False else job["status"]
    failing = [f"{x.check} (exit {x.exit_code}, {x.label})" for x in lines if x.exit_code != 0 or x.label != "direct"]
    error = job["error"] or (f"not passed: {', '.join(failing)}" if failing else None)
    subject = f"run={run!r}, task={task!r}" if task else f"run={run!r}"
    if job["status"] in ("queued", "running"):
        next_step = f"the checks are still {job['status']}; call get_job({job_id}) to wait for them"
        next_step += paused_note(env, job["status"])
    elif passed:
        next_step = (
            f"request_review({subject}) or accept_task({subject})"
            if task
            else f"request_review(run={run!r}, release=True)"
        )
    elif job["status"] == "succeeded":
        next_step = "fix what failed (see each summary and its log artifact), commit, then run_checks again"
    else:
        next_step = f"the checks job {job['status']}: {job['error']}; fix the cause and call run_checks({subject})"
    return ChecksResult(
        run=run,
        task=task,
        job=job_id,
        state=state,
        head_sha=payload["head_sha"],
        results=lines,
        all_passed=passed,
        progress=job["progress"],
        error=error,
        next_step=next_step,
    )


def run_checks_job(ctx: JobContext) -> dict[str, Any]:
    """The ``checks`` job: run each check, record direct evidence, then red→green if asked."""
    env = ctx.env
    run_row = env.run_row(ctx.run)
    policy = env.policy(run_row)
    repo = env.repo(run_row["repo"])
    head = ctx.payload["head_sha"]
    logs = ctx.artifacts_dir("checks")
    evidence: list[int] = []
    if ctx.task is None:
        return {"evidence": _integration_checks(ctx, policy, repo, head, logs)}
    row = env.task_row(ctx.run, ctx.task)
    worktree = GitRepo(row["worktree"])
    if worktree.rev("HEAD") != head:
        raise WrongState(
            f"task {ctx.task!r} moved from {head[:12]} to {worktree.rev('HEAD')} while its checks waited; "
            "call run_checks again"
        )
    diff = repo.diff(row["base_sha"], head)
    results: dict[str, ProcessResult] = {}
    for name in ctx.payload["checks"]:
        ctx.heartbeat(f"check {name}: starting")
        result = run_check(ctx, policy, name, Path(row["worktree"]), logs)
        results[name] = result
        stable = unchanged(worktree, head)
        summary = (
            None
            if stable
            else (
                summarize(name, result) + "\nthe worktree changed while this check ran (a commit or an uncommitted "
                "edit), so the result describes no single commit; run_checks again on a clean commit"
            )
        )
        evidence.append(
            record_check(
                ctx,
                kind=name,
                label="direct" if stable else "proxy",
                result=result,
                head=head,
                diff_sha=diff.sha256,
                summary=summary,
            )
        )
    if ctx.payload.get("red_green"):
        evidence.append(prove_red_green(ctx, policy, repo, row, diff, results.get(policy.test_check)))
    return {"evidence": evidence}


def _integration_checks(ctx: JobContext, policy: Policy, repo: GitRepo, head: str, logs: Path) -> list[int]:
    scratch = scratch_worktree(ctx, repo, head, "integration")
    try:
        return [
            record_check(
                ctx,
                kind=name,
                label="direct",
                result=run_check(ctx, policy, name, scratch, logs),
                head=head,
                diff_sha=None,
            )
            for name in ctx.payload["checks"]
        ]
    finally:
        remove_scratch(repo, scratch)
