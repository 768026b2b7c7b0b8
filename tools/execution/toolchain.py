"""The toolchain rules: which ``python``, ``pytest`` or ``jest`` a check and a setup step find.

planegate runs in its own virtualenv, and a check's ``python`` must never be that one (it has
planegate's packages, not the repository's). So for every setup step and check:

1. planegate's own virtualenv leaves PATH: its ``bin`` (``sys.prefix``, ``sys.executable``'s
   folder) and the ``bin`` of any ``$VIRTUAL_ENV`` the server was started in; the variables an
   activated environment leaves behind (``VIRTUAL_ENV``, ``PYTHONHOME``, ``CONDA_PREFIX``,
   ``POETRY_ACTIVE``, …) are not passed, whatever ``env_allow`` says.
2. The repository's environment goes in front, in this order:

   - the worktree's own ``.venv`` (one a setup step made, e.g. ``uv sync``), as if activated:
     ``.venv/bin`` first and ``VIRTUAL_ENV`` set to it;
   - else the checkout's ``.venv``, the same way, **unless it holds an editable install of the
     checkout** (PEP 610 ``direct_url.json`` marked editable, a ``.pth`` line, an editable
     finder's mapping or an ``.egg-link`` pointing into it): code run through it would import the
     checkout's files instead of the task's, so it is not used and the bootstrap log says why;
   - the worktree's ``node_modules/.bin`` (what ``npx`` and ``npm run`` find), never the
     checkout's: a tool from there resolves its modules from the checkout.

``uv run`` and ``poetry run`` find their environment from the worktree themselves (uv: the
worktree's ``.venv``; poetry: its cache keyed by the worktree's path, or ``.venv`` in-project);
with ``VIRTUAL_ENV`` not inherited they cannot fall back on planegate's. Variables naming where a
toolchain lives (``RUSTUP_HOME``, ``CARGO_HOME``, ``GOPATH``, ``JAVA_HOME``, ``XDG_*_HOME``, …)
are passed to setup and checks; they name folders, never credentials.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..policy import Policy
from .procs import DEFAULT_ENV_ALLOW, scrubbed_env

__all__ = [
    "INHERITED_ENVIRONMENT",
    "TOOLCHAIN_ENV_ALLOW",
    "Toolchain",
    "editable_install_into",
    "own_bin_dirs",
    "process_env",
    "toolchain_for",
]

# Left by an activated environment; never inherited by setup or checks.
INHERITED_ENVIRONMENT = (
    "VIRTUAL_ENV",
    "VIRTUAL_ENV_PROMPT",
    "PYTHONHOME",
    "PYTHONEXECUTABLE",
    "__PYVENV_LAUNCHER__",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "CONDA_SHLVL",
    "CONDA_PYTHON_EXE",
    "POETRY_ACTIVE",
    "PIPENV_ACTIVE",
    "UV_PROJECT_ENVIRONMENT",
)
# Where toolchains live: folders, not secrets. Passed to setup steps and checks.
TOOLCHAIN_ENV_ALLOW = (
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_HOME",
    "GOROOT",
    "GOPATH",
    "GOMODCACHE",
    "GOCACHE",
    "GOFLAGS",
    "GOTOOLCHAIN",
    "JAVA_HOME",
    "PYENV_ROOT",
    "PYENV_VERSION",
    "UV_CACHE_DIR",
    "UV_PYTHON_INSTALL_DIR",
    "NVM_DIR",
    "VOLTA_HOME",
    "PNPM_HOME",
    "COREPACK_HOME",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
)


def own_bin_dirs(environ: dict[str, str] | None = None) -> set[Path]:
    """The folders of planegate's own virtualenv that may sit on the server's PATH."""
    source = os.environ if environ is None else environ
    found: set[Path] = set()
    if sys.prefix != sys.base_prefix:
        found.add(Path(sys.prefix) / "bin")
        found.add(Path(sys.executable).parent)
    if source.get("VIRTUAL_ENV"):
        found.add(Path(source["VIRTUAL_ENV"]) / "bin")
    return {_resolved(p) for p in found}


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def strip_own(path_value: str, own: set[Path]) -> list[str]:
    """PATH's entries without planegate's virtualenv (and without empty entries, which mean '.')."""
    return [entry for entry in path_value.split(os.pathsep) if entry and _resolved(Path(entry)) not in own]


def _is_venv(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file() and (path / "bin").is_dir()


def _inside(candidate: str | Path, root: Path, venv: Path) -> bool:
    """Whether a path lies in the checkout ``root`` but not in the virtualenv itself."""
    if not str(candidate):
        return False
    try:
        found = _resolved(Path(candidate))
    except (OSError, ValueError):
        return False
    return found.is_relative_to(root) and not found.is_relative_to(venv)


def _site_packages(venv: Path) -> list[Path]:
    return sorted(p for p in (venv / "lib").glob("python*/site-packages") if p.is_dir())


def editable_install_into(venv: Path, root: Path) -> str | None:
    """Why code run through ``venv`` would import files under ``root`` (an editable install of
    it), or None. Cached by the site-packages folders' modification times."""
    stamps = []
    for site in _site_packages(venv):
        try:
            stamps.append((str(site), site.stat().st_mtime_ns))
        except OSError:
            continue
    return _editable_cached(str(_resolved(venv)), str(_resolved(root)), tuple(stamps))


_QUOTED_PATH = re.compile(r"""['"](/[^'"\n]+)['"]""")


