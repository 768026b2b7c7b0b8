"""``get_job``: one job's state, and for a checks job the evidence it produced."""

from __future__ import annotations

import json

from ..env import Env
from ..models import JobResult
from .checks import checks_result
from .jobs import job_row


def job_result(env: Env, job: int) -> JobResult:
    """Raises NotFound for an unknown job id."""
    row = job_row(env, job)
    checks = checks_result(env, job) if row["kind"] == "checks" else None
    subject = f"run={row['run_id']!r}, task={row['task_id']!r}"
    if checks is not None:
        next_step = checks.next_step
    elif row["status"] in ("queued", "running"):
        next_step = f"still {row['status']}; call get_job({job}) again"
    elif row["status"] == "succeeded":
        next_step = f"run_checks({subject})" if row["kind"] == "executor" else f"get_status({row['run_id']!r})"
    else:
        next_step = f"the job {row['status']}: {row['error']}; see get_status({row['run_id']!r})"
    return JobResult(
        job=job,
        kind=row["kind"],
        run=row["run_id"],
        task=row["task_id"],
        state=row["status"],
        attempts=row["attempts"],
        progress=row["progress"],
        error=row["error"],
        result=json.loads(row["result"]) if row["result"] else None,
        checks=checks.results if checks else None,
        all_passed=checks.all_passed if checks else None,
        next_step=next_step,
    )
