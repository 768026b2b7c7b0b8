"""The project-owned policy: ``.planegate/policy.toml`` in the orchestrated repository.

The file is optional; every key has a documented default (``DEFAULT_POLICY_TOML`` is the
commented template ``planegate init`` writes). A run snapshots the policy when it starts, so a
task cannot loosen its own gates by editing the file; ``.planegate/**`` is always a denied path.

A malformed file is refused whole with the file, the line and the key named.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InvalidInput, PolicyError
from .globs import normalize_glob

POLICY_PATH = Path(".planegate") / "policy.toml"
ALWAYS_DENIED = (".planegate/**", ".git/**")

DEFAULT_TEST_PATHS = [
    "tests/**",
    "test/**",
    "**/__tests__/**",
    "**/test_*.py",
    "**/*_test.py",
    "**/*_test.go",
    "**/*.test.[jt]s",
    "**/*.test.[jt]sx",
    "**/*.spec.[jt]s",
]
DEFAULT_RUNTIME_PATHS = [
    "**/*.py",
    "**/*.[jt]s",
    "**/*.[jt]sx",
    "**/*.go",
    "**/*.rs",
    "**/*.java",
    "**/*.kt",
    "**/*.rb",
    "**/*.c",
    "**/*.h",
    "**/*.cc",
    "**/*.cpp",
    "**/*.cs",
    "**/*.swift",
    "**/*.php",
]
# Files that decide how tests run and what counts as a pass. A task that changes one must declare
# it (changes_harness). ``glob#key`` narrows a shared file to the part that is harness: a dotted
# key in TOML/JSON, a section name (fnmatch) in an INI-style file.
DEFAULT_HARNESS_PATHS = [
    "**/conftest.py",
    "**/pytest.ini",
    "**/.pytest.ini",
    "**/tox.ini",
    "**/noxfile.py",
    "**/setup.cfg#tool:pytest",
    "**/setup.cfg#tox:*",
    "**/pyproject.toml#tool.pytest",
    "**/pyproject.toml#tool.tox",
    "**/pyproject.toml#tool.hatch.envs",
    "**/package.json#scripts",
    "**/package.json#jest",
    "**/jest.config.*",
    "**/jest.setup.*",
    "**/vitest.config.*",
    "**/vitest.workspace.*",
    "**/vite.config.*",
    "**/.mocharc*",
    "**/sitecustomize.py",
    "**/usercustomize.py",
]
# Evidence kinds planegate records itself; a check may not take these names.
RESERVED_CHECK_NAMES = ("red_green", "test_integrity")
SELECT_PLACEHOLDERS = ("{ids}", "{files}", "{names}", "{pattern}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PROTECTED_ENV = {"PATH", "HOME", "PYTHONPATH", "PYTHONHOME", "PYTEST_ADDOPTS", "NODE_OPTIONS"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# planegate never gives a child process the human's ssh-agent (it could sign a signed approval).
AGENT_VARIABLES = ("SSH_AUTH_SOCK", "SSH_AGENT_PID")


def _no_agent(value: list[str]) -> list[str]:
    for name in value:
        if name in AGENT_VARIABLES:
            raise ValueError(
                f"env_allow may not list {name!r}: planegate never passes the ssh-agent to executors, checks or "
                "reviewers (it could sign your approval); remove it"
            )
    return value


class ExecutorSettings(_Section):
    command: list[str] | None = None
    codex: str = "codex"
    model: str | None = None
    # The model behind the calling agent (the `agent` executor), compared with the reviewer's.
    agent_model: str | None = None
    codex_args: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=3600, gt=0)
    env_allow: list[str] = Field(default_factory=list)

    @field_validator("env_allow")
    @classmethod
    def _env_allow(cls, value: list[str]) -> list[str]:
        return _no_agent(value)


class ReviewSettings(_Section):
    reviewer: Literal["chatgpt", "command", "manual"] = "chatgpt"
    command: list[str] | None = None
    # The model behind the reviewer, compared with the executor's (model_hint only picks a menu item).
    model: str | None = None
    project: str | None = None
    model_hint: str | None = None
    require_model: bool = False
    cdp_urls: list[str] = Field(default_factory=list)
    base_url: str | None = None
    timeout_s: float = Field(default=1800, gt=0)
    env_allow: list[str] = Field(default_factory=list)

    @field_validator("env_allow")
    @classmethod
    def _env_allow(cls, value: list[str]) -> list[str]:
        return _no_agent(value)


class ApprovalSettings(_Section):
    """How a human approves a run: ``interactive`` (a terminal or the client) or ``signed`` (an SSH key).

    ``allowed_signers`` names a file in git's allowed-signers format, read from the run's base
    commit (never the working tree), so a task or an edit after the run started cannot add a key.
    """

    mode: Literal["interactive", "signed"] = "interactive"
    allowed_signers: str = ".planegate/allowed_signers"

    @field_validator("allowed_signers")
    @classmethod
    def _repository_path(cls, value: str) -> str:
        parts = value.split("/")
        if not value or value.startswith(("/", "-")) or "\\" in value or any(p in ("", ".", "..") for p in parts):
            raise ValueError(
                f"allowed_signers {value!r} must be a path inside the repository, relative to its root, "
                'e.g. ".planegate/allowed_signers"'
            )
        return value


class NotifySettings(_Section):
    """Telling a human that planegate waits for them (an approval, a job in attention, a review).

    ``command``: an argv (no shell) that receives one JSON object on stdin per notification,
    within ``timeout_s``, with only ``env_allow`` (and the usual PATH, HOME, locale) in its
    environment. Without a command, ``desktop`` sends one through ``notify-send`` when it is
    installed. Each notification is sent once; a failure is logged and recorded, never retried.
    """

    command: list[str] | None = None
    desktop: bool = True
    timeout_s: float = Field(default=10, gt=0, le=120)
    env_allow: list[str] = Field(default_factory=list)

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not all(isinstance(a, str) and a for a in value)):
            raise ValueError('command needs a non-empty argv list, e.g. command = ["notify-me", "--json"]')
        return value

    @field_validator("env_allow")
    @classmethod
    def _env_allow(cls, value: list[str]) -> list[str]:
        return _no_agent(value)


class SuiteSettings(_Section):
    """How planegate reads the test check: its JUnit report, how to run a few of its tests, the harness.

    ``runner``: ``pytest`` (planegate adds ``--junitxml`` through ``PYTEST_ADDOPTS`` and selects
    tests by node id), ``unittest`` (planegate runs ``python -m unittest`` through a small wrapper
    that writes the report and selects by test id), ``junit`` (the check writes JUnit XML itself,
    to ``report`` or to the path planegate puts in ``$PLANEGATE_TEST_REPORT``); ``auto`` picks
    pytest or unittest from the test check's argv, else junit.
    """

    runner: Literal["auto", "pytest", "unittest", "junit"] = "auto"
    report: str = ""
    report_env: list[str] = Field(default_factory=list)
    select: list[str] = Field(default_factory=list)
    integrity: bool = True
    harness_paths: list[str] = Field(default_factory=lambda: list(DEFAULT_HARNESS_PATHS))

    @field_validator("report")
    @classmethod
    def _report_path(cls, value: str) -> str:
        if not value:
            return value
        parts = value.replace("\\", "/").split("/")
        if value.startswith(("/", "~")) or ".." in parts or "\x00" in value or any(c in value for c in "*?["):
            raise ValueError(
                f"report {value!r} must be a file path relative to the worktree, such as 'reports/junit.xml' "
                "(no '..', no wildcards), or \"\" to let planegate choose one ($PLANEGATE_TEST_REPORT)"
            )
        return "/".join(p for p in parts if p not in ("", "."))

    @field_validator("report_env")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _ENV_NAME.fullmatch(name) or name in _PROTECTED_ENV or name.startswith("LD_"):
                raise ValueError(
                    f"report_env names {name!r}, which cannot carry the report path; give variable names such as "
                    "'JEST_JUNIT_OUTPUT_FILE' (not PATH, HOME, PYTHONPATH, PYTEST_ADDOPTS, NODE_OPTIONS or LD_*)"
                )
        return value

    @field_validator("select")
    @classmethod
    def _select(cls, value: list[str]) -> list[str]:
        if not value:
            return value
        if not all(isinstance(a, str) and a for a in value):
            raise ValueError("select must be a non-empty argv list of non-empty strings")
        text = " ".join(value)
        unknown = [p for p in re.findall(r"\{[^{}]*\}", text) if p not in SELECT_PLACEHOLDERS]
        if unknown:
            raise ValueError(f"select uses {unknown[0]}; the placeholders are {', '.join(SELECT_PLACEHOLDERS)}")
        if not any(p in text for p in SELECT_PLACEHOLDERS):
            raise ValueError(
                f"select {value!r} names no tests; use one of {', '.join(SELECT_PLACEHOLDERS)}, e.g. "
                '["go", "test", "./...", "-run", "^{pattern}$"]'
            )
        for list_placeholder in ("{ids}", "{files}", "{names}"):
            if list_placeholder in text and list_placeholder not in value:
                raise ValueError(
                    f"select: {list_placeholder} expands to one argument per test, so it must be a whole element "
                    f"of the list; embed {{pattern}} in a string instead"
                )
        return value

    @field_validator("harness_paths")
    @classmethod
    def _harness(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            path, _, key = entry.partition("#")
            if "#" in entry and not key.strip():
                raise ValueError(
                    f"harness path {entry!r} has an empty key after '#'; write e.g. 'pyproject.toml#tool.pytest'"
                )
            try:
                glob = normalize_glob(path)
            except InvalidInput as exc:
                raise ValueError(str(exc)) from exc
            out.append(f"{glob}#{key.strip()}" if key else glob)
        return out


class Policy(_Section):
    """Every gate and limit a run is held to; the defaults are the documented ones."""

    checks: dict[str, list[str]] = Field(default_factory=dict)
    required_checks: list[str] | None = None
    test_check: str = "test"
    deny_paths: list[str] = Field(default_factory=list)
    test_paths: list[str] = Field(default_factory=lambda: list(DEFAULT_TEST_PATHS))
    runtime_paths: list[str] = Field(default_factory=lambda: list(DEFAULT_RUNTIME_PATHS))
    max_files: int = Field(default=25, gt=0)
    max_changed_lines: int = Field(default=1200, gt=0)
    max_parallel: int = Field(default=2, gt=0)
    lease_minutes: float = Field(default=60, gt=0)
    allowed_extensions: list[str] | None = None
    require_review: bool = True
    require_red_green: bool = True
    require_architecture: bool = True
    require_human_approval: bool = True
    retain_worktrees: bool = False
    check_timeout_s: float = Field(default=1800, gt=0)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    tests: SuiteSettings = Field(default_factory=SuiteSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    @field_validator("checks")
    @classmethod
    def _argv_lists(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, argv in value.items():
            if name in RESERVED_CHECK_NAMES:
                raise ValueError(
                    f"check name {name!r} is reserved for planegate's own evidence; rename the check "
                    f"(e.g. {name}_check)"
                )
            if not argv or not all(isinstance(a, str) and a for a in argv):
                raise ValueError(f'check {name!r} needs a non-empty argv list, e.g. {name} = ["pytest", "-q"]')
        return value

    @field_validator("deny_paths", "test_paths", "runtime_paths")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        try:
            return [normalize_glob(g) for g in value]
        except InvalidInput as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("allowed_extensions")
    @classmethod
    def _extensions(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [e if e.startswith(".") else f".{e}" for e in value]

    @model_validator(mode="after")
    def _known_checks(self) -> Policy:
        for name in self.required_checks or []:
            if name not in self.checks:
                raise ValueError(f"required_checks names {name!r}, which is not defined under [checks]")
        return self

    @property
    def required(self) -> list[str]:
        """The checks a task must pass: ``required_checks``, or every defined check."""
        return list(self.checks) if self.required_checks is None else list(self.required_checks)

    @property
    def denied(self) -> list[str]:
        return [*ALWAYS_DENIED, *self.deny_paths]

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line where the key at ``loc`` is written (its table header counted), if found."""
    keys = [str(part) for part in loc if not isinstance(part, int)]
    if not keys:
        return None
    section = (
        keys[0]
        if len(keys) > 1 and keys[0] in {"executor", "review", "checks", "approval", "tests", "notify"}
        else None
    )
    key = keys[1] if section else keys[0]
    in_section = section is None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.fullmatch(r"\[\s*([A-Za-z0-9_.-]+)\s*\]", stripped)
        if header:
            in_section = header.group(1) == section
            if section is None:
                in_section = False
            continue
        if in_section and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
    return None


