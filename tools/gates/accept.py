"""Accepting a task behind its gates, and rolling a run back to a checkpoint.

``accept_task`` evaluates every task gate on the current head and refuses with all unmet gates
at once. When they hold it merges the task branch ``--no-ff`` into the integration branch (with
trailers naming the run, task, evidence and review), tags checkpoint ``planegate/<run>/cp-<n>``,
marks the task accepted, unlocks its dependents and removes its worktree (kept when the policy
says ``retain_worktrees``). The checkpoint tag is annotated and carries the ledger's chain head
(event id and hash) at acceptance: an anchor outside the ledger file that ``ledger verify``
checks (``checkpoint_anchors``), so a ledger rewritten after the tag no longer matches it. The
merge, the tag and the ledger update happen while holding the ledger's write lock, so two
sessions accepting at once cannot both merge; a merge that landed before a crash is recognised
(the head is already in the integration branch) and not repeated.

A merge conflict changes nothing in git: the task is set to ``changes_requested`` with the
conflicting files named, and its branch and worktree are kept.

``rollback`` (a human command) resets the integration branch to a checkpoint and returns the
tasks accepted after it to ``ready`` (or ``blocked``), keeping their branches and evidence.
"""

from __future__ import annotations

import json
import re
from typing import Any

from planegate.store import Anchor, ChainHead, Writer, placeholders

from ..control.runs import move_task, set_stage
from ..control.tasks import first_dispatchable, settle_status
from ..env import Env
from ..errors import Conflict, GitError, InvalidInput, NotFound, PlanegateError, WrongState
from ..gitrepo import GitRepo, MergeResult, trailers
from ..models import ACTIVE_STATUSES, AcceptResult, RollbackResult
from .facts import evaluate_task
from .gates import GatesUnmet, conflict_gate


def unlock_dependents(w: Writer, run: str, task: str) -> list[str]:
    """Move blocked dependents of ``task`` whose dependencies are all accepted to ready."""
    unlocked = []
    for dependent in w.rows(
        "SELECT t.id FROM task_edges e JOIN tasks t ON t.run_id = e.run_id AND t.id = e.task_id"
        " WHERE e.run_id = ? AND e.depends_on = ? AND t.status = 'blocked'",
        (run, task),
    ):
        open_deps = w.scalar(
            "SELECT COUNT(*) FROM task_edges e JOIN tasks d ON d.run_id = e.run_id AND d.id = e.depends_on"
            " WHERE e.run_id = ? AND e.task_id = ? AND d.status != 'accepted'",
            (run, dependent["id"]),
        )
        if open_deps == 0 and move_task(w, run, dependent["id"], "blocked", "ready", "task.unblocked", by=task):
            unlocked.append(dependent["id"])
    return unlocked


def _used_evidence(facts_evidence: list[dict[str, Any]], head: str) -> list[int]:
    seen: set[str] = set()
    ids = []
    for row in facts_evidence:
        if row["label"] == "direct" and row["head_sha"] == head and row["kind"] not in seen:
            seen.add(row["kind"])
            ids.append(row["id"])
    return sorted(ids)


def _conflict(env: Env, run: str, task: str, status: str, conflicts: list[str]) -> None:
    with env.write() as w:
        move_task(w, run, task, status, "changes_requested", "task.merge_conflict", files=conflicts)


_LEDGER_EVENT = "Planegate-Ledger-Event"
_LEDGER_HASH = "Planegate-Ledger-Hash"
_ANCHOR_TRAILER = re.compile(rf"^({_LEDGER_EVENT}|{_LEDGER_HASH}):\s*(\S+)\s*$", re.MULTILINE)


