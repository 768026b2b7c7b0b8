"""The task envelope: everything a worker needs to do one task, and nothing it may not change.

Written as ``.planegate-task.md`` into the task's worktree (kept out of every diff through the
repository's shared ``info/exclude``) and served as ``planegate://runs/{run}/tasks/{task}``. It is
rendered from the ledger, so the file and the resource always agree.
"""

from __future__ import annotations

import json
from typing import Any

from .. import globs
from ..control.runs import current_architecture, current_requirements
from ..env import Env
from ..policy import command_text

ENVELOPE_NAME = ".planegate-task.md"


def _owning_modules(scope: list[str], architecture: dict[str, Any] | None) -> list[dict[str, Any]]:
    if architecture is None:
        return []
    return [m for m in architecture["modules"] if any(globs.glob_overlap(s, o) for s in scope for o in m["owns"])]


def render_envelope(env: Env, run: str, task: str) -> str:
    run_row = env.run_row(run)
    row = env.task_row(run, task)
    policy = env.policy(run_row)
    requirements = current_requirements(env, run)
    architecture = current_architecture(env, run)
    scope = json.loads(row["scope"])
    served = json.loads(row["requirements"])
    depends = json.loads(row["depends_on"])
    acceptance = json.loads(row["acceptance"])
    lines = [
        f"# Task {task}: {row['title']}",
        "",
        f"Run `{run}` — {run_row['goal']}",
        "",
        "## Goal",
        "",
        row["goal"],
        "",
        f"## Requirements it serves (frozen, version {run_row['requirements_version']})",
        "",
    ]
    for rid in served:
        req = requirements.get(rid)
        if req is None:
            lines.append(f"- {rid}: (no longer frozen; ask the orchestrator)")
            continue
        lines.append(f"- **{rid}**: {req['statement']}")
        lines += [f"  - [ ] {criterion}" for criterion in req["criteria"]]
    if acceptance:
        lines += ["", "## Acceptance notes", ""] + [f"- {note}" for note in acceptance]
    modules = _owning_modules(scope, architecture)
    if modules or (architecture and architecture.get("decisions")):
        lines += ["", "## Architecture slice", ""]
        for module in modules:
            deps = f"; depends on {', '.join(module['depends_on'])}" if module["depends_on"] else ""
            lines.append(f"- module **{module['name']}** owns {', '.join(f'`{g}`' for g in module['owns'])}{deps}")
        for decision in (architecture or {}).get("decisions", []):
            why = f" ({decision['rationale']})" if decision.get("rationale") else ""
            lines.append(f"- decision: **{decision['title']}**: {decision['decision']}{why}")
    lines += [
        "",
        "## Scope",
        "",
        "You may change only: " + ", ".join(f"`{g}`" for g in scope),
        "Tests may also go in: " + ", ".join(f"`{g}`" for g in policy.test_paths),
        "Never change: " + ", ".join(f"`{g}`" for g in policy.denied),
    ]
    if policy.allowed_extensions:
        lines.append("Allowed file types: " + ", ".join(policy.allowed_extensions))
    if depends:
        lines.append("Builds on (already accepted): " + ", ".join(depends))
    lines += ["", "## Checks the server runs on your head commit", ""]
    required = set(policy.required)
    for name, steps in policy.checks.items():
        lines.append(f"- `{name}`: `{command_text(steps)}`" + (" (required)" if name in required else ""))
    if not policy.checks:
        lines.append("- none configured (the checks gate stays unmet until the policy defines one)")
    if policy.require_red_green:
        lines.append(
            f"- red→green: when you change runtime code, your new or changed tests must fail on the base commit "
            f"and pass on yours (check `{policy.test_check}`)"
        )
    lines += [
        "",
        "## Budget",
        "",
        f"At most {policy.max_files} changed files and {policy.max_changed_lines} changed lines (added + deleted).",
        "",
        "## How to finish",
        "",
        f"1. Work only in this worktree, on branch `{row['branch']}`; commit your changes there.",
        "   This file is ignored by git; do not commit secrets.",
        f"2. `run_checks(run={run!r}, task={task!r})`: the server runs the checks on your head commit.",
        "   Evidence you report yourself (`record_evidence`) is shown, never counted.",
    ]
    if policy.require_review:
        lines.append(f"3. `request_review(run={run!r}, task={task!r})`, then `get_review(...)` until it is done;")
        lines.append("   on `request_changes`: fix, commit, run_checks, request_review again.")
    lines.append(
        f"{4 if policy.require_review else 3}. `accept_task(run={run!r}, task={task!r})` merges it when every "
        "gate holds; otherwise it lists each unmet gate and what to do."
    )
    return "\n".join(lines) + "\n"
