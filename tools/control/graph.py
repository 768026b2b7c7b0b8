"""The task graph: validation (pure), waves, coverage, and registering it on a run.

A graph is accepted only whole: every id well-formed and unique, every dependency known, no
cycle (the message names it, ``a → b → c → a`` where ``→`` reads "depends on"), every
requirement id known, every scope glob inside some module's ownership (when the run has an
architecture), and every frozen requirement served by at least one task. Waves are the
topological layers: a task's wave is one more than its deepest dependency's.

Re-registering replaces the graph only while no task has been dispatched.

A task may declare, with a reason, that it removes tests passing on its base (``removes_tests``),
rewrites existing tests so they need not fail without its change (``rewrites_tests``), or changes
test-harness files (``changes_harness``). The declarations are part of the plan: they are stored
with the task, shown to the reviewer and in the report, and are the only way past the ``tests``
and ``red_green`` gates for those changes. They cannot be added after dispatch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from planegate.store import canonical_json

from .. import globs
from ..env import Env
from ..errors import InvalidInput, WrongState
from ..models import DeclaredHarness, DeclaredTests, GraphResult, TaskSpec, stage_at_least
from ..names import check_name
from .runs import _check_open, current_architecture, current_requirements, find_cycle, set_stage
from .tasks import first_dispatchable

MAX_DECLARED = 200
DECLARATIONS = ("removes_tests", "rewrites_tests", "changes_harness")


def _declared(task: str, key: str, value: DeclaredTests | DeclaredHarness | None) -> dict[str, Any] | None:
    """A declaration checked and in canonical form, or None when absent."""
    if value is None:
        return None
    reason = value.reason.strip()
    if not reason:
        raise InvalidInput(
            f"task {task!r} declares {key} without a reason; say why, e.g. 'the legacy API is removed (R3)'"
        )
    entries = value.paths if isinstance(value, DeclaredHarness) else value.tests
    field = "paths" if isinstance(value, DeclaredHarness) else "tests"
    cleaned = [e.strip() for e in entries]
    if not cleaned or any(not e or len(e) > 500 or "\n" in e for e in cleaned):
        raise InvalidInput(
            f"task {task!r} declares {key} with {field} {entries!r}; list one or more non-empty entries "
            "(a test id such as 'tests/test_x.py::test_y', a test file, or a glob)"
        )
    if len(cleaned) > MAX_DECLARED:
        raise InvalidInput(f"task {task!r} declares {len(cleaned)} {key} entries; at most {MAX_DECLARED}, use globs")
    if field == "paths":
        cleaned = [globs.normalize_glob(e) for e in cleaned]
    return {field: sorted(set(cleaned)), "reason": reason[:2000]}


def task_declarations(row: dict[str, Any]) -> dict[str, Any]:
    """A task row's declarations: ``{"removes_tests": {"tests": [...], "reason": ...}, ...}``."""
    raw = row.get("declarations")
    return json.loads(raw) if raw else {}


def declaration_lines(declarations: dict[str, Any]) -> list[str]:
    """One human line per declaration, for the review packet, the report and the approval."""
    labels = {
        "removes_tests": "removes tests",
        "rewrites_tests": "rewrites tests (may pass on the base)",
        "changes_harness": "changes test harness",
    }
    lines = []
    for key in DECLARATIONS:
        item = declarations.get(key)
        if item:
            entries = item.get("tests") or item.get("paths") or []
            shown = ", ".join(entries[:20]) + (f" (+{len(entries) - 20} more)" if len(entries) > 20 else "")
            lines.append(f"{labels[key]}: {shown} — reason: {item['reason']}")
    return lines


@dataclass(frozen=True)
class ValidGraph:
    tasks: list[dict[str, Any]]
    waves: list[list[str]]
    coverage: dict[str, list[str]]
    content_sha256: str


def _owned(pattern: str, owned: list[tuple[str, str]]) -> bool:
    """Is ``pattern`` inside one owned glob? Globs whose literal start differs are skipped unread."""
    start = globs.literal_prefix(pattern)
    return any(
        globs.glob_within(pattern, outer)
        for outer, prefix in owned
        if start.startswith(prefix) or prefix.startswith(start)
    )


def compute_waves(order: list[str], deps: dict[str, list[str]]) -> dict[str, int]:
    """Each task's layer, given the tasks in an order where dependencies come first."""
    wave: dict[str, int] = {}
    for task in order:
        wave[task] = 1 + max((wave[d] for d in deps[task]), default=-1)
    return wave


def _topological(deps: dict[str, list[str]], seq: dict[str, int]) -> list[str] | None:
    """Kahn's algorithm in registration order; None when a cycle remains."""
    dependents: dict[str, list[str]] = {t: [] for t in deps}
    missing = {t: len(d) for t, d in deps.items()}
    for task, task_deps in deps.items():
        for dep in task_deps:
            dependents[dep].append(task)
    frontier = sorted((t for t, n in missing.items() if n == 0), key=seq.__getitem__, reverse=True)
    order: list[str] = []
    while frontier:
        task = frontier.pop()
        order.append(task)
        for child in dependents[task]:
            missing[child] -= 1
            if missing[child] == 0:
                frontier.append(child)
    return order if len(order) == len(deps) else None


