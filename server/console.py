"""Terminal rendering of status for the CLI (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_status(env: Any, run: str | None, console: Console | None = None, *, include_abandoned: bool = False) -> None:
    from planegate.tools.report.status import get_status

    console = console or Console()
    result = get_status(env, run, include_abandoned, measure_disk=True)
    if result.runs is not None:
        table = Table(title=f"planegate runs ({result.runs_total})", title_justify="left")
        for column in ("run", "stage", "tasks", "created", "goal"):
            table.add_column(column, overflow="fold")
        for line in result.runs:
            table.add_row(line.run, line.stage, str(line.tasks), line.created_at, line.goal)
        console.print(table)
        if result.runs_hidden:
            console.print(f"{result.runs_hidden} abandoned run(s) hidden; `planegate status --all` lists them")
        if result.workers:
            console.print(f"[yellow]workers:[/yellow] {result.workers}")
        console.print(f"next: {result.next_action}")
        return
    status = result.status
    assert status is not None
    console.print(f"[bold]run {status.run}[/bold]  stage [bold]{status.stage}[/bold]")
    console.print(f"goal: {status.goal}")
    console.print(f"repo: {status.repo}  base {status.base_sha[:12]}  integration {status.integration_branch}")
    counts = ", ".join(f"{n} {k}" for k, n in sorted(status.counts.items())) or "no tasks registered"
    console.print(f"tasks: {counts}")
    if status.disk:
        console.print(f"worktrees on disk: {status.disk}")
    if status.active:
        table = Table(title="active tasks", title_justify="left")
        for column in ("task", "status", "lease", "evidence", "unmet gates"):
            table.add_column(column, overflow="fold")
        for task in status.active:
            evidence = ", ".join(
                f"{e.kind}:{e.label}{' stale' if e.stale else ''}={e.exit_code}" for e in task.evidence
            )
            unmet = ", ".join(f"{g.gate}" for g in task.gates) or ("-" if task.met else "")
            lease = (task.lease_expires or "") + (" EXPIRED" if task.lease_expired else "")
            table.add_row(task.task, task.status, lease, evidence, unmet)
        console.print(table)
    if status.ready:
        more = status.more.get("ready", 0)
        console.print("ready: " + ", ".join(status.ready) + (f" (+{more} more)" if more else ""))
    for blocked in status.blocked:
        console.print(f"blocked: {blocked.task}: {blocked.reason}")
    for risk in status.risks:
        console.print(f"[yellow]risk:[/yellow] {risk}")
    if result.workers:
        console.print(f"[yellow]workers:[/yellow] {result.workers}")
    console.print(f"next: {result.next_action}")
