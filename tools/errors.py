"""planegate's errors: one small tree, each message naming the bad value and the next step.

    PlanegateError
    ├── InvalidInput      a value the caller passed is malformed or inconsistent
    ├── NotFound          a run, task, check, review or job that does not exist
    ├── WrongState        the run or task is not at a stage/status that allows the call
    ├── Conflict          another session got there first: a lost compare-and-set, a held
    │                     lease, an overlapping scope, max_parallel reached
    ├── PolicyError       .planegate/policy.toml is malformed (file, line and key named)
    ├── GitError          a git operation failed (from GitCommandError)
    ├── ExecutionError    an executor or check could not be run
    ├── ReviewError       a reviewer or the browser bridge failed (from bridge errors)
    └── Busy              the ledger stayed locked by another process (from StoreBusy)

``GatesUnmet`` (acceptance refused, carrying every unmet gate) also derives from
``PlanegateError`` but lives with the gates' vocabulary in ``gates``, beside ``GateResult``.

Nothing in this tree means "crash": each is an outcome the caller (usually a model) is expected
to read and act on. The MCP surface turns them into tool errors.
"""

from __future__ import annotations


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
