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

import shutil
from pathlib import Path
from typing import Any

from planegate.store import placeholders

from .env import Env
from .errors import InvalidInput, NotFound, WrongState
from .evidence import check_claims, store_artifact
from .gitrepo import GitRepo
from .jobs import JobContext, enqueue, job_row
from .models import ACTIVE_STATUSES, CheckLine, ChecksResult
from .policy import Policy
from .procs import DEFAULT_ENV_ALLOW, ProcessResult, run_process, scrubbed_env


def check_env(policy: Policy, run: str, task: str | None) -> dict[str, str]:
    extra = {"PYTHONDONTWRITEBYTECODE": "1", "PLANEGATE_RUN": run}
    if task:
        extra["PLANEGATE_TASK"] = task
    return scrubbed_env([*DEFAULT_ENV_ALLOW, *policy.executor.env_allow], extra=extra)


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
    from .globs import matches_any

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
        from .dispatch import settle_status

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
            from .dispatch import renew_lease

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
    subject = f"run={run!r}, task={task!r}" if task else f"run={run!r}"
    if job["status"] in ("queued", "running"):
        next_step = f"the checks are still {job['status']}; call get_job({job_id}) to wait for them"
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
        state=job["status"],
        head_sha=payload["head_sha"],
        results=lines,
        all_passed=passed,
        progress=job["progress"],
        error=job["error"],
        next_step=next_step,
    )


def _unchanged(worktree: GitRepo, head: str) -> bool:
    return worktree.rev("HEAD") == head and not worktree.dirty_paths()


def _summary(name: str, result: ProcessResult) -> str:
    if result.timed_out:
        verdict = f"timed out after {result.duration_s:.0f} s"
    else:
        verdict = "passed" if result.exit_code == 0 else f"failed (exit {result.exit_code})"
    tail = result.tail(1500).strip()
    return f"{name}: {verdict} in {result.duration_s:.1f} s" + (f"\n{tail}" if tail and result.exit_code else "")


def record_check(
    ctx: JobContext,
    *,
    kind: str,
    label: str,
    result: ProcessResult,
    head: str,
    diff_sha: str | None,
    summary: str | None = None,
    extra_logs: list[Path] | None = None,
) -> int:
    env, run, task = ctx.env, ctx.run, ctx.task
    with env.write(actor=f"worker:{ctx.worker}") as w:
        evidence_id = w.insert(
            "evidence",
            {
                "run_id": run,
                "task_id": task,
                "kind": kind,
                "label": label,
                "summary": (summary or _summary(kind, result))[:4000],
                "command": " ".join(result.argv),
                "exit_code": -1 if result.timed_out else result.exit_code,
                "duration_ms": int(result.duration_s * 1000),
                "head_sha": head,
                "diff_sha256": diff_sha,
                "job_id": ctx.job["id"],
                "created_at": w.at,
            },
        )
        logs = [result.stdout_path, result.stderr_path, *(extra_logs or [])]
        artifacts = [
            store_artifact(w, env, run=run, task=task, owner=f"evidence:{evidence_id}", source=p) for p in logs
        ]
        w.event(
            "evidence.recorded",
            run=run,
            task=task,
            evidence=evidence_id,
            kind=kind,
            label=label,
            exit_code=result.exit_code,
            head_sha=head,
            diff_sha256=diff_sha,
            job=ctx.job["id"],
            artifacts={a.name: a.sha256 for a in artifacts},
        )
        if task is not None:
            check_claims(w, run, task, kind, head)
    return evidence_id


def run_check(ctx: JobContext, policy: Policy, name: str, cwd: Path, logs: Path) -> ProcessResult:
    return run_process(
        policy.checks[name],
        cwd=cwd,
        timeout_s=policy.check_timeout_s,
        env=check_env(policy, ctx.run, ctx.task),
        stdout_path=logs / f"{name}.stdout.log",
        stderr_path=logs / f"{name}.stderr.log",
        on_tick=lambda elapsed: ctx.heartbeat(f"check {name}: running for {elapsed:.0f} s"),
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
        stable = _unchanged(worktree, head)
        summary = (
            None
            if stable
            else (
                _summary(name, result) + "\nthe worktree changed while this check ran (a commit or an uncommitted "
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
        from .redgreen import prove_red_green

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


def scratch_worktree(ctx: JobContext, repo: GitRepo, sha: str, label: str) -> Path:
    path = ctx.env.settings.home / "scratch" / ctx.run / f"{ctx.task or '_run'}-job{ctx.job['id']}-{label}"
    if path.exists():
        remove_scratch(repo, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repo.git("worktree", "add", "--quiet", "--detach", "--", str(path), sha)
    return path


def remove_scratch(repo: GitRepo, path: Path) -> None:
    from .errors import GitError

    try:
        repo.git("worktree", "remove", "--force", "--", str(path))
    except GitError:
        shutil.rmtree(path, ignore_errors=True)
        repo.prune_worktrees()
