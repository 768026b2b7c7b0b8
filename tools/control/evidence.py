"""Evidence: what the server proved (``direct``) and what an agent reported (``local``, ``proxy``,
``blocked``).

Only ``direct`` evidence, made by the server's own run of a check on a commit, counts for a gate;
reported evidence is stored and shown, never counted. Every piece of evidence is bound to the
head commit it was made on (``direct`` also to the diff's sha256), so a later commit makes it
stale. Artifacts are copied into ``PLANEGATE_HOME/artifacts`` with their sha256 (``ledger
verify`` re-hashes them); a client-given artifact path must resolve inside the task's worktree.

When an agent reported that a check passed and the server's own run of that check on the same
commit failed, a misalignment is recorded on the task (an event and a risk).
"""

from __future__ import annotations

from pathlib import Path

from planegate.store import Writer

from ..env import Env
from ..errors import InvalidInput, WrongState
from ..models import ACTIVE_STATUSES, EvidenceResult
from .artifacts import store_artifact
from .tasks import renew_lease

MAX_ARTIFACTS = 20
MAX_ARTIFACT_BYTES = 50 * 1024 * 1024


def _artifact_sources(worktree: Path, paths: list[str]) -> list[Path]:
    if len(paths) > MAX_ARTIFACTS:
        raise InvalidInput(f"{len(paths)} artifacts given; attach at most {MAX_ARTIFACTS}")
    root = worktree.resolve()
    sources = []
    for given in paths:
        candidate = Path(given)
        resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
        if not resolved.is_relative_to(root):
            raise InvalidInput(
                f"artifact {given!r} resolves to {str(resolved)!r}, outside the task's worktree {str(root)!r}; "
                "attach files from inside the worktree"
            )
        if not resolved.is_file():
            raise InvalidInput(f"artifact {given!r} is not a file in the worktree; check the path")
        size = resolved.stat().st_size
        if size > MAX_ARTIFACT_BYTES:
            raise InvalidInput(
                f"artifact {given!r} is {size} bytes; attach at most {MAX_ARTIFACT_BYTES // (1024 * 1024)} MiB "
                "(an excerpt of a log is enough)"
            )
        sources.append(resolved)
    return sources


def record_misalignment(w: Writer, run: str, task: str, kind: str, head_sha: str, detail: str) -> None:
    event_id = w.event("task.misalignment", run=run, task=task, check=kind, head_sha=head_sha, detail=detail)
    w.insert(
        "risks",
        {
            "run_id": run,
            "task_id": task,
            "kind": "misalignment",
            "detail": detail,
            "event_id": event_id,
            "created_at": w.at,
        },
    )


def check_claims(w: Writer, run: str, task: str, kind: str, head_sha: str | None) -> None:
    """Record a misalignment when reported success and the server's run disagree on one commit."""
    if head_sha is None:
        return
    rows = w.rows(
        "SELECT id, label, exit_code FROM evidence WHERE run_id = ? AND task_id = ? AND kind = ? AND head_sha = ?"
        " ORDER BY id",
        (run, task, kind, head_sha),
    )
    direct_failures = [r for r in rows if r["label"] == "direct" and r["exit_code"] not in (0, None)]
    claims = [r for r in rows if r["label"] in ("local", "proxy") and r["exit_code"] == 0]
    if direct_failures and claims:
        already = w.scalar(
            "SELECT COUNT(*) FROM risks WHERE run_id = ? AND task_id = ? AND kind = 'misalignment' AND detail LIKE ?",
            (run, task, f"%{kind}%{head_sha[:12]}%"),
        )
        if not already:
            record_misalignment(
                w,
                run,
                task,
                kind,
                head_sha,
                f"reported evidence {claims[-1]['id']} says check {kind!r} passed on {head_sha[:12]}, but the "
                f"server's run (evidence {direct_failures[-1]['id']}) exited {direct_failures[-1]['exit_code']}",
            )


def record_evidence(
    env: Env,
    run: str,
    task: str,
    kind: str,
    label: str,
    summary: str,
    command: str | None = None,
    exit_code: int | None = None,
    artifacts: list[str] | None = None,
) -> EvidenceResult:
    """Store evidence an agent reports about a task; shown in status, never counted by a gate.

    Raises:
        InvalidInput: ``direct`` or an unknown label, an empty summary or kind, an artifact
            outside the worktree or missing.
        WrongState: the task has no worktree (not dispatched yet).
    """
    if label == "direct":
        raise InvalidInput("label 'direct' is reserved for the server's own runs; call run_checks instead")
    if label not in ("local", "proxy", "blocked"):
        raise InvalidInput(f"label {label!r} is unknown; use local (you ran it), proxy (indirect) or blocked")
    kind = kind.strip()
    if not kind or len(kind) > 64 or "\n" in kind:
        raise InvalidInput(f"kind {kind!r} must be a short name such as 'test' or 'manual-check'")
    if not summary.strip():
        raise InvalidInput("summary is empty; say what was run and what it showed")
    row = env.task_row(run, task)
    if row["status"] not in ACTIVE_STATUSES or not row["worktree"]:
        raise WrongState(f"task {task!r} is {row['status']}; evidence is recorded for dispatched tasks only")
    sources = _artifact_sources(Path(row["worktree"]), artifacts or [])
    run_row = env.run_row(run)
    head_sha = env.repo(run_row["repo"]).branch_sha(row["branch"])
    policy = env.policy(run_row)
    with env.write() as w:
        evidence_id = w.insert(
            "evidence",
            {
                "run_id": run,
                "task_id": task,
                "kind": kind,
                "label": label,
                "summary": summary.strip()[:4000],
                "command": command,
                "exit_code": exit_code,
                "head_sha": head_sha,
                "created_at": w.at,
            },
        )
        lines = [
            store_artifact(w, env, run=run, task=task, owner=f"evidence:{evidence_id}", source=source)
            for source in sources
        ]
        w.event(
            "evidence.reported",
            run=run,
            task=task,
            evidence=evidence_id,
            kind=kind,
            label=label,
            exit_code=exit_code,
            head_sha=head_sha,
            artifacts={a.name: a.sha256 for a in lines},
        )
        check_claims(w, run, task, kind, head_sha)
        renew_lease(w, env, run, task, row, policy)
    return EvidenceResult(
        id=evidence_id,
        run=run,
        task=task,
        kind=kind,
        label=label,  # type: ignore[arg-type]
        head_sha=head_sha,
        artifacts=lines,
        counted=False,
        next_step=f"reported evidence is shown, never counted; run_checks(run={run!r}, task={task!r}) "
        "makes evidence the gates count",
    )
