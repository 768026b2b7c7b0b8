"""Markdown views of the ledger: the runs, one run (with a mermaid task graph), its events.

These back the MCP resources and the report; they only read.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..env import Env
from .status import get_status

MERMAID_LIMIT = 150
STATUS_CLASS = {
    "blocked": "fill:#eee,stroke:#999",
    "ready": "fill:#e8f0fe,stroke:#4a7bd0",
    "in_progress": "fill:#fff4d6,stroke:#c99a00",
    "in_review": "fill:#fde7f3,stroke:#b0407f",
    "changes_requested": "fill:#ffe0d6,stroke:#c0502b",
    "approved": "fill:#e3f6e3,stroke:#3c9a3c",
    "accepted": "fill:#c8eec8,stroke:#2d7a2d",
    "cancelled": "fill:#f3f3f3,stroke:#bbb,stroke-dasharray: 4 2",
}


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def runs_markdown(env: Env) -> str:
    result = get_status(env)
    lines = [f"# planegate runs ({result.runs_total})", ""]
    if not result.runs:
        return "\n".join([*lines, "No runs yet. Call start_run(repo, goal)."])
    lines += ["| run | stage | tasks | goal | created |", "|---|---|---|---|---|"]
    lines += [f"| {r.run} | {r.stage} | {r.tasks} | {_cell(r.goal)} | {r.created_at} |" for r in result.runs or []]
    return "\n".join(lines) + "\n"


def _node(task_id: str) -> str:
    return "t_" + re.sub(r"[^A-Za-z0-9_]", "_", task_id)


def mermaid_graph(tasks: list[dict[str, Any]]) -> str:
    """A ``graph TD`` of the tasks (dependency → dependent), coloured by status."""
    shown = tasks[:MERMAID_LIMIT]
    names = {t["id"] for t in shown}
    lines = ["graph TD"]
    for task in shown:
        label = f"{task['id']}<br/>{task['status']}".replace('"', "'")
        lines.append(f'  {_node(task["id"])}["{label}"]:::{task["status"]}')
    for task in shown:
        for dep in json.loads(task["depends_on"]):
            if dep in names:
                lines.append(f"  {_node(dep)} --> {_node(task['id'])}")
    lines += [f"  classDef {status} {style}" for status, style in STATUS_CLASS.items()]
    if len(tasks) > len(shown):
        lines.append(f'  more["… {len(tasks) - len(shown)} more tasks"]')
    return "\n".join(lines)


def run_markdown(env: Env, run: str) -> str:
    status = get_status(env, run)
    s = status.status
    assert s is not None
    tasks = env.store.rows(
        "SELECT id, title, status, wave, depends_on FROM tasks WHERE run_id = ? ORDER BY seq LIMIT ?",
        (run, MERMAID_LIMIT + 1),
    )
    lines = [
        f"# Run {s.run}: {s.stage}",
        "",
        f"**Goal:** {s.goal}",
        "",
        f"- repository: `{s.repo}`",
        f"- base: `{s.base_sha[:12]}`; integration branch: `{s.integration_branch}`",
        "- tasks: " + (", ".join(f"{n} {k}" for k, n in sorted(s.counts.items())) or "none registered"),
        f"- **next:** `{status.next_action}`",
        "",
    ]
    if tasks:
        lines += ["## Task graph", "", "```mermaid", mermaid_graph(tasks), "```", ""]
    if s.active:
        lines += ["## Active tasks", "", "| task | status | lease | evidence | unmet gates |", "|---|---|---|---|---|"]
        for task in s.active:
            evidence = ", ".join(
                f"{e.kind}:{e.label}{'(stale)' if e.stale else ''}={e.exit_code}" for e in task.evidence
            )
            unmet = ", ".join(g.gate for g in task.gates if not g.ok)
            lease = (task.lease_expires or "") + (" (expired)" if task.lease_expired else "")
            lines.append(f"| {task.task} | {task.status} | {lease} | {evidence} | {unmet} |")
        lines.append("")
    if s.blocked:
        lines += ["## Blocked", ""] + [f"- {b.task}: {b.reason}" for b in s.blocked] + [""]
    if s.risks:
        lines += ["## Risks", ""] + [f"- {_cell(r)}" for r in s.risks] + [""]
    return "\n".join(lines)


def events_markdown(env: Env, run: str, limit: int = 100) -> str:
    env.run_row(run)
    rows = env.store.rows(
        "SELECT id, task_id, kind, actor, at, payload, hash FROM events WHERE run_id = ? ORDER BY id DESC LIMIT ?",
        (run, limit),
    )
    lines = [
        f"# Events of run {run} (newest first, up to {limit})",
        "",
        "| # | at | actor | kind | task | detail |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        payload = row["payload"]
        detail = payload if len(payload) <= 160 else payload[:159] + "…"
        lines.append(
            f"| {row['id']} | {row['at']} | {_cell(row['actor'])} | {row['kind']} | {row['task_id'] or ''} |"
            f" `{_cell(detail)}` |"
        )
    return "\n".join(lines) + "\n"
