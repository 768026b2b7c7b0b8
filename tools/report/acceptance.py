"""Accepting a whole run and writing its report: the release rules first, then the record people read.

The run gates and the acceptance record live with the gates (``release``); the report is a view
of the ledger (``report``). Accepting a run is the one place that needs both, so it sits above
them: the stage moves to ``accepted`` only when every run gate holds, and the report is written
from the same gates right after. Then the accepted tasks' worktrees and their merged branches are
removed (``gc.cleanup_accepted``; the policy's ``retain_worktrees``/``retain_branches`` keep them).
"""

from __future__ import annotations

from ..env import Env
from ..errors import GitError, InvalidInput
from ..execution.gc import cleanup_accepted
from ..gates.release import accept_run as record_acceptance
from ..models import AcceptRunResult, GateLine
from .activity import publish_step
from .report import write_report


def accept_run(env: Env, run: str) -> AcceptRunResult:
    """Accept the run when every run gate holds, then write report.md, report.html and graph.svg.

    Raises:
        WrongState: the run is already accepted or abandoned.
        GatesUnmet: one or more run gates do not hold (nothing changed, no report written).
    """
    run_row, gates = record_acceptance(env, run)
    files = write_report(env, run, run_gates=gates)
    branch = run_row["integration_branch"]
    try:
        cleaned = [a.line() for a in cleanup_accepted(env, run)]
    except (GitError, InvalidInput) as exc:  # the run is accepted whatever happens to its leftovers
        cleaned = [f"cleanup stopped: {exc}; `planegate gc` finishes it"]
    return AcceptRunResult(
        run=run,
        stage="accepted",
        integration_sha=run_row["integration_sha"],
        integration_branch=branch,
        gates=[GateLine(gate=g.gate, ok=g.ok, reason=g.reason, next_step=g.next_step) for g in gates],
        report=str(files.markdown),
        report_html=str(files.html),
        cleaned=cleaned,
        next_step=publish_step(env, env.run_row(run)),
    )
