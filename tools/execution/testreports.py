"""The test check's machine-readable report: where it lands, how a run selects tests, and the
cache of reports by git tree id.

The policy's test check (``test_check``) is run like any check, plus a JUnit XML report
(``[tests]`` in the policy). When the check has several steps (build, then test), the **last**
step runs the tests: its argv picks the runner and gets the report options and the test
selection below; the earlier steps run first, unchanged and with the check's plain environment,
and when one fails the tests did not run (the run has no report, and says which step failed):

- ``pytest``: planegate appends ``--junitxml=<path> -o junit_family=xunit1`` to
  ``PYTEST_ADDOPTS`` (so the file attribute gives pytest node ids); the check's argv is not
  touched. A ``--junitxml`` already in the argv is honoured and read instead.
- ``unittest``: ``-m unittest`` runs as ``-m planegate_unittest_junit`` (``unittest_junit``,
  copied to ``PLANEGATE_HOME/support``), the same loading and running plus a report.
- ``junit``: the check writes the report itself: to ``[tests] report`` (relative to the
  worktree), or to the path planegate puts in ``$PLANEGATE_TEST_REPORT`` and in every variable
  named by ``report_env``.

``$PLANEGATE_TEST_REPORT`` is set for every run of the test check. A report outside the worktree
(the default) never dirties it; a report inside must be written by this run (its mtime is
checked) and is copied out as an artifact.

Selecting tests (red→green's run on the base): pytest by node ids appended to the argv (paths the
argv names are dropped when they are surely positional, else the run is only slower); unittest
by ids in ``$PLANEGATE_TEST_SELECT``; other runners by ``[tests] select``, an argv template.
Without a way to select, red→green falls back to the full suite and says so.

A report describes a tree, not a commit: it is cached by ``(repository, tree id, command)``,
so a task branched from an integration head whose tree was already tested (a ``--no-ff`` merge of
a task whose head was tested keeps that head's tree) reuses the report instead of running the
suite again. The cached file is an artifact; its sha256 is checked before it is trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from ..control.artifacts import sha256_file, store_artifact
from ..env import Env
from ..errors import InvalidInput, NotFound
from ..gitrepo import GitRepo
from ..policy import Policy, SuiteSettings
from .checkrun import check_env, run_steps
from .jobs import JobContext
from .junit import JUnitReport, ReportUnreadable, parse_report
from .procs import ProcessResult
from .testchanges import ChangedTest, FileChanges

Runner = Literal["pytest", "unittest", "junit"]
UNITTEST_MODULE = "planegate_unittest_junit"
# pytest options known to take no value: a positional argument right after one of them is a path.
_PYTEST_FLAGS = {
    "--quiet",
    "--verbose",
    "--exitfirst",
    "--showlocals",
    "--lf",
    "--last-failed",
    "--ff",
    "--failed-first",
    "--nf",
    "--new-first",
    "--sw",
    "--stepwise",
    "--strict-markers",
    "--strict-config",
    "--strict",
    "--disable-warnings",
    "--disable-pytest-warnings",
    "--no-header",
    "--no-summary",
    "--runxfail",
    "--doctest-modules",
    "--pyargs",
    "--continue-on-collection-errors",
    "--noconftest",
    "--full-trace",
    "--cache-clear",
    "--setup-show",
    "--no-cov",
}


@dataclass(frozen=True)
class SuiteCheck:
    """The policy's test check and how its report is read."""

    name: str
    argv: tuple[str, ...]
    runner: Runner
    settings: SuiteSettings
    # The steps before the one that runs the tests (build steps), and the worktree bootstrap's
    # fingerprint when the policy has one: a report depends on both.
    before: tuple[tuple[str, ...], ...] = ()
    bootstrap: str = ""

    @property
    def command_sha256(self) -> str:
        """What a cached report depends on besides the tree: the command and how it reports."""
        material: dict[str, object] = {
            "argv": list(self.argv),
            "runner": self.runner,
            "report": self.settings.report,
            "report_env": self.settings.report_env,
        }
        if self.before:
            material["before"] = [list(step) for step in self.before]
        if self.bootstrap:
            material["bootstrap"] = self.bootstrap
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    @property
    def selects(self) -> str | None:
        """How this runner runs only some tests, or None when it cannot."""
        if self.settings.select:
            return "the policy's [tests] select"
        if self.runner == "pytest":
            return "pytest node ids"
        if self.runner == "unittest":
            return "unittest test ids"
        return None


