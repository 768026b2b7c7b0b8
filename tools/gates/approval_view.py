"""What a human is shown before approving a run: the same text in the terminal and in the client.

The diffstat of base..integration head, the tasks (cancelled ones with their reasons), every
requirement amendment since the first freeze with its reason (an amendment can remove a
requirement nobody delivered, so the human must see it), every graph amendment after dispatch
(tasks added, cancelled, changed, with the reason), every policy adopted after the run started
(what it changed, who adopted it), the reviews with their findings, the
risks, the gates, the report's path, and what the approval mode stops and does not stop. Lists
are capped; the report has everything. The text reads no clock, so a client asked the same
question twice sees the same words.
"""

from __future__ import annotations

import json
from typing import Any

from ..control.amend import amendment_lines
from ..env import Env
from ..errors import GitError
from ..gitrepo import GitRepo
from .adopt import adoption_lines
from .approval import Mode
from .gates import GateResult

LIST_LIMIT = 30


MODE_NOTES = {
    "interactive": (
        "Interactive approval: your answer here is the approval. This stops a sandboxed agent "
        "(Codex workspace-write, Claude Code's sandbox), which cannot reach your terminal or your client; "
        "an agent with an unsandboxed shell could fake a terminal or write its own MCP client and answer "
        'for you. For an approval no agent can forge, set [approval] mode = "signed" (README: Security model).'
    ),
    "signed": (
        "Signed approval: your SSH key signs the statement below and planegate tags the integration head "
        "with it. This stops any agent that cannot use your key: a FIDO2 -sk key that needs your touch, or "
        "a key with a passphrase that is not loaded in an ssh-agent the coding agent can reach. A key "
        "without a passphrase in a file the agent can read stops nothing."
    ),
}


def _capped(lines: list[str], more: str = "see the report") -> list[str]:
    if len(lines) <= LIST_LIMIT:
        return lines
    return [*lines[:LIST_LIMIT], f"  … and {len(lines) - LIST_LIMIT} more ({more})"]


def _one_line(text: str | None, limit: int = 160) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _diffstat(repo: GitRepo, base: str, head: str) -> list[str]:
    try:
        out = repo.git("diff", "--stat=100", "--no-color", "--no-ext-diff", base, head, "--")
    except GitError as exc:
        return [f"  (no diffstat: {exc})"]
    lines = [f"  {line.strip()}" for line in out.splitlines() if line.strip()]
    if not lines:
        return ["  (no changes)"]
    return [*_capped(lines[:-1], "see the report"), lines[-1]]


def _amendments(env: Env, run: str) -> list[str]:
    versions = env.store.rows(
        "SELECT version, reason, body, frozen_at FROM requirement_versions WHERE run_id = ? ORDER BY version", (run,)
    )
    lines: list[str] = []
    previous: dict[str, Any] = {}
    for row in versions:
        current = {r["id"]: r for r in json.loads(row["body"])}
        if row["version"] > 1:
            lines.append(f"  version {row['version']} ({row['frozen_at']}), reason: {_one_line(row['reason'])}")
            for rid in sorted(set(previous) - set(current)):
                lines.append(f"    removed {rid}: {_one_line(previous[rid]['statement'])}")
            for rid in sorted(set(current) - set(previous)):
                lines.append(f"    added {rid}: {_one_line(current[rid]['statement'])}")
            for rid in sorted(set(current) & set(previous)):
                if current[rid] != previous[rid]:
                    before, after = previous[rid], current[rid]
                    lines.append(
                        f"    changed {rid}: {_one_line(before['statement'], 80)}"
                        f" -> {_one_line(after['statement'], 80)}"
                    )
                    if before["criteria"] != after["criteria"]:
                        lines.append(
                            f"      criteria {_one_line('; '.join(before['criteria']), 80)} -> "
                            f"{_one_line('; '.join(after['criteria']), 80)}"
                        )
        previous = current
    return lines or ["  none: the requirements are as first frozen"]


def _tasks(tasks: list[dict[str, Any]]) -> list[str]:
    lines = []
    for t in tasks:
        line = f"  {t['status']:<10} {t['id']}: {_one_line(t['title'], 100)}"
        if t["status"] == "cancelled":
            line += f" (reason: {_one_line(t['cancel_reason'])})"
        lines.append(line)
    return _capped(lines) or ["  no tasks"]


def _reviews(env: Env, run: str, tasks: list[dict[str, Any]], head: str) -> list[str]:
    rows = env.store.rows(
        "SELECT id, task_id, reviewer, verdict, head_sha, summary FROM reviews"
        " WHERE run_id = ? AND status = 'completed' ORDER BY created_at DESC, rowid DESC",
        (run,),
    )
    wanted: list[tuple[str | None, str | None]] = [
        (t["id"], t["accepted_sha"]) for t in tasks if t["status"] == "accepted"
    ]
    wanted.append((None, head))
    lines = []
    for task, sha in wanted:
        mine = [r for r in rows if r["task_id"] == task]
        review = next((r for r in mine if r["head_sha"] == sha), mine[0] if mine else None)
        label = f"task {task}" if task else "release"
        if review is None:
            lines.append(f"  {label}: no completed review")
            continue
        lines.append(
            f"  {label}: {review['verdict']} by {review['reviewer']} on {review['head_sha'][:12]} "
            f"({review['id']}): {_one_line(review['summary'], 120)}"
        )
        for f in env.store.rows(
            "SELECT severity, file, line, title FROM findings WHERE review_id = ? ORDER BY idx", (review["id"],)
        ):
            where = f" ({f['file']}{':' + str(f['line']) if f['line'] else ''})" if f["file"] else ""
            lines.append(f"    open finding [{f['severity']}] {_one_line(f['title'], 120)}{where}")
    return _capped(lines)