def _tag(repo: GitRepo, run: str, task: str, n: int, sha: str, head: ChainHead, env: dict[str, str]) -> tuple[int, str]:
    """Create the annotated checkpoint tag (planegate's identity as tagger, never signed by the
    user's config), skipping numbers whose tag exists for another commit. One git process when
    the number is free; the tag's existence is looked up only when git refuses to create it."""
    while True:
        name = f"planegate/{run}/cp-{n}"
        message = f"planegate checkpoint cp-{n} of run {run}: task {task} accepted\n\n" + trailers(
            {
                "Planegate-Run": run,
                "Planegate-Task": task,
                "Planegate-Checkpoint": f"cp-{n}",
                _LEDGER_EVENT: head.event_id,
                _LEDGER_HASH: head.hash,
            }
        )
        try:
            repo.git(
                "-c", "tag.gpgSign=false", "tag", "-a", "--cleanup=verbatim", "-m", message, name, sha, env=env
            )  # fmt: skip
            return n, name
        except GitError:
            existing = repo.rev(f"refs/tags/{name}")
            if existing is None:
                raise
            if existing == sha:  # made by an earlier attempt that was interrupted
                return n, name
        n += 1


def checkpoint_anchors(env: Env, runs: list[str] | None = None) -> tuple[list[Anchor], list[str]]:
    """The chain heads the runs' annotated checkpoint tags record, and notes on what was not read.

    Tags made before checkpoints carried the chain head (lightweight tags) anchor nothing.
    """
    rows = env.store.rows("SELECT id, repo FROM runs ORDER BY created_at")
    anchors: list[Anchor] = []
    notes: list[str] = []
    for row in rows:
        if runs is not None and row["id"] not in runs:
            continue
        try:
            repo = env.repo(row["repo"])
            listing = repo.git(
                "for-each-ref", "--format=%(refname:short)%00%(objecttype)%00%(contents)%00",
                f"refs/tags/planegate/{row['id']}/",
            )  # fmt: skip
        except (InvalidInput, GitError) as exc:
            notes.append(f"run {row['id']}: its checkpoint tags were not checked ({exc})")
            continue
        fields = listing.split("\0")
        for index in range(0, len(fields) - 2, 3):
            name, kind, contents = fields[index].strip(), fields[index + 1], fields[index + 2]
            if kind != "tag":
                continue
            found = dict(_ANCHOR_TRAILER.findall(contents))
            if _LEDGER_EVENT in found and _LEDGER_HASH in found and found[_LEDGER_EVENT].isdigit():
                anchors.append(Anchor(f"tag {name} in {repo.root}", int(found[_LEDGER_EVENT]), found[_LEDGER_HASH]))
    return anchors, notes


