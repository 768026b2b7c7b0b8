"""Opening a run and freezing what it must deliver: requirements, then architecture.

A run moves along ``draft → requirements_frozen → architecture_frozen → planned → executing →
release_review → accepted`` (or ``abandoned``); each call here says which stage it needs and
moves the stage forward only. Freezes are versioned and content-hashed; freezing different
content again is an amendment and must give a reason. Freezing identical content again changes
nothing and returns the current version, so a retried call is harmless.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from planegate.store import Writer, canonical_json, placeholders

from .. import globs
from ..env import Env
from ..errors import Conflict, InvalidInput, PolicyError, WrongState
from ..gitrepo import GitRepo
from ..models import (
    ACTIVE_STATUSES,
    Decision,
    FreezeResult,
    Module,
    Requirement,
    StartRunResult,
    stage_at_least,
)
from ..names import check_name, check_requirement_id, slug
from ..policy import POLICY_PATH, Policy, parse_policy

MAX_TEXT = 20_000


def integration_branch(run: str) -> str:
    return f"planegate/{run}/integration"


def set_stage(w: Writer, run_row: dict[str, Any], new: str, kind: str, **payload: Any) -> None:
    """Move a run's stage by compare-and-set and record it; payload joins the event."""
    old = run_row["stage"]
    if not w.cas("runs", {"id": run_row["id"]}, {"stage": old}, {"stage": new, "updated_at": w.at}):
        raise Conflict(f"run {run_row['id']!r} changed while this call ran; call get_status and retry")
    w.event(kind, run=run_row["id"], stage_from=old, stage_to=new, **payload)
    run_row["stage"] = new


def move_task(
    w: Writer,
    run: str,
    task: str,
    old: str,
    new: str,
    kind: str,
    *,
    also: dict[str, Any] | None = None,
    expect: dict[str, Any] | None = None,
    **payload: Any,
) -> bool:
    """Move a task from status ``old`` to ``new`` by compare-and-set and record event ``kind``.

    ``also`` changes more columns in the same update, ``expect`` adds conditions. The event
    carries ``from``/``to`` (what ``ledger verify`` checks the task table against). False, with
    nothing written, when the task had already moved on.
    """
    changes = {"status": new, "updated_at": w.at, **(also or {})}
    if not w.cas("tasks", {"run_id": run, "id": task}, {"status": old, **(expect or {})}, changes):
        return False
    w.event(kind, run=run, task=task, **payload, **{"from": old, "to": new})
    return True


def _check_open(run_row: dict[str, Any]) -> None:
    if run_row["stage"] in ("accepted", "abandoned"):
        raise WrongState(f"run {run_row['id']!r} is {run_row['stage']}; start a new run with start_run")


def _text(kind: str, value: str) -> str:
    if not value.strip():
        raise InvalidInput(f"{kind} is empty; give a short sentence")
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{kind} is {len(value)} characters; keep it under {MAX_TEXT}")
    return value.strip()


def start_run(env: Env, repo: str, goal: str, base_ref: str = "HEAD") -> StartRunResult:
    """Open a run on ``repo`` at ``base_ref`` and create its integration branch.

    Raises:
        InvalidInput: the path is not a git repository, has no commits, or base_ref is unknown.
        PolicyError: the repository's policy file is malformed.
    """
    goal = _text("goal", goal)
    git = env.repo(str(Path(repo).expanduser().resolve()))
    if not git.has_commits():
        raise InvalidInput(f"repo {repo!r} has no commits yet; commit something first, then call start_run")
    base_sha = git.rev(base_ref)
    if base_sha is None:
        raise InvalidInput(f"base_ref {base_ref!r} is not a commit in {git.root}; pass a branch, tag or sha")
    policy, source = policy_at(git, base_sha)
    snapshot = policy.canonical()
    policy_sha = hashlib.sha256(snapshot.encode()).hexdigest()

    run = f"{slug(goal) or 'run'}-{secrets.token_hex(3)}"
    check_name("run", run)
    branch = integration_branch(run)
    if not git.update_ref(f"refs/heads/{branch}", base_sha, None):
        raise Conflict(f"branch {branch!r} already exists in {git.root}; call start_run again for a fresh id")
    try:
        with env.write() as w:
            w.insert(
                "runs",
                {
                    "id": run,
                    "repo": str(git.root),
                    "goal": goal,
                    "base_ref": base_ref,
                    "base_sha": base_sha,
                    "integration_branch": branch,
                    "stage": "draft",
                    "policy": snapshot,
                    "policy_sha256": policy_sha,
                    "created_at": w.at,
                    "updated_at": w.at,
                },
            )
            w.event(
                "run.started",
                run=run,
                repo=str(git.root),
                goal=goal,
                base_ref=base_ref,
                base_sha=base_sha,
                policy_sha256=policy_sha,
                stage_from=None,
                stage_to="draft",
            )
    except BaseException:
        git.delete_ref(f"refs/heads/{branch}", base_sha)
        raise
    return StartRunResult(
        run=run,
        repo=str(git.root),
        base_sha=base_sha,
        integration_branch=branch,
        stage="draft",
        policy=f"{source} sha256:{policy_sha[:16]}",
        next_step=f"freeze_requirements(run={run!r}, requirements=[...])",
    )


