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
import hashlib
import json
import logging
import re
import threading
import time
import tomllib
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from planegate.store import canonical_json, placeholders

from ..control.graph import task_declarations
from ..env import Env
from ..errors import Busy, InvalidInput, PlanegateError
from ..gitrepo import (
    DiffFacts,
    FileChange,
    GitRepo,
    MergeResult,
    RawChange,
    RefReader,
    dirty_paths,
    read_blob,
    symlink_targets,
)
from ..globs import glob_matches, matches_any, normalize_glob
from ..models import ACTIVE_STATUSES
from ..policy import Policy
from . import identity
from .adopt import adoption_problems
from .gates import SERIOUS, GateResult, ReviewFacts, TaskFacts, task_gates
from .links import LinkEscape, escaping_links
from .secrets import BLOB_SCAN_LIMIT, SecretFinding, scan_added_lines, scan_blob, scan_diff

log = logging.getLogger("planegate.facts")

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
    raw = diff.raw
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


def _requirement_versions(env: Env, run: str) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """Each requirements version with its requirements by id, and the versions its events do not vouch for."""
    rows = env.store.rows("SELECT * FROM requirement_versions WHERE run_id = ? ORDER BY version", (run,))
    problems: list[str] = []
    vouched(env, "requirement_versions", rows, problems)
    return [(row["version"], {r["id"]: r for r in json.loads(row["body"])}) for row in rows], problems


def _changed_at(versions: list[tuple[int, dict[str, Any]]], served: list[str]) -> int:
    changed_at = 0
    previous: dict[str, Any] = {}
    for version, current in versions:
        if any(current.get(rid) != previous.get(rid) for rid in served):
            changed_at = version
        previous = current
    return changed_at


class RunReads:
    """What every task of a run reads alike, read once when several of its tasks are judged
    together (``get_status``): the run row's and its policy adoptions' problems, the requirement
    versions, and (when a task needs it) the integration branch's tip."""

    def __init__(self, env: Env, run_row: dict[str, Any], *, git_from: GitFrom = "stored") -> None:
        self._env, self._run_row, self._git_from = env, run_row, git_from
        self.problems: list[str] = []
        vouched(env, "runs", [run_row], self.problems)
        self.problems += adoption_problems(env, run_row)
        self.versions, self.version_problems = _requirement_versions(env, run_row["id"])
        self._integration: tuple[str | None] | None = None

    def integration(self) -> str | None:
        """The integration branch's tip, read at the first ask."""
        if self._integration is None:
            env, run_row = self._env, self._run_row
            tip = (
                env.repo(run_row["repo"]).branch_sha(run_row["integration_branch"])
                if self._git_from == "git"
                else branch_tip(env, run_row["repo"], run_row["integration_branch"])
            )
            self._integration = (tip,)
        return self._integration[0]

    def requirements_changed_at(self, served: list[str], ledger: list[str]) -> int:
        ledger += self.version_problems
        return _changed_at(self.versions, served)


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


