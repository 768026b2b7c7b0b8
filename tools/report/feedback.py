"""What ``run_checks`` and ``get_job`` answer about a checks job: its evidence, the diff gates on
the head it checked, and the call that moves the task (or run) on.

The checks job itself belongs to the execution plane and the gates to theirs; this view sits
above both. The diff gates (``gates.early.DIFF_GATES``) are evaluated on the commit the job
checked; when the task's branch has moved since, they are not (they would describe another
commit) and the answer says to run the checks again. While the job runs, only the gates the diff
alone decides are shown (scope, budget, secrets); test integrity waits for the job's evidence.
"""

from __future__ import annotations

import contextlib

from ..env import Env
from ..errors import PlanegateError
from ..execution.checks import checks_result
from ..execution.jobs import job_row
from ..execution.jobview import job_result
from ..gates.early import run_next_step, task_next_step, unmet_diff_gates, with_call
from ..gates.facts import evaluate_task
from ..gates.gates import GateResult
from ..models import ChecksResult, GateLine, JobResult


def _lines(gates: list[GateResult]) -> list[GateLine]:
    return [GateLine(gate=g.gate, ok=g.ok, reason=g.reason, next_step=g.next_step) for g in gates]


def checks_feedback(env: Env, job_id: int) -> ChecksResult:
    """``checks_result`` with the unmet diff gates of the checked head and a next step that the
    gates would accept.

    Raises:
        NotFound: an unknown job, or one that is not a checks job.
    """
    result = checks_result(env, job_id)
    run, task = result.run, result.task
    running = result.state in ("queued", "running")
    if task is None:
        if result.all_passed is False and not running:
            result.next_step = (
                "fix what failed on the integration branch (see each summary and its log artifact): a task's "
                f"change is at fault, so get_status({run!r}) and amend_graph with a task that fixes it, then "
                f"run_checks(run={run!r})"
            )
        if result.all_passed and not running:
            with contextlib.suppress(PlanegateError):  # unreadable run gates: the plain answer stands
                result.next_step = run_next_step(env, run)
        return result
    try:
        run_row = env.run_row(run)
        row = env.task_row(run, task)
        facts, gates = evaluate_task(env, run_row, row, live=False)
    except PlanegateError:
        return result
    if facts.head_sha != result.head_sha:
        if not running:
            result.next_step = (
                f"task {task!r} moved from {result.head_sha[:12]} to {str(facts.head_sha)[:12]} since these checks; "
                f"run_checks(run={run!r}, task={task!r}) on the new head"
            )
        return result
    unmet = unmet_diff_gates(gates, pure_only=running)
    result.gates = _lines(unmet)
    if running or result.state not in ("succeeded", "failed") or result.all_passed is None:
        return result
    if not result.all_passed:
        result.next_step = (
            "fix what failed (see each summary and its log artifact), commit, then "
            f"run_checks(run={run!r}, task={task!r})"
            + (f"; also unmet: {', '.join(g.gate for g in unmet)} ({unmet[0].next_step})" if unmet else "")
        )
        return result
    if unmet:
        result.next_step = (
            f"{len(unmet)} gate(s) a review cannot fix are unmet ({', '.join(g.gate for g in unmet)}): "
            f"{with_call(unmet[0].next_step, run, task)}"
        )
    elif result.all_passed:
        result.next_step = task_next_step(run, task, gates)
    return result


def job_feedback(env: Env, job_id: int) -> JobResult:
    """``get_job``'s answer; for a checks job, with the same gates and next step ``run_checks`` gives."""
    result = job_result(env, job_id)
    if job_row(env, job_id)["kind"] != "checks" or result.state == "attention":
        return result
    checks = checks_feedback(env, job_id)
    result.next_step = checks.next_step
    return result
