"""Run metrics from the ledger's events: where each task's time went, retries, refusals, review latency.

Per task, each phase is the time between two recorded events (none is measured by a clock here):

- ``dispatch``: from the task becoming ready (registered without dependencies, or unblocked) to
  its first dispatch: how long it waited for someone to pick it up;
- ``executor`` and ``checks``: from each such job's first start to its end, summed over the
  task's jobs (retries included);
- ``red_green``: the base runs of the red→green proofs, as their evidence recorded them;
- ``review_wait``: from each review's request to its outcome (completed, incomplete, failed);
- ``accept``: from the last outcome before the acceptance (checks ended, review answered) to the
  acceptance itself: how long an acceptable task waited to be accepted.

A phase that has not ended is left out rather than measured up to "now", so the same ledger
always gives the same numbers (the report relies on it). ``retries`` counts job attempts that
were taken over or put back (``job.reclaimed``, ``job.requeued``, ``job.lease_released``);
``refusals`` counts ``gate.refused`` events by gate, recorded by ``record_refusal`` each time an
acceptance is refused (events only: nothing is vouched, no row changes).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from planegate.store import StoreError

from ..env import Env
from ..errors import NotFound, PlanegateError

log = logging.getLogger("planegate.stats")

PHASES = ("dispatch", "executor", "checks", "red_green", "review_wait", "accept")
PHASE_TITLES = {
    "dispatch": "dispatch",
    "executor": "executor",
    "checks": "checks",
    "red_green": "red→green",
    "review_wait": "review wait",
    "accept": "accept",
}
_JOB_END = ("job.succeeded", "job.failed", "job.attention", "job.cancelled")
_RETRY = ("job.reclaimed", "job.requeued", "job.lease_released")
_REVIEW_END = ("review.completed", "review.incomplete", "review.failed")


@dataclass
class TaskStats:
    task: str
    status: str
    phases: dict[str, float] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    reviews: int = 0
    lead_s: float | None = None  # first dispatch to acceptance


@dataclass
class Latency:
    count: int = 0
    open: int = 0
    median_s: float | None = None
    p90_s: float | None = None
    max_s: float | None = None


@dataclass
class RunStats:
    run: str
    goal: str
    stage: str
    started_at: str
    ended_at: str | None
    wall_s: float | None
    tasks: list[TaskStats]
    totals: dict[str, float]
    retries: int
    refusals: dict[str, int]
    refused_calls: int
    review_latency: Latency
    release: dict[str, float]
    jobs: dict[str, dict[str, int]]
    dispositions: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    a = datetime.fromisoformat(start.replace("Z", "+00:00"))
    b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    return max(0.0, round((b - a).total_seconds(), 3))


def _latency(values: list[float], open_count: int) -> Latency:
    if not values:
        return Latency(open=open_count)
    ordered = sorted(values)
    p90 = ordered[math.ceil(0.9 * len(ordered)) - 1]  # nearest rank
    return Latency(
        count=len(values), open=open_count, median_s=round(statistics.median(ordered), 3), p90_s=p90, max_s=ordered[-1]
    )


class _Jobs:
    """Each job's kind, task, first start and end, read from its events."""

    def __init__(self) -> None:
        self.kind: dict[int, str] = {}
        self.task: dict[int, str | None] = {}
        self.started: dict[int, str] = {}
        self.ended: dict[int, tuple[str, str]] = {}  # job -> (at, status)
        self.disposition: dict[int, str] = {}

    def see(self, event: dict[str, Any], payload: dict[str, Any]) -> None:
        job = payload.get("job")
        if not isinstance(job, int):
            return
        kind = event["kind"]
        if kind == "job.queued":
            self.kind[job] = str(payload.get("kind"))
            self.task[job] = event["task_id"]
        elif kind in ("job.started", "job.reclaimed"):
            self.started.setdefault(job, event["at"])
        elif kind in _JOB_END:
            self.ended[job] = (event["at"], kind.removeprefix("job."))
            if payload.get("disposition"):
                self.disposition[job] = str(payload["disposition"])

    def runtime(self, job: int) -> float | None:
        end = self.ended.get(job)
        return seconds_between(self.started.get(job), end[0] if end else None)