def accept_task(env: Env, run: str, task: str) -> AcceptResult:
    """Merge a task whose every gate holds on its head; refuse with all unmet gates otherwise.

    Raises:
        WrongState: the task is not dispatched, or already accepted/cancelled.
        GatesUnmet: one or more gates do not hold (nothing merged; a merge conflict also sets
            the task to changes_requested).
        Conflict: the task changed while accepting.
    """
    run_row = env.run_row(run)
    row = settle_status(env, run, task)
    if row["status"] == "accepted":
        raise WrongState(_accepted_already(env, run, row, ""))
    if row["status"] not in ACTIVE_STATUSES:
        raise WrongState(f"task {task!r} is {row['status']}; only a dispatched task can be accepted")
    policy = env.policy(run_row)
    try:
        facts, gates = evaluate_task(env, run_row, row, live=True)
    except GitError:
        # Another accept_task may have merged the task and removed its worktree while this call
        # read it: then that is the answer, not the git error it caused here.
        ended = _ended_meanwhile(env, run, row, env.task_row(run, task))
        if ended is not None:
            raise ended from None
        raise
    unmet = [g for g in gates if not g.ok]
    merge_failed = next((g for g in unmet if g.gate == "merge" and facts.merge and not facts.merge.ok), None)
    if merge_failed and facts.merge:
        _conflict(env, run, task, row["status"], facts.merge.conflicts)
    if unmet:
        raise GatesUnmet(f"accept_task {task!r} refused", unmet)
    head = facts.head_sha
    assert head is not None
    repo = env.repo(run_row["repo"])
    evidence = _used_evidence(facts.evidence, head)
    review = next((r.id for r in facts.reviews if r.head_sha == head and r.verdict == "approve"), None)
    try:
        merge_sha, tag, note, unlocked = _merge_and_record(env, run_row, row, head, evidence, review, facts.merge)
    except _MergeConflict as exc:
        _conflict(env, run, task, row["status"], exc.conflicts)
        raise GatesUnmet(f"accept_task {task!r} refused", [conflict_gate(exc.conflicts)]) from exc
    removed = False
    if not policy.retain_worktrees and row["worktree"]:
        try:
            repo.retire_worktree(row["worktree"])  # checked clean by the gates just now
            removed = True
        except (GitError, OSError) as exc:
            note = (note + "; " if note else "") + f"worktree kept: {exc}"
    remaining = int(
        env.store.scalar(
            "SELECT COUNT(*) FROM tasks WHERE run_id = ? AND status NOT IN ('accepted', 'cancelled')", (run,)
        )
    )
    ready = [
        r["id"]
        for r in env.store.rows(
            "SELECT id FROM tasks WHERE run_id = ? AND status = 'ready' ORDER BY seq LIMIT 20", (run,)
        )
    ]
    dispatchable = first_dispatchable(env, env.run_row(run), [*unlocked, *ready])
    if dispatchable:
        next_step = f"dispatch_task(run={run!r}, task={dispatchable!r})"
    elif remaining == 0:
        # The merge made a new integration head: no check has run on it yet, and the release
        # review refuses until the required checks pass there.
        next_step = f"run_checks(run={run!r})" if policy.required else f"request_review(run={run!r}, release=True)"
    else:
        next_step = f"get_status({run!r})"
    return AcceptResult(
        run=run,
        task=task,
        merge_sha=merge_sha,
        checkpoint=tag,
        unlocked=unlocked,
        worktree_removed=removed,
        note=note,
        next_step=next_step,
    )


def _merge_and_record(
    env: Env,
    run_row: dict[str, Any],
    row: dict[str, Any],
    head: str,
    evidence: list[int],
    review: str | None,
    checked: MergeResult | None,
) -> tuple[str, str, str, list[str]]:
    """Merge, tag and record the acceptance, all under the ledger's write lock.

    ``checked``: the gates' merge check; when the integration branch has not moved since, its
    tree is committed as the merge (no second merge). A head already in the integration branch
    (an earlier attempt merged, then stopped before recording) is not merged again: merging it
    would give the integration tip's own tree, so ancestry is asked of git only in that case.
    """
    run, task = run_row["id"], row["id"]
    repo = env.repo(run_row["repo"])
    with env.write() as w:
        current = env.task_row(run, task)
        current_head = repo.branch_sha(row["branch"])
        if current["status"] != row["status"] or current_head != head:
            raise _moved_on(env, run, row, head, current, current_head)
        integration = repo.branch_sha(run_row["integration_branch"])
        if integration is None:
            raise GitError(
                f"branch {run_row['integration_branch']!r} is missing in {repo.root}; was it deleted by hand?"
            )
        fresh = checked is not None and (checked.target, checked.source) == (integration, head)
        check = checked if checked is not None and fresh else repo.merge_check(integration, head)
        if check.tree is not None:
            merged_before = check.tree == repo.tree_of(integration) and repo.is_ancestor(head, integration)
        else:  # a conflict (never an ancestor), or git without the in-memory merge (no tree to compare)
            merged_before = not repo.merge_in_memory and repo.is_ancestor(head, integration)
        if merged_before:
            merge_sha, note = integration, "the head was already merged (an earlier attempt was interrupted)"
            identity = repo.identity_env()
        else:
            if not check.ok:
                raise _MergeConflict(check.conflicts)
            n_next = int(w.scalar("SELECT COALESCE(MAX(n), 0) + 1 FROM checkpoints WHERE run_id = ?", (run,)))
            message = f"planegate: accept {task}: {row['title']}\n\n" + trailers(
                {
                    "Planegate-Run": run,
                    "Planegate-Task": task,
                    "Planegate-Evidence": ", ".join(map(str, evidence)) or "none",
                    "Planegate-Review": review or "not required",
                    "Planegate-Checkpoint": f"cp-{n_next}",
                }
            )
            identity = repo.identity_env()
            result = repo.merge(run_row["integration_branch"], head, message, checked=check, env=identity)
            if not result.ok or result.sha is None:
                raise _MergeConflict(result.conflicts)
            merge_sha, note = result.sha, ""
        n = int(w.scalar("SELECT COALESCE(MAX(n), 0) + 1 FROM checkpoints WHERE run_id = ?", (run,)))
        n, tag = _tag(repo, run, task, n, merge_sha, w.chain_head(), identity)
        w.insert(
            "checkpoints", {"run_id": run, "n": n, "tag": tag, "sha": merge_sha, "task_id": task, "created_at": w.at}
        )
        move_task(
            w,
            run,
            task,
            row["status"],
            "accepted",
            "task.accepted",
            also={
                "accepted_at": w.at,
                "accepted_sha": head,
                "merge_sha": merge_sha,
                "checkpoint": n,
                "lease_owner": None,
                "lease_expires": None,
            },
            head_sha=head,
            merge_sha=merge_sha,
            checkpoint=tag,
            evidence=evidence,
            review=review,
        )
        unlocked = unlock_dependents(w, run, task)
    return merge_sha, tag, note, unlocked