def policy_at(git: GitRepo, sha: str) -> tuple[Policy, str]:
    """The policy committed at ``sha`` (the defaults when there is none) and where it came from.

    The committed file is what counts: an uncommitted edit cannot loosen a run's gates.
    """
    committed = git.show(sha, POLICY_PATH.as_posix())
    working = git.root / POLICY_PATH
    if committed is None:
        note = " (the uncommitted .planegate/policy.toml is ignored: commit it)" if working.is_file() else ""
        return Policy(), f"defaults (no .planegate/policy.toml at {sha[:12]}){note}"
    text = committed.decode("utf-8", "replace")
    try:
        policy = parse_policy(text, str(POLICY_PATH))
    except PolicyError as exc:
        raise PolicyError(
            f"{exc}\n(the file as committed at {sha[:12]}: fix it, commit, then start_run again)"
        ) from exc
    dirty = working.is_file() and working.read_bytes() != committed
    return policy, f"{POLICY_PATH} at {sha[:12]}" + (" (uncommitted edits to it are ignored)" if dirty else "")


def _content_sha(body: Any) -> str:
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def _validate_requirements(requirements: list[Requirement]) -> list[dict[str, Any]]:
    if not requirements:
        raise InvalidInput("requirements is empty; freeze at least one requirement with acceptance criteria")
    seen: set[str] = set()
    body = []
    for req in requirements:
        check_requirement_id(req.id)
        if req.id in seen:
            raise InvalidInput(f"requirement id {req.id!r} appears twice; give each requirement its own id")
        seen.add(req.id)
        criteria = [c.strip() for c in req.acceptance_criteria if c.strip()]
        if not criteria:
            raise InvalidInput(
                f"requirement {req.id!r} has no acceptance criteria; add at least one checkable criterion"
            )
        body.append(
            {"id": req.id, "statement": _text(f"requirement {req.id!r} statement", req.statement), "criteria": criteria}
        )
    return sorted(body, key=lambda r: r["id"])


def current_requirements(env: Env, run: str) -> dict[str, dict[str, Any]]:
    row = env.store.one("SELECT body FROM requirement_versions WHERE run_id = ? ORDER BY version DESC LIMIT 1", (run,))
    return {r["id"]: r for r in json.loads(row["body"])} if row else {}


