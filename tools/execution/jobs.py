"""Durable jobs: executor runs, checks and reviews as rows that any planegate process can run.

A job is ``queued`` until a worker claims it (``running``, with a lease it renews by heartbeat),
then ``succeeded`` or ``failed``. Each claim starts an attempt and counts it; a job whose attempts
are used up is set to ``attention`` with the reason instead of being started again, whichever
path brought it back (a reclaim, a start-up release, a requeue). Every transition is a
compare-and-set on the job's status and lease owner, so a job is never run by two live workers,
and a worker whose lease was taken (or whose job was cancelled) learns it at its next heartbeat
and stops.

At most one attempt is alive. A claim records the worker's host and its pid with the process's
start time; every process an attempt starts is recorded (``job_processes``: host, process group,
the leader's start time) until it is known to have ended. A running job whose owner is a dead
process on this host is reclaimed at once instead of after its lease. Before a job runs again,
whatever is left of its earlier attempts on this host is ended (SIGTERM, then SIGKILL) and the
end recorded as an event; a group that survives SIGKILL keeps the job from running again
(``attention``). Processes left by an attempt on another host can only be ended by a worker on
that host: each worker sweeps its host's recorded groups whose attempt is over.

Operators pause, drain and resume every worker on the ledger at once (``worker_control``): a
paused or draining worker claims nothing; running jobs finish. ``cancel_job`` stops a job, ending
its processes on this host at once; a worker elsewhere learns at its next heartbeat.

A job that ends without succeeding carries a ``disposition`` (``errors.DISPOSITIONS``): from the
error its handler raised (a command that cannot start is ``bad_config``, an executor out of time
``timeout``), ``needs_human`` for ``attention``, ``infrastructure`` for a crash, which is also
recorded as an incident whose id the job's error names. A worker that cannot use the ledger (read
only, disk full, corrupt) backs off, doubling its wait up to ``TROUBLE_WAIT_MAX_S`` and logging
each new cause once, instead of polling it every half second.

Handlers are looked up by kind and imported lazily; each takes a ``JobContext`` and returns a
JSON-able result. A plane may also name a hook that hears when one of its jobs ends without a
result (cancelled, or set to ``attention``).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planegate.store import StoreError, Writer, canonical_json, now_iso, placeholders, record_incident

from ..config import process_id
from ..env import Env
from ..errors import (
    DISPOSITIONS,
    Busy,
    Conflict,
    Disposition,
    InvalidInput,
    NotFound,
    PlanegateError,
    WrongState,
    disposition_of,
)
from ..models import CancelJobResult
from .procs import GroupEnd, end_group, host_key, process_alive, process_start, watching

log = logging.getLogger("planegate.jobs")

HANDLERS = {
    "executor": "planegate.tools.execution.executors:run_executor_job",
    "checks": "planegate.tools.execution.checks:run_checks_job",
    "review": "planegate.tools.review.review:run_review_job",
}
# Called as hook(env, job_row, reason) after a job of that kind was cancelled or set to attention.
ENDED_HOOKS = {
    "review": "planegate.tools.review.review:review_job_ended",
}
DONE = ("succeeded", "failed", "attention", "cancelled")
# Work that falls due with time rather than being queued (a pending review's re-read). Found by
# name like the handlers, so this module imports none of the planes that use it.
DUE_WORK = ("planegate.tools.review.review:queue_due_rereads",)
# Work a worker does beside its jobs, in the background of its loop: the git facts of task heads
# that moved (so get_status never waits for git). Found by name like DUE_WORK.
HEAD_WORK = ("planegate.tools.gates.facts:refresh_moved_heads",)
MODES = ("running", "paused", "draining")
STOP_GRACE_S = 2.0  # SIGTERM → SIGKILL for a group ended from outside (a reclaim, a cancel, a sweep)
TROUBLE_WAIT_MAX_S = 30.0  # the longest a worker waits before trying a ledger it could not use again


class JobLost(Exception):
    """This worker no longer holds the job (its lease was taken, or the job was cancelled)."""


class PreviousAttemptAlive(PlanegateError):
    """A group of an earlier attempt survived SIGKILL; running again could repeat its side effects."""


# --- who runs a job --------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """A worker as recorded on the jobs it claims."""

    name: str
    host: str
    host_key: str | None
    pid: int
    pid_start: int | None

    @classmethod
    def here(cls, name: str) -> Owner:
        pid = os.getpid()
        return cls(name=name, host=socket.gethostname(), host_key=host_key(), pid=pid, pid_start=process_start(pid))

    def columns(self) -> dict[str, Any]:
        return {
            "owner_host": self.host,
            "owner_host_key": self.host_key,
            "owner_pid": self.pid,
            "owner_pid_start": self.pid_start,
        }


def owner_dead(job: dict[str, Any], here: str | None) -> bool:
    """Whether the job's recorded owner is a process on this host that no longer runs."""
    if here is None or job.get("owner_host_key") != here or job.get("owner_pid") is None:
        return False
    return not process_alive(int(job["owner_pid"]), job["owner_pid_start"])


