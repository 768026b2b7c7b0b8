"""Whole runs on repositories with the traits of real ones, through the real `planegate serve`
(stdio), with what `planegate init` writes plus a `[worktree]` line — and nothing committed for
planegate's sake.

(a) Python: the tests import a gitignored `_version.py` a build script writes and a dev
dependency (a local package installed from a wheel, no index reachable), and the developer's
checkout has its own `.venv`. (b) Node: the tests `require` a `file:` dependency, so they need
`node_modules` (`npm ci` with the registry unreachable). Each first fails without the bootstrap
(the same commit, the policy without its setup), then goes dispatch → commit → run_checks →
review → accept_task → release → approval → accept_run.

The server is started as from an activated planegate virtualenv (its `bin` first on PATH,
`VIRTUAL_ENV` set), so a check that found planegate's `python` would have pytest but not the
repository's dependency.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import ElicitResult

from planegate.tools.policy import parse_policy
from tests.helpers import call, commit_all, git, make_repo
from tests.offline import make_wheel, offline_home, wheelhouse
from tests.test_review import review_policy_tail

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(900)]


def serve(home: Path) -> StdioServerParameters:
    own = str(Path(sys.executable).parent)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "npm_config_"))}
    environ.update(PLANEGATE_HOME=str(home), PATH=f"{own}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=sys.prefix)
    return StdioServerParameters(command=sys.executable, args=["-m", "planegate.server.cli", "serve"], env=environ)


def init(repo: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", "init", str(repo)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return (repo / ".planegate" / "policy.toml").read_text()


def replace_sections(policy: str, **bodies: str | None) -> str:
    """The policy with each named ``[section]`` replaced by ``bodies[name]`` (None: dropped)."""
    out: list[str] = []
    skipping = False
    for line in policy.splitlines():
        if line.startswith("[") and line.rstrip().endswith("]"):
            skipping = line.strip("[] ") in bodies
        if not skipping:
            out.append(line)
    for name, body in bodies.items():
        if body is not None:
            out += ["", f"[{name}]", body.rstrip("\n")]
    return "\n".join(out) + "\n"


REVIEW = review_policy_tail().split("[review]\n", 1)[1]


def without_setup(policy: str) -> str:
    """The same policy with the bootstrap switched off (what a user had before [worktree])."""
    return replace_sections(policy, worktree=None, review=REVIEW)


def with_setup_step(policy: str, step: list[str]) -> str:
    """The written [worktree] with the project's own build step appended to its setup."""
    worktree = parse_policy(policy).worktree
    steps = [*worktree.setup, step]
    body = "setup = [\n" + "".join(f"    {json.dumps(s)},\n" for s in steps) + "]\n"
    body += f"inputs = {json.dumps(worktree.inputs)}\n"
    return replace_sections(policy, worktree=body, review=REVIEW)


async def wait_job(client: Any, job: int, budget_s: float = 600) -> dict[str, Any]:
    with anyio.fail_after(budget_s):
        while True:
            result = await call(client, "get_job", job=job, wait_seconds=30)
            if result["state"] not in ("queued", "running"):
                return result


async def checks(client: Any, **where: Any) -> dict[str, Any]:
    started = await call(client, "run_checks", **where)
    if started["state"] in ("queued", "running"):
        return await wait_job(client, started["job"])
    return {**started, "checks": started["results"]}


async def review(client: Any, **what: Any) -> None:
    requested = await call(client, "request_review", **what)
    with anyio.fail_after(300):
        while True:
            result = await call(client, "get_review", review=requested["review"], wait_seconds=30)
            if result["state"] not in ("queued", "running", "waiting", "pending"):
                break
    assert (result["state"], result["verdict"]) == ("completed", "approve"), result


async def plan(client: Any, repo: Path, base: str, owns: list[str], scope: list[str]) -> str:
    run = (await call(client, "start_run", repo=str(repo), goal="Grow the library", base_ref=base))["run"]
    requirement = {"id": "R1", "statement": "the new function works", "acceptance_criteria": ["its test passes"]}
    await call(client, "freeze_requirements", run=run, requirements=[requirement])
    await call(client, "freeze_architecture", run=run, modules=[{"name": "lib", "owns": owns}])
    task = {
        "id": "grow",
        "title": "Grow",
        "goal": "add the function and its test",
        "scope": scope,
        "requirements": ["R1"],
    }
    await call(client, "register_graph", run=run, tasks=[task])
    return run


def evidence_logs(home: Path, evidence: int) -> str:
    """Everything the check printed (its log artifacts), read from the ledger."""
    with sqlite3.connect(f"file:{home / 'ledger.db'}?mode=ro", uri=True) as ledger:
        paths = ledger.execute("SELECT path FROM artifacts WHERE owner = ?", (f"evidence:{evidence}",)).fetchall()
    return "\n".join(Path(p).read_text(errors="replace") for (p,) in paths)


