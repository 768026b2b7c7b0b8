"""The toolchain rules: planegate's own virtualenv never reaches a check; the worktree's .venv,
else the checkout's when it has no editable install of the checkout, then node_modules/.bin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from planegate.tools.execution.toolchain import editable_install_into, process_env, toolchain_for
from planegate.tools.policy import parse_policy

OWN_BIN = str(Path(sys.executable).parent)


@pytest.fixture
def activated(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server started from an activated planegate virtualenv."""
    monkeypatch.setenv("PATH", f"{OWN_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
    monkeypatch.setenv("CONDA_PREFIX", "/opt/conda")


def fake_venv(path: Path, site_files: dict[str, str] | None = None) -> Path:
    """A virtualenv's shape (what the rules look at), with files in its site-packages."""
    (path / "bin").mkdir(parents=True)
    (path / "pyvenv.cfg").write_text("home = /usr/bin\n")
    site = path / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    for name, text in (site_files or {}).items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    return path


def editable(url: Path) -> dict[str, str]:
    data = {"url": url.as_uri(), "dir_info": {"editable": True}}
    return {"mypkg-1.0.dist-info/direct_url.json": json.dumps(data)}


def test_planegate_s_own_virtualenv_and_its_variables_never_reach_a_check(tmp_path: Path, activated: None) -> None:
    policy = parse_policy('[executor]\nenv_allow = ["VIRTUAL_ENV", "CONDA_PREFIX"]\n')
    worktree = tmp_path / "wt"
    worktree.mkdir()
    env = process_env(policy, "run", "task", worktree, tmp_path / "checkout")
    assert OWN_BIN not in env["PATH"].split(os.pathsep) and str(Path(sys.prefix) / "bin") not in env["PATH"]
    assert "VIRTUAL_ENV" not in env and "CONDA_PREFIX" not in env
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PLANEGATE_TASK"] == "task"
    # the python a check finds is not planegate's
    found = subprocess.run(["python3", "-c", "import sys; print(sys.prefix)"], env=env, capture_output=True, text=True)
    assert found.stdout.strip() != sys.prefix


def test_the_worktree_s_venv_comes_first_then_node_modules_bin(tmp_path: Path, activated: None) -> None:
    worktree, checkout = tmp_path / "wt", tmp_path / "checkout"
    fake_venv(worktree / ".venv")
    fake_venv(checkout / ".venv")
    (worktree / "node_modules" / ".bin").mkdir(parents=True)
    chain = toolchain_for(worktree, checkout)
    assert chain.path.split(os.pathsep)[:2] == [str(worktree / ".venv/bin"), str(worktree / "node_modules/.bin")]
    assert chain.venv_from == "worktree"
    env = chain.apply({"PATH": "/usr/bin", "VIRTUAL_ENV": sys.prefix})
    assert env["VIRTUAL_ENV"] == str(worktree / ".venv")


def test_the_checkout_s_venv_is_used_only_without_an_editable_install_of_the_checkout(tmp_path: Path) -> None:
    worktree, checkout = tmp_path / "wt", tmp_path / "checkout"
    worktree.mkdir()
    fake_venv(checkout / ".venv", {"helper-1.0.dist-info/METADATA": "Name: helper\n"})
    chain = toolchain_for(worktree, checkout)
    assert chain.venv == checkout / ".venv" and chain.venv_from == "checkout" and not chain.notes

    def shapes(root: Path) -> list[dict[str, str]]:
        finder = f"MAPPING = {{'mypkg': '{root / 'src' / 'mypkg'}'}}\n"
        return [
            editable(root),
            {"_mypkg.pth": f"{root / 'src'}\n"},
            {
                "__editable__.mypkg-1.0.pth": "import __editable___mypkg_1_0_finder\n",
                "__editable___mypkg_1_0_finder.py": finder,
            },
            {"mypkg.egg-link": f"{root}\n.\n"},
        ]

    for index in range(4):
        other = tmp_path / f"checkout{index}"
        shape = shapes(other)[index]
        fake_venv(other / ".venv", shape)
        chain = toolchain_for(worktree, other)
        assert chain.venv is None, shape
        assert "the checkout's .venv is not used" in chain.notes[0] and "[worktree] setup" in chain.notes[0]


def test_paths_inside_the_venv_itself_or_elsewhere_are_not_an_editable_install(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    venv = fake_venv(checkout / ".venv", {"pywin32.pth": "win32\nwin32/lib\n", "other.pth": "/opt/shared/lib\n"})
    venv_site = venv / "lib/python3.11/site-packages"
    (venv_site / "elsewhere-1.0.dist-info").mkdir()
    (venv_site / "elsewhere-1.0.dist-info/direct_url.json").write_text(
        json.dumps({"url": (tmp_path / "other-project").as_uri(), "dir_info": {"editable": True}})
    )
    assert editable_install_into(venv, checkout) is None


def test_a_real_virtualenv_s_python_is_the_one_a_check_finds(tmp_path: Path, activated: None) -> None:
    checkout, worktree = tmp_path / "checkout", tmp_path / "wt"
    worktree.mkdir()
    subprocess.run(
        ["python3", "-m", "venv", "--without-pip", str(checkout / ".venv")],
        check=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    )
    env = process_env(parse_policy(""), "run", None, worktree, checkout)
    found = subprocess.run(
        ["python", "-c", "import sys; print(sys.prefix)"],
        env=env,
        capture_output=True,
        text=True,
        cwd=worktree,
        timeout=60,
    )
    assert Path(found.stdout.strip()) == (checkout / ".venv").resolve() or found.stdout.strip() == str(
        checkout / ".venv"
    )