def _still_owned(job: dict[str, Any], now: str, here: str | None) -> bool:
    """A running job (as read inside the transaction) whose lease holds and whose owner is not known dead."""
    return job["status"] == "running" and (job["lease_expires"] or "") >= now and not owner_dead(job, here)


def _dead_owned(reader: Any, here: str | None) -> set[int]:
    """Running jobs owned by a dead process on this host."""
    if here is None:
        return set()
    rows = reader.rows(
        "SELECT id, owner_host_key, owner_pid, owner_pid_start FROM jobs WHERE status = 'running'"
        " AND owner_host_key = ?",
        (here,),
    )
    return {r["id"] for r in rows if owner_dead(r, here)}


# --- queue -----------------------------------------------------------------------------------


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


def job_disposition(job: dict[str, Any]) -> Disposition | None:
    """Why a job that ended did not succeed (``errors.DISPOSITIONS``); None while it runs, on
    success, or when it was cancelled (a decision, not a failure)."""
    status = job["status"]
    if status == "attention":
        return "needs_human"
    if status == "failed":
        recorded = job.get("disposition")
        return recorded if recorded in DISPOSITIONS else "infrastructure"  # a job failed before dispositions existed
    return None


def _gave_up(job: dict[str, Any], why: str) -> str:
    return (
        f"attempt {job['attempts']} of {job['max_attempts']} ended without an outcome ({why}); planegate stopped "
        "retrying so the job's side effects do not run again"
    )


def _to_attention(w: Writer, job: dict[str, Any], reason: str) -> bool:
    if not w.cas(
        "jobs",
        {"id": job["id"]},
        {"status": job["status"], "lease_owner": job["lease_owner"]},
        {
            "status": "attention",
            "error": reason,
            "disposition": "needs_human",
            "finished_at": w.at,
            "lease_owner": None,
            "lease_expires": None,
        },
    ):
        return False
    w.event("job.attention", run=job["run_id"], task=job["task_id"], job=job["id"], reason=reason)
    return True


def claim(env: Env, worker: str, lease_s: float) -> dict[str, Any] | None:
    """Take the oldest runnable job: queued, running under an expired lease, or running for a dead
    owner on this host. Nothing while workers are paused or draining; a job whose attempts are
    used up goes to ``attention`` instead."""
    if worker_control(env.store)["mode"] != "running":
        return None
    owner = Owner.here(worker)
    dead = _dead_owned(env.store, owner.host_key)
    attention: list[dict[str, Any]] = []
    claimed = None
    with env.write(actor=f"worker:{worker}") as w:
        if worker_control(w)["mode"] != "running":
            return None
        now = w.at
        ids = sorted(dead)
        candidates = w.rows(
            "SELECT * FROM jobs WHERE status = 'queued' OR (status = 'running' AND (lease_expires < ?"
            f" OR id IN ({placeholders(ids) or 'NULL'}))) ORDER BY id LIMIT 20",
            (now, *ids),
        )
        for job in candidates:
            if _still_owned(job, now, owner.host_key):
                continue  # another worker reclaimed it since ``dead`` was read
            expected = {"status": job["status"], "lease_owner": job["lease_owner"]}
            why = "its worker died" if job["id"] in dead else "its worker stopped renewing the lease"
            if job["attempts"] >= job["max_attempts"]:
                cause = why if job["status"] == "running" else (job["error"] or "its worker died")
                if _to_attention(w, job, _gave_up(job, cause)):
                    attention.append(job)
                continue
            changes = {
                "status": "running",
                "lease_owner": worker,
                "lease_expires": now_iso(lease_s),
                "heartbeat_at": now,
                "attempts": job["attempts"] + 1,
                "started_at": job["started_at"] or now,
                "attempt_started_at": now,
                **owner.columns(),
            }
            if w.cas("jobs", {"id": job["id"]}, expected, changes):
                reclaimed = job["status"] == "running"
                w.event(
                    "job.reclaimed" if reclaimed else "job.started",
                    run=job["run_id"],
                    task=job["task_id"],
                    job=job["id"],
                    attempt=changes["attempts"],
                    host=owner.host,
                    previous_owner=job["lease_owner"],
                    **({"why": why} if reclaimed else {}),
                )
                claimed = {**job, **changes}
                break
    _after_ended(env, attention)
    return claimed