def parse_policy(text: str, source: str = str(POLICY_PATH)) -> Policy:
    """Parse policy TOML.

    Raises:
        PolicyError: naming the file, the line and the key, and what to write instead.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}. Fix the syntax (see `planegate init`).") from exc
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(text, loc)
            where = f"{source}:{line}" if line else source
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key; see the commented template `planegate init` writes for the known keys"
            problems.append(f"{where}: key {key!r}: {message}")
        raise PolicyError("policy refused, nothing was changed:\n" + "\n".join(problems)) from exc


def detect_test_command(repo: Path) -> list[str] | None:
    """The obvious test command for the repository, if there is one."""
    if (repo / "package.json").is_file():
        try:
            scripts = json.loads((repo / "package.json").read_text(encoding="utf-8")).get("scripts", {})
        except (ValueError, AttributeError):
            scripts = {}
        if isinstance(scripts, dict) and "test" in scripts:
            return ["npm", "test", "--silent"]
    if (repo / "go.mod").is_file():
        return ["go", "test", "./..."]
    if (repo / "Cargo.toml").is_file():
        return ["cargo", "test"]
    python_markers = ("pytest.ini", "pyproject.toml", "setup.cfg", "setup.py", "tox.ini", "conftest.py")
    if any((repo / m).is_file() for m in python_markers) or any(repo.glob("tests/**/test_*.py")):
        return ["python", "-m", "pytest", "-q"]
    return None


def policy_template(
    test_command: list[str] | None, approval_mode: Literal["interactive", "signed"] = "interactive"
) -> str:
    """The commented policy ``planegate init`` writes, with the detected test command and approval mode."""
    test_line = (
        f"test = {json.dumps(test_command)}"
        if test_command
        else '# test = ["python", "-m", "pytest", "-q"]   # no test command was detected; set yours'
    )
    return DEFAULT_POLICY_TOML.replace("{TEST_LINE}", test_line).replace("{APPROVAL_MODE}", json.dumps(approval_mode))


DEFAULT_POLICY_TOML = """\
# planegate policy: the gates and limits every run in this repository is held to.
# Commit this file. A run snapshots it when it starts; tasks may never edit .planegate/.
# Every key is optional; the values shown are the defaults unless marked as an example.

