"""The project-owned policy: ``.planegate/policy.toml`` in the orchestrated repository.

The file is optional; every key has a documented default (``DEFAULT_POLICY_TOML`` is the
commented template ``planegate init`` writes). A run snapshots the policy when it starts, so a
task cannot loosen its own gates by editing the file; ``.planegate/**`` is always a denied path.

A malformed file is refused whole with the file, the line and the key named.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

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
# Variables the toolchain rules set for setup steps and checks (README, "the toolchain rules").
TOOLCHAIN_MANAGED_ENV = ("PATH", "VIRTUAL_ENV", "PYTHONHOME")


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


class PublishSettings(_Section):
    """Where ``publish_run`` pushes an accepted run and what its draft pull request targets.

    ``remote`` is a git remote of the repository; ``base`` the branch the pull request merges into
    (empty: the branch the run started from, else the remote's default branch); ``branch`` the
    name pushed (empty: the run's integration branch; ``{run}`` is replaced by the run id). The
    pushed branch may never be the remote's default branch nor ``base``.
    """

    remote: str = "origin"
    base: str = ""
    branch: str = ""

    @field_validator("remote", "base", "branch")
    @classmethod
    def _ref_safe(cls, value: str) -> str:
        if value.startswith("-") or any(c in value for c in " \t\n~^:?*[\\") or ".." in value:
            raise ValueError(
                f"{value!r} is not a usable remote or branch name (no leading '-', spaces, '..', or ~^:?*[)"
            )
        return value


def _argv_steps(value: Any, what: str) -> list[list[str]]:
    """One argv list, or a list of argv lists run in order, as a list of steps."""
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(
            f'{what} needs an argv list such as ["pytest", "-q"], or a list of them run in order such as '
            '[["npm", "run", "build"], ["npm", "test"]]'
        )
    steps = []
    for step in value:
        if not isinstance(step, list) or not step or not all(isinstance(a, str) and a for a in step):
            raise ValueError(
                f"{what}: step {step!r} is not a non-empty argv list of non-empty strings; write each step as "
                'a list such as ["npm", "test"] (no shell is used)'
            )
        steps.append(list(step))
    return steps


CheckSteps = Annotated[list[list[str]], BeforeValidator(lambda value: _argv_steps(value, "a check"))]


def command_text(steps: list[list[str]]) -> str:
    """How a check's steps read to a person: each argv shell-quoted, joined by ``&&``."""
    return " && ".join(shlex.join(step) for step in steps)


def _repository_file(value: str, what: str) -> str:
    parts = value.replace("\\", "/").split("/")
    if (
        not value
        or value.startswith(("/", "~", "-"))
        or "\x00" in value
        or any(c in value for c in "*?[")
        or any(p in ("", ".", "..") for p in parts)
        or parts[0] in (".git", ".planegate")
    ):
        raise ValueError(
            f"{what} {value!r} must be a path inside the repository, relative to its root, without wildcards, "
            "'..', '.git' or '.planegate', e.g. 'node_modules' or 'package-lock.json'"
        )
    return value


class LinkSettings(_Section):
    """A path symlinked into each new worktree from the repository's checkout.

    Made only while every file in ``lockfiles`` has the same bytes in the worktree as in the
    checkout (the dependency folder was installed from that lockfile); otherwise ``fallback``
    (argv steps) makes the path instead, and without a fallback the bootstrap fails naming the
    lockfile. Without ``lockfiles`` the path is linked whenever the checkout has it: you promise it
    does not depend on the task's code."""

    path: str
    lockfiles: list[str] = Field(default_factory=list)
    fallback: list[list[str]] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _repository_file(value, "link path")

    @field_validator("lockfiles")
    @classmethod
    def _lockfiles(cls, value: list[str]) -> list[str]:
        return [_repository_file(v, "link lockfile") for v in value]

    @field_validator("fallback", mode="before")
    @classmethod
    def _fallback(cls, value: Any) -> list[list[str]]:
        return [] if value == [] else _argv_steps(value, "link fallback")


class WorktreeSettings(_Section):
    """How a fresh worktree is made ready before the executor and the checks run in it.

    ``copy`` (globs of untracked or ignored files in the checkout) and ``link`` (paths symlinked
    from the checkout) come first, then the ``setup`` argv steps, within ``timeout_s`` in all.
    ``env`` reaches setup and checks. ``inputs``: files whose change in a task makes the setup run
    again before its checks. ``reuse_scratch``: a scratch worktree at a commit (red→green's base,
    the integration head) keeps its bootstrap for the next job on the same commit."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    setup: list[list[str]] = Field(default_factory=list)
    copy_globs: list[str] = Field(default_factory=list, alias="copy")
    link: list[LinkSettings] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=900, gt=0)
    reuse_scratch: bool = True

    @field_validator("setup", mode="before")
    @classmethod
    def _setup(cls, value: Any) -> list[list[str]]:
        return [] if value == [] else _argv_steps(value, "setup")

    @field_validator("copy_globs")
    @classmethod
    def _copy(cls, value: list[str]) -> list[str]:
        out = []
        for glob in value:
            try:
                normal = normalize_glob(glob)
            except InvalidInput as exc:
                raise ValueError(str(exc)) from exc
            if normal.split("/")[0] in (".git", ".planegate", "**"):
                raise ValueError(
                    f"copy glob {glob!r} would reach .git, .planegate or the whole tree; start it with the file or "
                    "directory it copies, e.g. '.env' or 'src/pkg/_version.py'"
                )
            out.append(normal)
        return out

    @field_validator("link", mode="before")
    @classmethod
    def _links(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [{"path": v} if isinstance(v, str) else v for v in value]

    @field_validator("link")
    @classmethod
    def _distinct_links(cls, value: list[LinkSettings]) -> list[LinkSettings]:
        paths = [link.path for link in value]
        for index, path in enumerate(paths):
            for other in paths[index + 1 :]:
                if other == path or other.startswith(path + "/") or path.startswith(other + "/"):
                    raise ValueError(f"link paths {path!r} and {other!r} overlap; keep one of them")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if (
                not _ENV_NAME.fullmatch(name)
                or name in TOOLCHAIN_MANAGED_ENV
                or name in AGENT_VARIABLES
                or name.startswith("PLANEGATE_")
            ):
                raise ValueError(
                    f"env names {name!r}, which planegate sets itself or never passes (PATH, VIRTUAL_ENV and "
                    "PYTHONHOME follow the toolchain rules; PLANEGATE_* and the ssh-agent are planegate's); "
                    "remove it, or add a setup step that writes the file your tool reads instead"
                )
            if "\x00" in text:
                raise ValueError(f"env value of {name!r} contains a NUL character")
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: list[str]) -> list[str]:
        return [_repository_file(v, "inputs entry") for v in value]

    @property
    def configured(self) -> bool:
        """Whether a new worktree needs anything besides its checkout."""
        return bool(self.setup or self.copy_globs or self.link)

    def fingerprint(self) -> str:
        """What a bootstrap depends on in the policy (a cached one is reused only under the same)."""
        material = self.model_dump(mode="json", by_alias=True, exclude={"timeout_s", "reuse_scratch"})
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class Policy(_Section):
    """Every gate and limit a run is held to; the defaults are the documented ones."""

    # Each check is a list of argv steps run in order (a single argv list is one step).
    checks: dict[str, CheckSteps] = Field(default_factory=dict)
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
    retain_branches: bool = False
    retain_days: float = Field(default=7, ge=0)
    check_timeout_s: float = Field(default=1800, gt=0)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    tests: SuiteSettings = Field(default_factory=SuiteSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    worktree: WorktreeSettings = Field(default_factory=WorktreeSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    @field_validator("checks", mode="before")
    @classmethod
    def _reserved(cls, value: Any) -> Any:
        for name in value if isinstance(value, dict) else ():
            if name in RESERVED_CHECK_NAMES:
                raise ValueError(
                    f"check name {name!r} is reserved for planegate's own evidence; rename the check "
                    f"(e.g. {name}_check)"
                )
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
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line where the key at ``loc`` is written (its table header counted), if found."""
    keys = [str(part) for part in loc if not isinstance(part, int)]
    if not keys:
        return None
    sections = {"executor", "review", "checks", "approval", "tests", "publish", "worktree", "notify"}
    section = keys[0] if len(keys) > 1 and keys[0] in sections else None
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


def _toml_steps(steps: list[list[str]]) -> str:
    if len(steps) == 1:
        return json.dumps(steps[0])
    return "[\n" + "".join(f"    {json.dumps(step)},\n" for step in steps) + "]"


def policy_template(
    test_command: list[str] | None,
    approval_mode: Literal["interactive", "signed"] = "interactive",
    *,
    checks: dict[str, list[list[str]]] | None = None,
    worktree: dict[str, Any] | None = None,
    notes: list[str] | None = None,
) -> str:
    """The commented policy ``planegate init`` writes: the detected checks (``checks``, or just
    ``test_command``), the detected ``[worktree]`` keys, and the approval mode."""
    if checks is None:
        checks = {"test": [test_command]} if test_command else {}
    if checks:
        check_lines = "\n".join(f"{name} = {_toml_steps(steps)}" for name, steps in checks.items())
    else:
        check_lines = '# test = ["python", "-m", "pytest", "-q"]   # no test command was detected; set yours'
    found = dict(worktree or {})
    lines = [f"# {note}" for note in notes or []]
    lines.append(f"setup = {_toml_steps(found['setup']) if found.get('setup') else '[]'}")
    if not found.get("setup"):
        lines.append(
            '# setup = [["python3", "-m", "venv", ".venv"], [".venv/bin/python", "-m", "pip", "install", "-e", '
            '".[dev]"]]'
        )
    lines.append(f"copy = {json.dumps(found.get('copy', []))}")
    if not found.get("copy"):
        lines.append('# copy = [".env", "src/mypkg/_version.py"]   # untracked or ignored files of your checkout')
    if found.get("link"):
        rendered = ", ".join(
            "{ " + ", ".join(f"{key} = {json.dumps(value)}" for key, value in entry.items()) + " }"
            for entry in found["link"]
        )
        lines.append(f"link = [{rendered}]")
    else:
        lines.append("link = []")
        lines.append(
            '# link = [{ path = "node_modules", lockfiles = ["package-lock.json"], fallback = [["npm", "ci"]] }]'
        )
    lines.append(f"inputs = {json.dumps(found.get('inputs', []))}")
    lines.append("env = {}")
    lines.append("timeout_s = 900")
    lines.append("reuse_scratch = true")
    return (
        DEFAULT_POLICY_TOML.replace("{TEST_LINE}", check_lines)
        .replace("{WORKTREE}", "\n".join(lines))
        .replace("{APPROVAL_MODE}", json.dumps(approval_mode))
    )


DEFAULT_POLICY_TOML = """\
# planegate policy: the gates and limits every run in this repository is held to.
# Commit this file. A run snapshots it when it starts; tasks may never edit .planegate/.
# Every key is optional; the values shown are the defaults unless marked as an example.

# Checks are argv lists (no shell), run by the server in each task's worktree; a check may be a
# list of argv lists run in order (build, then test), stopping at the first that fails. In a
# several-step test check the last step runs the tests (its report is the one read).
# Commands are found on the repository's toolchain PATH: the worktree's .venv/bin (else the
# checkout's .venv/bin when it holds no editable install of the checkout), node_modules/.bin, then
# the server's PATH without planegate's own virtualenv (README: "the toolchain rules").
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

# Dispatch: tasks running at once, lease length, check timeout.
max_parallel = 2
lease_minutes = 60
check_timeout_s = 1800

# Cleanup: accepted tasks' worktrees go at acceptance and their merged branches once the run is
# accepted, unless kept here; `planegate gc` removes cancelled and abandoned work retain_days
# after it stopped (uncommitted changes are first committed as "planegate: parked").
retain_worktrees = false
retain_branches = false
retain_days = 7

# Gates.
require_review = true
require_red_green = true
require_architecture = true
require_human_approval = true

[checks]
{TEST_LINE}

[worktree]
# How each new worktree (a task's, and the scratch ones checks use at the base or the integration
# head) is made ready, in this order: copy, link, then the setup steps, within timeout_s.
# copy: globs of untracked or ignored files copied from your checkout (never over a file).
# link: paths symlinked from your checkout, only while each lockfile is the same in the worktree
#   as in the checkout; otherwise the fallback steps make the path (or the bootstrap fails).
# setup: argv steps run in the worktree; a failing step fails dispatch_task with its log.
# inputs: files whose change in a task makes setup run again before its checks.
# env: extra variables for setup and checks. reuse_scratch: keep a scratch worktree's bootstrap
#   for the next checks job at the same commit (red->green's base across tasks of one base).
{WORKTREE}

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

[publish]
# publish_run pushes an accepted run's integration branch to `remote` and opens a draft pull
# request into `base` with gh (when installed and logged in; otherwise it prints the commands).
remote = "origin"
base = ""                 # default: the branch the run started from, else the remote's default branch
branch = ""               # default: planegate/<run>/integration; "{run}" is replaced by the run id

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