def finish(
    env: Env,
    job: dict[str, Any],
    worker: str,
    *,
    status: str,
    result: Any = None,
    error: str | None = None,
    disposition: Disposition | None = None,
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
                "disposition": disposition,
                "finished_at": w.at,
                "lease_owner": None,
                "lease_expires": None,
                "progress": None,
            },
        )
        if won:
            extra = {"disposition": disposition} if disposition else {}
            w.event(f"job.{status}", run=job["run_id"], task=job["task_id"], job=job["id"], error=error, **extra)
    if won and status == "attention":
        _after_ended(env, [job])
    return won


def requeue(env: Env, job: dict[str, Any], worker: str, reason: str) -> None:
    """Put a job this worker holds back in the queue; the attempt it used stays counted."""
    with env.write(actor=f"worker:{worker}") as w:
        if w.cas(
            "jobs",
            {"id": job["id"]},
            {"status": "running", "lease_owner": worker},
            {"status": "queued", "lease_owner": None, "lease_expires": None, "error": reason},
        ):
            w.event(
                "job.requeued",
                run=job["run_id"],
                task=job["task_id"],
                job=job["id"],
                reason=reason,
                attempts=job["attempts"],
            )


def unfinished(env: Env) -> int:
    """Jobs still queued or running anywhere (a running one may need reclaiming later)."""
    return int(env.store.scalar("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')"))


@dataclass
class Released:
    queued: list[int] = field(default_factory=list)
    attention: list[int] = field(default_factory=list)


def release_stale(env: Env) -> Released:
    """Running jobs whose lease expired or whose owner died on this host: back in the queue, or
    to ``attention`` when their attempts are used up (each start counted when it was claimed)."""
    here = host_key()
    dead = _dead_owned(env.store, here)
    released = Released()
    ended: list[dict[str, Any]] = []
    with env.write(actor="planegate:reconcile") as w:
        ids = sorted(dead)
        stale = w.rows(
            "SELECT * FROM jobs WHERE status = 'running' AND (lease_expires < ?"
            f" OR id IN ({placeholders(ids) or 'NULL'})) ORDER BY id",
            (w.at, *ids),
        )
        for job in stale:
            if _still_owned(job, w.at, here):
                continue
            why = "its worker died" if job["id"] in dead else "its lease expired"
            if job["attempts"] >= job["max_attempts"]:
                if _to_attention(w, job, _gave_up(job, why)):
                    released.attention.append(job["id"])
                    ended.append(job)
                continue
            if w.cas(
                "jobs",
                {"id": job["id"]},
                {"status": "running", "lease_owner": job["lease_owner"]},
                {"status": "queued", "lease_owner": None, "lease_expires": None, "error": why},
            ):
                w.event(
                    "job.lease_released",
                    run=job["run_id"],
                    task=job["task_id"],
                    job=job["id"],
                    previous_owner=job["lease_owner"],
                    why=why,
                    attempts=job["attempts"],
                    max_attempts=job["max_attempts"],
                )
                released.queued.append(job["id"])
    _after_ended(env, ended)
    return released


def _after_ended(env: Env, jobs: Iterable[dict[str, Any]], reason: str | None = None) -> None:
    """Tell the job's plane that it ended without a result (a review is marked failed)."""
    for job in jobs:
        target = ENDED_HOOKS.get(job["kind"])
        if target is None:
            continue
        module, name = target.split(":")
        hook: Callable[[Env, dict[str, Any], str], None] = getattr(importlib.import_module(module), name)
        current = env.store.one("SELECT * FROM jobs WHERE id = ?", (job["id"],)) or job
        try:
            hook(env, current, reason or current["error"] or current["status"])
        except PlanegateError as exc:  # the job's own state is recorded; its plane can be fixed by hand
            log.warning("job %s ended, but its %s could not be updated: %s", job["id"], job["kind"], exc)


