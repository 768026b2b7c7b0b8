"""Gathering what the gates judge: ledger rows and git facts about one task at its head.

Git facts that depend only on commits (the diff, its secrets, its symlinks, whether it merges onto
a given integration head, which test-harness files it changes) are cached by commit ids, so repeated
``get_status`` calls cost no git process until something moves. The head is read from the branch
ref file, not by running git.

Harness paths (``[tests] harness_paths``) are whole files (``**/conftest.py``) or a part of a
shared file (``**/pyproject.toml#tool.pytest``: a dotted key of a TOML or JSON file, a section
name pattern of an INI-style file). A keyed file counts as changed only when that part differs
between base and head; a side that cannot be parsed counts as different. Files the test check's
argv names (``scripts/test.sh``) are harness too.

Ledger rows are trusted only once their vouching event confirms them (``Store.check_row``): the
run row (its policy snapshot), the task row, its dependencies' rows, the requirement versions,
the evidence the checks and red→green gates use (and every newer row of the task that could
have superseded it), and the reviews. A row that does not match is left out of the facts and
named in ``ledger``, which the ledger gate refuses on. Decisions that rest on the absence of a
row read vouched rows rather than the tables a deletion could empty: dependencies come from the
task row's ``depends_on``, open findings from the review row's stored reply.
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
import threading
import tomllib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from planegate.store import placeholders

from ..control.graph import task_declarations
from ..env import Env
from ..errors import InvalidInput
from ..gitrepo import (
    DiffFacts,
    FileChange,
    GitRepo,
    MergeResult,
    RawChange,
    raw_changes,
    read_blob,
    symlink_targets,
)
from ..globs import glob_matches, matches_any, normalize_glob
from ..policy import Policy
from . import identity
from .adopt import adoption_problems
from .gates import SERIOUS, GateResult, ReviewFacts, TaskFacts, task_gates
from .links import LinkEscape, escaping_links
from .secrets import BLOB_SCAN_LIMIT, SecretFinding, scan_blob, scan_diff

_CACHE_SIZE = 256
_lock = threading.Lock()
_diffs: OrderedDict[tuple[str, str, str], DiffScan] = OrderedDict()
_merges: OrderedDict[tuple[str, str, str], MergeResult] = OrderedDict()
_harness: OrderedDict[tuple[str, str, str, tuple[str, ...]], list[str]] = OrderedDict()
_SCRIPT = re.compile(r"\.(sh|bash|py|js|mjs|cjs|ts|rb|pl)$")


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    with _lock:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)


@dataclass(frozen=True)
class DiffScan:
    """The change ``base..head`` and what it adds that no task may: secrets, links out of the repo."""

    diff: DiffFacts
    secrets: list[SecretFinding]
    truncated: list[tuple[str, int]]  # binaries scanned only in their first BLOB_SCAN_LIMIT bytes
    links_outside: list[LinkEscape]


def _binary_secrets(
    repo: GitRepo, diff: DiffFacts, raw: list[RawChange]
) -> tuple[list[SecretFinding], list[tuple[str, int]]]:
    """Secrets in the head blobs of the binary files the change adds or alters (bounded reads)."""
    binaries = {f.path for f in diff.files if f.binary}
    found: list[SecretFinding] = []
    truncated: list[tuple[str, int]] = []
    for change in raw:
        # Regular files only (100644/100755): not links, not submodule commits.
        if change.path not in binaries or change.status == "D" or not change.new_mode.startswith("100"):
            continue
        data, size = read_blob(repo, change.new_blob, BLOB_SCAN_LIMIT)
        before = None
        if change.status in ("M", "T") and change.old_mode.startswith("100"):
            before, _ = read_blob(repo, change.old_blob, BLOB_SCAN_LIMIT)
        found += scan_blob(change.path, data, before)
        if size > BLOB_SCAN_LIMIT:
            truncated.append((change.path, size))
    return found, truncated


def _links_outside(repo: GitRepo, head: str, raw: list[RawChange]) -> list[LinkEscape]:
    """Symlinks the change adds or retargets whose target leaves the repository (modes from git)."""
    changed = [c.path for c in raw if c.is_symlink]
    return escaping_links(changed, symlink_targets(repo, head)) if changed else []


def diff_scan(repo: GitRepo, base: str, head: str) -> DiffScan:
    key = (str(repo.root), base, head)
    with _lock:
        hit = _diffs.get(key)
    if hit is not None:
        return hit
    diff = repo.diff(base, head)
    raw = raw_changes(repo, base, head)
    binary_found, truncated = _binary_secrets(repo, diff, raw)
    value = DiffScan(diff, sorted(scan_diff(diff.text) + binary_found), truncated, _links_outside(repo, head, raw))
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


def harness_patterns(policy: Policy) -> list[str]:
    """The policy's harness paths plus the repository files the test check's argv names."""
    patterns = list(policy.tests.harness_paths)
    for arg in (arg for step in policy.checks.get(policy.test_check, []) for arg in step):
        if arg.startswith("-") or PurePosixPath(arg).is_absolute() or not _SCRIPT.search(arg) or "::" in arg:
            continue
        try:
            patterns.append(normalize_glob(arg))
        except InvalidInput:
            continue
    return patterns


def _part(path: str, data: bytes | None, key: str) -> Any:
    """The value at ``key`` in one version of a file (None when absent); unparsable data stands
    for itself, so any change to it counts."""
    if data is None:
        return None
    text = data.decode("utf-8", "replace")
    try:
        if path.endswith(".toml") or path.endswith(".json"):
            value: Any = tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
            for part in key.split("."):
                if not isinstance(value, dict) or part not in value:
                    return None
                value = value[part]
            return value
        parser = configparser.RawConfigParser(strict=False, interpolation=None)
        parser.read_string(text)
        return {s: dict(parser.items(s)) for s in parser.sections() if fnmatch.fnmatchcase(s, key)} or None
    except (ValueError, configparser.Error):
        return ("unparsable", text)


def harness_changes(repo: GitRepo, base: str, head: str, files: list[FileChange], patterns: list[str]) -> list[str]:
    """The harness paths (``path`` or ``path#key``) a change touches."""
    key = (str(repo.root), base, head, tuple(patterns))
    with _lock:
        hit = _harness.get(key)
    if hit is not None:
        return hit
    whole = [p for p in patterns if "#" not in p]
    keyed = [tuple(p.split("#", 1)) for p in patterns if "#" in p]
    found: list[str] = []
    for change in files:
        if matches_any(change.path, whole):
            found.append(change.path)
            continue
        keys = [k for glob, k in keyed if glob_matches(glob, change.path)]
        if keys:
            before, after = repo.show(base, change.path), repo.show(head, change.path)
            found += [
                f"{change.path}#{k}" for k in keys if _part(change.path, before, k) != _part(change.path, after, k)
            ]
    _remember(_harness, key, found)
    return found


def executor_identity(
    row: dict[str, Any], policy: Policy, repo: Path | str | None = None, *, fresh: bool = True
) -> identity.Identity:
    """Who wrote the task's code, comparable with a reviewer (relative programs found in ``repo``)."""
    return identity.executor_identity(
        row["executor"], row["dispatched_by"], policy, cwd=Path(repo) if repo is not None else None, fresh=fresh
    )


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


def _recorded_reviewer(row: dict[str, Any]) -> identity.Identity | None:
    """The reviewer's identity as ``request_review`` recorded it (None on rows from before that)."""
    recorded = json.loads(row.get("identity") or "null")
    return identity.Identity.from_json(recorded["reviewer"]) if recorded else None


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
                identity=_recorded_reviewer(row),
            )
        )
    return facts


