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

For a task, the test check's run also yields its JUnit report (``testreports``), and with it two
more pieces of evidence: ``red_green`` (``redgreen``: the new and changed tests, run alone on the
base with the changed test files overlaid, fail there and pass on the head) and
``test_integrity`` (``integrity``: the tests passing on the base still pass on the head). Their
base runs happen in scratch worktrees *while* the head's checks run, so red→green costs a
selected run of a few tests, and the full base run integrity needs is made only when no report
for the base's tree is cached; the head's report is cached under the head's tree for the next
task.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planegate.store import placeholders

from ..control.graph import task_declarations
from ..control.tasks import renew_lease, settle_status
from ..env import Env
from ..errors import Disposition, InvalidInput, NotFound, WrongState
from ..gitrepo import DiffFacts, GitRepo
from ..globs import matches_any
from ..models import ACTIVE_STATUSES, CheckLine, ChecksResult
from ..policy import Policy
from .checkrun import record_check, run_check, summarize, unchanged
from .integrity import base_note, compare, record_integrity
from .jobs import JobContext, JobLost, enqueue, job_disposition, job_row, paused_note
from .redgreen import RedGreenPlan, Verdict, judge, overlay, plan_red_green, record_red_green, runtime_paths
from .scratch import close_scratch, ensure_task_bootstrap, open_scratch
from .testreports import (
    CachedReport,
    SuiteCheck,
    SuiteRun,
    cached_report,
    run_test_check,
    store_report,
    suite_check,
    tree_lock,
    tree_of,
    wait_for,
)

OWN_EVIDENCE = ("red_green", "test_integrity")


def _select_checks(policy: Policy, checks: list[str] | None) -> list[str]:
    if checks is None:
        return list(policy.checks)
    unknown = [c for c in checks if c not in policy.checks and c not in OWN_EVIDENCE]
    if unknown:
        known = ", ".join([*policy.checks, *OWN_EVIDENCE]) or "none (add [checks] to .planegate/policy.toml)"
        raise NotFound(f"check {unknown[0]!r} is not in the run's policy; known checks: {known}")
    return [c for c in checks if c not in OWN_EVIDENCE]


def needs_red_green(policy: Policy, paths: list[str]) -> list[str]:
    """The runtime and test paths a change touches, when the policy asks for red→green (the
    checks job decides from the tests themselves whether proof is needed)."""
    if not policy.require_red_green:
        return []
    return [*runtime_paths(policy, paths), *[p for p in paths if matches_any(p, policy.test_paths)]]


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
    integrity = False
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
            integrity = policy.tests.integrity and policy.test_check in policy.checks
        else:
            red_green = "red_green" in checks
            integrity = (
                policy.tests.integrity
                and policy.test_check in policy.checks
                and ("test_integrity" in checks or policy.test_check in checks)
            )
    if head is None:
        raise WrongState(f"no head commit to check for run {run!r}; was its branch deleted?")
    if not names and not red_green and not integrity:
        raise InvalidInput(
            f"run {run!r} has no checks to run: its policy defines none; add [checks] to .planegate/policy.toml"
        )
    with env.write() as w:
        job = enqueue(
            w,
            run=run,
            task=task,
            kind="checks",
            payload={"checks": names, "head_sha": head, "red_green": red_green, "integrity": integrity},
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
        disposition=checks_disposition(job, lines),
        next_step=next_step,
    )


def checks_disposition(job: dict[str, Any], lines: list[CheckLine]) -> Disposition | None:
    """Why a checks job did not pass: a check failed or ran out of time, or the job itself failed."""
    if job["status"] != "succeeded":
        return job_disposition(job)
    failed = [x for x in lines if x.exit_code != 0]
    if failed:
        timed_out = all(x.exit_code == -1 and " timed out after " in x.summary for x in failed)
        return "timeout" if timed_out else "check_failed"
    if any(x.label != "direct" for x in lines):
        return "retryable"  # the worktree moved while a check ran: run them again on a clean commit
    return None