# --- processes of attempts -------------------------------------------------------------------


def _end_recorded(env: Env, row: dict[str, Any], by: str, actor: str) -> GroupEnd:
    """End one recorded group on this host and record how (an event) unless it was already gone."""
    result = end_group(int(row["pgid"]), row["pid_start"], STOP_GRACE_S)
    if result.outcome in ("unknown", "survived"):
        with env.write(actor=actor) as w:
            w.event(
                "job.process_survived" if result.outcome == "survived" else "job.process_unchecked",
                run=row["run_id"],
                task=row["task_id"],
                job=row["job_id"],
                attempt=row["attempt"],
                host=row["host"],
                pgid=row["pgid"],
                pids=result.pids,
                by=by,
            )
        return result
    with env.write(actor=actor) as w:
        ending = {"ended_at": w.at, "outcome": result.outcome}
        closed = w.cas("job_processes", {"id": row["id"]}, {"ended_at": None}, ending)
        # Signalled by us: always recorded (its own worker may have closed the row as the process exited).
        if closed or result.outcome in ("terminated", "killed"):
            w.event(
                "job.process_ended",
                run=row["run_id"],
                task=row["task_id"],
                job=row["job_id"],
                attempt=row["attempt"],
                host=row["host"],
                pgid=row["pgid"],
                outcome=result.outcome,
                pids=result.pids,
                by=by,
            )
    return result


_OPEN = (
    "SELECT p.*, j.run_id, j.task_id, j.status, j.attempts, j.owner_host_key, j.owner_pid, j.owner_pid_start,"
    " j.finished_at"
    " FROM job_processes p JOIN jobs j ON j.id = p.job_id WHERE p.ended_at IS NULL"
)


# A job cancelled this recently keeps its processes for the canceller, which ends them right
# after recording the cancel (and records them as ended by the cancel): between the two, a sweep
# (the start-up reconcile, a worker's, on any process of the host) would end them as stale first.
# If the canceller stopped in between, the first sweep after this ends them.
CANCEL_GRACE_S = 5.0


def end_stale_processes(env: Env, actor: str = "planegate:worker") -> list[GroupEnd]:
    """End the recorded groups on this host whose attempt is over: the job is no longer running
    that attempt, or its owner died. Run by every worker between claims and at start-up."""
    here = host_key()
    if here is None:
        return []
    ended = []
    recently = now_iso(-CANCEL_GRACE_S)
    for row in env.store.rows(_OPEN + " AND p.host_key = ? ORDER BY p.id", (here,)):
        if row["status"] == "cancelled" and (row["finished_at"] or "") > recently:
            continue
        current = row["status"] == "running" and row["attempt"] == row["attempts"]
        if current and not owner_dead(row, here):
            continue
        ended.append(_end_recorded(env, row, "sweep", actor))
    return ended


def stop_job_processes(env: Env, job_ids: Iterable[int], by: str) -> tuple[list[GroupEnd], list[str]]:
    """End every recorded group of these jobs on this host; the hosts of the ones elsewhere."""
    ids = list(job_ids)
    if not ids:
        return [], []
    here = host_key()
    rows = env.store.rows(_OPEN + f" AND p.job_id IN ({placeholders(ids)}) ORDER BY p.id", ids)
    ended = [_end_recorded(env, r, by, env.settings.actor) for r in rows if here is not None and r["host_key"] == here]
    elsewhere = sorted({r["host"] for r in rows if here is None or r["host_key"] != here})
    return ended, elsewhere


def _end_previous_attempts(ctx: JobContext) -> None:
    """Before attempt N runs: end what is left of attempts before N on this host, and stop if any survives."""
    ended, elsewhere = stop_job_processes(ctx.env.as_actor(f"worker:{ctx.worker}"), [ctx.job["id"]], "reclaim")
    if elsewhere:
        with ctx.env.write(actor=f"worker:{ctx.worker}") as w:
            w.event(
                "job.previous_attempt_elsewhere",
                run=ctx.run,
                task=ctx.task,
                job=ctx.job["id"],
                hosts=elsewhere,
                note="a worker on that host ends its processes; this host cannot",
            )
    stuck = [e for e in ended if not e.gone]
    if stuck:
        raise PreviousAttemptAlive(
            f"process group {stuck[0].pgid} of an earlier attempt of job {ctx.job['id']} is still running after "
            f"SIGKILL ({stuck[0].outcome}, pids {stuck[0].pids}); planegate will not run the job again while it "
            f"may still act; check `ps -g {stuck[0].pgid}`"
        )