class TaskChecker:
    """Checks one task spec against the frozen requirements and architecture; its canonical form."""

    def __init__(self, requirement_ids: set[str], modules: list[dict[str, Any]] | None) -> None:
        self.requirement_ids = requirement_ids
        self.owned = [(g, globs.literal_prefix(g)) for m in modules for g in m["owns"]] if modules is not None else None
        self.scope_cache: dict[str, bool] = {}

    def item(self, task: TaskSpec, order_deps: Any = sorted) -> dict[str, Any]:
        """The task as stored (without its wave).

        Raises:
            InvalidInput: a malformed id, a self-dependency, no or unknown requirements, no scope or
                scope outside the architecture, an empty title or goal, a bad declaration.
        """
        check_name("task", task.id)
        for dep in task.depends_on:
            if dep == task.id:
                raise InvalidInput(f"task {task.id!r} depends on itself; remove {dep!r} from its depends_on")
        if not task.requirements:
            raise InvalidInput(f"task {task.id!r} serves no requirement; list the requirement ids it delivers")
        for rid in task.requirements:
            if rid not in self.requirement_ids:
                known = ", ".join(sorted(self.requirement_ids)[:20])
                raise InvalidInput(
                    f"task {task.id!r} names requirement {rid!r}, which is not frozen; known: {known} "
                    "(amend the requirements first if it is new)"
                )
        if not task.scope:
            raise InvalidInput(f"task {task.id!r} has no scope; give the path globs it may change, e.g. 'src/api/**'")
        scope = [globs.normalize_glob(g) for g in task.scope]
        if self.owned is not None:
            for pattern in scope:
                inside = self.scope_cache.get(pattern)
                if inside is None:
                    inside = self.scope_cache[pattern] = _owned(pattern, self.owned)
                if not inside:
                    raise InvalidInput(
                        f"task {task.id!r} has scope {pattern!r}, which no module owns; narrow the scope to a "
                        "module's paths or amend the architecture (freeze_architecture with amend_reason)"
                    )
        title = task.title.strip()
        goal = task.goal.strip()
        if not title or not goal:
            raise InvalidInput(f"task {task.id!r} needs a non-empty title and goal")
        item: dict[str, Any] = {
            "id": task.id,
            "title": title,
            "goal": goal,
            "depends_on": order_deps(task.depends_on),
            "scope": scope,
            "requirements": sorted(set(task.requirements)),
            "acceptance": [a.strip() for a in task.acceptance if a.strip()],
        }
        declared = {key: _declared(task.id, key, getattr(task, key)) for key in DECLARATIONS}
        if any(declared.values()):
            # Only present when declared, so graphs without declarations keep their content hash.
            item["declarations"] = {key: value for key, value in declared.items() if value}
        return item


def validate_graph(
    tasks: list[TaskSpec], requirement_ids: set[str], modules: list[dict[str, Any]] | None
) -> ValidGraph:
    """Check a whole graph; raise on the first problem found.

    Raises:
        InvalidInput: naming the task and the value at fault, and how to fix it.
    """
    if not tasks:
        raise InvalidInput("tasks is empty; register at least one task")
    seq: dict[str, int] = {}
    for index, task in enumerate(tasks):
        check_name("task", task.id)
        if task.id in seq:
            raise InvalidInput(f"task id {task.id!r} appears twice; give each task its own id")
        seq[task.id] = index
    deps: dict[str, list[str]] = {}
    body: list[dict[str, Any]] = []
    checker = TaskChecker(requirement_ids, modules)
    for task in tasks:
        for dep in task.depends_on:
            if dep not in seq:
                raise InvalidInput(
                    f"task {task.id!r} depends on {dep!r}, which is not a task in this graph; "
                    "add it or remove the dependency"
                )
        item = checker.item(task, lambda deps_: sorted(set(deps_), key=seq.__getitem__))
        deps[task.id] = item["depends_on"]
        body.append(item)
    order = _topological(deps, seq)
    if order is None:
        cycle = find_cycle(deps) or []
        raise InvalidInput(
            f"the tasks' dependencies form a cycle: {' → '.join(cycle)} (→ = depends on); "
            "remove one of these dependencies"
        )
    coverage: dict[str, list[str]] = {rid: [] for rid in sorted(requirement_ids)}
    for item in body:
        for rid in item["requirements"]:
            coverage[rid].append(item["id"])
    uncovered = [rid for rid, serving in coverage.items() if not serving]
    if uncovered:
        raise InvalidInput(
            f"requirements {', '.join(uncovered)} are served by no task; add tasks for them "
            "or list them in an existing task's requirements"
        )
    wave = compute_waves(order, deps)
    waves: list[list[str]] = [[] for _ in range(max(wave.values()) + 1)]
    for item in body:
        item["wave"] = wave[item["id"]]
        waves[item["wave"]].append(item["id"])
    sha = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    return ValidGraph(body, waves, coverage, sha)