def summaries(result: dict[str, Any]) -> dict[str, str]:
    return {line["check"]: line["summary"] for line in result["checks"]}


async def lifecycle(
    home: Path,
    repo: Path,
    bare: str,
    full: str,
    owns: list[str],
    scope: list[str],
    change: dict[str, str],
    missing: str,
) -> None:
    """The bare commit's run fails its checks with ``missing``; the full commit's run goes all the way."""

    async def approve(context: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="accept", content={"accept": True})

    async with Client(serve(home), elicitation_callback=approve) as client:
        run = await plan(client, repo, bare, owns, scope)
        worktree = Path((await call(client, "dispatch_task", run=run, task="grow"))["worktree"])
        write(worktree, change)
        commit_all(worktree, "grow")
        failed = await checks(client, run=run, task="grow")
        assert failed["all_passed"] is False, summaries(failed)
        test_line = next(line for line in failed["checks"] if line["check"] == "test")
        assert missing in evidence_logs(home, test_line["evidence"]), summaries(failed)

        run = await plan(client, repo, full, owns, scope)
        dispatched = await call(client, "dispatch_task", run=run, task="grow")
        assert dispatched["bootstrap"] and "setup step(s)" in dispatched["bootstrap"]
        worktree = Path(dispatched["worktree"])
        assert git(worktree, "status", "--porcelain") == ""
        write(worktree, change)
        commit_all(worktree, "grow")
        passed = await checks(client, run=run, task="grow")
        assert passed["all_passed"] is True, summaries(passed)
        assert set(summaries(passed)) >= {"test", "red_green", "test_integrity"}
        assert "proven" in summaries(passed)["red_green"]
        await review(client, run=run, task="grow")
        await call(client, "accept_task", run=run, task="grow")
        release = await checks(client, run=run)
        assert release["all_passed"] is True, summaries(release)
        await review(client, run=run, release=True)
        accepted = await call(client, "accept_run", run=run)
        assert accepted["stage"] == "accepted"
    integration = accepted["integration_branch"]
    changed = git(repo, "diff", "--name-only", full, integration).split()
    assert sorted(changed) == sorted(change)  # the task's files only: nothing generated, nothing installed
    assert git(repo, "status", "--porcelain") == ""