def run_stats(reader: Any, run: str) -> RunStats:
    """The metrics of one run from ``reader`` (a ``Store`` or a snapshot of it).

    Raises:
        NotFound: the run does not exist.
    """
    run_row = reader.one("SELECT id, goal, stage, created_at FROM runs WHERE id = ?", (run,))
    if run_row is None:
        raise NotFound(f"run {run!r} not found; `planegate stats` without a run lists the runs")
    tasks = reader.rows("SELECT id, status FROM tasks WHERE run_id = ? ORDER BY seq", (run,))
    events = reader.rows("SELECT id, task_id, kind, at, payload FROM events WHERE run_id = ? ORDER BY id", (run,))
    red_green = reader.rows("SELECT task_id, duration_ms FROM evidence WHERE run_id = ? AND kind = 'red_green'", (run,))
    per_task = {t["id"]: TaskStats(task=t["id"], status=t["status"]) for t in tasks}
    jobs = _Jobs()
    ready_at: dict[str, str] = {}
    dispatched_at: dict[str, str] = {}
    accepted_at: dict[str, str] = {}
    last_outcome: dict[str | None, str] = {}
    requested: dict[str, tuple[str | None, str]] = {}  # review -> (task, at)
    review_times: list[float] = []
    release: dict[str, float] = {}
    release_review_done: str | None = None
    approved_at: str | None = None
    ended_at: str | None = None
    refusals: Counter[str] = Counter()
    refused_calls = 0
    retries = 0

    def phase(task: str | None, name: str, seconds: float | None) -> None:
        if seconds is None:
            return
        if task is None:
            release[name] = round(release.get(name, 0.0) + seconds, 3)
        elif task in per_task:
            phases = per_task[task].phases
            phases[name] = round(phases.get(name, 0.0) + seconds, 3)

    for event in events:
        kind, task, at = event["kind"], event["task_id"], event["at"]
        payload = json.loads(event["payload"])
        jobs.see(event, payload)
        if kind == "graph.registered":
            for name, status in (payload.get("statuses") or {}).items():
                if status == "ready":
                    ready_at.setdefault(name, at)
        elif kind == "task.unblocked" and task:
            ready_at.setdefault(task, at)
        elif kind == "task.dispatched" and task:
            if task not in dispatched_at:
                dispatched_at[task] = at
                phase(task, "dispatch", seconds_between(ready_at.get(task), at))
        elif kind in _JOB_END:
            job = payload.get("job")
            if isinstance(job, int) and jobs.kind.get(job) in ("executor", "checks"):
                phase(jobs.task.get(job), jobs.kind[job], jobs.runtime(job))
                last_outcome[jobs.task.get(job)] = at
        elif kind in _RETRY:
            retries += 1
            if task in per_task:
                per_task[task].retries += 1
        elif kind == "review.requested":
            requested[str(payload.get("review"))] = (task, at)
            if task in per_task:
                per_task[task].reviews += 1
        elif kind in _REVIEW_END:
            review = str(payload.get("review"))
            if review in requested:
                subject, asked = requested.pop(review)
                waited = seconds_between(asked, at)
                phase(subject, "review_wait", waited)
                if waited is not None:
                    review_times.append(waited)
                last_outcome[subject] = at
                if subject is None and payload.get("verdict") == "approve":
                    release_review_done = at
        elif kind == "gate.refused":
            refused_calls += 1
            for gate in payload.get("gates") or []:
                refusals[str(gate)] += 1
                if task in per_task:
                    per_task[task].refusals[str(gate)] = per_task[task].refusals.get(str(gate), 0) + 1
        elif kind == "task.accepted" and task:
            accepted_at[task] = at
            phase(task, "accept", seconds_between(last_outcome.get(task), at))
        elif kind == "run.approved":
            approved_at = at
            if release_review_done:
                release["approval_wait"] = seconds_between(release_review_done, at) or 0.0
        elif kind == "run.accepted":
            ended_at = at
            if approved_at:
                release["accept"] = seconds_between(approved_at, at) or 0.0
        elif kind == "run.abandoned":
            ended_at = at

    for row in red_green:
        phase(row["task_id"], "red_green", (row["duration_ms"] or 0) / 1000)
    for job, kind in jobs.kind.items():
        stats = per_task.get(jobs.task.get(job) or "")
        if stats is not None:
            stats.jobs[kind] = stats.jobs.get(kind, 0) + 1
    for name, stats in per_task.items():
        stats.lead_s = seconds_between(dispatched_at.get(name), accepted_at.get(name))
    totals = {p: round(sum(t.phases.get(p, 0.0) for t in per_task.values()), 3) for p in PHASES}
    by_kind: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for job, kind in jobs.kind.items():
        status = jobs.ended[job][1] if job in jobs.ended else "unfinished"
        by_kind[kind][status] += 1
    return RunStats(
        run=run,
        goal=run_row["goal"],
        stage=run_row["stage"],
        started_at=run_row["created_at"],
        ended_at=ended_at,
        wall_s=seconds_between(run_row["created_at"], ended_at),
        tasks=list(per_task.values()),
        totals=totals,
        retries=retries,
        refusals=dict(sorted(refusals.items())),
        refused_calls=refused_calls,
        review_latency=_latency(review_times, len(requested)),
        release=release,
        jobs={k: dict(v) for k, v in sorted(by_kind.items())},
        dispositions=dict(sorted(Counter(jobs.disposition.values()).items())),
    )


def all_run_stats(reader: Any, limit: int = 50) -> list[RunStats]:
    """The metrics of the newest runs."""
    ids = [r["id"] for r in reader.rows("SELECT id FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))]
    return [run_stats(reader, run) for run in ids]


def duration(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``3 m 04 s``, ``2 h 05 m``; ``—`` for none."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"


def record_refusal(env: Env, tool: str, run: str, task: str | None, gates: list[str], disposition: str) -> None:
    """Record that ``tool`` was refused by ``gates`` (a ``gate.refused`` event) for the metrics and
    the notifier. The refusal stands whether or not this can be written: a failure is logged."""
    try:
        with env.write() as w:
            w.event("gate.refused", run=run, task=task, tool=tool, gates=gates, disposition=disposition)
    except (PlanegateError, StoreError) as exc:
        log.warning("the refusal of %s on run %s could not be recorded: %s", tool, run, exc)