@lru_cache(maxsize=256)
def _editable_cached(venv: str, root_text: str, stamps: tuple[tuple[str, int], ...]) -> str | None:
    root, home = Path(root_text), Path(venv)
    for site_text, _ in stamps:
        site = Path(site_text)
        for direct in site.glob("*.dist-info/direct_url.json"):
            try:
                data = json.loads(direct.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            url = data.get("url", "") if isinstance(data, dict) else ""
            editable = isinstance(data, dict) and (data.get("dir_info") or {}).get("editable")
            if editable and url.startswith("file:") and _inside(unquote(urlparse(url).path), root, home):
                name = direct.parent.name.split("-")[0]
                return f"{name} is installed editable from {unquote(urlparse(url).path)} ({direct})"
        for pth in site.glob("*.pth"):
            try:
                lines = pth.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in (entry.strip() for entry in lines):
                if line and not line.startswith(("#", "import ", "import\t")) and _inside(site / line, root, home):
                    return f"{pth.name} puts {line} on sys.path"
        for finder in site.glob("__editable___*finder.py"):
            try:
                text = finder.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if any(_inside(found, root, home) for found in _QUOTED_PATH.findall(text)):
                return f"{finder.name} maps modules into {root}"
        for link in site.glob("*.egg-link"):
            try:
                first = link.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
            except OSError:
                continue
            if first and _inside(first[0].strip(), root, home):
                return f"{link.name} links {first[0].strip()}"
    return None


@dataclass(frozen=True)
class Toolchain:
    """What a process in one worktree runs with: PATH, the virtualenv chosen, and why."""

    path: str
    venv: Path | None
    venv_from: str | None  # "worktree" or "checkout"
    node_bin: Path | None
    notes: tuple[str, ...]

    def apply(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with the inherited environment removed and this toolchain's PATH and virtualenv."""
        out = {k: v for k, v in env.items() if k not in INHERITED_ENVIRONMENT}
        out["PATH"] = self.path
        if self.venv is not None:
            out["VIRTUAL_ENV"] = str(self.venv)
        return out

    def describe(self) -> str:
        front = []
        if self.venv is not None:
            front.append(f"{self.venv / 'bin'} (the {self.venv_from}'s .venv)")
        if self.node_bin is not None:
            front.append(f"{self.node_bin} (the worktree's node_modules/.bin)")
        head = "PATH: " + (", then ".join(front) + ", then " if front else "") + "the server's PATH without planegate's"
        return "\n".join([head + " own virtualenv", *self.notes])


def toolchain_for(cwd: Path, checkout: Path | None, server_path: str | None = None) -> Toolchain:
    """The toolchain for a process in ``cwd`` (a worktree of ``checkout``), by the rules above."""
    base = strip_own(os.environ.get("PATH", os.defpath) if server_path is None else server_path, own_bin_dirs())
    notes: list[str] = []
    venv: Path | None = None
    venv_from = None
    own_venv = cwd / ".venv"
    if _is_venv(own_venv):
        venv, venv_from = own_venv, "worktree"
        if own_venv.is_symlink() and checkout is not None:
            # A linked .venv is the checkout's: the same editable-install rule holds.
            why = editable_install_into(own_venv, checkout)
            if why is not None:
                notes.append(f"the linked .venv is not used: {why}, so it would run the checkout's code")
                venv, venv_from = None, None
    elif checkout is not None and _is_venv(checkout / ".venv"):
        why = editable_install_into(checkout / ".venv", checkout)
        if why is None:
            venv, venv_from = checkout / ".venv", "checkout"
        else:
            notes.append(
                f"the checkout's .venv is not used: {why}, so it would run the checkout's code instead of the "
                "worktree's; make the worktree's own with a [worktree] setup step (e.g. uv sync)"
            )
    node_bin = cwd / "node_modules" / ".bin"
    front = [str(venv / "bin")] if venv is not None else []
    if node_bin.is_dir():
        front.append(str(node_bin))
    path = os.pathsep.join([*front, *[entry for entry in base if entry not in front]])
    return Toolchain(path, venv, venv_from, node_bin if node_bin.is_dir() else None, tuple(notes))


def process_env(
    policy: Policy,
    run: str,
    task: str | None,
    cwd: Path | None = None,
    checkout: Path | None = None,
    *,
    check: bool = True,
) -> dict[str, str]:
    """The environment of a setup step or check in ``cwd``: the allow-listed variables (the
    executor's ``env_allow`` and the toolchain locations), the toolchain rules' PATH, the policy's
    ``[worktree] env``, then planegate's own (``PLANEGATE_RUN``/``PLANEGATE_TASK``, and for a check
    ``PYTHONDONTWRITEBYTECODE=1`` so a Python check leaves no ``__pycache__`` behind)."""
    env = scrubbed_env([*DEFAULT_ENV_ALLOW, *TOOLCHAIN_ENV_ALLOW, *policy.executor.env_allow])
    if cwd is None:
        chain = Toolchain(os.pathsep.join(strip_own(env.get("PATH", os.defpath), own_bin_dirs())), None, None, None, ())
    else:
        chain = toolchain_for(cwd, checkout, env.get("PATH", os.defpath))
    out = chain.apply(env)
    out.update(policy.worktree.env)
    out["PLANEGATE_RUN"] = run
    if task:
        out["PLANEGATE_TASK"] = task
    if check:
        out["PYTHONDONTWRITEBYTECODE"] = "1"
    return out