def task_facts(
    env: Env,
    run_row: dict[str, Any],
    row: dict[str, Any],
    *,
    live: bool,
    git_from: GitFrom = "git",
    shared: RunReads | None = None,
) -> TaskFacts:
    """Facts for the gates; ``live`` adds what only accepting needs (uncommitted changes).

    ``git_from``: ``git`` computes the head's git facts (or finds them in this process's caches);
    ``stored`` reads what a worker stored for the head and runs no git at all, naming the head in
    ``git_pending`` when nothing is stored yet; ``stored_or_git`` computes what is missing (without
    storing it). Acceptance always uses ``git``. ``shared``: the run's reads when the caller judges
    several of its tasks at once (read with the same ``git_from``); read here otherwise.
    """
    run, task = run_row["id"], row["id"]
    reads = shared or RunReads(env, run_row, git_from=git_from)
    ledger: list[str] = list(reads.problems)
    vouched(env, "tasks", [row], ledger)
    policy = env.policy(run_row)
    deps = dependency_states(env, run, json.loads(row["depends_on"]), ledger)
    pending = None
    # Accepting also asks whether the worktree is clean: that git process runs beside the others.
    worktree = row["worktree"] if live and row["worktree"] and Path(row["worktree"]).is_dir() else None
    cleanliness = _Beside(lambda: dirty_paths(worktree)) if worktree else None
    if git_from == "git":
        repo = env.repo(run_row["repo"])
        head = repo.branch_sha(row["branch"]) if row["branch"] else None
        integration = reads.integration()
        found = (
            compute_head_facts(repo, row["base_sha"], head, integration, harness_patterns(policy))
            if head and row["base_sha"]
            else None
        )
    else:
        head = branch_tip(env, run_row["repo"], row["branch"]) if row["branch"] else None
        found = None
        if head and row["base_sha"]:
            integration = reads.integration()
            key = facts_key(run_row, row["base_sha"], head, integration, policy)
            found = stored_head_facts(env, key)
            if found is None and git_from == "stored_or_git":  # not stored: callers may hold a read snapshot
                repo = env.repo(run_row["repo"])
                found = compute_head_facts(repo, row["base_sha"], head, integration, harness_patterns(policy))
            if found is None:
                pending = head
    executor = executor_identity(row, policy, run_row["repo"], fresh=live)
    dirty = cleanliness.result() if cleanliness else None
    return TaskFacts(
        run=run,
        task=task,
        status=row["status"],
        scope=json.loads(row["scope"]),
        deps=deps,
        head_sha=head,
        base_sha=row["base_sha"] or "",
        files=found.files if found else [],
        secrets=found.secrets if found else [],
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
        requirements_changed_at=reads.requirements_changed_at(json.loads(row["requirements"]), ledger),
        merge=found.merge if found else None,
        dirty=dirty,
        executor=executor,
        links_outside=found.links_outside if found else [],
        secrets_truncated=found.truncated if found else [],
        harness=found.harness if found else [],
        declarations=task_declarations(row),
        ledger=ledger,
        git_pending=pending,
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
    env: Env,
    run_row: dict[str, Any],
    row: dict[str, Any],
    *,
    live: bool,
    git_from: GitFrom = "git",
    shared: RunReads | None = None,
) -> tuple[TaskFacts, list[GateResult]]:
    facts = task_facts(env, run_row, row, live=live, git_from=git_from, shared=shared)
    gates = task_gates(facts, env.policy(run_row))
    if facts.git_pending:
        gates = [_pending(gate, facts) if gate.gate in GIT_GATES else gate for gate in gates]
    return facts, gates


def _pending(gate: GateResult, facts: TaskFacts) -> GateResult:
    return GateResult(
        gate.gate,
        False,
        f"computing for head {str(facts.git_pending)[:12]}: its diff, merge check and secret scan are "
        "worked out once per head, in the background.",
        f"get_status({facts.run!r}) again in a moment",
    )


# --- git facts per head, computed once and stored --------------------------------------------
# A task's git facts depend only on commit ids (its base and head, its run's integration tip) and
# the harness patterns, so they are computed once per head — by a worker, as soon as it sees the
# head move — and stored in ``git_facts``, where ``get_status`` reads them without running git.
# The table is derived, not vouched: an edited row could mislead only what get_status shows,
# never an acceptance, which computes its facts from git itself.

GitFrom = Literal["git", "stored", "stored_or_git"]
GIT_GATES = ("scope", "budget", "secrets", "red_green", "tests", "merge")
KEEP_ROWS = 2000  # stored facts kept (newest first); a few per active task is all get_status reads
RETRY_S = 30.0  # a head whose facts could not be computed is tried again after this long

FactsKey = tuple[str, str, str, str, str]  # repo, base, head, integration tip ("" when none), harness digest


