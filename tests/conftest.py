"""Shared fixtures: every test gets its own PLANEGATE_HOME and a machine with no git identity.

The environment is made to look like a fresh machine: HOME points at an empty directory, the
global and system git config are ignored, so nothing here depends on the developer's setup.
Repositories that tests create set their identity explicitly in their own config.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import make_repo


@pytest.fixture(autouse=True)
def fresh_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "planegate-home"
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    monkeypatch.setenv("PLANEGATE_HOME", str(home))
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(user_home / ".gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PLANEGATE_TOKEN", raising=False)
    monkeypatch.delenv("PLANEGATE_CDP_URL", raising=False)
    # No desktop session: notifications the tests cause must not reach the developer's screen.
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    yield make_repo(tmp_path / "repo", {"README.md": "# scratch\n", "src/app.py": "VALUE = 1\n"})
