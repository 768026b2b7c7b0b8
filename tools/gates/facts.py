"""Gathering what the gates judge: ledger rows and git facts about one task at its head.

Git facts that depend only on commits (the diff, its secrets, whether it merges onto a given
integration head) are cached by commit ids, so repeated ``get_status`` calls cost no git process
until something moves. The head is read from the branch ref file, not by running git.

Ledger rows are trusted only once their vouching event confirms them (``Store.check_row``): the
run row (its policy snapshot), the task row, its dependencies' rows, the requirement versions,
the evidence the checks and red→green gates use (and every newer row of the task that could
have superseded it), and the reviews. A row that does not match is left out of the facts and
named in ``ledger``, which the ledger gate refuses on. Decisions that rest on the absence of a
row read vouched rows rather than the tables a deletion could empty: dependencies come from the
task row's ``depends_on``, open findings from the review row's stored reply.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from planegate.store import placeholders

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


def vouched(env: Env, table: str, rows: list[dict[str, Any]], ledger: list[str]) -> list[dict[str, Any]]:
    """``rows`` (full rows of ``table``) that their events vouch for; the others are named in ``ledger``."""
    trusted = []
    for row in rows:
        problem = env.store.check_row(table, row)
        if problem is None:
            trusted.append(row)
        else:
            ledger.append(problem.short)
    return trusted


def requirements_changed_at(env: Env, run: str, served: list[str], ledger: list[str] | None = None) -> int:
    """The latest requirements version that changed one of ``served`` (1 = as first frozen)."""
    changed_at = 0
    previous: dict[str, Any] = {}
    versions = env.store.rows("SELECT * FROM requirement_versions WHERE run_id = ? ORDER BY version", (run,))
    if ledger is not None:
        vouched(env, "requirement_versions", versions, ledger)
    for version in versions:
        current = {r["id"]: r for r in json.loads(version["body"])}
        if any(current.get(rid) != previous.get(rid) for rid in served):
            changed_at = version["version"]
        previous = current
    return changed_at


def _serious_findings(env: Env, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Serious findings as the (vouched) review row's stored reply lists them.

    Read from the reply rather than the ``findings`` table, so deleting a finding row cannot open
    the gate; a reply that is not the stored JSON (a review from before replies were kept whole)
    falls back to the table.
    """
    if row["status"] == "completed" and row["reply"]:
        try:
            findings = json.loads(row["reply"]).get("findings")
        except (ValueError, AttributeError):
            findings = None
        if isinstance(findings, list):
            return [f for f in findings if isinstance(f, dict) and f.get("severity") in SERIOUS]
    return env.store.rows(
        "SELECT severity, title, file FROM findings WHERE review_id = ? AND severity IN (?, ?) ORDER BY idx",
        (row["id"], *SERIOUS),
    )


def review_facts(
    env: Env, run: str, task: str | None, limit: int = 10, ledger: list[str] | None = None
) -> list[ReviewFacts]:
    """The newest reviews; with ``ledger``, only those their events vouch for (problems go there)."""
    rows = env.store.rows(
        "SELECT * FROM reviews WHERE run_id = ? AND task_id IS ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (run, task, limit),
    )
    if ledger is not None:
        rows = vouched(env, "reviews", rows, ledger)
    facts = []
    for row in rows:
        serious = _serious_findings(env, row)
        facts.append(
            ReviewFacts(
                id=row["id"],
                status=row["status"],
                verdict=row["verdict"],
                head_sha=row["head_sha"],
                reviewer=row["reviewer"],
                requirements_version=row["requirements_version"],
                open_serious=[
                    f"{f['severity']}: {f['title']}" + (f" ({f['file']})" if f.get("file") else "") for f in serious
                ],
            )
        )
    return facts


def task_facts(env: Env, run_row: dict[str, Any], row: dict[str, Any], *, live: bool) -> TaskFacts:
    """Facts for the gates; ``live`` adds what only accepting needs (uncommitted changes)."""
    run, task = run_row["id"], row["id"]
    ledger: list[str] = []
    vouched(env, "runs", [run_row], ledger)
    vouched(env, "tasks", [row], ledger)
    policy = env.policy(run_row)
    repo = env.repo(run_row["repo"])
    head = repo.branch_sha(row["branch"]) if row["branch"] else None
    deps = dependency_states(env, run, json.loads(row["depends_on"]), ledger)
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
        evidence=trusted_evidence(
            env,
            env.store.rows(
                "SELECT * FROM evidence WHERE run_id = ? AND task_id = ? ORDER BY id DESC LIMIT 200", (run, task)
            ),
            head,
            ledger,
        ),
        executor_identity=executor_identity(row, policy),
        reviews=review_facts(env, run, task, ledger=ledger),
        requirements_changed_at=requirements_changed_at(env, run, json.loads(row["requirements"]), ledger),
        merge=merge,
        dirty=dirty,
        ledger=ledger,
    )


def dependency_states(env: Env, run: str, depends_on: list[str], ledger: list[str]) -> list[tuple[str, str]]:
    """Each dependency named by the (vouched) task row, with its status; a dependency whose row is
    gone or untrusted counts as not accepted."""
    if not depends_on:
        return []
    rows = env.store.rows(
        f"SELECT * FROM tasks WHERE run_id = ? AND id IN ({placeholders(depends_on)})", (run, *depends_on)
    )
    trusted = {r["id"]: r["status"] for r in vouched(env, "tasks", rows, ledger)}
    found = {r["id"] for r in rows}
    for dep in depends_on:
        if dep not in found:
            ledger.append(f"tasks {run}/{dep} (a dependency of this task) is missing")
    return [(dep, trusted.get(dep, "missing" if dep not in found else "untrusted")) for dep in depends_on]


def trusted_evidence(env: Env, rows: list[dict[str, Any]], head: str | None, ledger: list[str]) -> list[dict[str, Any]]:
    """Evidence rows (newest first) with the ones a gate could count confirmed against their events.

    Confirmed: the newest direct row of each kind on ``head`` (what the checks and red→green gates
    use) and every row newer than the oldest of those, since an edit to a newer row (its head,
    label or kind) could otherwise hide that it superseded the one used. Rows that fail are dropped.
    """
    used: dict[str, int] = {}
    for index, row in enumerate(rows):
        if row["label"] == "direct" and row["head_sha"] == head and row["kind"] not in used:
            used[row["kind"]] = index
    if not used:
        return rows
    checked = rows[: max(used.values()) + 1]
    trusted = vouched(env, "evidence", checked, ledger)
    return trusted + rows[len(checked) :]


def evaluate_task(
    env: Env, run_row: dict[str, Any], row: dict[str, Any], *, live: bool
) -> tuple[TaskFacts, list[GateResult]]:
    facts = task_facts(env, run_row, row, live=live)
    return facts, task_gates(facts, env.policy(run_row))