def _accepted_already(env: Env, run: str, row: dict[str, Any], how: str) -> str:
    task = row["id"]
    event = env.store.one(
        "SELECT actor, at FROM events WHERE run_id = ? AND task_id = ? AND kind = 'task.accepted'"
        " ORDER BY id DESC LIMIT 1",
        (run, task),
    )
    tag = env.store.scalar("SELECT tag FROM checkpoints WHERE run_id = ? AND n = ?", (run, row["checkpoint"]))
    by = f" by {event['actor']} at {event['at']}" if event else ""
    return (
        f"task {task!r} is accepted{how}{by}: merge {str(row['merge_sha'])[:12]}, checkpoint {tag}, head "
        f"{str(row['accepted_sha'])[:12]}. Nothing is left to do for it: call get_status({run!r}) for the next step"
    )


def _moved_on(
    env: Env, run: str, row: dict[str, Any], head: str, current: dict[str, Any], current_head: str | None
) -> PlanegateError:
    """What the loser of a race is told: what happened while it checked the gates, and what to call
    instead (calling accept_task again could only fail the same way)."""
    task, status = row["id"], current["status"]
    ended = _ended_meanwhile(env, run, row, current)
    if ended is not None:
        return ended
    if current_head != head:
        moved = current_head[:12] if current_head else "nowhere (the branch was deleted)"
        return Conflict(
            f"task {task!r}'s branch moved from {head[:12]} to {moved}{_MEANWHILE}; nothing was merged. The gates "
            f"hold only for the commit they were checked on: call run_checks(run={run!r}, task={task!r}) on the "
            "new head (and request_review if the policy requires a review), then accept_task"
        )
    return Conflict(
        f"task {task!r} moved from {row['status']} to {status}{_MEANWHILE}; nothing was merged. "
        f"Call get_status({run!r}): it shows why and the next action"
    )


_MEANWHILE = " while this call was checking its gates"


def _ended_meanwhile(env: Env, run: str, row: dict[str, Any], current: dict[str, Any]) -> WrongState | None:
    """The answer when another call accepted or cancelled the task while this one checked its gates."""
    if current["status"] == "accepted":
        return WrongState(_accepted_already(env, run, current, f" (another call accepted it{_MEANWHILE})"))
    if current["status"] == "cancelled":
        return WrongState(
            f"task {row['id']!r} was cancelled{_MEANWHILE} ({current['cancel_reason']}); nothing was merged. "
            f"Call get_status({run!r}) for the next step"
        )
    return None


