"""Amending a run's task graph after dispatch: tasks added, cancelled, or changed before dispatch.

An amendment is checked whole before anything is written (``plan_amendment``) and recorded in one
transaction (``record_amendment``), so a refused amendment changes nothing. It is refused when it
names an unknown task, touches an accepted task (accepted work is immutable), changes a task that
was already dispatched (cancel it and add a new one instead), adds a task whose id exists,
introduces a dependency cycle, depends on a cancelled task, leaves a task depending on one it
cancels, puts a scope outside the frozen architecture, names an unknown requirement, or leaves a
requirement served by no open or accepted task that was served before. Every amendment needs a
reason; it is stored with the new graph version (``graph_versions.reason``, ``.amendment``) and
shown in the report and in what a human approves.

Waves are recomputed over the whole graph (cancelled tasks keep their place); coverage counts the
tasks that can still deliver: open or accepted, not cancelled. Two sessions amending at once:
the graph version read when the amendment was checked must still be current when it is written,
so one wins and the other is told the graph changed and that nothing was written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from planegate.store import Writer, canonical_json

from ..env import Env
from ..errors import Conflict, InvalidInput, WrongState
from ..models import TaskSpec
from .graph import TaskChecker, _topological, compute_waves, find_cycle
from .runs import _check_open, _text, current_architecture, current_requirements, move_task, set_stage

AMENDABLE_STAGES = ("planned", "executing", "release_review")
NOT_DISPATCHED = ("blocked", "ready")
FIELDS = ("title", "goal", "depends_on", "scope", "requirements", "acceptance", "declarations")
MAX_TASKS = 500


@dataclass
class Amendment:
    run: str
    stage: str
    version: int  # the graph version the amendment was checked against
    reason: str
    added: list[dict[str, Any]]
    changed: list[dict[str, Any]]
    changes: dict[str, list[str]]  # changed task -> the fields that differ
    cancelled: dict[str, str]  # cancelled task -> its status before
    before: dict[str, str]  # changed task -> its status before
    statuses: dict[str, str]  # added and changed tasks -> their status after
    waves: dict[str, int]
    coverage: dict[str, list[str]]
    body: list[dict[str, Any]] = field(default_factory=list)
    content_sha256: str = ""

    def summary(self) -> dict[str, Any]:
        """What the amendment did, as stored with the graph version and shown to people."""
        return {
            "added": [t["id"] for t in self.added],
            "cancelled": sorted(self.cancelled),
            "changed": dict(sorted(self.changes.items())),
        }

    def wave_lists(self) -> list[list[str]]:
        lists: list[list[str]] = [[] for _ in range(max(self.waves.values(), default=-1) + 1)]
        for item in self.body:
            lists[self.waves[item["id"]]].append(item["id"])
        return lists


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    """A task row in the graph's stored form (the form ``TaskChecker.item`` gives)."""
    item: dict[str, Any] = {
        "id": row["id"],
        "title": row["title"],
        "goal": row["goal"],
        "depends_on": json.loads(row["depends_on"]),
        "scope": json.loads(row["scope"]),
        "requirements": json.loads(row["requirements"]),
        "acceptance": json.loads(row["acceptance"]),
    }
    if row.get("declarations"):
        item["declarations"] = json.loads(row["declarations"])
    return item


