"""planegate's errors: one small tree, each message naming the bad value and the next step.

    PlanegateError
    ├── InvalidInput      a value the caller passed is malformed or inconsistent
    ├── NotFound          a run, task, check, review or job that does not exist
    ├── WrongState        the run or task is not at a stage/status that allows the call
    ├── Conflict          another session got there first: a lost compare-and-set, a held
    │                     lease, an overlapping scope, max_parallel reached
    ├── GatesUnmet        acceptance refused; carries every unmet gate
    ├── PolicyError       .planegate/policy.toml is malformed (file, line and key named)
    ├── GitError          a git operation failed (from GitCommandError)
    ├── ExecutionError    an executor or check could not be run
    ├── ReviewError       a reviewer or the browser bridge failed (from bridge errors)
    └── Busy              the ledger stayed locked by another process (from StoreBusy)

Nothing in this tree means "crash": each is an outcome the caller (usually a model) is expected
to read and act on. The MCP surface turns them into tool errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .gates import GateResult


class PlanegateError(Exception):
    """Base of every error planegate reports to its caller."""


class InvalidInput(PlanegateError):
    pass


class NotFound(PlanegateError):
    pass


class WrongState(PlanegateError):
    pass


class Conflict(PlanegateError):
    pass


class PolicyError(PlanegateError):
    pass


class GitError(PlanegateError):
    pass


class ExecutionError(PlanegateError):
    pass


class ReviewError(PlanegateError):
    pass


class Busy(PlanegateError):
    pass


class GatesUnmet(PlanegateError):
    """Acceptance was refused; ``unmet`` lists every gate that does not hold."""

    def __init__(self, subject: str, unmet: Sequence[GateResult]) -> None:
        self.unmet = list(unmet)
        lines = [f"{subject}: {len(self.unmet)} gate(s) unmet, nothing was merged or changed:"]
        lines += [f"- {g.gate}: {g.reason} Next: {g.next_step}" for g in self.unmet]
        super().__init__("\n".join(lines))