def detect_runner(argv: tuple[str, ...] | list[str]) -> Runner:
    for index, arg in enumerate(argv):
        if PurePosixPath(arg).name in ("pytest", "py.test"):
            return "pytest"
        if arg == "-m" and index + 1 < len(argv):
            if argv[index + 1] == "pytest":
                return "pytest"
            if argv[index + 1] == "unittest":
                return "unittest"
    return "junit"


def suite_check(policy: Policy) -> SuiteCheck | None:
    steps = policy.checks.get(policy.test_check)
    if not steps:
        return None
    argv = steps[-1]
    runner = policy.tests.runner
    return SuiteCheck(
        policy.test_check,
        tuple(argv),
        detect_runner(argv) if runner == "auto" else runner,
        policy.tests,
        before=tuple(tuple(step) for step in steps[:-1]),
        bootstrap=policy.worktree.fingerprint() if policy.worktree.configured else "",
    )


# --- one run of the test check, with its report -------------------------------------------------


@dataclass(frozen=True)
class SuiteRun:
    """How one run of the test check ended, and what its report says (None: no readable report)."""

    label: str
    result: ProcessResult
    report: JUnitReport | None
    report_path: Path | None
    problem: str | None
    selected: bool

    @property
    def logs(self) -> list[Path]:
        return [self.result.stdout_path, self.result.stderr_path, *([self.report_path] if self.report_path else [])]


def _own_junitxml(argv: tuple[str, ...]) -> str | None:
    for index, arg in enumerate(argv):
        for option in ("--junitxml", "--junit-xml"):
            if arg.startswith(option + "="):
                return arg.split("=", 1)[1]
            if arg == option and index + 1 < len(argv):
                return argv[index + 1]
    return None


def _support_dir(env: Env) -> Path:
    """A directory holding only the unittest runner, for PYTHONPATH (written once per content)."""
    source = Path(__file__).with_name("unittest_junit.py")
    data = source.read_bytes()
    folder = env.settings.home / "support" / hashlib.sha256(data).hexdigest()[:16]
    target = folder / f"{UNITTEST_MODULE}.py"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{UNITTEST_MODULE}.{os.getpid()}.{threading.get_ident()}"
        partial.write_bytes(data)
        partial.replace(target)
    return folder


def _unittest_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    out = list(argv)
    for index, arg in enumerate(out):
        if arg == "-m" and index + 1 < len(out) and out[index + 1] == "unittest":
            out[index + 1] = UNITTEST_MODULE
            break
    return tuple(out)


def _takes_no_value(option: str | None) -> bool:
    if option is None or not option.startswith("-") or "=" in option or option in _PYTEST_FLAGS:
        return True
    return not option.startswith("--") and option[1:].isalpha() and set(option[1:]) <= set("qvxsl")


def pytest_select_argv(argv: tuple[str, ...], ids: list[str], cwd: Path) -> list[str] | None:
    """The test check's argv running only ``ids`` (None when the argv does not run pytest itself).

    Paths the argv names are dropped when they are surely positional (right after the pytest
    invocation, a positional or a flag known to take no value); one left in only makes the run
    slower. Nothing stops at a first failure, and a test file failing to import does not stop the
    others."""
    start = None
    for index, arg in enumerate(argv):
        if PurePosixPath(arg).name in ("pytest", "py.test"):
            start = index + 1
            break
    if start is None:
        return None
    out = list(argv[:start])
    previous: str | None = None
    for arg in argv[start:]:
        positional_path = not arg.startswith("-") and ("::" in arg or (cwd / arg).exists())
        if not (positional_path and _takes_no_value(previous)):
            out.append(arg)
        previous = arg
    return [*out, "--maxfail=0", "--continue-on-collection-errors", *ids]


