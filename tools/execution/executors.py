"""Executors: who does a task's work in its worktree.

- ``agent``: nothing runs; the caller (or its sub-agent) works in the worktree and commits.
- ``command``: the policy's ``[executor] command`` argv, run in the worktree.
- ``codex``: ``codex exec --json … -C <worktree> -o <file> -- <prompt>``; its JSONL events and
  last message are kept as artifacts.

``command`` and ``codex`` run as durable ``executor`` jobs through one protocol (``argv_for``):
no shell, the policy's timeout, their own process group, a scrubbed environment, stdout and
stderr captured as artifacts. Whatever the executor leaves in the worktree is committed on the
task branch afterwards (even when it failed, so nothing is lost), authored as the executor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..control.artifacts import store_artifact
from ..errors import ExecutionError
from ..gitrepo import GitRepo, trailers
from ..policy import Policy
from .codex import codex_exec_argv, parse_codex_events
from .envelope import ENVELOPE_NAME
from .jobs import JobContext
from .procs import DEFAULT_ENV_ALLOW, run_process, scrubbed_env

CODEX_PROMPT = (
    "You are implementing one task of a larger change. Your task envelope is the file "
    f"{ENVELOPE_NAME} in the current directory: read it first and follow it exactly — its goal, the "
    "requirements and acceptance criteria it serves, its scope (change nothing outside it) and its "
    "checks. Write the code and the tests, and run the checks if you can. Do not commit: planegate "
    "commits what you leave in the worktree. The envelope follows.\n\n"
)


class ExecutorKind(Protocol):
    name: str

    def argv(self, policy: Policy, worktree: Path, logs: Path, envelope: str) -> list[str]: ...


class CommandExecutor:
    name = "command"

    def argv(self, policy: Policy, worktree: Path, logs: Path, envelope: str) -> list[str]:
        if not policy.executor.command:
            raise ExecutionError(
                "the policy has no [executor] command; set it or dispatch with executor='agent'",
                disposition="bad_config",
            )
        return list(policy.executor.command)


class CodexExecutor:
    name = "codex"

    def argv(self, policy: Policy, worktree: Path, logs: Path, envelope: str) -> list[str]:
        return codex_exec_argv(
            codex=policy.executor.codex,
            worktree=worktree,
            last_message_file=logs / "last-message.md",
            prompt=CODEX_PROMPT + envelope,
            model=policy.executor.model,
            extra_args=policy.executor.codex_args,
        )


EXECUTOR_KINDS: dict[str, ExecutorKind] = {"command": CommandExecutor(), "codex": CodexExecutor()}


def run_executor_job(ctx: JobContext) -> dict[str, Any]:
    """The ``executor`` job: run the executor in the worktree, then commit what it left."""
    env = ctx.env
    run_row = env.run_row(ctx.run)
    assert ctx.task is not None
    row = env.task_row(ctx.run, ctx.task)
    policy = env.policy(run_row)
    kind = EXECUTOR_KINDS[ctx.payload["executor"]]
    worktree = Path(row["worktree"])
    envelope_path = worktree / ENVELOPE_NAME
    envelope = envelope_path.read_text(encoding="utf-8") if envelope_path.is_file() else ""
    logs = ctx.artifacts_dir(f"executor-{kind.name}")
    argv = kind.argv(policy, worktree, logs, envelope)
    process_env = scrubbed_env(
        [*DEFAULT_ENV_ALLOW, *policy.executor.env_allow],
        extra={"PLANEGATE_RUN": ctx.run, "PLANEGATE_TASK": ctx.task, "PLANEGATE_ENVELOPE": str(envelope_path)},
    )
    stdout_name = "events.jsonl" if kind.name == "codex" else "stdout.log"
    result = run_process(
        argv,
        cwd=worktree,
        timeout_s=policy.executor.timeout_s,
        env=process_env,
        stdout_path=logs / stdout_name,
        stderr_path=logs / "stderr.log",
        on_tick=lambda elapsed: ctx.heartbeat(f"{kind.name} executor: running for {elapsed:.0f} s"),
    )
    repo = GitRepo(worktree)
    _, email = repo.identity()
    message = f"{ctx.task}: work of the {kind.name} executor\n\n" + trailers(
        {
            "Planegate-Run": ctx.run,
            "Planegate-Task": ctx.task,
            "Planegate-Job": ctx.job["id"],
            "Planegate-Executor-Exit": "timeout" if result.timed_out else result.exit_code,
        }
    )
    commit = repo.commit_all(message, author=(f"{kind.name} executor (planegate)", email))
    outputs = [p for p in (logs / stdout_name, logs / "stderr.log", logs / "last-message.md") if p.is_file()]
    summary: dict[str, Any] = {}
    if kind.name == "codex":
        parsed = parse_codex_events(logs / stdout_name)
        summary = {"events": dict(parsed.event_counts), "errors": list(parsed.errors[:5])}
    with env.write(actor=f"worker:{ctx.worker}") as w:
        artifacts = [
            store_artifact(w, env, run=ctx.run, task=ctx.task, owner=f"job:{ctx.job['id']}", source=p) for p in outputs
        ]
        w.event(
            "executor.finished",
            run=ctx.run,
            task=ctx.task,
            job=ctx.job["id"],
            executor=kind.name,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            commit=commit,
            artifacts={a.name: a.sha256 for a in artifacts},
            **summary,
        )
    if not result.ok:
        what = "timed out" if result.timed_out else f"exited {result.exit_code}"
        kept = f"; its changes were committed as {commit[:12]}" if commit else ""
        raise ExecutionError(
            f"the {kind.name} executor {what}{kept}; logs: {logs}\n{result.tail(1500)}",
            disposition="timeout" if result.timed_out else "executor_failed",
        )
    return {"exit_code": result.exit_code, "commit": commit, "duration_s": round(result.duration_s, 3), **summary}