def _unique(kind: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for task in ids:
        if task in seen:
            raise InvalidInput(f"{kind} names task {task!r} twice; name each task once")
        seen.add(task)


def plan_amendment(
    env: Env, run: str, add: list[TaskSpec], cancel: list[str], change: list[TaskSpec], reason: str
) -> Amendment:
    """Check an amendment against the run's current graph; nothing is written.

    Raises:
        InvalidInput: no reason, nothing to do, unknown or repeated ids, a cycle, a scope outside
            the architecture, an unknown requirement, a dependency on a cancelled task, coverage lost.
        WrongState: the run is not planned or executing; an accepted, cancelled or dispatched task
            is touched.
    """
    reason = _text("reason", reason)[:2000]
    if not add and not cancel and not change:
        raise InvalidInput("the amendment is empty; give tasks to add, ids to cancel, or tasks to change")
    if len(add) + len(cancel) + len(change) > MAX_TASKS:
        raise InvalidInput(f"an amendment may touch at most {MAX_TASKS} tasks; split it")
    run_row = env.run_row(run)
    _check_open(run_row)
    if run_row["stage"] not in AMENDABLE_STAGES:
        raise WrongState(
            f"run {run!r} is {run_row['stage']} and has no graph yet; register_graph(run={run!r}, tasks=[...]) first"
        )
    rows = env.store.rows("SELECT * FROM tasks WHERE run_id = ? ORDER BY seq", (run,))
    by_id = {r["id"]: r for r in rows}
    _unique("add", [t.id for t in add])
    _unique("cancel", cancel)
    _unique("change", [t.id for t in change])
    both = sorted(set(cancel) & {t.id for t in change})
    if both:
        raise InvalidInput(f"task {both[0]!r} is both cancelled and changed; do one or the other")
    for task in [*cancel, *(t.id for t in change)]:
        row = by_id.get(task)
        verb = "cancel" if task in cancel else "change"
        if row is None:
            listed = ", ".join(list(by_id)[:20])
            raise InvalidInput(f"{verb} names task {task!r}, which is not in run {run!r}; its tasks: {listed}")
        if row["status"] == "accepted":
            raise WrongState(
                f"task {task!r} is accepted; accepted work is immutable (add a new task for further work, "
                "or a human rolls back with `planegate rollback`)"
            )
        if row["status"] == "cancelled":
            raise WrongState(f"task {task!r} is already cancelled ({row['cancel_reason']}); add a new task instead")
        if verb == "change" and row["status"] not in NOT_DISPATCHED:
            raise WrongState(
                f"task {task!r} is {row['status']}: it was dispatched, so it can no longer change; "
                "cancel it and add a new task in the same amendment"
            )
    for spec in add:
        if spec.id in by_id:
            raise InvalidInput(
                f"add names task {spec.id!r}, which is already in the graph ({by_id[spec.id]['status']}); "
                "give the new task its own id, or use change for a task not yet dispatched"
            )
    architecture = current_architecture(env, run)
    requirements = current_requirements(env, run)
    checker = TaskChecker(set(requirements), architecture["modules"] if architecture else None)
    added = [checker.item(t, lambda d: sorted(set(d))) for t in add]
    changed = [checker.item(t, lambda d: sorted(set(d))) for t in change]
    status = {r["id"]: r["status"] for r in rows}
    cancelled_now = set(cancel)
    dead = {t for t, st in status.items() if st == "cancelled"} | cancelled_now
    known = set(status) | {t["id"] for t in added}
    for item in [*added, *changed]:
        for dep in item["depends_on"]:
            if dep not in known:
                raise InvalidInput(
                    f"task {item['id']!r} depends on {dep!r}, which is not a task of run {run!r}; "
                    "add it in this amendment or remove the dependency"
                )
            if dep in dead:
                raise InvalidInput(
                    f"task {item['id']!r} depends on {dep!r}, which is cancelled"
                    f"{' by this amendment' if dep in cancelled_now else ''}; it could never be dispatched: "
                    "remove the dependency"
                )
    new_items = {item["id"]: item for item in [*added, *changed]}
    items = [new_items.get(r["id"]) or _stored(r) for r in rows] + added
    deps = {item["id"]: item["depends_on"] for item in items}
    for item in items:
        task = item["id"]
        if task in cancelled_now or status.get(task) in ("cancelled", "accepted"):
            continue
        waiting = [d for d in item["depends_on"] if d in cancelled_now]
        if waiting:
            raise InvalidInput(
                f"task {task!r} depends on {waiting[0]!r}, which this amendment cancels; cancel {task!r} too, "
                "or change its depends_on in the same amendment"
                + ("" if status.get(task) in (*NOT_DISPATCHED, None) else f" (it is {status.get(task)})")
            )
    seq = {item["id"]: i for i, item in enumerate(items)}
    order = _topological(deps, seq)
    if order is None:
        cycle = find_cycle(deps) or []
        raise InvalidInput(
            f"the amendment introduces a dependency cycle: {' → '.join(cycle)} (→ = depends on); "
            "remove one of these dependencies"
        )
    live_after = {t for t in deps if t not in dead}
    live_before = {t for t, st in status.items() if st != "cancelled"}
    coverage_before = _coverage(requirements, [_stored(r) for r in rows], live_before)
    coverage = _coverage(requirements, items, live_after)
    lost = [rid for rid, serving in coverage.items() if coverage_before.get(rid) and not serving]
    if lost:
        serving = ", ".join(coverage_before[lost[0]])
        raise InvalidInput(
            f"the amendment leaves requirement {lost[0]!r} served by no task (it was served by {serving}); "
            "add a task serving it, or keep one"
        )
    accepted = {t for t, st in status.items() if st == "accepted"}
    statuses = {
        item["id"]: "ready" if all(d in accepted for d in item["depends_on"]) else "blocked"
        for item in [*added, *changed]
    }
    changes = {item["id"]: [f for f in FIELDS if item.get(f) != _stored(by_id[item["id"]]).get(f)] for item in changed}
    waves = compute_waves(order, deps)
    body = [{**item, "wave": waves[item["id"]]} for item in items]
    amendment = Amendment(
        run=run,
        stage=run_row["stage"],
        version=int(run_row["graph_version"]),
        reason=reason,
        added=added,
        changed=changed,
        changes=changes,
        cancelled={t: status[t] for t in cancel},
        before={item["id"]: status[item["id"]] for item in changed},
        statuses=statuses,
        waves=waves,
        coverage=coverage,
        body=body,
    )
    amendment.content_sha256 = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    return amendment


def _coverage(requirements: dict[str, Any], items: list[dict[str, Any]], live: set[str]) -> dict[str, list[str]]:
    coverage: dict[str, list[str]] = {rid: [] for rid in sorted(requirements)}
    for item in items:
        if item["id"] in live:
            for rid in item["requirements"]:
                if rid in coverage:
                    coverage[rid].append(item["id"])
    return coverage


def _columns(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": item["title"],
        "goal": item["goal"],
        "depends_on": json.dumps(item["depends_on"]),
        "scope": json.dumps(item["scope"]),
        "requirements": json.dumps(item["requirements"]),
        "acceptance": json.dumps(item["acceptance"]),
        "declarations": canonical_json(item["declarations"]) if "declarations" in item else None,
    }


def record_amendment(w: Writer, env: Env, a: Amendment) -> int:
    """Write a checked amendment inside the caller's transaction; the new graph version.

    Raises:
        Conflict: the graph, or a task the amendment touches, changed since it was checked.
        WrongState: the run was accepted or abandoned meanwhile.
    """
    run = a.run
    run_row = env.run_row(run)
    _check_open(run_row)
    if int(run_row["graph_version"]) != a.version or run_row["stage"] not in AMENDABLE_STAGES:
        raise Conflict(
            f"the graph of run {run!r} changed while this amendment was checked (version {a.version} is now "
            f"{run_row['graph_version']}, stage {run_row['stage']}); nothing was written: call get_status({run!r}) "
            "and amend again against the current graph"
        )
    for task, before in a.cancelled.items():
        if not move_task(
            w,
            run,
            task,
            before,
            "cancelled",
            "task.cancelled",
            also={"cancel_reason": a.reason, "lease_owner": None, "lease_expires": None},
            reason=a.reason,
            amendment=a.version + 1,
        ):
            raise Conflict(f"task {task!r} changed while amending; nothing was written: call get_status({run!r})")
    for item in a.changed:
        task = item["id"]
        changes = {**_columns(item), "status": a.statuses[task], "updated_at": w.at}
        if not w.cas("tasks", {"run_id": run, "id": task}, {"status": a.before[task]}, changes):
            raise Conflict(f"task {task!r} changed while amending; nothing was written: call get_status({run!r})")
        w.execute("DELETE FROM task_edges WHERE run_id = ? AND task_id = ?", (run, task))
    next_seq = int(w.scalar("SELECT COALESCE(MAX(seq), -1) + 1 FROM tasks WHERE run_id = ?", (run,)))
    for offset, item in enumerate(a.added):
        w.insert(
            "tasks",
            {
                "run_id": run,
                "id": item["id"],
                "seq": next_seq + offset,
                "status": a.statuses[item["id"]],
                "wave": a.waves[item["id"]],
                "updated_at": w.at,
                **_columns(item),
            },
        )
    w.conn.executemany(
        "INSERT INTO task_edges (run_id, task_id, depends_on) VALUES (?, ?, ?)",
        [(run, item["id"], dep) for item in [*a.changed, *a.added] for dep in item["depends_on"]],
    )
    for row in w.rows("SELECT id, wave FROM tasks WHERE run_id = ?", (run,)):
        if row["wave"] != a.waves[row["id"]]:
            w.execute("UPDATE tasks SET wave = ? WHERE run_id = ? AND id = ?", (a.waves[row["id"]], run, row["id"]))
    version = a.version + 1
    summary = a.summary()
    w.insert(
        "graph_versions",
        {
            "run_id": run,
            "version": version,
            "content_sha256": a.content_sha256,
            "body": canonical_json(a.body),
            "registered_at": w.at,
            "reason": a.reason,
            "amendment": canonical_json(summary),
        },
    )
    w.execute("UPDATE runs SET graph_version = ?, updated_at = ? WHERE id = ?", (version, w.at, run))
    w.event(
        "graph.amended",
        run=run,
        version=version,
        content_sha256=a.content_sha256,
        reason=a.reason,
        statuses=a.statuses,
        **summary,
    )
    if run_row["stage"] == "release_review" and (a.added or a.changed):
        # Open work again: the release review was of a run with nothing left to do.
        set_stage(w, run_row, "executing", "run.reopened", reason=f"graph amended: {a.reason}")
    return version


def amendment_lines(env: Env, run: str, limit: int = 30) -> list[str]:
    """One line per amendment and per task it touched, oldest first, for people to read."""
    rows = env.store.rows(
        "SELECT version, reason, amendment, registered_at FROM graph_versions"
        " WHERE run_id = ? AND amendment IS NOT NULL ORDER BY version",
        (run,),
    )
    titles = {r["id"]: r["title"] for r in env.store.rows("SELECT id, title FROM tasks WHERE run_id = ?", (run,))}
    lines: list[str] = []
    for row in rows:
        done = json.loads(row["amendment"])
        lines.append(f"graph version {row['version']} ({row['registered_at']}), reason: {row['reason']}")
        lines += [f"  added {t}: {titles.get(t, '')}" for t in done.get("added", [])]
        lines += [f"  cancelled {t}: {titles.get(t, '')}" for t in done.get("cancelled", [])]
        lines += [
            f"  changed {t} ({', '.join(fields) or 'nothing'}): {titles.get(t, '')}"
            for t, fields in done.get("changed", {}).items()
        ]
    if len(lines) > limit:
        lines = [*lines[:limit], f"  … and {len(lines) - limit} more lines (see the report)"]
    return lines