def _risks(env: Env, run: str) -> list[str]:
    rows = env.store.rows("SELECT kind, task_id, detail FROM risks WHERE run_id = ? ORDER BY id", (run,))
    lines = [f"  {r['kind']}{' on ' + r['task_id'] if r['task_id'] else ''}: {_one_line(r['detail'])}" for r in rows]
    return _capped(lines) or ["  none recorded"]


def _signers(env: Env, run_row: dict[str, Any]) -> list[str]:
    """Who may sign, as committed at the base, and the commit that last changed the file.

    The file at the base is the root of trust: whoever could commit to it before the run started
    decided who may approve, so the human sees the principals and that commit.
    """
    path = env.policy(run_row).approval.allowed_signers
    repo = env.repo(run_row["repo"])
    base = run_row["base_sha"]
    content = repo.show(base, path)
    if content is None:
        return [f"  {path} is not in the base commit {base[:12]}: nobody can sign"]
    principals = [
        line.split()[0]
        for line in content.decode("utf-8", "replace").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    try:
        last = repo.git("log", "-1", "--format=%h %an <%ae> %ad: %s", "--date=short", base, "--", path)
    except GitError as exc:
        last = f"(unknown: {exc})"
    return [
        f"  {path} at base {base[:12]}: {', '.join(_capped(principals)) or 'no keys'}",
        f"  last changed in {_one_line(last, 160)}",
    ]


def describe(
    env: Env,
    run_row: dict[str, Any],
    head: str,
    gates: list[GateResult],
    mode: Mode,
    report: str | None,
) -> str:
    """What the human is approving, as plain text: the same for the terminal and the client.

    Deterministic for one ledger state and head (no clock), so a client asked twice sees the same
    question.
    """
    run = run_row["id"]
    repo = env.repo(run_row["repo"])
    tasks = env.store.rows(
        "SELECT id, title, status, cancel_reason, accepted_sha FROM tasks WHERE run_id = ? ORDER BY seq", (run,)
    )
    sections = [
        f"Run {run}: {_one_line(run_row['goal'], 200)}",
        f"Repository {run_row['repo']}",
        f"Approving {run_row['integration_branch']} at {head} (base {run_row['base_sha'][:12]}), "
        f"requirements version {run_row['requirements_version']}.",
        "",
        MODE_NOTES[mode],
        "",
        f"Changes ({run_row['base_sha'][:12]}..{head[:12]}):",
        *_diffstat(repo, run_row["base_sha"], head),
        "",
        f"Tasks ({len(tasks)}):",
        *_tasks(tasks),
        "",
        "Requirement amendments since the first freeze:",
        *_amendments(env, run),
        "",
        "Graph amendments after dispatch:",
        *([f"  {line}" for line in amendment_lines(env, run, LIST_LIMIT)] or ["  none: the plan is as registered"]),
        "",
        "Policy adopted after the run started:",
        *(
            [f"  {line}" for line in adoption_lines(env, run)]
            or ["  none: the policy is the one committed at the base"]
        ),
        "",
        "Reviews and their open findings:",
        *_reviews(env, run, tasks, head),
        "",
        "Risks:",
        *_risks(env, run),
        "",
        *(
            ["Who may sign (the root of trust of this approval):", *_signers(env, run_row), ""]
            if mode == "signed"
            else []
        ),
        "Gates:",
        *[f"  {'ok  ' if g.ok else 'OPEN'} {g.gate}: {_one_line(g.reason, 200)}" for g in gates],
    ]
    if report:
        sections += ["", f"Report (read it before you approve): {report}"]
    return "\n".join(sections)


def approval_request(
    env: Env, run_row: dict[str, Any], head: str, gates: list[GateResult], report: str | None
) -> tuple[Mode, str]:
    """The mode and the question for the client (elicitation) when human approval is the one open gate."""
    run = run_row["id"]
    mode: Mode = env.policy(run_row).approval.mode
    body = describe(env, run_row, head, gates, mode, report)
    if mode == "signed":
        ask = (
            f"Run {run} needs your signed approval; answering here cannot approve it. To approve, run in your "
            f"own terminal:\n\n    planegate approve {run}\n\nthen tell the agent to call accept_run again."
        )
    else:
        ask = f"Accept run {run} at {head[:12]} into {run_row['integration_branch']}?"
    return mode, f"{ask}\n\n{body}"