def expand_select(template: list[str], tests: list[ChangedTest], files: list[str]) -> list[str] | None:
    """``[tests] select`` with its placeholders filled; None when a placeholder would be empty."""
    names = sorted({t.name for t in tests})
    ids = sorted({t.id for t in tests})
    pattern = "(" + "|".join(_escape(n) for n in names) + ")"
    out: list[str] = []
    for part in template:
        if part in ("{ids}", "{files}", "{names}"):
            values = {"{ids}": ids, "{files}": files, "{names}": names}[part]
            if not values:
                return None
            out += values
        elif "{pattern}" in part:
            if not names:
                return None
            out.append(part.replace("{pattern}", pattern))
        else:
            out.append(part)
    return out


def _escape(name: str) -> str:
    return "".join("\\" + c if c in r"\.^$|?*+()[]{}" else c for c in name)


def run_test_check(
    ctx: JobContext,
    policy: Policy,
    check: SuiteCheck,
    cwd: Path,
    logs: Path,
    label: str,
    *,
    select: list[FileChanges] | None = None,
    on_tick: Callable[[float], None] | None = None,
    checkout: Path | None = None,
) -> SuiteRun:
    """Run the test check in ``cwd`` (a worktree of ``checkout``; only the tests in ``select`` when
    given and the runner can), with a report; never raises for a missing or broken report
    (``problem`` says what went wrong).

    Raises:
        ExecutionError: the command cannot be started; JobLost from ``on_tick``.
    """
    logs.mkdir(parents=True, exist_ok=True)
    plain = check_env(policy, ctx.run, ctx.task, cwd, checkout)
    env = dict(plain)
    argv = check.argv
    own = _own_junitxml(argv) if check.runner == "pytest" else None
    if check.settings.report:
        report = cwd / check.settings.report
    elif own:
        report = Path(own) if Path(own).is_absolute() else cwd / own
    else:
        report = logs / f"{check.name}.junit.xml"
    env["PLANEGATE_TEST_REPORT"] = str(report)
    for name in check.settings.report_env:
        env[name] = str(report)
    if check.runner == "pytest" and not check.settings.report and not own:
        added = shlex.join([f"--junitxml={report}", "-o", "junit_family=xunit1"])
        env["PYTEST_ADDOPTS"] = f"{env['PYTEST_ADDOPTS']} {added}" if env.get("PYTEST_ADDOPTS") else added
    if check.runner == "unittest":
        argv = _unittest_argv(argv)
        support = str(_support_dir(ctx.env))
        env["PYTHONPATH"] = f"{support}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else support
    selected = False
    if select is not None:
        tests = [t for f in select for t in f.tests]
        files = sorted({f.path for f in select})
        if check.settings.select:
            expanded = expand_select(check.settings.select, tests, files)
            if expanded is not None:
                argv, selected = tuple(expanded), True
        elif check.runner == "pytest":
            ids = [t.id for t in tests] + [f.path for f in select if not f.precise]
            chosen = pytest_select_argv(argv, ids, cwd) if ids else None
            if chosen is not None:
                argv, selected = tuple(chosen), True
        elif check.runner == "unittest":
            listing = logs / "selected-tests.txt"
            listing.write_text("".join(f"{t.id}\n" for t in tests), encoding="utf-8")
            env["PLANEGATE_TEST_SELECT"] = str(listing)
            selected = bool(tests)
    before = report.stat().st_mtime_ns if report.exists() else None
    result = run_steps(
        [*((step, plain) for step in check.before), (argv, env)],
        cwd=cwd,
        timeout_s=policy.check_timeout_s,
        logs=logs,
        name=check.name,
        on_tick=on_tick or (lambda elapsed: ctx.heartbeat(f"{label}: running for {elapsed:.0f} s")),
    )
    if result.failed_step is not None and result.failed_step <= len(check.before):
        step = " ".join(check.before[result.failed_step - 1])
        how = "timed out" if result.timed_out else f"failed (exit {result.exit_code})"
        problem = f"step {result.failed_step} of {len(check.before) + 1} ({step}) {how} before the tests ran"
        return SuiteRun(label, result, None, None, problem, selected)
    if result.timed_out:
        return SuiteRun(label, result, None, None, f"{check.name} timed out after {result.duration_s:.0f} s", selected)
    try:
        if before is not None and report.stat().st_mtime_ns == before:
            raise ReportUnreadable(f"the report at {report} was not rewritten by this run")
        parsed = parse_report(report)
    except ReportUnreadable as exc:
        return SuiteRun(label, result, None, None, _report_hint(check, str(exc)), selected)
    kept = report
    if not report.is_relative_to(logs):
        kept = logs / f"{check.name}.junit.xml"
        shutil.copyfile(report, kept)
    return SuiteRun(label, result, parsed, kept, None, selected)