@dataclass(frozen=True)
class HeadFacts:
    """What the gates read from git about one head: the change, its secrets and links, whether it
    merges onto the integration tip, and which harness paths it touches."""

    files: list[FileChange]
    secrets: list[SecretFinding]
    truncated: list[tuple[str, int]]
    links_outside: list[LinkEscape]
    merge: MergeResult | None
    harness: list[str]

    def to_json(self) -> str:
        merge = self.merge
        return canonical_json(
            {
                "files": [[f.path, f.added, f.deleted, f.binary] for f in self.files],
                "secrets": [[s.path, s.line, s.kind, s.where] for s in self.secrets],
                "truncated": [[path, size] for path, size in self.truncated],
                "links_outside": [[link.path, link.target, link.why] for link in self.links_outside],
                "merge": None if merge is None else {"ok": merge.ok, "conflicts": merge.conflicts, "tree": merge.tree},
                "harness": self.harness,
            }
        )

    @classmethod
    def from_json(cls, text: str, integration: str, head: str) -> HeadFacts:
        data = json.loads(text)
        merge = data["merge"]
        return cls(
            files=[FileChange(path, added, deleted, binary) for path, added, deleted, binary in data["files"]],
            secrets=[SecretFinding(path, line, kind, where) for path, line, kind, where in data["secrets"]],
            truncated=[(path, size) for path, size in data["truncated"]],
            links_outside=[LinkEscape(path, target, why) for path, target, why in data["links_outside"]],
            merge=None
            if merge is None
            else MergeResult(
                merge["ok"], conflicts=merge["conflicts"], tree=merge["tree"], target=integration, source=head
            ),
            harness=list(data["harness"]),
        )


class _Beside(threading.Thread):
    """One git question asked in a thread while the caller asks another: the two processes run
    at once (the time of the slower, not the sum). ``result`` waits and re-raises its error."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(name="planegate-git-beside", daemon=True)
        self._call = call
        self._value: Any = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._error = exc

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def compute_head_facts(repo: GitRepo, base: str, head: str, integration: str | None, patterns: list[str]) -> HeadFacts:
    """The head's git facts, from git (or this process's caches of what git said). The merge
    check runs beside the diff; it is used only when the change is not empty."""
    merging = _Beside(lambda: merge_check(repo, integration, head)) if integration else None
    scan = diff_scan(repo, base, head)
    files = scan.diff.files
    merge = merging.result() if merging and files else None
    return HeadFacts(
        files=files,
        secrets=scan.secrets,
        truncated=scan.truncated,
        links_outside=scan.links_outside,
        merge=merge,
        harness=harness_changes(repo, base, head, files, patterns),
    )


_readers: dict[str, RefReader] = {}


def branch_tip(env: Env, repo: str, branch: str | None) -> str | None:
    """A branch's tip read from the repository's ref files; git is asked only when they cannot tell."""
    if not branch:
        return None
    reader = _readers.get(repo)
    if reader is None:
        reader = _readers.setdefault(repo, RefReader(repo))
    found = reader.branch_sha(branch)
    if found is None or isinstance(found, str):
        return found
    return env.repo(repo).branch_sha(branch)


def facts_key(run_row: dict[str, Any], base: str, head: str, integration: str | None, policy: Policy) -> FactsKey:
    patterns = canonical_json(harness_patterns(policy))
    return (run_row["repo"], base, head, integration or "", hashlib.sha256(patterns.encode()).hexdigest()[:16])


def stored_head_facts(env: Env, key: FactsKey) -> HeadFacts | None:
    row = env.store.one(
        "SELECT facts FROM git_facts WHERE repo = ? AND base = ? AND head = ? AND integration = ? AND harness = ?", key
    )
    return None if row is None else HeadFacts.from_json(row["facts"], key[3], key[2])


def refresh_key(env: Env, key: FactsKey, patterns: list[str]) -> HeadFacts:
    """Compute the facts of ``key`` from git and store them; the write is skipped when the ledger
    is busy (they are derived: the next reader computes them again)."""
    repo_path, base, head, integration, _ = key
    found = compute_head_facts(env.repo(repo_path), base, head, integration or None, patterns)
    try:
        with env.write(actor="planegate:facts") as w:
            w.execute(
                "INSERT OR REPLACE INTO git_facts (repo, base, head, integration, harness, facts, computed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, found.to_json(), w.at),
            )
            w.execute(
                "DELETE FROM git_facts WHERE computed_at < (SELECT computed_at FROM git_facts"
                " ORDER BY computed_at DESC LIMIT 1 OFFSET ?)",
                (KEEP_ROWS,),
            )
    except Busy:
        log.info("git facts of %s not stored: the ledger is busy", head[:12])
    return found


def refresh_task(env: Env, run_row: dict[str, Any], row: dict[str, Any]) -> HeadFacts | None:
    """Make sure the task's current head has its git facts stored (computing them if not)."""
    head = branch_tip(env, run_row["repo"], row["branch"])
    if not head or not row["base_sha"]:
        return None
    policy = env.policy(run_row)
    integration = branch_tip(env, run_row["repo"], run_row["integration_branch"])
    key = facts_key(run_row, row["base_sha"], head, integration, policy)
    return stored_head_facts(env, key) or refresh_key(env, key, harness_patterns(policy))