# Checks are argv lists (no shell), run by the server in each task's worktree.
# required_checks: the checks a task must pass (default: every check listed here).
# required_checks = ["test"]
# test_check: the check red->green runs (fails on the base commit, passes on the head).
test_check = "test"

# Paths no task may change (glob: ** any depth, * within one directory). .planegate/** and
# .git/** are always denied.
deny_paths = []
# Where tests live (they may change in any task), and what counts as runtime code
# (a change to runtime code needs red->green proof when require_red_green is on).
# test_paths = ["tests/**", "test/**", "**/__tests__/**", "**/test_*.py", "**/*_test.py", ...]
# runtime_paths = ["**/*.py", "**/*.[jt]s", "**/*.go", "**/*.rs", ...]

# Budget per task: changed files, and added + deleted lines.
max_files = 25
max_changed_lines = 1200
# allowed_extensions = [".py", ".md"]   # example: refuse changes to other file types

# Dispatch: tasks running at once, lease length, keep worktrees after acceptance.
max_parallel = 2
lease_minutes = 60
retain_worktrees = false
check_timeout_s = 1800

# Gates.
require_review = true
require_red_green = true
require_architecture = true
require_human_approval = true

[checks]
{TEST_LINE}

[executor]
# command = ["python", "scripts/agent.py"]   # argv the `command` executor runs in the worktree
codex = "codex"                               # the Codex CLI the `codex` executor runs
# model = "gpt-5-codex"                      # the model the codex executor runs (-m)
# agent_model = "claude-opus-4-1"            # the model behind your coding agent (the `agent` executor)
timeout_s = 3600
env_allow = []                                # extra environment names executors and checks receive

