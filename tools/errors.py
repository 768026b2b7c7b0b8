"""planegate's errors: one small tree, each message naming the bad value and the next step.

    PlanegateError                                 disposition (default)
    ├── InvalidInput      a value the caller passed is malformed or inconsistent      bad_input
    ├── NotFound          a run, task, check, review or job that does not exist       bad_input
    ├── WrongState        the run or task is not at a stage/status that allows the   not_ready
    │                     call
    ├── Conflict          another session got there first: a lost compare-and-set, a retryable
    │                     held lease, an overlapping scope, max_parallel reached
    ├── PolicyError       .planegate/policy.toml is malformed (file, line and key     bad_config
    │                     named)
    ├── GitError          a git operation failed (from GitCommandError)               infrastructure
    ├── ExecutionError    an executor or check could not be run                       executor_failed
    ├── ReviewError       a reviewer or the browser bridge failed (from bridge        retryable
    │                     errors)
    └── Busy              the ledger stayed locked by another process (from           retryable
                          StoreBusy)

``GatesUnmet`` (acceptance refused, carrying every unmet gate) also derives from
``PlanegateError`` but lives with the gates' vocabulary in ``gates``, beside ``GateResult``.

Nothing in this tree means "crash": each is an outcome the caller (usually a model) is expected
to read and act on. The MCP surface turns them into tool errors.

Dispositions: every refused call and every job that did not succeed carries one, so that an
orchestrating agent can branch on a word instead of parsing prose (``DISPOSITIONS`` says what
each means and what to do). A class gives the usual one; a raise site that knows better passes
``disposition=`` (a command that cannot be started is ``bad_config``, an executor that ran out of
time is ``timeout``). ``disposition_of`` also reads the errors planegate does not own: SQLite's
and the OS's (through the store's ``LedgerUnavailable``), and the browser bridge's, which this
core module knows by class name because the bridge may not import planegate and the core does
not import the bridge.
"""

from __future__ import annotations

from typing import Literal, get_args

Disposition = Literal[
    "retryable",
    "needs_human",
    "bad_config",
    "bad_input",
    "not_ready",
    "executor_failed",
    "check_failed",
    "timeout",
    "infrastructure",
]

DISPOSITIONS: dict[str, str] = {
    "retryable": "transient: read the current state if the message says so, then call again",
    "needs_human": "a person must act (approve, log in, answer, look at a stuck job): tell the user what the "
    "message asks, then call again",
    "bad_config": "the policy or the machine's setup is wrong (a command, a path, a setting): fix what the message "
    "names, then retry",
    "bad_input": "the arguments are wrong and nothing was done: change them as the message says",
    "not_ready": "the call is right but early: do the step the message names first",
    "executor_failed": "the executor did not finish the work: read its logs, finish the work in the worktree or "
    "dispatch again",
    "check_failed": "a check ran and failed: fix what failed, commit, run_checks again",
    "timeout": "it ran out of time: make it faster or raise the policy's timeout, then run it again",
    "infrastructure": "the machine or planegate itself failed (ledger, disk, git, a bug): tell the user; retrying "
    "will not help until it is fixed",
}
assert set(DISPOSITIONS) == set(get_args(Disposition))


class PlanegateError(Exception):
    """Base of every error planegate reports to its caller."""

    disposition: Disposition = "bad_input"

    def __init__(self, *args: object, disposition: Disposition | None = None) -> None:
        super().__init__(*args)
        if disposition is not None:
            self.disposition = disposition


class InvalidInput(PlanegateError):
    disposition: Disposition = "bad_input"


class NotFound(PlanegateError):
    disposition: Disposition = "bad_input"


class WrongState(PlanegateError):
    disposition: Disposition = "not_ready"


class Conflict(PlanegateError):
    disposition: Disposition = "retryable"


class PolicyError(PlanegateError):
    disposition: Disposition = "bad_config"


class GitError(PlanegateError):
    disposition: Disposition = "infrastructure"


class ExecutionError(PlanegateError):
    disposition: Disposition = "executor_failed"


class ReviewError(PlanegateError):
    disposition: Disposition = "retryable"


class Busy(PlanegateError):
    disposition: Disposition = "retryable"


# The bridge's errors by class name: what each means for whoever waits on the review.
_BRIDGE_DISPOSITIONS: dict[str, Disposition] = {
    "LoggedOut": "needs_human",
    "AccountChooser": "needs_human",
    "CloudflareChallenge": "needs_human",
    "SelectorDrift": "needs_human",
    "OptionNotFound": "bad_config",
    "ModelNotVerified": "bad_config",
    "ProfileError": "bad_config",
    "BrowserNotFound": "bad_config",
    "EndpointUnreachable": "needs_human",
    "UsageCapReached": "retryable",
    "BrowserBusy": "retryable",
    "SendNotCommitted": "retryable",
    "ReplyFailed": "retryable",
    "PromptTruncated": "bad_config",
    "DeadlineExceeded": "timeout",
}


def disposition_of(exc: BaseException) -> Disposition:
    """The disposition of any exception a caller may meet; ``infrastructure`` for the unforeseen.

    An explicit ``disposition=`` at the raise site wins; then the first known cause along the
    ``__cause__`` chain (a bridge error, a command that could not start, an unusable ledger); then
    the class's own.
    """
    explicit = exc.__dict__.get("disposition") if isinstance(exc, PlanegateError) else None
    if explicit is not None:
        return explicit
    seen: set[int] = set()
    cause: BaseException | None = exc.__cause__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        for klass in type(cause).__mro__:
            if klass.__name__ in _BRIDGE_DISPOSITIONS and klass.__module__.startswith("planegate.bridge"):
                return _BRIDGE_DISPOSITIONS[klass.__name__]
        if type(cause).__name__ == "LedgerUnavailable":
            return "infrastructure"
        if isinstance(cause, FileNotFoundError | PermissionError | NotADirectoryError) and isinstance(
            exc, ExecutionError
        ):
            return "bad_config"  # the command could not be started: the policy names something absent
        cause = cause.__cause__
    if isinstance(exc, PlanegateError):
        return exc.disposition
    if type(exc).__name__ == "StoreBusy":
        return "retryable"
    return "infrastructure"
