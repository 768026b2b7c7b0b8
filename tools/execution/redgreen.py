"""Red→green: proof that a task's new or changed tests fail without its change and pass with it.

The server takes the test files the diff adds or changes, overlays them on a scratch worktree at
the task's base commit and runs the policy's test check there: it must fail. The same check on
the task's head must pass. Either way the outcome is ``direct`` evidence of kind ``red_green``
(exit 0 only when proven) with both logs attached, so a test that also passes on the base
commit — one that proves nothing about the change — is refused with that reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..gitrepo import DiffFacts, GitRepo
from ..globs import matches_any
from ..policy import Policy
from .checkrun import record_check, remove_scratch, run_check, scratch_worktree
from .jobs import JobContext
from .procs import ProcessResult


def _overlay(repo: GitRepo, head: str, scratch: Path, paths: list[str]) -> None:
    for path in paths:
        content = repo.show(head, path)
        if content is None:
            continue
        target = (scratch / path).resolve()
        if not target.is_relative_to(scratch.resolve()):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def _failing_evidence(ctx: JobContext, head: str, diff: DiffFacts, reason: str) -> int:
    logs = ctx.artifacts_dir("red-green")
    note = logs / "red_green.txt"
    note.write_text(reason + "\n", encoding="utf-8")
    empty = logs / "red_green.stderr.txt"
    empty.write_text("", encoding="utf-8")
    result = ProcessResult(
        argv=("red_green",), exit_code=1, duration_s=0.0, timed_out=False, stdout_path=note, stderr_path=empty
    )
    return record_check(
        ctx,
        kind="red_green",
        label="direct",
        result=result,
        head=head,
        diff_sha=diff.sha256,
        summary=f"red_green: not proven: {reason}",
    )


def prove_red_green(
    ctx: JobContext,
    policy: Policy,
    repo: GitRepo,
    row: dict[str, Any],
    diff: DiffFacts,
    head_result: ProcessResult | None,
) -> int:
    """Run the red→green proof for a task; returns the evidence id."""
    head = diff.head
    name = policy.test_check
    if name not in policy.checks:
        return _failing_evidence(
            ctx, head, diff, f"the policy has no check named {name!r} (test_check); define it under [checks]"
        )
    tests = [
        f.path for f in diff.files if matches_any(f.path, policy.test_paths) and repo.show(head, f.path) is not None
    ]
    if not tests:
        return _failing_evidence(
            ctx,
            head,
            diff,
            "the diff changes runtime code but adds or changes no test file (test_paths); add a test that fails "
            "without the change",
        )
    logs = ctx.artifacts_dir("red-green")
    ctx.heartbeat(f"red_green: running {name} on base {diff.base[:12]} with the new tests")
    scratch = scratch_worktree(ctx, repo, diff.base, "base")
    try:
        _overlay(repo, head, scratch, tests)
        base_logs = logs / "base"
        base_result = run_check(ctx, policy, name, scratch, base_logs)
    finally:
        remove_scratch(repo, scratch)
    if head_result is None:
        ctx.heartbeat(f"red_green: running {name} on head {head[:12]}")
        head_result = run_check(ctx, policy, name, Path(row["worktree"]), logs / "head")
    shown = ", ".join(tests[:5]) + (f" (+{len(tests) - 5} more)" if len(tests) > 5 else "")
    failed_on_base = base_result.exit_code != 0 and not base_result.timed_out
    passed_on_head = head_result.exit_code == 0 and not head_result.timed_out
    if failed_on_base and passed_on_head:
        verdict, code = (
            f"proven: {shown} fail on base {diff.base[:12]} (exit {base_result.exit_code}) and pass on "
            f"head {head[:12]}",
            0,
        )
    elif base_result.timed_out:
        verdict, code = f"not proven: {name} timed out on base {diff.base[:12]}", 1
    elif not failed_on_base:
        verdict, code = (
            (
                f"not proven: {shown} also pass on base {diff.base[:12]}, so they do not show the change "
                "works; write a test that fails without it"
            ),
            1,
        )
    else:
        verdict, code = f"not proven: {name} fails on head {head[:12]} (exit {head_result.exit_code})", 1
    combined = ProcessResult(
        argv=base_result.argv,
        exit_code=code,
        duration_s=base_result.duration_s + (0.0 if head_result is None else head_result.duration_s),
        timed_out=False,
        stdout_path=base_result.stdout_path,
        stderr_path=base_result.stderr_path,
    )
    return record_check(
        ctx,
        kind="red_green",
        label="direct",
        result=combined,
        head=head,
        diff_sha=diff.sha256,
        summary=f"red_green: {verdict}",
        extra_logs=[head_result.stdout_path, head_result.stderr_path],
    )