# --- operator controls -----------------------------------------------------------------------


def worker_control(reader: Any) -> dict[str, Any]:
    """The workers' mode (``running``, ``paused``, ``draining``) and who set it, when, why."""
    row = reader.one("SELECT mode, reason, set_by, set_at FROM worker_control WHERE id = 1")
    return row or {"mode": "running", "reason": None, "set_by": None, "set_at": None}


def set_worker_mode(env: Env, mode: str, reason: str | None = None) -> tuple[bool, dict[str, Any]]:
    """Set every worker's mode on this ledger; (changed, the control row). An event records each change."""
    if mode not in MODES:
        raise InvalidInput(f"worker mode {mode!r} is unknown; use one of {', '.join(MODES)}")
    with env.write() as w:
        current = worker_control(w)
        if current["mode"] == mode:
            return False, current
        row = {"id": 1, "mode": mode, "reason": reason or None, "set_by": w.actor, "set_at": w.at}
        w.execute(
            "INSERT OR REPLACE INTO worker_control (id, mode, reason, set_by, set_at)"
            " VALUES (:id, :mode, :reason, :set_by, :set_at)",
            row,
        )
        kind = {"running": "workers.resumed", "paused": "workers.paused", "draining": "workers.draining"}[mode]
        w.event(kind, mode=mode, previous=current["mode"], reason=reason or None)
    return True, row


def paused_note(env: Env, status: str) -> str:
    """For a queued job while workers are paused or draining: why it does not start, and the fix."""
    if status != "queued":
        return ""
    control = worker_control(env.store)
    if control["mode"] == "running":
        return ""
    return (
        f"; it will not start while workers are {control['mode']} (set by {control['set_by']} at "
        f"{control['set_at']}): a human runs `planegate worker resume`"
    )


def job_counts(reader: Any) -> dict[str, int]:
    """Queued jobs, and running ones whose worker is alive as far as can be told (``orphaned``: its
    lease expired, or its owner is a dead process on this host; it waits to be reclaimed)."""
    queued = int(reader.scalar("SELECT COUNT(*) FROM jobs WHERE status = 'queued'"))
    running = int(reader.scalar("SELECT COUNT(*) FROM jobs WHERE status = 'running'"))
    expired = {
        r["id"] for r in reader.rows("SELECT id FROM jobs WHERE status = 'running' AND lease_expires < ?", (now_iso(),))
    }
    orphaned = len(expired | _dead_owned(reader, host_key()))
    return {"queued": queued, "running": running - orphaned, "orphaned": orphaned}


def workers_note(reader: Any) -> str | None:
    """One line on the workers when they are not simply running; None when they are."""
    control = worker_control(reader)
    mode = control["mode"]
    if mode == "running":
        return None
    counts = job_counts(reader)
    why = f" ({control['reason']})" if control["reason"] else ""
    who = f"by {control['set_by']} at {control['set_at']}{why}"
    if mode == "draining" and counts["running"] == 0:
        head = f"workers drained {who}: no job is running"
    else:
        head = f"workers {mode} {who}: {counts['running']} job(s) running"
        head += " (they finish; nothing new starts)" if counts["running"] else ""
    orphaned = f", {counts['orphaned']} whose worker is gone" if counts["orphaned"] else ""
    return f"{head}, {counts['queued']} queued{orphaned}; `planegate worker resume` lets workers claim jobs again"


def cancel_jobs(w: Writer, run: str, task: str, reason: str) -> list[int]:
    """Cancel a task's unfinished jobs inside the caller's transaction; the caller then calls
    ``after_cancel`` (outside it) to end their processes."""
    ids = [
        r["id"]
        for r in w.rows(
            "SELECT id FROM jobs WHERE run_id = ? AND task_id = ? AND status IN ('queued', 'running')", (run, task)
        )
    ]
    for job_id in ids:
        w.execute(
            "UPDATE jobs SET status = 'cancelled', error = ?, finished_at = ?, lease_owner = NULL,"
            " lease_expires = NULL WHERE id = ?",
            (reason, w.at, job_id),
        )
        w.event("job.cancelled", run=run, task=task, job=job_id, reason=reason)
    return ids