def _report_hint(check: SuiteCheck, problem: str) -> str:
    if check.runner == "junit" and not check.settings.report:
        return (
            f"{problem}; the test check ({' '.join(check.argv)}) must write JUnit XML to $PLANEGATE_TEST_REPORT, "
            "or set [tests] report / report_env (or runner) in .planegate/policy.toml"
        )
    return problem


# --- the cache of reports by tree ---------------------------------------------------------------


@dataclass(frozen=True)
class CachedReport:
    id: int
    tree: str
    commit: str
    path: Path
    report: JUnitReport
    source: str


_locks_guard = threading.Lock()
_locks: dict[tuple[str, str, str], threading.Lock] = {}


def tree_lock(repo: GitRepo, tree: str, command: str) -> threading.Lock:
    """One lock per (repository, tree, command) in this process: concurrent jobs wanting the same
    base report run the suite once."""
    key = (str(repo.root), tree, command)
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def tree_of(repo: GitRepo, *commits: str) -> list[str]:
    """The tree ids of ``commits``, in one git call."""
    for commit in commits:
        if not commit or not all(c in "0123456789abcdef" for c in commit):
            raise InvalidInput(f"commit {commit!r} is not a full commit id")
    out = repo.git("rev-parse", *(f"{c}^{{tree}}" for c in commits))
    return out.split()


def cached_report(env: Env, repo: GitRepo, tree: str, command: str) -> CachedReport | None:
    """The newest cached report for ``tree`` whose row its event vouches for and whose file still has its
    recorded sha256 (a forged cache row could otherwise make a base look greener than it was)."""
    rows = env.store.rows(
        "SELECT * FROM test_reports WHERE repo = ? AND tree = ? AND command_sha256 = ? ORDER BY id DESC LIMIT 3",
        (str(repo.root), tree, command),
    )
    for row in rows:
        if env.store.check_row("test_reports", row) is not None:
            continue
        path = Path(row["path"])
        try:
            if sha256_file(path) != row["sha256"]:
                continue
            report = parse_report(path)
        except (NotFound, ReportUnreadable):
            continue
        task = f" task {row['task_id']}" if row["task_id"] else ""
        source = f"run {row['run_id']}{task} job {row['job_id']}"
        return CachedReport(row["id"], tree, row["commit_sha"], path, report, source)
    return None


def store_report(ctx: JobContext, repo: GitRepo, tree: str, command: str, commit: str, run: SuiteRun) -> int | None:
    """Cache a run's report under its tree; None when there is nothing trustworthy to cache."""
    if run.report is None or run.report_path is None or run.selected or run.result.timed_out:
        return None
    counts = run.report.counts()
    env = ctx.env
    with env.write(actor=f"worker:{ctx.worker}") as w:
        artifact = store_artifact(
            w, env, run=ctx.run, task=ctx.task, owner=f"test_report:{tree[:12]}", source=run.report_path
        )
        report_id = w.insert(
            "test_reports",
            {
                "repo": str(repo.root),
                "tree": tree,
                "command_sha256": command,
                "commit_sha": commit,
                "run_id": ctx.run,
                "task_id": ctx.task,
                "job_id": ctx.job["id"],
                "path": artifact.path,
                "sha256": artifact.sha256,
                **counts,
                "exit_code": run.result.exit_code,
                "duration_ms": int(run.result.duration_s * 1000),
                "created_at": w.at,
            },
        )
        w.event(
            "tests.report_cached",
            run=ctx.run,
            task=ctx.task,
            report=report_id,
            tree=tree,
            commit=commit,
            command_sha256=command,
            sha256=artifact.sha256,
            job=ctx.job["id"],
            **counts,
        )
    return report_id


def wait_for(lock: threading.Lock, beat: Callable[[], None]) -> None:
    """Take ``lock``, heartbeating while another job holds it."""
    while not lock.acquire(timeout=1.0):
        beat()
