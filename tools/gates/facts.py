"""Gathering what the gates judge: ledger rows and git facts about one task at its head.

Git facts that depend only on commits (the diff, its secrets, whether it merges onto a given
integration head) are cached by commit ids, so repeated ``get_status`` calls cost no git process
until something moves. The head is read from the branch ref file, not by running git.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..env import Env
from ..gitrepo import DiffFacts, GitRepo, MergeResult
from ..policy import Policy
from .gates import SERIOUS, GateResult, ReviewFacts, TaskFacts, command_identity, task_gates
from .secrets import SecretFinding, scan_diff

_CACHE_SIZE = 256
_lock = threading.Lock()
_diffs: OrderedDict[tuple[str, str, str], tuple[DiffFacts, list[SecretFinding]]] = OrderedDict()
_merges: OrderedDict[tuple[str, str, str], MergeResult] = OrderedDict()


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    with _lock:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)


def diff_and_secrets(repo: GitRepo, base: str, head: str) -> tuple[DiffFacts, list[SecretFinding]]:
    key = (str(repo.root), base, head)
    with _lock:
        hit = _diffs.get(key)
    if hit is not None:
        return hit
    diff = repo.diff(base, head)
    value = (diff, scan_diff(diff.text))
    _remember(_diffs, key, value)
    return value


def merge_check(repo: GitRepo, target: str, head: str) -> MergeResult:
    key = (str(repo.root), target, head)
    with _lock:
        hit = _merges.get(key)
    if hit is not None:
        return hit
    result = repo.merge_check(target, head)
    _remember(_merges, key, result)
    return result


def executor_identity(row: dict[str, Any], policy: Policy) -> str:
    """Who wrote the task's code, as a name comparable with a reviewer's."""
    if row["executor"] == "codex":
        return "codex"
    if row["executor"] == "command" and policy.executor.command:
        return command_identity(policy.executor.command)
    return str(row["dispatched_by"] or "agent")


def requirements_changed_at(env: Env, run: str, served: list[str]) -> int:
    """The latest requirements version that changed one of ``served`` (1 = as first frozen)."""
    changed_at = 0
    previous: dict[str, Any] = {}
    for version in env.store.rows(
        "SELECT version, body FROM requirement_versions WHERE run_id = ? ORDER BY version", (run,)
    ):
        current = {r["id"]: r for r in json.loads(version["body"])}
        if any(current.get(rid) != previous.get(rid) for rid in served):
            changed_at = version["version"]
        previous = current
    return changed_at


def review_facts(env: Env, run: str, task: str | None, limit: int = 10) -> list[ReviewFacts]:
    rows = env.store.rows(
        "SELECT * FROM reviews WHERE run_id = ? AND task_id IS ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (run, task, limit),
    )
    facts = []
    for row in rows:
        serious = env.store.rows(
            "SELECT severity, title, file FROM findings WHERE review_id = ? AND severity IN (?, ?) ORDER BY idx",
            (row["id"], *SERIOUS),
        )
        facts.append(
            ReviewFacts(
                id=row["id"],
                status=row["status"],
                verdict=row["verdict"],
                head_sha=row["head_sha"],
                reviewer=row["reviewer"],
                requirements_version=row["requirements_version"],
                open_serious=[
                    f"{f['severity']}: {f['title']}" + (f" ({f['file']})" if f["file"] else "") for f in serious
                ],
            )
        )
    return facts


def task_facts(env: Env, run_row: dict[str, Any], row: dict[str, Any], *, live: bool) -> TaskFacts:
    """Facts for the gates; ``live`` adds what only accepting needs (uncommitted changes)."""
    run, task = run_row["id"], row["id"]
    policy = env.policy(run_row)
    repo = env.repo(run_row["repo"])
    head = repo.branch_sha(row["branch"]) if row["branch"] else None
    deps = [
        (d["id"], d["status"])
        for d in env.store.rows(
            "SELECT d.id, d.status FROM task_edges e JOIN tasks d ON d.run_id = e.run_id AND d.id = e.depends_on"
            " WHERE e.run_id = ? AND e.task_id = ?",
            (run, task),
        )
    ]
    diff, secrets = diff_and_secrets(repo, row["base_sha"], head) if head and row["base_sha"] else (None, [])
    integration = repo.branch_sha(run_row["integration_branch"])
    merge = merge_check(repo, integration, head) if head and integration and diff and diff.files else None
    dirty = None
    if live and row["worktree"] and Path(row["worktree"]).is_dir():
        dirty = GitRepo(row["worktree"]).dirty_paths()
    return TaskFacts(
        run=run,
        task=task,
        status=row["status"],
        scope=json.loads(row["scope"]),
        deps=deps,
        head_sha=head,
        base_sha=row["base_sha"] or "",
        files=diff.files if diff else [],
        secrets=secrets,
        evidence=env.store.rows(
            "SELECT id, kind, label, exit_code, head_sha, summary FROM evidence WHERE run_id = ? AND task_id = ?"
            " ORDER BY id DESC LIMIT 200",
            (run, task),
        ),
        executor_identity=executor_identity(row, policy),
        reviews=review_facts(env, run, task),
        requirements_changed_at=requirements_changed_at(env, run, json.loads(row["requirements"])),
        merge=merge,
        dirty=dirty,
    )


def evaluate_task(
    env: Env, run_row: dict[str, Any], row: dict[str, Any], *, live: bool
) -> tuple[TaskFacts, list[GateResult]]:
    facts = task_facts(env, run_row, row, live=live)
    return facts, task_gates(facts, env.policy(run_row))