def after_cancel(env: Env, job_ids: list[int], reason: str) -> tuple[list[GroupEnd], list[str]]:
    """End the processes of cancelled jobs on this host and tell their planes."""
    stopped = stop_job_processes(env, job_ids, "cancel")
    if job_ids:
        rows = env.store.rows(f"SELECT * FROM jobs WHERE id IN ({placeholders(job_ids)})", job_ids)
        _after_ended(env, rows, f"cancelled: {reason}")
    return stopped


def cancel_job(env: Env, job_id: int, reason: str) -> CancelJobResult:
    """Cancel one job with a reason: a queued one never starts; a running one's processes are
    ended (at once on this host, at its worker's next heartbeat elsewhere).

    Raises:
        InvalidInput: empty reason. NotFound: unknown job. WrongState: the job already ended.
        Conflict: the job changed while cancelling (call again).
    """
    reason = reason.strip()
    if not reason:
        raise InvalidInput("reason is empty; say why the job is cancelled (it is recorded)")
    row = job_row(env, job_id)
    with env.write() as w:
        row = w.one("SELECT * FROM jobs WHERE id = ?", (job_id,)) or row
        was = row["status"]
        if was in ("succeeded", "failed", "attention"):
            raise WrongState(f"job {job_id} already ended ({was}); nothing to cancel. get_job({job_id}) shows it")
        if was != "cancelled":
            if not w.cas(
                "jobs",
                {"id": job_id},
                {"status": was, "lease_owner": row["lease_owner"]},
                {
                    "status": "cancelled",
                    "error": f"cancelled: {reason}",
                    "finished_at": w.at,
                    "lease_owner": None,
                    "lease_expires": None,
                },
            ):
                raise Conflict(f"job {job_id} changed while cancelling; call cancel_job({job_id}) again")
            w.event("job.cancelled", run=row["run_id"], task=row["task_id"], job=job_id, reason=reason, was=was)
    stopped, elsewhere = after_cancel(env, [job_id], reason) if was != "cancelled" else ([], [])
    lines = [f"process group {g.pgid}: {g.outcome}" for g in stopped]
    lines += [f"running on {h}: its worker stops it at its next heartbeat" for h in elsewhere]
    if was == "running" and not lines:
        lines = ["no process of it was running; its worker stops at its next heartbeat"]
    return CancelJobResult(
        job=job_id,
        kind=row["kind"],
        run=row["run_id"],
        task=row["task_id"],
        state="cancelled",
        was=was,
        reason=row["error"] if was == "cancelled" else f"cancelled: {reason}",
        stopped=lines,
        next_step=_after_cancel_step(row),
    )


def _after_cancel_step(row: dict[str, Any]) -> str:
    run, task = row["run_id"], row["task_id"]
    subject = f"run={run!r}, task={task!r}" if task else f"run={run!r}"
    if row["kind"] == "executor":
        return (
            f"the task stays dispatched; what the executor left uncommitted stays in its worktree: work there and "
            f"run_checks({subject}), or cancel_task({subject}, reason=...)"
        )
    if row["kind"] == "checks":
        return f"run_checks({subject}) again when you want the evidence"
    if row["kind"] == "review":
        return f"request_review({subject}{'' if task else ', release=True'}) again when you want a review"
    return f"get_status({run!r})"


# --- running a job ---------------------------------------------------------------------------


