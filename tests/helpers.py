"""Helpers shared by the tests: scratch git repositories and MCP calls."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

IDENTITY = {"user.name": "Test Author", "user.email": "author@example.invalid"}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` and return its stdout (stripped)."""
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None, *, identity: bool = True) -> Path:
    """A git repository at ``path`` with one commit holding ``files``."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    if identity:
        for key, value in IDENTITY.items():
            git(path, "config", key, value)
    for name, text in (files or {"README.md": "# scratch\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    if identity:
        git(path, "commit", "-q", "-m", "initial")
    else:
        git(path, "-c", "user.name=Setup", "-c", "user.email=setup@example.invalid", "commit", "-q", "-m", "initial")
    return path


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


async def call(client: Any, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    result = await client.call_tool(tool, arguments)
    text = " ".join(getattr(block, "text", "") for block in result.content)
    assert not result.is_error, f"{tool} failed: {text}"
    return dict(result.structured_content or {})


async def refused(client: Any, tool: str, **arguments: Any) -> str:
    """Call a tool that must be refused; the error text."""
    result = await client.call_tool(tool, arguments)
    text = " ".join(getattr(block, "text", "") for block in result.content)
    assert result.is_error, f"{tool} was expected to be refused but returned {result.structured_content}"
    return text


def planegate_in_terminal(*args: str, answer: str, timeout: float = 60) -> tuple[int, str]:
    """Run ``planegate ARGS`` with a pseudo-terminal as its controlling terminal, typing ``answer``
    when it asks; its exit code and everything it printed."""
    import os
    import pty
    import select
    import sys
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        os.execv(sys.executable, [sys.executable, "-m", "planegate.server.cli", *args])
    output = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
                if not answered and b"Type the" in output:
                    os.write(fd, answer.encode() + b"\n")
                    answered = True
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished and not ready:
                break
        else:
            os.kill(pid, 9)
            raise AssertionError(f"planegate {' '.join(args)} did not finish: {output.decode(errors='replace')}")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0) if not finished else (pid, status)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")