def freeze_requirements(
    env: Env, run: str, requirements: list[Requirement], amend_reason: str | None = None
) -> FreezeResult:
    """Freeze (or amend) the run's requirements.

    Raises:
        InvalidInput: empty list, malformed or duplicate ids, missing criteria, or an amendment
            without a reason, or removing a requirement that tasks still serve.
        WrongState: the run is accepted or abandoned.
    """
    body = _validate_requirements(requirements)
    sha = _content_sha(body)
    with env.write() as w:
        run_row = env.run_row(run)
        _check_open(run_row)
        version = run_row["requirements_version"]
        previous = {}
        if version:
            prev_row = w.one(
                "SELECT content_sha256, body FROM requirement_versions WHERE run_id = ? AND version = ?",
                (run, version),
            )
            assert prev_row is not None
            if prev_row["content_sha256"] == sha:
                return FreezeResult(
                    run=run,
                    version=version,
                    content_sha256=sha,
                    stage=run_row["stage"],
                    next_step="nothing changed; " + _next_after_requirements(env, run_row),
                )
            if not (amend_reason or "").strip():
                raise InvalidInput(
                    f"requirements of run {run!r} are frozen at version {version}; "
                    "to amend them pass amend_reason saying why"
                )
            previous = {r["id"]: r for r in json.loads(prev_row["body"])}
        new = {r["id"]: r for r in body}
        added = sorted(set(new) - set(previous))
        removed = sorted(set(previous) - set(new))
        changed = sorted(i for i in set(new) & set(previous) if new[i] != previous[i])
        if removed:
            users = w.rows("SELECT id, requirements FROM tasks WHERE run_id = ? AND status != 'cancelled'", (run,))
            for rid in removed:
                serving = [t["id"] for t in users if rid in json.loads(t["requirements"])]
                if serving:
                    raise InvalidInput(
                        f"requirement {rid!r} would be removed but tasks {', '.join(serving[:10])} serve it; "
                        "keep it, or cancel those tasks first"
                    )
        stale = _stale_tasks(w, run, set(changed))
        version += 1
        w.insert(
            "requirement_versions",
            {
                "run_id": run,
                "version": version,
                "content_sha256": sha,
                "reason": (amend_reason or "").strip() or None,
                "body": canonical_json(body),
                "frozen_at": w.at,
            },
        )
        w.execute("UPDATE runs SET requirements_version = ?, updated_at = ? WHERE id = ?", (version, w.at, run))
        payload = {
            "version": version,
            "content_sha256": sha,
            "reason": amend_reason,
            "added": added,
            "changed": changed,
            "removed": removed,
        }
        if run_row["stage"] == "draft":
            set_stage(w, run_row, "requirements_frozen", "requirements.frozen", **payload)
        else:
            w.event("requirements.amended", run=run, **payload)
        for task_id in stale:
            move_task(w, run, task_id, "approved", "in_progress", "task.approval_stale", reason="requirements amended")
    return FreezeResult(
        run=run,
        version=version,
        content_sha256=sha,
        stage=run_row["stage"],
        added=added if previous else [],
        changed=changed,
        removed=removed,
        stale_tasks=stale,
        next_step=_next_after_requirements(env, run_row),
    )


def _stale_tasks(w: Writer, run: str, changed: set[str]) -> list[str]:
    if not changed:
        return []
    rows = w.rows(
        f"SELECT id, requirements FROM tasks WHERE run_id = ? AND status IN ({placeholders(ACTIVE_STATUSES)})",
        (run, *ACTIVE_STATUSES),
    )
    return sorted(r["id"] for r in rows if changed & set(json.loads(r["requirements"])))


def _next_after_requirements(env: Env, run_row: dict[str, Any]) -> str:
    run = run_row["id"]
    if stage_at_least(run_row["stage"], "planned"):
        return f"get_status({run!r})"
    if env.policy(run_row).require_architecture and not run_row["architecture_version"]:
        return f"freeze_architecture(run={run!r}, modules=[...], decisions=[...])"
    return f"register_graph(run={run!r}, tasks=[...])"


def _validate_modules(modules: list[Module]) -> list[dict[str, Any]]:
    if not modules:
        raise InvalidInput("modules is empty; describe at least one module with the paths it owns")
    names: set[str] = set()
    for module in modules:
        check_name("module", module.name)
        if module.name in names:
            raise InvalidInput(f"module name {module.name!r} appears twice; merge them or rename one")
        names.add(module.name)
    body: list[dict[str, Any]] = []
    for module in modules:
        if not module.owns:
            raise InvalidInput(f"module {module.name!r} owns no paths; give it globs such as 'src/{module.name}/**'")
        for dep in module.depends_on:
            if dep not in names:
                raise InvalidInput(
                    f"module {module.name!r} depends on {dep!r}, which is not a module; "
                    f"known modules: {', '.join(sorted(names))}"
                )
        body.append(
            {
                "name": module.name,
                "owns": [globs.normalize_glob(g) for g in module.owns],
                "depends_on": sorted(set(module.depends_on)),
                "shared": module.shared,
            }
        )
    cycle = find_cycle({m["name"]: m["depends_on"] for m in body})
    if cycle:
        raise InvalidInput(f"module dependencies form a cycle: {' → '.join(cycle)}; remove one of these dependencies")
    exclusive = [m for m in body if not m["shared"]]
    for i, first in enumerate(exclusive):
        for second in exclusive[i + 1 :]:
            hit = globs.first_overlap(first["owns"], second["owns"])
            if hit:
                a, b, witness = hit
                raise InvalidInput(
                    f"modules {first['name']!r} ({a}) and {second['name']!r} ({b}) both own {witness!r}; "
                    "narrow one of the globs, or mark a module shared: true"
                )
    return sorted(body, key=lambda m: m["name"])


