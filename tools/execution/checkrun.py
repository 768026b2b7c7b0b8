"""Running one check in a worktree and recording its outcome as evidence.

Shared by the checks job (``checks``), the red→green proof (``redgreen``) and the test reports
(``testreports``): a check is the policy's argv run without a shell, in its own process group,
with a scrubbed environment plus ``PYTHONDONTWRITEBYTECODE=1`` (so a Python check leaves no
``__pycache__`` behind), under the policy's ``check_timeout_s``. Its logs become artifacts of
the evidence row it produces. Scratch worktrees (the integration head, a task's base) live under
``PLANEGATE_HOME/scratch`` and are removed after use.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from ..control.artifacts import store_artifact
from ..control.evidence import check_claims
from ..errors import GitError
from ..gitrepo import GitRepo
from ..policy import Policy
from .jobs import JobContext
from .procs import DEFAULT_ENV_ALLOW, ProcessResult, run_process, scrubbed_env


def check_env(policy: Policy, run: str, task: str | None) -> dict[str, str]:
    extra = {"PYTHONDONTWRITEBYTECODE": "1", "PLANEGATE_RUN": run}
    if task:
        extra["PLANEGATE_TASK"] = task
    return scrubbed_env([*DEFAULT_ENV_ALLOW, *policy.executor.env_allow], extra=extra)


def unchanged(worktree: GitRepo, head: str) -> bool:
    return worktree.rev("HEAD") == head and not worktree.dirty_paths()


def summarize(name: str, result: ProcessResult) -> str:
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
                "summary": (summary or summarize(kind, result))[:4000],
                "command": " ".join(result.argv),
                "exit_code": -1 if result.timed_out else result.exit_code,
                "duration_ms": int(result.duration_s * 1000),
                "head_sha": head,
                "diff_sha256": diff_sha,
                "job_id": ctx.job["id"],
                "created_at": w.at,
            },
        )
        logs = list(dict.fromkeys([result.stdout_path, result.stderr_path, *(extra_logs or [])]))
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


def run_check(
    ctx: JobContext,
    policy: Policy,
    name: str,
    cwd: Path,
    logs: Path,
    on_tick: Callable[[float], None] | None = None,
) -> ProcessResult:
    return run_process(
        policy.checks[name],
        cwd=cwd,
        timeout_s=policy.check_timeout_s,
        env=check_env(policy, ctx.run, ctx.task),
        stdout_path=logs / f"{name}.stdout.log",
        stderr_path=logs / f"{name}.stderr.log",
        on_tick=on_tick or (lambda elapsed: ctx.heartbeat(f"check {name}: running for {elapsed:.0f} s")),
    )


def scratch_worktree(ctx: JobContext, repo: GitRepo, sha: str, label: str) -> Path:
    path = ctx.env.settings.home / "scratch" / ctx.run / f"{ctx.task or '_run'}-job{ctx.job['id']}-{label}"
    if path.exists():
        remove_scratch(repo, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repo.git("worktree", "add", "--quiet", "--detach", "--", str(path), sha)
    return path


def remove_scratch(repo: GitRepo, path: Path) -> None:
    try:
        repo.git("worktree", "remove", "--force", "--", str(path))
    except GitError:
        shutil.rmtree(path, ignore_errors=True)
        repo.prune_worktrees()