[review]
reviewer = "chatgpt"      # chatgpt | command | manual
# command = ["codex", "exec", "-"]           # for reviewer = "command": prompt on stdin, reply on stdout
# model = "gpt-5"                            # the model behind the reviewer; refused if it is the executor's
# project = "My project"                     # ChatGPT project to review in
# model_hint = "Thinking"                    # text of the model menu item to pick
# require_model = false                      # true: refuse to send when the page does not confirm that model
# cdp_urls = ["http://127.0.0.1:9222"]       # where the logged-in browser listens (or PLANEGATE_CDP_URL)
# base_url = "https://chatgpt.com/"
timeout_s = 1800
env_allow = []            # environment names a command reviewer receives (e.g. OPENAI_API_KEY)

[approval]
# How a human says yes to a run (the policy committed at the run's base decides).
# "interactive": the human types the run id at `planegate approve RUN` (read from /dev/tty, not
#   stdin) or accepts accept_run's question in their MCP client. It stops a sandboxed agent
#   (Codex workspace-write, Claude Code's sandbox); an agent with an unsandboxed shell can fake a
#   terminal or write its own MCP client and answer for you.
# "signed": `planegate approve RUN` signs a statement (run, integration head, ledger chain head,
#   requirements version, time) with your SSH signing key (git's user.signingkey, or --key), and
#   tags the integration head planegate/<run>/approved with an SSH-signed tag. accept_run and
#   `planegate ledger verify` check the signature against allowed_signers as committed at the
#   run's base; anyone can check the tag with
#   git -c gpg.ssh.allowedSignersFile=.planegate/allowed_signers tag -v planegate/<run>/approved
#   It stops any agent that cannot use your key: a FIDO2 -sk key that needs your touch, or a key
#   with a passphrase that is not loaded in an ssh-agent the coding agent can reach. A key file
#   without a passphrase that the agent can read stops nothing.
mode = {APPROVAL_MODE}
# git's allowed-signers format, one key per line:
#   you@example.com namespaces="git,planegate" ssh-ed25519 AAAA...
allowed_signers = ".planegate/allowed_signers"

