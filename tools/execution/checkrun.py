"""Running one check in a worktree and recording its outcome as evidence.

Shared by the checks job (``checks``), the red→green proof (``redgreen``) and the test reports
(``testreports``): a check is the policy's argv steps run in order without a shell, each in its
own process group, stopping at the first that fails, with the toolchain rules' environment
(``toolchain``) plus ``PYTHONDONTWRITEBYTECODE=1`` (so a Python check leaves no
``__pycache__`` behind), under the policy's ``check_timeout_s`` for all its steps together. A
several-step check's logs hold each step's argv before its output, and its summary names the
step that failed. The logs become artifacts of the evidence row it produces. Scratch worktrees
(the integration head, a task's base) live under ``PLANEGATE_HOME/scratch`` and are removed
after use (``scratch`` keeps bootstrapped ones for reuse).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..control.artifacts import store_artifact
from ..control.evidence import check_claims
from ..errors import GitError
from ..gitrepo import GitRepo
from ..policy import Policy, command_text
from .jobs import JobContext
from .procs import ProcessResult, run_process
from .toolchain import process_env


@dataclass(frozen=True)
class CheckResult(ProcessResult):
    """How a check of one or more steps ended: ``argv`` and the exit are those of the last step run
    (the failing one, if any); ``failed_step`` counts from 1."""

    steps: tuple[tuple[str, ...], ...] = ()
    failed_step: int | None = None

    @property
    def command(self) -> str:
        return command_text([list(s) for s in self.steps]) if self.steps else " ".join(self.argv)


def check_env(
    policy: Policy, run: str, task: str | None, cwd: Path | None = None, checkout: Path | None = None
) -> dict[str, str]:
    """A check's environment in ``cwd`` (a worktree of ``checkout``), by the toolchain rules."""
    return process_env(policy, run, task, cwd, checkout, check=True)


def unchanged(worktree: GitRepo, head: str) -> bool:
    return worktree.rev("HEAD") == head and not worktree.dirty_paths()


def summarize(name: str, result: ProcessResult) -> str:
    where = ""
    if isinstance(result, CheckResult) and len(result.steps) > 1 and not result.ok:
        where = f" at step {result.failed_step} of {len(result.steps)} ({command_text([list(result.argv)])})"
    if result.timed_out:
        verdict = f"timed out{where} after {result.duration_s:.0f} s"
    else:
        verdict = "passed" if result.exit_code == 0 else f"failed{where} (exit {result.exit_code})"
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
                "command": result.command if isinstance(result, CheckResult) else " ".join(result.argv),
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


def run_steps(
    steps: Sequence[tuple[Sequence[str], Mapping[str, str]]],
    *,
    cwd: Path,
    timeout_s: float,
    logs: Path,
    name: str,
    on_tick: Callable[[float], None],
) -> CheckResult:
    """Run a check's steps (each argv with its environment) in order, within ``timeout_s`` in
    all, stopping at the first that fails. One step keeps its output in ``<name>.stdout.log`` and
    ``<name>.stderr.log``; several write those as each step's argv followed by its output.

    Raises:
        ExecutionError: a step's command cannot be started; whatever ``on_tick`` raises.
    """
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{name}.stdout.log", logs / f"{name}.stderr.log"
    argvs = tuple(tuple(argv) for argv, _ in steps)
    started = time.monotonic()
    if len(steps) > 1:
        out_path.write_bytes(b"")
        err_path.write_bytes(b"")
    last: ProcessResult | None = None
    for index, (argv, env) in enumerate(steps, start=1):
        remaining = timeout_s - (time.monotonic() - started)
        if last is not None and remaining <= 0:
            return _as_check(last, argvs, index, started, timed_out=True)
        if len(steps) == 1:
            step_out, step_err = out_path, err_path
        else:
            step_out, step_err = logs / f"{name}.step{index}.stdout.log", logs / f"{name}.step{index}.stderr.log"
        last = run_process(
            argv, cwd=cwd, timeout_s=remaining, env=env, stdout_path=step_out, stderr_path=step_err, on_tick=on_tick
        )
        if len(steps) > 1:
            header = f"$ {command_text([list(argv)])}   (step {index} of {len(steps)})\n".encode()
            for part, whole in ((step_out, out_path), (step_err, err_path)):
                with whole.open("ab") as combined:
                    combined.write(header + part.read_bytes())
                part.unlink(missing_ok=True)
        if not last.ok:
            return _as_check(last, argvs, index, started, paths=(out_path, err_path))
    assert last is not None
    return _as_check(last, argvs, None, started, paths=(out_path, err_path))


def _as_check(
    result: ProcessResult,
    steps: tuple[tuple[str, ...], ...],
    failed: int | None,
    started: float,
    *,
    timed_out: bool | None = None,
    paths: tuple[Path, Path] | None = None,
) -> CheckResult:
    return CheckResult(
        argv=result.argv,
        exit_code=result.exit_code,
        duration_s=time.monotonic() - started if len(steps) > 1 else result.duration_s,
        timed_out=result.timed_out if timed_out is None else timed_out,
        stdout_path=paths[0] if paths else result.stdout_path,
        stderr_path=paths[1] if paths else result.stderr_path,
        steps=steps,
        failed_step=failed,
    )


def run_check(
    ctx: JobContext,
    policy: Policy,
    name: str,
    cwd: Path,
    logs: Path,
    on_tick: Callable[[float], None] | None = None,
    checkout: Path | None = None,
) -> CheckResult:
    env = check_env(policy, ctx.run, ctx.task, cwd, checkout)
    return run_steps(
        [(step, env) for step in policy.checks[name]],
        cwd=cwd,
        timeout_s=policy.check_timeout_s,
        logs=logs,
        name=name,
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
