"""Durable jobs: executor runs, checks and reviews as rows that any planegate process can run.

A job is ``queued`` until a worker claims it (``running``, with a lease it renews by heartbeat),
then ``succeeded`` or ``failed``. A worker that dies stops renewing; once its lease has expired
another worker reclaims the job and runs it again, up to ``max_attempts``, after which the job
is set to ``attention`` with the reason. Every transition is a compare-and-set on the job's
status and lease owner, so a job is never run by two live workers, and a worker whose lease was
taken (or whose job was cancelled) learns it at its next heartbeat and stops.

Handlers are looked up by kind and imported lazily; each takes a ``JobContext`` and returns a
JSON-able result.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planegate.store import Writer, canonical_json, now_iso

from ..config import process_id
from ..env import Env
from ..errors import Busy, NotFound, PlanegateError

log = logging.getLogger("planegate.jobs")

HANDLERS = {
    "executor": "planegate.tools.execution.executors:run_executor_job",
    "checks": "planegate.tools.execution.checks:run_checks_job",
    "review": "planegate.tools.review.review:run_review_job",
}
DONE = ("succeeded", "failed", "attention", "cancelled")
# Work that falls due with time rather than being queued (a pending review's re-read). Found by
# name like the handlers, so this module imports none of the planes that use it.
DUE_WORK = ("planegate.tools.review.review:queue_due_rereads",)


class JobLost(Exception):
    """This worker no longer holds the job (its lease was taken, or the job was cancelled)."""


def enqueue(w: Writer, *, run: str, task: str | None, kind: str, payload: dict[str, Any], max_attempts: int = 3) -> int:
    job_id = w.insert(
        "jobs",
        {
            "run_id": run,
            "task_id": task,
            "kind": kind,
            "status": "queued",
            "payload": canonical_json(payload),
            "attempts": 0,
            "max_attempts": max_attempts,
            "created_at": w.at,
        },
    )
    w.event("job.queued", run=run, task=task, job=job_id, kind=kind)
    return job_id


def job_row(env: Env, job_id: int) -> dict[str, Any]:
    row = env.store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    if row is None:
        raise NotFound(f"job {job_id} not found; the job id comes from run_checks or dispatch_task")
    return row


def claim(env: Env, worker: str, lease_s: float) -> dict[str, Any] | None:
    """Take the oldest runnable job: queued, or running under an expired lease."""
    with env.write(actor=f"worker:{worker}") as w:
        now = w.at
        candidates = w.rows(
            "SELECT * FROM jobs WHERE status = 'queued' OR (status = 'running' AND lease_expires < ?)"
            " ORDER BY id LIMIT 20",
            (now,),
        )
        for job in candidates:
            expected = {"status": job["status"], "lease_owner": job["lease_owner"]}
            if job["status"] == "running" and job["attempts"] >= job["max_attempts"]:
                reason = (
                    f"its worker {job['lease_owner']} stopped renewing the lease {job['attempts']} time(s); "
                    "planegate gave up retrying"
                )
                if w.cas(
                    "jobs",
                    {"id": job["id"]},
                    expected,
                    {"status": "attention", "error": reason, "finished_at": now, "lease_owner": None},
                ):
                    w.event("job.attention", run=job["run_id"], task=job["task_id"], job=job["id"], reason=reason)
                continue
            changes = {
                "status": "running",
                "lease_owner": worker,
                "lease_expires": now_iso(lease_s),
                "heartbeat_at": now,
                "attempts": job["attempts"] + 1,
                "started_at": job["started_at"] or now,
            }
            if w.cas("jobs", {"id": job["id"]}, expected, changes):
                kind = "job.reclaimed" if job["status"] == "running" else "job.started"
                w.event(
                    kind,
                    run=job["run_id"],
                    task=job["task_id"],
                    job=job["id"],
                    attempt=changes["attempts"],
                    previous_owner=job["lease_owner"],
                )
                return {**job, **changes}
    return None


def finish(
    env: Env, job: dict[str, Any], worker: str, *, status: str, result: Any = None, error: str | None = None
) -> bool:
    """Record the outcome if this worker still holds the job; False when it no longer does."""
    with env.write(actor=f"worker:{worker}") as w:
        won = w.cas(
            "jobs",
            {"id": job["id"]},
            {"status": "running", "lease_owner": worker},
            {
                "status": status,
                "result": None if result is None else canonical_json(result),
                "error": error,
                "finished_at": w.at,
                "lease_owner": None,
                "lease_expires": None,
                "progress": None,
            },
        )
        if won:
            w.event(f"job.{status}", run=job["run_id"], task=job["task_id"], job=job["id"], error=error)
    return won


def requeue(env: Env, job: dict[str, Any], worker: str, reason: str) -> None:
    with env.write(actor=f"worker:{worker}") as w:
        if w.cas(
            "jobs",
            {"id": job["id"]},
            {"status": "running", "lease_owner": worker},
            {"status": "queued", "lease_owner": None, "lease_expires": None, "error": reason},
        ):
            w.event("job.requeued", run=job["run_id"], task=job["task_id"], job=job["id"], reason=reason)


def cancel_jobs(w: Writer, run: str, task: str, reason: str) -> list[int]:
    """Cancel a task's unfinished jobs inside the caller's transaction."""
    ids = [
        r["id"]
        for r in w.rows(
            "SELECT id FROM jobs WHERE run_id = ? AND task_id = ? AND status IN ('queued', 'running')", (run, task)
        )
    ]
    for job_id in ids:
        w.execute(
            "UPDATE jobs SET status = 'cancelled', error = ?, finished_at = ?, lease_owner = NULL WHERE id = ?",
            (reason, w.at, job_id),
        )
        w.event("job.cancelled", run=run, task=task, job=job_id, reason=reason)
    return ids


def unfinished(env: Env) -> int:
    """Jobs still queued or running anywhere (a running one may need reclaiming later)."""
    return int(env.store.scalar("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')"))


def release_stale(env: Env) -> list[int]:
    """Put running jobs whose lease expired back in the queue (attempts are kept)."""
    with env.write(actor="planegate:reconcile") as w:
        stale = w.rows("SELECT * FROM jobs WHERE status = 'running' AND lease_expires < ?", (w.at,))
        for job in stale:
            if w.cas(
                "jobs",
                {"id": job["id"]},
                {"status": "running", "lease_owner": job["lease_owner"]},
                {"status": "queued", "lease_owner": None, "lease_expires": None},
            ):
                w.event(
                    "job.lease_released",
                    run=job["run_id"],
                    task=job["task_id"],
                    job=job["id"],
                    previous_owner=job["lease_owner"],
                )
    return [j["id"] for j in stale]


@dataclass
class JobContext:
    """What a handler gets: the job, its payload, and a heartbeat that keeps the lease."""

    env: Env
    job: dict[str, Any]
    worker: str
    lease_s: float
    payload: dict[str, Any] = field(init=False)
    _last_beat: float = field(init=False, default_factory=time.monotonic)
    _progress: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.payload = json.loads(self.job["payload"])

    @property
    def run(self) -> str:
        return str(self.job["run_id"])

    @property
    def task(self) -> str | None:
        return self.job["task_id"]

    def artifacts_dir(self, name: str) -> Path:
        path = self.env.settings.artifacts / self.run / (self.task or "_run") / f"job-{self.job['id']}-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def heartbeat(self, progress: str | None = None) -> None:
        """Renew the lease (at most every third of it) and publish progress.

        Raises:
            JobLost: the job was cancelled or reclaimed by another worker; stop now.
        """
        due = time.monotonic() - self._last_beat >= self.lease_s / 3
        if not due and (progress is None or progress == self._progress):
            return
        with self.env.write(actor=f"worker:{self.worker}") as w:
            changes: dict[str, Any] = {"lease_expires": now_iso(self.lease_s), "heartbeat_at": w.at}
            if progress is not None:
                changes["progress"] = progress
            if not w.cas("jobs", {"id": self.job["id"]}, {"status": "running", "lease_owner": self.worker}, changes):
                current = w.one("SELECT status, lease_owner FROM jobs WHERE id = ?", (self.job["id"],))
                raise JobLost(f"job {self.job['id']} is now {current}; this worker stops")
        self._last_beat = time.monotonic()
        if progress is not None:
            self._progress = progress


def handler_for(kind: str) -> Callable[[JobContext], Any]:
    target = HANDLERS.get(kind)
    if target is None:
        raise NotFound(f"no handler for job kind {kind!r}")
    module, name = target.split(":")
    handler: Callable[[JobContext], Any] = getattr(importlib.import_module(module), name)
    return handler


def queue_due_work(env: Env) -> int:
    """Queue whatever has fallen due (see ``DUE_WORK``); returns how many jobs were queued."""
    queued = 0
    for target in DUE_WORK:
        module, name = target.split(":")
        queued += int(getattr(importlib.import_module(module), name)(env))
    return queued


def run_job(env: Env, job: dict[str, Any], worker: str, lease_s: float) -> str:
    """Run one claimed job to its end; returns the status recorded."""
    context = JobContext(env, job, worker, lease_s)
    try:
        result = handler_for(job["kind"])(context)
    except JobLost as exc:
        log.info("%s", exc)
        return "lost"
    except Busy as exc:
        requeue(env, job, worker, str(exc))
        return "queued"
    except PlanegateError as exc:
        finish(env, job, worker, status="failed", error=str(exc))
        return "failed"
    except Exception as exc:  # a handler bug must not kill the worker; the job records it
        log.exception("job %s (%s) crashed", job["id"], job["kind"])
        finish(env, job, worker, status="failed", error=f"{type(exc).__name__}: {exc}")
        return "failed"
    finish(env, job, worker, status="succeeded", result=result)
    return "succeeded"


class Worker:
    """Claims jobs and runs each in a thread, ``concurrency`` at a time, until stopped."""

    def __init__(self, env: Env, name: str | None = None) -> None:
        self.env = env
        self.name = name or f"{process_id()}:{threading.get_ident() % 10000}"
        self.lease_s = env.settings.job_lease_s
        self._wake = threading.Event()

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    async def run(self, *, stop_when_idle: bool = False) -> None:
        """Claim and run jobs until cancelled, or (``stop_when_idle``) until no job is unfinished."""
        import anyio
        import anyio.to_thread

        limiter = anyio.CapacityLimiter(self.env.settings.worker_concurrency)
        running = 0

        async def one(job: dict[str, Any]) -> None:
            nonlocal running
            try:
                await anyio.to_thread.run_sync(run_job, self.env, job, self.name, self.lease_s, limiter=limiter)
            except Exception:  # recording the outcome failed: the lease expires and another worker retries
                log.exception("worker %s lost track of job %s", self.name, job["id"])
            finally:
                running -= 1
                self._wake.set()

        async with anyio.create_task_group() as group:
            while True:
                job = None
                if running < self.env.settings.worker_concurrency:
                    try:
                        job = await anyio.to_thread.run_sync(claim, self.env, self.name, self.lease_s)
                    except Exception as exc:  # noqa: BLE001 - the loop outlives one failed claim; it retries at the next poll
                        log.warning("worker %s could not claim a job: %s", self.name, exc)
                if job is not None:
                    running += 1
                    group.start_soon(one, job)
                    continue
                due = 0
                try:
                    if running < self.env.settings.worker_concurrency:
                        due = await anyio.to_thread.run_sync(queue_due_work, self.env)
                except Exception as exc:  # noqa: BLE001 - due work is looked for again at the next poll
                    log.warning("worker %s could not queue due work: %s", self.name, exc)
                if due:
                    continue
                if stop_when_idle and running == 0 and not await anyio.to_thread.run_sync(unfinished, self.env):
                    return
                self._wake.clear()
                await anyio.to_thread.run_sync(self._wake.wait, self.env.settings.job_poll_s, abandon_on_cancel=True)