@dataclass
class JobContext:
    """What a handler gets: the job, its payload, and a heartbeat that keeps the lease.

    It is also the watch of the processes the job starts (``procs.watching``): each is recorded
    on the job while it runs, and a job this worker no longer holds stops them.
    """

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

    @property
    def attempt(self) -> int:
        return int(self.job["attempts"])

    def artifacts_dir(self, name: str) -> Path:
        path = self.env.settings.artifacts / self.run / (self.task or "_run") / f"job-{self.job['id']}-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _held(self, w: Writer) -> bool:
        return bool(
            w.scalar(
                "SELECT COUNT(*) FROM jobs WHERE id = ? AND status = 'running' AND lease_owner = ?",
                (self.job["id"], self.worker),
            )
        )

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

    def started(self, pid: int, start: int | None, argv: tuple[str, ...]) -> None:
        """Record a process of this attempt (its group is ``pid``); JobLost when the job is no longer ours."""
        with self.env.write(actor=f"worker:{self.worker}") as w:
            if not self._held(w):
                raise JobLost(f"job {self.job['id']} is no longer held by {self.worker}; its process {pid} is stopped")
            w.insert(
                "job_processes",
                {
                    "job_id": self.job["id"],
                    "attempt": self.attempt,
                    "host": socket.gethostname(),
                    "host_key": host_key(),
                    "pgid": pid,
                    "pid_start": start,
                    "command": " ".join(argv)[:500],
                    "started_at": w.at,
                },
            )

    def ended(self, pid: int) -> None:
        """Close the record of a process that ended; JobLost when the job is no longer ours."""
        with self.env.write(actor=f"worker:{self.worker}") as w:
            w.execute(
                "UPDATE job_processes SET ended_at = ?, outcome = 'exited'"
                " WHERE job_id = ? AND attempt = ? AND pgid = ? AND ended_at IS NULL",
                (w.at, self.job["id"], self.attempt, pid),
            )
            held = self._held(w)
        if not held:
            raise JobLost(f"job {self.job['id']} is no longer held by {self.worker}; its outcome is not recorded")


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


def refresh_heads(env: Env) -> None:
    """Run the ``HEAD_WORK`` hooks."""
    for target in HEAD_WORK:
        module, name = target.split(":")
        getattr(importlib.import_module(module), name)(env)


_local_workers: weakref.WeakSet[Worker] = weakref.WeakSet()


def wake_local_workers() -> None:
    """Have this process's workers look now instead of at their next poll (someone waits for them)."""
    for worker in list(_local_workers):
        worker.wake()


def run_job(env: Env, job: dict[str, Any], worker: str, lease_s: float) -> str:
    """Run one claimed job to its end; returns the status recorded."""
    context = JobContext(env, job, worker, lease_s)
    try:
        _end_previous_attempts(context)
        with watching(context):
            result = handler_for(job["kind"])(context)
    except JobLost as exc:
        log.info("%s", exc)
        return "lost"
    except PreviousAttemptAlive as exc:
        finish(env, job, worker, status="attention", error=str(exc), disposition="needs_human")
        return "attention"
    except Busy as exc:
        requeue(env, job, worker, str(exc))
        return "queued"
    except PlanegateError as exc:
        finish(env, job, worker, status="failed", error=str(exc), disposition=disposition_of(exc))
        return "failed"
    except StoreError:
        raise  # the ledger cannot record an outcome now: the lease runs out and the job is retried
    except Exception as exc:  # noqa: BLE001 - a handler bug must not kill the worker; the job records an incident
        incident, _ = record_incident(
            env.store,
            exc,
            place=f"job {job['id']} ({job['kind']})",
            actor=f"worker:{worker}",
            context={"job": job["id"]},
        )
        error = (
            f"the {job['kind']} job crashed: {type(exc).__name__}: {exc} (incident {incident}; the traceback is in the "
            "worker's log and the ledger's incidents table). This is a planegate bug; report the incident id"
        )
        finish(env, job, worker, status="failed", error=error, disposition="infrastructure")
        return "failed"
    finish(env, job, worker, status="succeeded", result=result)
    return "succeeded"


# Watchers look at the ledger at every poll and act outside it (a notification to a human). Found by
# name like the handlers; each takes the Env, must be cheap when nothing is new, and never raises
# for a failure of its own (it logs it).
WATCHERS = ("planegate.tools.report.notify:notify_due",)


def run_watchers(env: Env) -> None:
    for target in WATCHERS:
        module, name = target.split(":")
        getattr(importlib.import_module(module), name)(env)


class _Trouble:
    """A worker loop's failures in a row: how long to wait before the next try, and one log line per new cause."""

    def __init__(self, worker: str, poll_s: float, store: Any) -> None:
        self.worker = worker
        self.store = store
        self.poll_s = poll_s
        self.count = 0
        self.said = ""

    def note(self, exc: Exception) -> float:
        self.count += 1
        said = f"{type(exc).__name__}: {exc}" if not isinstance(exc, StoreError | PlanegateError) else str(exc)
        wait_s = min(self.poll_s * 2**self.count, TROUBLE_WAIT_MAX_S)
        if said != self.said:
            self.said = said
            if isinstance(exc, StoreError | PlanegateError):
                log.warning(
                    "worker %s cannot work (it retries, at most %.0f s apart): %s",
                    self.worker,
                    TROUBLE_WAIT_MAX_S,
                    said,
                )
            else:
                record_incident(None, exc, place=f"worker {self.worker} loop")
        return wait_s

    def clear(self) -> None:
        if self.count:
            log.warning("worker %s works again", self.worker)
        self.count, self.said = 0, ""