def write(worktree: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (worktree / name).parent.mkdir(parents=True, exist_ok=True)
        (worktree / name).write_text(text)


# -- (a) a Python repository ----------------------------------------------------------------------

WRITE_VERSION = """\
import subprocess
from pathlib import Path

described = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
Path("src/versioned/_version.py").write_text(f"__version__ = '0.1.dev0+g{described}'\\n")
"""
PYPROJECT = """\
[project]
name = "versioned"
version = "0.1.0"
requires-python = ">=3.11"

[tool.pytest.ini_options]
pythonpath = ["src"]
"""
ADD = "from versioned._version import __version__\n\n\ndef add(a, b):\n    return a + b\n"
ADD_TEST = """\
import helperlib
from versioned import __version__, add


def test_add():
    assert add(2, 3) == helperlib.five()
    assert __version__.startswith("0.1")
"""
MUL = """\
from versioned._version import __version__


def add(a, b):
    return a + b


def mul(a, b):
    return a * b
"""
MUL_TEST = "from versioned import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"


def python_repo(path: Path, wheels: Path) -> Path:
    repo = make_repo(
        path,
        {
            ".gitignore": ".venv/\n__pycache__/\nsrc/versioned/_version.py\n",
            "pyproject.toml": PYPROJECT,
            "requirements-dev.txt": "pytest\nhelperlib==1.0\n",
            "scripts/write_version.py": WRITE_VERSION,
            "src/versioned/__init__.py": ADD,
            "tests/test_add.py": ADD_TEST,
        },
    )
    # the developer's checkout: its own .venv, and the generated file from an earlier build
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    for argv in (
        ["python3", "-m", "venv", ".venv"],
        [
            ".venv/bin/python",
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            str(wheels),
            "-r",
            "requirements-dev.txt",
        ],
        [".venv/bin/python", "scripts/write_version.py"],
        [".venv/bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
    ):
        done = subprocess.run(argv, cwd=repo, env=environ, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return repo


async def test_a_python_repository_with_a_generated_module_a_dev_dependency_and_its_own_venv(
    tmp_path: Path, fresh_machine: Path
) -> None:
    wheels = wheelhouse(tmp_path / "wheels", ["pytest"])
    make_wheel(wheels, "helperlib", "1.0", {"helperlib/__init__.py": "def five():\n    return 5\n"})
    offline_home(Path(os.environ["HOME"]), wheels)
    repo = python_repo(tmp_path / "versioned", wheels)
    written = init(repo)
    policy = parse_policy(written)
    assert policy.checks["test"] == [["python", "-m", "pytest", "-q"]]
    assert policy.worktree.setup[0] == ["python3", "-m", "venv", ".venv"]
    (repo / ".planegate" / "policy.toml").write_text(without_setup(written))
    bare = commit_all(repo, "planegate policy, no bootstrap")
    (repo / ".planegate" / "policy.toml").write_text(with_setup_step(written, ["python", "scripts/write_version.py"]))
    full = commit_all(repo, "planegate policy: the worktree runs the build step")
    assert (
        parse_policy((repo / ".planegate" / "policy.toml").read_text()).worktree.setup[-1][-1]
        == "scripts/write_version.py"
    )
    change = {"src/versioned/__init__.py": MUL, "tests/test_mul.py": MUL_TEST}
    await lifecycle(
        fresh_machine,
        repo,
        bare,
        full,
        ["src/**", "tests/**"],
        ["src/versioned/__init__.py"],
        change,
        "No module named 'versioned._version'",
    )


# -- (b) a Node project ----------------------------------------------------------------------------

PAD = "module.exports = (s, n) => String(s).padStart(n);\n"
INDEX = "const pad = require('leftpad-local');\n\nexports.label = (s) => pad(s, 5);\n"
LABEL_TEST = """\
const test = require('node:test');
const assert = require('node:assert');
const { label } = require('../index.js');

test('labels are padded', () => { assert.strictEqual(label('ab'), '   ab'); });
"""
SHOUT = INDEX + "\nexports.shout = (s) => pad(s.toUpperCase(), 5);\n"
SHOUT_TEST = """\
const test = require('node:test');
const assert = require('node:assert');
const { shout } = require('../index.js');

test('shouts are padded', () => { assert.strictEqual(shout('ab'), '   AB'); });
"""


def node_repo(path: Path) -> Path:
    scripts = {
        "build": "node scripts/build.js",
        "test": "node --test --test-reporter=spec --test-reporter-destination=stdout --test-reporter=junit "
        "--test-reporter-destination=${PLANEGATE_TEST_REPORT:-junit.xml}",
    }
    package = {
        "name": "labels",
        "version": "1.0.0",
        "private": True,
        "scripts": scripts,
        "dependencies": {"leftpad-local": "file:vendor/leftpad"},
    }
    repo = make_repo(
        path,
        {
            ".gitignore": "node_modules/\ndist/\njunit.xml\n",
            "package.json": json.dumps(package, indent=2) + "\n",
            "vendor/leftpad/package.json": '{"name": "leftpad-local", "version": "1.0.0", "main": "index.js"}\n',
            "vendor/leftpad/index.js": PAD,
            "scripts/build.js": "const fs = require('fs');\nfs.mkdirSync('dist', {recursive: true});\n"
            "fs.copyFileSync('index.js', 'dist/index.js');\n",
            "index.js": INDEX,
            "test/label.test.js": LABEL_TEST,
        },
    )
    done = subprocess.run(
        ["npm", "install"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("npm_config_")},
    )
    assert done.returncode == 0, done.stderr
    commit_all(repo, "lockfile")
    return repo


async def test_a_node_project_whose_tests_need_node_modules(tmp_path: Path, fresh_machine: Path) -> None:
    if not (shutil.which("npm") and shutil.which("node")):
        if os.environ.get("CI") == "true":
            pytest.fail("npm and node are required under CI=true")
        pytest.skip("npm or node is not installed here")
    offline_home(Path(os.environ["HOME"]), tmp_path / "no-wheels")
    repo = node_repo(tmp_path / "labels")
    written = init(repo)
    policy = parse_policy(written)
    assert policy.worktree.setup == [["npm", "ci", "--no-audit", "--no-fund"]]
    assert policy.checks["test"] == [["npm", "run", "build"], ["npm", "test", "--silent"]]
    (repo / ".planegate" / "policy.toml").write_text(without_setup(written))
    bare = commit_all(repo, "planegate policy, no bootstrap")
    (repo / ".planegate" / "policy.toml").write_text(replace_sections(written, review=REVIEW))
    full = commit_all(repo, "planegate policy")
    change = {"index.js": SHOUT, "test/shout.test.js": SHOUT_TEST}
    await lifecycle(
        fresh_machine,
        repo,
        bare,
        full,
        ["index.js", "test/**"],
        ["index.js"],
        change,
        "Cannot find module 'leftpad-local'",
    )