[tests]
# How planegate reads the test check (test_check): a JUnit XML report, compared by test id.
# runner: auto | pytest | unittest | junit. pytest: planegate adds --junitxml through
# PYTEST_ADDOPTS (your argv stays as it is); unittest: run through a wrapper that writes the
# report; junit: the check writes JUnit XML itself (jest-junit, go-junit-report, cargo-nextest),
# to `report` below or to the path planegate passes in $PLANEGATE_TEST_REPORT.
runner = "auto"
report = ""               # example: "target/nextest/ci/junit.xml" (relative to the worktree)
report_env = []           # more variables set to the report path, e.g. ["JEST_JUNIT_OUTPUT_FILE"]
# select: argv that runs only the given tests, for red->green on the base. Placeholders:
# {ids} and {files} and {names} (one argument each), {pattern} (an alternation, inside a string).
# Default: pytest and unittest select by test id; other runners fall back to a full base run.
# select = ["npx", "jest", "{files}"]
# select = ["go", "test", "./...", "-run", "^{pattern}$"]
select = []
# integrity: every test that passes on a task's base must still exist and pass on its head,
# unless the task declares removes_tests (with a reason) in the graph.
integrity = true
# harness_paths: files that decide how tests run; a task changing one must declare it
# (changes_harness with a reason). "glob#key" limits a file to one key or section.
# harness_paths = ["**/conftest.py", "**/pytest.ini", "**/tox.ini", "**/pyproject.toml#tool.pytest",
#                  "**/package.json#scripts", "**/jest.config.*", "**/vitest.config.*", ...]

[notify]
# When planegate waits for a person (an approval, a job in attention, a review or a logged-out
# browser), each serve or worker process tells them once. command: an argv (no shell) that gets
# one JSON object on stdin ({"kind", "title", "message", "next_step", "run", "task", ...}).
# Without a command, a desktop notification through notify-send when it is installed.
# command = ["python", "scripts/notify.py"]
desktop = true
timeout_s = 10
env_allow = []            # environment names the command receives (e.g. SLACK_WEBHOOK_URL)
"""
