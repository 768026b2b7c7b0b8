"""What kind of project a repository is, and the ``[worktree]`` setup and checks that fit it.

``planegate init`` writes what ``detect_project`` finds. The setup makes a fresh worktree ready
from committed files only (lockfiles honoured, nothing rewritten: ``npm ci``, ``uv sync
--locked``), and the checks run with the toolchain rules (``toolchain``): a ``python`` after the
setup made ``.venv`` is that virtualenv's.

- uv (``uv.lock``): ``uv sync --locked``; tests with ``uv run --locked pytest -q``.
- poetry (``poetry.lock`` or ``[tool.poetry]``): ``poetry install --no-interaction``; tests with
  ``poetry run pytest -q``.
- requirements files (``requirements*.txt``, ``*-requirements.txt``, ``requirements/*.txt``): a
  ``.venv`` made with ``python3 -m venv`` and ``pip install -r`` each (and ``-e .`` when the
  project is buildable); tests with ``python -m pytest -q``.
- any other Python project (``pyproject.toml`` with ``[project]``, ``setup.py``, ``setup.cfg``):
  a ``.venv`` and ``pip install -e .`` with its ``dev``/``test`` extras.
- npm / pnpm / yarn / bun by lockfile: ``npm ci``, ``pnpm install --frozen-lockfile``, ``yarn
  install --frozen-lockfile`` (``--immutable`` for Yarn 2+), ``bun install --frozen-lockfile``;
  tests with the manager's ``test`` script, after its ``build`` script when there is one.
- go (``go.mod``): ``go mod download``; ``go test ./...``.
- cargo (``Cargo.toml``): ``cargo fetch``; ``cargo test``.

A generated version file a build backend writes (``[tool.setuptools_scm] version_file``,
``[tool.hatch.build.hooks.vcs] version-file``, …) is copied from the checkout. The files a setup
reads (lockfiles, ``pyproject.toml``, ``package.json``) are its ``inputs``: a task changing one
gets its setup run again before its checks.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Project", "detect_project"]

VENV = [["python3", "-m", "venv", ".venv"]]
PIP = [".venv/bin/python", "-m", "pip", "install"]
PYTEST = ["python", "-m", "pytest", "-q"]
REQUIREMENT_NAMES = (
    "requirements.txt",
    "requirements-dev.txt",
    "requirements_dev.txt",
    "dev-requirements.txt",
    "requirements-test.txt",
    "requirements_test.txt",
    "test-requirements.txt",
    "requirements-tests.txt",
    "requirements/base.txt",
    "requirements/common.txt",
    "requirements/dev.txt",
    "requirements/test.txt",
    "requirements/tests.txt",
)
TEST_EXTRAS = ("dev", "test", "tests", "testing")


@dataclass
class Project:
    """What ``detect_project`` found: the ecosystems, and the policy keys that fit them."""

    kinds: list[str] = field(default_factory=list)
    setup: list[list[str]] = field(default_factory=list)
    checks: dict[str, list[list[str]]] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    copy: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def test_command(self) -> list[str] | None:
        steps = self.checks.get("test")
        return steps[-1] if steps else None

    def worktree(self) -> dict[str, Any]:
        return {"setup": self.setup, "copy": self.copy, "inputs": self.inputs}

    def _add(self, kind: str, setup: list[list[str]], test: list[list[str]] | None, inputs: list[str]) -> None:
        self.kinds.append(kind)
        self.setup += setup
        if test and "test" not in self.checks:
            self.checks["test"] = test
        elif test:
            self.notes.append(f"{kind}'s tests ({' '.join(test[-1])}) are not a check yet: add one under [checks]")
        self.inputs += [i for i in inputs if i not in self.inputs]


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _get(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)  # type: ignore[assignment]
    return data


def _version_files(pyproject: dict[str, Any]) -> list[str]:
    """Files a build backend generates from git metadata (gitignored, so absent in a worktree)."""
    found = [
        _get(pyproject, "tool", "setuptools_scm", "version_file"),
        _get(pyproject, "tool", "setuptools_scm", "write_to"),
        _get(pyproject, "tool", "hatch", "build", "hooks", "vcs", "version-file"),
        _get(pyproject, "tool", "pdm", "version", "write_to"),
    ]
    return sorted({f for f in found if isinstance(f, str) and f and not f.startswith(("/", ".."))})


def _python(repo: Path, project: Project) -> None:
    pyproject = _toml(repo / "pyproject.toml") if (repo / "pyproject.toml").is_file() else {}
    project.copy += _version_files(pyproject)
    if (repo / "uv.lock").is_file():
        test = [["uv", "run", "--locked", "pytest", "-q"]]
        project._add("uv (uv.lock)", [["uv", "sync", "--locked"]], test, ["pyproject.toml", "uv.lock"])
        return
    if (repo / "poetry.lock").is_file() or _get(pyproject, "tool", "poetry"):
        inputs = ["pyproject.toml", *(["poetry.lock"] if (repo / "poetry.lock").is_file() else [])]
        project._add("poetry", [["poetry", "install", "--no-interaction"]], [["poetry", "run", "pytest", "-q"]], inputs)
        return
    buildable = (repo / "setup.py").is_file() or bool(pyproject.get("build-system") and pyproject.get("project"))
    requirements = [name for name in REQUIREMENT_NAMES if (repo / name).is_file()]
    if requirements:
        install = [*PIP, *(arg for name in requirements for arg in ("-r", name)), *(["-e", "."] if buildable else [])]
        inputs = [*requirements, *(["pyproject.toml"] if buildable and pyproject else [])]
        project._add(f"pip ({', '.join(requirements)})", [*VENV, install], [PYTEST], inputs)
        return
    markers = ("pyproject.toml", "setup.py", "setup.cfg")
    if (repo / "setup.py").is_file() or (repo / "setup.cfg").is_file() or pyproject.get("project"):
        extras = _get(pyproject, "project", "optional-dependencies") or {}
        chosen = [name for name in TEST_EXTRAS if isinstance(extras, dict) and name in extras]
        target = f".[{','.join(chosen)}]" if chosen else "."
        inputs = [m for m in markers if (repo / m).is_file()]
        project._add("pip (pyproject)", [*VENV, [*PIP, "-e", target]], [PYTEST], inputs)
        return
    tests = any(repo.glob("tests/**/test_*.py")) or any(repo.glob("test_*.py")) or (repo / "conftest.py").is_file()
    if tests or any((repo / m).is_file() for m in ("pytest.ini", "tox.ini", "conftest.py")):
        project._add("python", [], [PYTEST], [])
        project.notes.append("python tests without a dependency file: the checks use the checkout's .venv when safe")


def _node(repo: Path, project: Project) -> None:
    manifest = repo / "package.json"
    if not manifest.is_file():
        return
    package = _json(manifest)
    scripts = package.get("scripts") if isinstance(package.get("scripts"), dict) else {}
    assert isinstance(scripts, dict)
    manager_field = str(package.get("packageManager") or "")
    if (repo / "pnpm-lock.yaml").is_file():
        kind, lock, setup, run = "pnpm", "pnpm-lock.yaml", ["pnpm", "install", "--frozen-lockfile"], ["pnpm"]
    elif (repo / "yarn.lock").is_file():
        berry = (repo / ".yarnrc.yml").is_file() or (
            manager_field.startswith("yarn@") and not manager_field.startswith("yarn@1")
        )
        flag = "--immutable" if berry else "--frozen-lockfile"
        kind, lock, setup, run = "yarn", "yarn.lock", ["yarn", "install", flag], ["yarn"]
    elif (repo / "bun.lock").is_file() or (repo / "bun.lockb").is_file():
        lock = "bun.lock" if (repo / "bun.lock").is_file() else "bun.lockb"
        kind, setup, run = "bun", ["bun", "install", "--frozen-lockfile"], ["bun", "run"]
    elif (repo / "package-lock.json").is_file() or (repo / "npm-shrinkwrap.json").is_file():
        lock = "package-lock.json" if (repo / "package-lock.json").is_file() else "npm-shrinkwrap.json"
        kind, setup, run = "npm", ["npm", "ci", "--no-audit", "--no-fund"], ["npm", "run"]
    else:
        kind, lock, run = "npm (no lockfile)", "", ["npm", "run"]
        setup = ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock"]
        project.notes.append("no JavaScript lockfile: installs are not reproducible; commit one")
    test: list[list[str]] | None = None
    if "test" in scripts:
        test_step = ["npm", "test", "--silent"] if run == ["npm", "run"] else [*run, "test"]
        test = [[*run, "build"], test_step] if "build" in scripts else [test_step]
    project._add(f"{kind} ({lock or 'package.json'})", [setup], test, ["package.json", *([lock] if lock else [])])


def detect_project(repo: Path) -> Project:
    """The ecosystems ``repo`` uses (by its committed files) and the setup and checks for them."""
    project = Project()
    _node(repo, project)
    if (repo / "go.mod").is_file():
        project._add("go (go.mod)", [["go", "mod", "download"]], [["go", "test", "./..."]], ["go.mod", "go.sum"])
    if (repo / "Cargo.toml").is_file():
        locked = (repo / "Cargo.lock").is_file()
        fetch = ["cargo", "fetch", *(["--locked"] if locked else [])]
        project._add("cargo (Cargo.toml)", [fetch], [["cargo", "test"]], ["Cargo.toml", "Cargo.lock"])
    _python(repo, project)
    if project.kinds:
        project.notes.insert(0, "detected: " + ", ".join(project.kinds))
    return project
