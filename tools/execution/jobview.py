"""``get_job``: one job's state, and for a checks job the evidence it produced; and what to do
about a job that needs attention."""

from __future__ import annotations

import json
from typing import Any

from ..env import Env
from ..models import JobResult
from .checks import checks_result
from .jobs import job_disposition, job_row, paused_note


def attention_step(row: dict[str, Any]) -> str:
    """The next step for a job in ``attention``: planegate stopped retrying it, so a person or the
    agent decides (re-running it blindly would repeat whatever made every attempt fail)."""
    run, task, job = row["run_id"], row["task_id"], row["id"]
    subject = f"run={run!r}, task={task!r}" if task else f"run={run!r}"
    cause = f"job {job} ({row['kind']}{' of ' + task if task else ''}) needs attention: {row['error']}"
    if row["kind"] == "checks":
        what = (
            f"find why the checks never finished (the check logs under get_job({job}); a check that takes its "
            f"worker down, or a machine that was restarted), fix it, then run_checks({subject})"
        )
    elif row["kind"] == "executor":
        what = (
            f"the executor never finished; finish the work in the task's worktree yourself and "
            f"run_checks({subject}), or cancel_task({subject}, reason=...)"
        )
    elif row["kind"] == "review":
        what = f"request_review({subject}{'' if task else ', release=True'}) again once the reviewer is reachable"
    else:
        what = f"see get_job({job})"
    return f"{cause}. Next: {what}"


def job_result(env: Env, job: int) -> JobResult:
    """Raises NotFound for an unknown job id."""
    row = job_row(env, job)
    checks = checks_result(env, job) if row["kind"] == "checks" else None
    subject = f"run={row['run_id']!r}, task={row['task_id']!r}"
    if row["status"] == "attention":
        next_step = attention_step(row)
    elif checks is not None:
        next_step = checks.next_step
    elif row["status"] in ("queued", "running"):
        next_step = f"still {row['status']}; call get_job({job}) again" + paused_note(env, row["status"])
    elif row["status"] == "succeeded":
        next_step = f"run_checks({subject})" if row["kind"] == "executor" else f"get_status({row['run_id']!r})"
    else:
        next_step = f"the job {row['status']}: {row['error']}; see get_status({row['run_id']!r})"
    return JobResult(
        job=job,
        kind=row["kind"],
        run=row["run_id"],
        task=row["task_id"],
        state=checks.state if checks is not None else row["status"],
        attempts=row["attempts"],
        progress=row["progress"],
        error=checks.error if checks is not None else row["error"],
        result=json.loads(row["result"]) if row["result"] else None,
        checks=checks.results if checks else None,
        all_passed=checks.all_passed if checks else None,
        disposition=checks.disposition if checks is not None else job_disposition(row),
        next_step=next_step,
    )
