"""Early feedback: the gates a diff alone decides, and the one call that moves a task or run on.

The diff gates (``DIFF_GATES``: scope with deny paths and symlinks, budget, secrets, and tests
with its harness declarations and test integrity) depend only on the change, the plan and the
checks' own evidence, so ``run_checks`` reports them with its results and ``request_review``
refuses while one is unmet: no review is spent on a change that cannot be accepted.

``task_next_step`` and ``run_next_step`` name the call that would be accepted now, read from the
same gate evaluation ``accept_*`` enforces: the first unmet gate's next step, or the acceptance
itself when every gate holds. A step only a human can take says so.
"""

from __future__ import annotations

import re
from typing import Any

from ..env import Env
from .facts import evaluate_task
from .gates import GateResult
from .release import evaluate_run

DIFF_GATES = ("scope", "budget", "secrets", "tests")
_NAMES_A_CALL = re.compile(r"\b[a-z_]+\(")
PURE_DIFF_GATES = ("scope", "budget", "secrets")  # need no evidence from the checks themselves


def unmet_diff_gates(gates: list[GateResult], *, pure_only: bool = False) -> list[GateResult]:
    wanted = PURE_DIFF_GATES if pure_only else DIFF_GATES
    return [g for g in gates if g.gate in wanted and not g.ok]


def refusal_lines(gates: list[GateResult]) -> str:
    return " ".join(f"[{g.gate}] {g.reason} Next: {g.next_step}" for g in gates)


def with_call(step: str, run: str, task: str) -> str:
    """A gate's next step, ending in the call that follows the work it asks for (``run_checks``:
    any new commit needs the checks again) when it names none."""
    if _NAMES_A_CALL.search(step):
        return step
    return f"{step}; then run_checks(run={run!r}, task={task!r})"


def gate_step(gate: GateResult, run: str, task: str) -> str:
    """What to do about one unmet task gate: work and a call, or a human's part said as such."""
    if gate.gate == "ledger":
        return f"human only: {gate.next_step}"
    if gate.gate == "merge" and "changes nothing" in gate.reason:
        return f"commit the work on the task branch, then run_checks(run={run!r}, task={task!r})"
    return with_call(gate.next_step, run, task)


def task_next_step(run: str, task: str, gates: list[GateResult]) -> str:
    """The call that moves a dispatched task on, from its gates (the ledger gate last: a human's)."""
    unmet = [g for g in gates if not g.ok]
    for gate in [*(g for g in unmet if g.gate != "ledger"), *(g for g in unmet if g.gate == "ledger")]:
        return gate_step(gate, run, task)
    return f"accept_task(run={run!r}, task={task!r})"


def evaluate_task_now(env: Env, run: str, task: str) -> tuple[Any, list[GateResult]]:
    """Facts and gates of a task as ``get_status`` shows them (no live worktree reads)."""
    run_row = env.run_row(run)
    return evaluate_task(env, run_row, env.task_row(run, task), live=False)


def run_next_step(env: Env, run: str) -> str:
    """The call that moves a run with every task accepted or cancelled towards acceptance."""
    _, gates = evaluate_run(env, run)
    unmet = next((g for g in gates if not g.ok), None)
    if unmet is None:
        return f"accept_run(run={run!r})"
    if unmet.gate == "tasks":
        return f"get_status({run!r}): it names the call for each open task"
    if unmet.gate == "human_approval":
        return f"human only: {unmet.next_step}; then accept_run(run={run!r})"
    return unmet.next_step