def register_graph(env: Env, run: str, tasks: list[TaskSpec]) -> GraphResult:
    """Validate and store the run's task graph (replacing it while nothing is dispatched).

    Raises:
        WrongState: requirements (or, when the policy asks, architecture) not frozen; a task
            already dispatched; the run closed.
        InvalidInput: see ``validate_graph``.
    """
    run_row = env.run_row(run)
    _check_open(run_row)
    if not run_row["requirements_version"]:
        raise WrongState(f"run {run!r} has no frozen requirements; call freeze_requirements(run={run!r}, ...) first")
    policy = env.policy(run_row)
    architecture = current_architecture(env, run)
    if policy.require_architecture and architecture is None:
        raise WrongState(
            f"run {run!r} has no frozen architecture and its policy requires one; "
            f"call freeze_architecture(run={run!r}, modules=[...], decisions=[...]) first"
        )
    graph = validate_graph(
        tasks, set(current_requirements(env, run)), architecture["modules"] if architecture else None
    )
    with env.write() as w:
        run_row = env.run_row(run)
        _check_open(run_row)
        current = w.one(
            "SELECT content_sha256 FROM graph_versions WHERE run_id = ? AND version = ?",
            (run, run_row["graph_version"]),
        )
        if current and current["content_sha256"] == graph.content_sha256:
            return _result(w, run, run_row["graph_version"], graph, "nothing changed; ", env)
        started = w.rows(
            "SELECT id, status FROM tasks WHERE run_id = ? AND status NOT IN ('blocked', 'ready') LIMIT 5", (run,)
        )
        if started:
            names = ", ".join(f"{t['id']} ({t['status']})" for t in started)
            raise WrongState(f"run {run!r} already has dispatched tasks ({names}); the graph can no longer be replaced")
        previous = [r["id"] for r in w.rows("SELECT id FROM tasks WHERE run_id = ?", (run,))]
        w.execute("DELETE FROM tasks WHERE run_id = ?", (run,))
        w.execute("DELETE FROM task_edges WHERE run_id = ?", (run,))
        version = run_row["graph_version"] + 1
        statuses = {t["id"]: ("ready" if not t["depends_on"] else "blocked") for t in graph.tasks}
        w.conn.executemany(
            "INSERT INTO tasks (run_id, id, seq, title, goal, status, wave, depends_on, scope, requirements,"
            " acceptance, declarations, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    run,
                    t["id"],
                    seq,
                    t["title"],
                    t["goal"],
                    statuses[t["id"]],
                    t["wave"],
                    json.dumps(t["depends_on"]),
                    json.dumps(t["scope"]),
                    json.dumps(t["requirements"]),
                    json.dumps(t["acceptance"]),
                    canonical_json(t["declarations"]) if "declarations" in t else None,
                    w.at,
                )
                for seq, t in enumerate(graph.tasks)
            ],
        )
        w.conn.executemany(
            "INSERT INTO task_edges (run_id, task_id, depends_on) VALUES (?, ?, ?)",
            [(run, t["id"], dep) for t in graph.tasks for dep in t["depends_on"]],
        )
        w.insert(
            "graph_versions",
            {
                "run_id": run,
                "version": version,
                "content_sha256": graph.content_sha256,
                "body": canonical_json(graph.tasks),
                "registered_at": w.at,
            },
        )
        w.execute("UPDATE runs SET graph_version = ?, updated_at = ? WHERE id = ?", (version, w.at, run))
        removed = {task_id: "removed" for task_id in previous if task_id not in statuses}
        payload = {
            "version": version,
            "content_sha256": graph.content_sha256,
            "tasks": len(graph.tasks),
            "statuses": {**removed, **statuses},
        }
        if stage_at_least(run_row["stage"], "planned"):
            w.event("graph.replaced", run=run, **payload)
        else:
            set_stage(w, run_row, "planned", "graph.registered", **payload)
        return _result(w, run, version, graph, "", env)


def _result(reader: Any, run: str, version: int, graph: ValidGraph, note: str, env: Env) -> GraphResult:
    ready = [
        r["id"]
        for r in reader.rows("SELECT id FROM tasks WHERE run_id = ? AND status = 'ready' ORDER BY seq LIMIT 50", (run,))
    ]
    first = first_dispatchable(env, env.run_row(run), ready)
    return GraphResult(
        run=run,
        version=version,
        tasks=len(graph.tasks),
        waves=graph.waves,
        coverage=graph.coverage,
        ready=ready,
        next_step=note + (f"dispatch_task(run={run!r}, task={first!r})" if first else f"get_status({run!r})"),
    )