_seen: dict[tuple[str, str], FactsKey] = {}  # (run, task) → the key whose facts are known to be stored
_failed: dict[tuple[str, str], tuple[str, float]] = {}  # (run, task) → (head, when to try it again)
_refresh_lock = threading.Lock()
_identity_read: weakref.WeakSet[GitRepo] = weakref.WeakSet()  # repositories whose committer identity is read
_warmed = threading.Event()


def refresh_moved_heads(env: Env) -> int:
    """The worker's look at active tasks (``jobs.HEAD_WORK``): every task whose head or run's
    integration tip moved since this process last looked gets its git facts computed and stored,
    unless another process stored them already. Reading the tips costs no git process. The first
    call also loads the secret scanner, and the first look at a repository reads its committer
    identity (which this process then keeps until a config file changes), so an acceptance waits
    for neither. Returns how many heads were computed."""
    if not _warmed.is_set():
        warm_up_secret_scanner()
    computed = 0
    with _refresh_lock:  # one pass at a time per process; a second one would repeat the same work
        marks = placeholders(ACTIVE_STATUSES)
        rows = env.store.rows(
            "SELECT r.id AS run_id, r.repo, r.integration_branch, r.policy, t.id, t.branch, t.base_sha"
            f" FROM runs r JOIN tasks t ON t.run_id = r.id AND t.status IN ({marks})"
            " WHERE r.stage NOT IN ('accepted', 'abandoned') AND t.branch IS NOT NULL AND t.base_sha IS NOT NULL",
            ACTIVE_STATUSES,
        )
        live = {(row["run_id"], row["id"]) for row in rows}
        for gone in [task for task in [*_seen, *_failed] if task not in live]:
            _seen.pop(gone, None)
            _failed.pop(gone, None)
        for row in rows:
            task = (row["run_id"], row["id"])
            run_row = {key: row[key] for key in ("repo", "integration_branch", "policy")}
            head = None
            try:
                head = branch_tip(env, row["repo"], row["branch"])
                if not head:
                    continue
                repo = env.repo(row["repo"])
                if repo not in _identity_read:
                    repo.identity()
                    _identity_read.add(repo)
                policy = env.policy(run_row)
                integration = branch_tip(env, row["repo"], row["integration_branch"])
                key = facts_key(run_row, row["base_sha"], head, integration, policy)
                failed_head, retry_at = _failed.get(task, ("", 0.0))
                if _seen.get(task) == key or (failed_head == head and time.monotonic() < retry_at):
                    continue
                if stored_head_facts(env, key) is None:
                    refresh_key(env, key, harness_patterns(policy))
                    computed += 1
                _seen[task] = key
                _failed.pop(task, None)
            except (PlanegateError, OSError) as exc:  # a repository gone or broken: tried again later
                _failed[task] = (head or "", time.monotonic() + RETRY_S)
                log.warning("git facts of task %s/%s not computed: %s", *task, exc)
    return computed


def warm_up_secret_scanner() -> None:
    """Load detect-secrets and its plugins (a few hundred ms the first time) with a one-line scan."""
    scan_added_lines({"warm-up.txt": [(1, "nothing secret here")]})
    _warmed.set()


def forget_cached() -> None:
    """Empty this process's caches of git facts (benchmarks: a cold start for one head)."""
    with _lock:
        _diffs.clear()
        _merges.clear()
        _harness.clear()