class _SideRuns:
    """Test runs on scratch worktrees, in threads, while the head's checks run in the job's thread.

    Each side run makes and removes its own scratch worktree (with its own repository handle: no
    git object is shared across threads), so that work is off the head's path too. Each heartbeats
    the job's lease; when the job ends early (an error, a lost lease) the side runs are told to
    stop at their next tick, which ends their process groups and removes their scratch worktrees."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.stop = threading.Event()
        self.threads: dict[str, threading.Thread] = {}
        self.results: dict[str, Any] = {}
        self.errors: dict[str, BaseException] = {}

    def tick(self, _elapsed: float = 0.0) -> None:
        if self.stop.is_set():
            raise JobLost(f"job {self.ctx.job['id']} ended; its side runs stop")
        self.ctx.heartbeat()

    def start(self, key: str, work: Callable[[], Any]) -> None:
        def target() -> None:
            try:
                self.results[key] = work()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the job's thread by join()
                self.errors[key] = exc

        thread = threading.Thread(target=target, name=f"checks-{self.ctx.job['id']}-{key}", daemon=True)
        self.threads[key] = thread
        thread.start()

    def join(self) -> None:
        for key, thread in self.threads.items():
            while thread.is_alive():
                thread.join(timeout=1.0)
                self.ctx.heartbeat(f"waiting for the {key} run on the base")
        for error in self.errors.values():
            raise error

    def abort(self) -> None:
        self.stop.set()
        for thread in self.threads.values():
            thread.join(timeout=30)


def _base_report(
    ctx: JobContext, policy: Policy, check: SuiteCheck, root: Path, base: str, tree: str, side: _SideRuns
) -> SuiteRun | CachedReport:
    """The base's report: cached for its tree, or a full run now in a scratch worktree (one run
    per tree at a time in this process). Runs in a side thread, with its own repository handle."""
    repo = GitRepo(root)
    lock = tree_lock(repo, tree, check.command_sha256)
    wait_for(lock, side.tick)
    try:
        cached = cached_report(ctx.env, repo, tree, check.command_sha256)
        if cached is not None:
            return cached
        scratch = open_scratch(ctx, policy, repo, base, "base-full", on_tick=side.tick)
        try:
            logs = ctx.artifacts_dir("checks") / "base-full"
            run = run_test_check(
                ctx, policy, check, scratch.path, logs, "base run", on_tick=side.tick, checkout=repo.root
            )
        finally:
            close_scratch(repo, scratch)
        store_report(ctx, repo, tree, check.command_sha256, base, run)
        return run
    finally:
        lock.release()


def _red_run(
    ctx: JobContext, policy: Policy, check: SuiteCheck, plan: RedGreenPlan, root: Path, diff: DiffFacts, side: _SideRuns
) -> SuiteRun:
    """The task's new and changed tests alone, on the base with the changed test files overlaid."""
    repo = GitRepo(root)
    scratch = open_scratch(ctx, policy, repo, diff.base, "base", on_tick=side.tick)
    try:
        overlay(repo, diff.head, scratch.path, plan.overlay)
        logs = ctx.artifacts_dir("red-green") / "base"
        return run_test_check(
            ctx,
            policy,
            check,
            scratch.path,
            logs,
            "red run",
            select=plan.changes,
            on_tick=side.tick,
            checkout=repo.root,
        )
    finally:
        close_scratch(repo, scratch)


def run_checks_job(ctx: JobContext) -> dict[str, Any]:
    """The ``checks`` job: run each check, record direct evidence, then red→green and test
    integrity when asked (their base runs overlap the head's checks)."""
    env = ctx.env
    run_row = env.run_row(ctx.run)
    policy = env.policy(run_row)
    repo = env.repo(run_row["repo"])
    head = ctx.payload["head_sha"]
    logs = ctx.artifacts_dir("checks")
    if ctx.task is None:
        return {"evidence": _integration_checks(ctx, policy, repo, head, logs)}
    row = env.task_row(ctx.run, ctx.task)
    worktree = GitRepo(row["worktree"])
    if worktree.rev("HEAD") != head:
        raise WrongState(
            f"task {ctx.task!r} moved from {head[:12]} to {worktree.rev('HEAD')} while its checks waited; "
            "call run_checks again"
        )
    # Before anything reads the worktree: a changed lockfile or input makes its setup run again.
    ensure_task_bootstrap(ctx, policy, Path(row["worktree"]), repo.root)
    diff = repo.diff(row["base_sha"], head)
    check = suite_check(policy)
    wants_red_green = bool(ctx.payload.get("red_green"))
    wants_integrity = bool(ctx.payload.get("integrity"))
    plan = plan_red_green(policy, repo, diff) if wants_red_green else None
    declarations = task_declarations(row)
    side = _SideRuns(ctx)
    evidence: list[int] = []
    cached: CachedReport | None = None
    base_tree, head_tree = tree_of(repo, diff.base, head)
    try:
        if check is not None and wants_integrity:
            cached = cached_report(env, repo, base_tree, check.command_sha256)
            if cached is None:
                side.start("full", lambda: _base_report(ctx, policy, check, repo.root, diff.base, base_tree, side))
        if check is not None and plan is not None and plan.needed and plan.selects_anything:
            side.start("red", lambda: _red_run(ctx, policy, check, plan, repo.root, diff, side))
        head_run, head_stable = None, False
        for name in ctx.payload["checks"]:
            ctx.heartbeat(f"check {name}: starting")
            extra: list[Path] = []
            if check is not None and name == check.name:
                head_run = run_test_check(
                    ctx, policy, check, Path(row["worktree"]), logs, f"check {name}", checkout=repo.root
                )
                result = head_run.result
                extra = [head_run.report_path] if head_run.report_path else []
            else:
                result = run_check(ctx, policy, name, Path(row["worktree"]), logs, checkout=repo.root)
            stable = unchanged(worktree, head)
            if check is not None and name == check.name:
                head_stable = stable
            summary = (
                None
                if stable
                else (
                    summarize(name, result) + "\nthe worktree changed while this check ran (a commit or an "
                    "uncommitted edit), so the result describes no single commit; run_checks again on a clean commit"
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
                    extra_logs=extra,
                )
            )
        if check is not None and head_run is None and (wants_red_green or wants_integrity):
            ctx.heartbeat(f"check {check.name}: running on the head for red→green and test integrity")
            head_run = run_test_check(
                ctx, policy, check, Path(row["worktree"]), logs / "head", "head run", checkout=repo.root
            )
            head_stable = unchanged(worktree, head)
        side.join()
    except BaseException:
        side.abort()
        raise
    if check is not None and head_run is not None and head_stable:
        store_report(ctx, repo, head_tree, check.command_sha256, head, head_run)
    label = "direct" if head_stable else "proxy"
    if wants_red_green:
        evidence.append(
            _red_green_evidence(ctx, policy, check, plan, side.results.get("red"), head_run, diff, declarations, label)
        )
    if wants_integrity:
        base = cached or side.results.get("full")
        evidence.append(_integrity_evidence(ctx, policy, check, base, head_run, diff, base_tree, declarations, label))
    return {"evidence": evidence}


