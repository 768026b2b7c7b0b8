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


def print_stats(env: Any, run: str | None, console: Console | None = None) -> None:
    """Run metrics as tables: every run in one line, or one run's tasks phase by phase."""
    from planegate.tools.report.stats import PHASE_TITLES, PHASES, all_run_stats, duration, run_stats

    console = console or Console()
    if run is None:
        runs = all_run_stats(env.store)
        table = Table(title=f"planegate run metrics ({len(runs)} newest)", title_justify="left")
        for column in ("run", "stage", "tasks", "wall", "executor", "checks", "review wait", "retries", "refusals"):
            table.add_column(column, overflow="fold")
        for stats in runs:
            table.add_row(
                stats.run,
                stats.stage,
                str(len(stats.tasks)),
                duration(stats.wall_s),
                duration(stats.totals["executor"]),
                duration(stats.totals["checks"]),
                duration(stats.review_latency.median_s) + (" median" if stats.review_latency.count else ""),
                str(stats.retries),
                str(stats.refused_calls),
            )
        console.print(table)
        console.print("one run phase by phase: planegate stats RUN; as JSON: --json")
        return
    stats = run_stats(env.store, run)
    wall = duration(stats.wall_s) if stats.ended_at else f"not finished (started {stats.started_at})"
    console.print(f"[bold]run {stats.run}[/bold]  stage [bold]{stats.stage}[/bold]  wall {wall}")
    table = Table(title="time per phase per task", title_justify="left")
    for column in ("task", "status", *(PHASE_TITLES[p] for p in PHASES), "retries", "refused by"):
        table.add_column(column, overflow="fold")
    for task in stats.tasks:
        refused = ", ".join(f"{gate} ×{n}" for gate, n in sorted(task.refusals.items())) or "-"
        phases = [duration(task.phases.get(p)) for p in PHASES]
        table.add_row(task.task, task.status, *phases, str(task.retries), refused)
    table.add_row("[bold]all[/bold]", "", *(duration(stats.totals[p]) for p in PHASES), str(stats.retries), "")
    console.print(table)
    latency = stats.review_latency
    if latency.count:
        console.print(
            f"review latency: {latency.count} review(s), median {duration(latency.median_s)}, "
            f"p90 {duration(latency.p90_s)}, max {duration(latency.max_s)}"
            + (f"; {latency.open} still open" if latency.open else "")
        )
    else:
        console.print("review latency: no review answered yet" + (f" ({latency.open} open)" if latency.open else ""))
    refusals = ", ".join(f"{gate} ×{n}" for gate, n in stats.refusals.items())
    console.print(f"gate refusals: {stats.refused_calls} refused call(s)" + (f" ({refusals})" if refusals else ""))
    if stats.release:
        release = ", ".join(f"{name.replace('_', ' ')} {duration(s)}" for name, s in sorted(stats.release.items()))
        console.print(f"whole run: {release}")
    jobs = "; ".join(
        f"{kind}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items())) for kind, c in stats.jobs.items()
    )
    console.print(f"jobs: {jobs or 'none'}")
    if stats.dispositions:
        console.print("failures: " + ", ".join(f"{n} {d}" for d, n in stats.dispositions.items()))