def scope_outside_modules(scope: list[str], modules: list[dict[str, Any]]) -> str | None:
    """The first scope glob that no single module's ownership contains, or None."""
    owned = [g for m in modules for g in m["owns"]]
    for pattern in scope:
        if not any(globs.glob_within(pattern, outer) for outer in owned):
            return pattern
    return None


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path that ends where it starts (``[a, b, c, a]``), or None."""
    state: dict[str, int] = {}
    for start in edges:
        if state.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = []
        on_path: dict[str, int] = {}
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                on_path[node] = len(path)
                path.append(node)
            deps = edges.get(node, [])
            if index < len(deps):
                stack.append((node, index + 1))
                nxt = deps[index]
                if state.get(nxt) == 1 and nxt in on_path:
                    return [*path[on_path[nxt] :], nxt]
                if not state.get(nxt):
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
                on_path.pop(node, None)
    return None


def current_architecture(env: Env, run: str) -> dict[str, Any] | None:
    row = env.store.one("SELECT body FROM architecture_versions WHERE run_id = ? ORDER BY version DESC LIMIT 1", (run,))
    return json.loads(row["body"]) if row else None


def freeze_architecture(
    env: Env, run: str, modules: list[Module], decisions: list[Decision], amend_reason: str | None = None
) -> FreezeResult:
    """Freeze (or amend) the run's modules and decisions.

    Raises:
        WrongState: requirements are not frozen yet, or the run is closed.
        InvalidInput: bad module names, unknown or cyclic dependencies, overlapping ownership,
            an amendment without a reason, or a registered task whose scope the new modules
            no longer own.
    """
    body = {
        "modules": _validate_modules(modules),
        "decisions": [
            {
                "title": _text("decision title", d.title),
                "decision": _text("decision", d.decision),
                "rationale": d.rationale.strip(),
            }
            for d in decisions
        ],
    }
    sha = _content_sha(body)
    with env.write() as w:
        run_row = env.run_row(run)
        _check_open(run_row)
        if not run_row["requirements_version"]:
            raise WrongState(
                f"run {run!r} has no frozen requirements yet; call freeze_requirements(run={run!r}, ...) first"
            )
        version = run_row["architecture_version"]
        if version:
            prev = w.one(
                "SELECT content_sha256 FROM architecture_versions WHERE run_id = ? AND version = ?", (run, version)
            )
            assert prev is not None
            if prev["content_sha256"] == sha:
                return FreezeResult(
                    run=run,
                    version=version,
                    content_sha256=sha,
                    stage=run_row["stage"],
                    next_step="nothing changed; " + _next_after_requirements(env, run_row),
                )
            if not (amend_reason or "").strip():
                raise InvalidInput(
                    f"architecture of run {run!r} is frozen at version {version}; "
                    "to amend it pass amend_reason saying why"
                )
            for task in w.rows("SELECT id, scope FROM tasks WHERE run_id = ?", (run,)):
                outside = scope_outside_modules(json.loads(task["scope"]), body["modules"])
                if outside:
                    raise InvalidInput(
                        f"task {task['id']!r} has scope {outside!r}, which no module of the amended architecture "
                        "owns; keep a module owning it"
                    )
        version += 1
        w.insert(
            "architecture_versions",
            {
                "run_id": run,
                "version": version,
                "content_sha256": sha,
                "reason": (amend_reason or "").strip() or None,
                "body": canonical_json(body),
                "frozen_at": w.at,
            },
        )
        w.execute("UPDATE runs SET architecture_version = ?, updated_at = ? WHERE id = ?", (version, w.at, run))
        payload = {
            "version": version,
            "content_sha256": sha,
            "reason": amend_reason,
            "modules": [m["name"] for m in body["modules"]],
        }
        if run_row["stage"] == "requirements_frozen":
            set_stage(w, run_row, "architecture_frozen", "architecture.frozen", **payload)
        else:
            w.event("architecture.amended", run=run, **payload)
    return FreezeResult(
        run=run,
        version=version,
        content_sha256=sha,
        stage=run_row["stage"],
        next_step=f"register_graph(run={run!r}, tasks=[...])"
        if not stage_at_least(run_row["stage"], "planned")
        else f"get_status({run!r})",
    )