class _MergeConflict(Exception):
    def __init__(self, conflicts: list[str]) -> None:
        super().__init__(", ".join(conflicts))
        self.conflicts = conflicts


def rollback(env: Env, run: str, to: str) -> RollbackResult:
    """Reset the run's integration branch to checkpoint ``to`` (``cp-N`` or ``N``).

    Raises:
        InvalidInput: a malformed checkpoint. NotFound: no such checkpoint. WrongState: the run
            is accepted, or the checkpoint was itself rolled back.
    """
    text = to.removeprefix("cp-")
    if not text.isdigit():
        raise InvalidInput(f"checkpoint {to!r} is not of the form cp-N; see `planegate status {run}`")
    n = int(text)
    run_row = env.run_row(run)
    if run_row["stage"] == "accepted":
        raise WrongState(f"run {run!r} is accepted; it can no longer be rolled back")
    repo = env.repo(run_row["repo"])
    with env.write() as w:
        target = w.one("SELECT * FROM checkpoints WHERE run_id = ? AND n = ?", (run, n))
        if target is None:
            raise NotFound(f"run {run!r} has no checkpoint cp-{n}; `planegate status {run}` lists them")
        if target["reverted_at"]:
            raise WrongState(f"checkpoint cp-{n} of run {run!r} was itself rolled back at {target['reverted_at']}")
        later = w.rows(
            "SELECT * FROM checkpoints WHERE run_id = ? AND n > ? AND reverted_at IS NULL ORDER BY n", (run, n)
        )
        current = repo.branch_sha(run_row["integration_branch"])
        if current is None or not repo.update_ref(
            f"refs/heads/{run_row['integration_branch']}", target["sha"], current
        ):
            raise GitError(f"could not move {run_row['integration_branch']!r} to cp-{n}; retry")
        reverted = [c["task_id"] for c in later if c["task_id"]]
        w.execute(
            "UPDATE checkpoints SET reverted_at = ? WHERE run_id = ? AND n > ? AND reverted_at IS NULL", (w.at, run, n)
        )
        undone = set(reverted)
        statuses: dict[str, str] = {}
        for task in reverted:
            deps = json.loads(env.task_row(run, task)["depends_on"])
            waiting = [d for d in deps if d in undone or env.task_row(run, d)["status"] != "accepted"]
            statuses[task] = "blocked" if waiting else "ready"
        for task, status in statuses.items():
            w.execute(
                "UPDATE tasks SET status = ?, accepted_at = NULL, accepted_sha = NULL, merge_sha = NULL,"
                " checkpoint = NULL, updated_at = ? WHERE run_id = ? AND id = ?",
                (status, w.at, run, task),
            )
            w.event(
                "task.acceptance_reverted",
                run=run,
                task=task,
                checkpoint=f"cp-{n}",
                **{"from": "accepted", "to": status},
            )
        marks = placeholders(reverted)
        sql = (
            "SELECT DISTINCT t.id FROM task_edges e JOIN tasks t ON t.run_id = e.run_id AND t.id = e.task_id"
            f" WHERE e.run_id = ? AND t.status = 'ready' AND e.depends_on IN ({marks})"
        )
        for dependent in w.rows(sql, (run, *reverted)) if reverted else []:
            if dependent["id"] not in statuses:
                w.execute("UPDATE tasks SET status = 'blocked' WHERE run_id = ? AND id = ?", (run, dependent["id"]))
                w.event("task.blocked_again", run=run, task=dependent["id"], **{"from": "ready", "to": "blocked"})
        w.event(
            "run.rolled_back",
            run=run,
            checkpoint=f"cp-{n}",
            sha=target["sha"],
            previous_sha=current,
            undone=reverted,
            by=w.actor,
        )
        if run_row["stage"] == "release_review":
            set_stage(w, run_row, "executing", "run.reopened", reason=f"rolled back to cp-{n}")
    return RollbackResult(
        run=run, checkpoint=f"cp-{n}", integration_sha=target["sha"], reverted=reverted, statuses=statuses
    )