def task_facts(env: Env, run_row: dict[str, Any], row: dict[str, Any], *, live: bool) -> TaskFacts:
    """Facts for the gates; ``live`` adds what only accepting needs (uncommitted changes)."""
    run, task = run_row["id"], row["id"]
    ledger: list[str] = []
    vouched(env, "runs", [run_row], ledger)
    ledger += adoption_problems(env, run_row)
    vouched(env, "tasks", [row], ledger)
    policy = env.policy(run_row)
    repo = env.repo(run_row["repo"])
    head = repo.branch_sha(row["branch"]) if row["branch"] else None
    deps = dependency_states(env, run, json.loads(row["depends_on"]), ledger)
    scan = diff_scan(repo, row["base_sha"], head) if head and row["base_sha"] else None
    diff = scan.diff if scan else None
    integration = repo.branch_sha(run_row["integration_branch"])
    merge = merge_check(repo, integration, head) if head and integration and diff and diff.files else None
    executor = executor_identity(row, policy, run_row["repo"], fresh=live)
    dirty = None
    if live and row["worktree"] and Path(row["worktree"]).is_dir():
        dirty = GitRepo(row["worktree"]).dirty_paths()
    harness = (
        harness_changes(repo, row["base_sha"], head, diff.files, harness_patterns(policy)) if diff and head else []
    )
    return TaskFacts(
        run=run,
        task=task,
        status=row["status"],
        scope=json.loads(row["scope"]),
        deps=deps,
        head_sha=head,
        base_sha=row["base_sha"] or "",
        files=diff.files if diff else [],
        secrets=scan.secrets if scan else [],
        evidence=trusted_evidence(
            env,
            env.store.rows(
                "SELECT * FROM evidence WHERE run_id = ? AND task_id = ? ORDER BY id DESC LIMIT 200", (run, task)
            ),
            head,
            ledger,
        ),
        executor_identity=executor.name,
        reviews=review_facts(env, run, task, ledger=ledger),
        requirements_changed_at=requirements_changed_at(env, run, json.loads(row["requirements"]), ledger),
        merge=merge,
        dirty=dirty,
        executor=executor,
        links_outside=scan.links_outside if scan else [],
        secrets_truncated=scan.truncated if scan else [],
        harness=harness,
        declarations=task_declarations(row),
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