def _red_green_evidence(
    ctx: JobContext,
    policy: Policy,
    check: SuiteCheck | None,
    plan: RedGreenPlan | None,
    base: SuiteRun | None,
    head: SuiteRun | None,
    diff: DiffFacts,
    declarations: dict[str, Any],
    label: str,
) -> int:
    if check is None:
        verdict = Verdict(False, f"the policy has no check named {policy.test_check!r} (test_check); define it")
    elif plan is None or not plan.needed:
        verdict = Verdict(True, plan.why if plan else "not needed")
    elif not plan.selects_anything or base is None:
        verdict = Verdict(
            False,
            f"not proven: {plan.why} but the change adds or changes no test (test_paths); add a test that fails "
            "without the change",
        )
    elif head is None:
        verdict = Verdict(False, "not proven: the test check did not run on the head")
    else:
        rewrites = (declarations.get("rewrites_tests") or {}).get("tests", [])
        verdict = judge(plan, base, head, rewrites)
    judged = plan is not None and plan.needed
    return record_red_green(
        ctx,
        diff,
        verdict,
        base=base if judged else None,
        head=head if judged else None,
        label=label if verdict.ok else "direct",
    )


def _integrity_evidence(
    ctx: JobContext,
    policy: Policy,
    check: SuiteCheck | None,
    base: SuiteRun | CachedReport | None,
    head: SuiteRun | None,
    diff: DiffFacts,
    tree: str,
    declarations: dict[str, Any],
    label: str,
) -> int:
    removes = (declarations.get("removes_tests") or {}).get("tests", [])
    if check is None:
        ok, text = False, f"the policy has no check named {policy.test_check!r} (test_check) to compare by"
    elif base is None or (isinstance(base, SuiteRun) and base.report is None):
        problem = base.problem if isinstance(base, SuiteRun) else "it did not run"
        ok, text = False, f"not established: the base run gave no readable report: {problem}"
    elif head is None or head.report is None:
        ok, text = False, f"not established: the head run gave no readable report: {head.problem if head else ''}"
    else:
        base_report = base.report
        assert base_report is not None
        found = compare(base_report, head.report, removes, base_note(base, diff.base, tree))
        ok, text = found.ok, found.text
    return record_integrity(ctx, diff, ok, text, base=base, head=head, label=label if ok else "direct")


def _integration_checks(ctx: JobContext, policy: Policy, repo: GitRepo, head: str, logs: Path) -> list[int]:
    scratch = open_scratch(ctx, policy, repo, head, "integration")
    check = suite_check(policy)
    evidence = []
    try:
        for name in ctx.payload["checks"]:
            if check is not None and name == check.name:
                test_run = run_test_check(ctx, policy, check, scratch.path, logs, f"check {name}", checkout=repo.root)
                store_report(ctx, repo, tree_of(repo, head)[0], check.command_sha256, head, test_run)
                result = test_run.result
                extra = [test_run.report_path] if test_run.report_path else []
            else:
                result, extra = run_check(ctx, policy, name, scratch.path, logs, checkout=repo.root), []
            evidence.append(
                record_check(ctx, kind=name, label="direct", result=result, head=head, diff_sha=None, extra_logs=extra)
            )
        return evidence
    finally:
        close_scratch(repo, scratch)