class Worker:
    """Claims jobs and runs each in a thread, ``concurrency`` at a time, until stopped.

    Between claims it ends the recorded process groups on this host whose attempt is over.
    """

    def __init__(self, env: Env, name: str | None = None) -> None:
        self.env = env
        self.name = name or f"{process_id()}:{threading.get_ident() % 10000}"
        self.lease_s = env.settings.job_lease_s
        self._wake = threading.Event()
        self._refreshing = False
        _local_workers.add(self)

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    async def _refresh_heads(self) -> None:
        """One pass of ``HEAD_WORK`` in a thread; the loop goes on claiming jobs meanwhile."""
        import anyio.to_thread

        try:
            await anyio.to_thread.run_sync(refresh_heads, self.env, abandon_on_cancel=True)
        except Exception as exc:  # noqa: BLE001 - derived data: the next poll tries again
            log.warning("worker %s could not refresh task heads: %s", self.name, exc)
        finally:
            self._refreshing = False

    def _sweep(self) -> None:
        try:
            end_stale_processes(self.env, actor=f"worker:{self.name}")
        except PlanegateError as exc:  # the next poll retries
            log.warning("worker %s could not end stale processes: %s", self.name, exc)

    async def run(self, *, stop_when_idle: bool = False, stop_when_drained: bool = False) -> str:
        """Claim and run jobs until cancelled; returns why it stopped.

        ``stop_when_idle``: stop once no job is unfinished (or none can start: workers paused).
        ``stop_when_drained``: stop once workers are draining and this one runs nothing.
        """
        import anyio
        import anyio.to_thread

        limiter = anyio.CapacityLimiter(self.env.settings.worker_concurrency)
        running = 0

        async def one(job: dict[str, Any]) -> None:
            nonlocal running
            try:
                await anyio.to_thread.run_sync(run_job, self.env, job, self.name, self.lease_s, limiter=limiter)
            except StoreError as exc:  # the ledger could not take the outcome: the lease expires, the job is retried
                log.warning("worker %s could not record job %s: %s", self.name, job["id"], exc)
            except Exception:  # recording the outcome failed: the lease expires and another worker retries
                log.exception("worker %s lost track of job %s", self.name, job["id"])
            finally:
                running -= 1
                self._wake.set()

        trouble = _Trouble(self.name, self.env.settings.job_poll_s, self.env.store)
        async with anyio.create_task_group() as group:
            while True:
                try:
                    job = None
                    if running < self.env.settings.worker_concurrency:
                        job = await anyio.to_thread.run_sync(claim, self.env, self.name, self.lease_s)
                    if job is not None:
                        trouble.clear()
                        running += 1
                        group.start_soon(one, job)
                        continue
                    await anyio.to_thread.run_sync(self._sweep)
                    mode = (await anyio.to_thread.run_sync(worker_control, self.env.store))["mode"]
                    if not self._refreshing:
                        self._refreshing = True
                        group.start_soon(self._refresh_heads)
                    due = 0
                    if mode == "running" and running < self.env.settings.worker_concurrency:
                        due = await anyio.to_thread.run_sync(queue_due_work, self.env)
                    await anyio.to_thread.run_sync(run_watchers, self.env)
                    trouble.clear()
                    if due:
                        continue
                    if running == 0 and stop_when_drained and mode == "draining":
                        return "drained"
                    if running == 0 and stop_when_idle:
                        if mode != "running":
                            return mode
                        if not await anyio.to_thread.run_sync(unfinished, self.env):
                            return "idle"
                    wait_s = self.env.settings.job_poll_s
                except Exception as exc:  # noqa: BLE001 - the loop outlives a ledger it cannot use and any one failure
                    wait_s = trouble.note(exc)
                self._wake.clear()
                await anyio.to_thread.run_sync(self._wake.wait, wait_s, abandon_on_cancel=True)
        return "stopped"  # pragma: no cover - the loop only returns from inside
