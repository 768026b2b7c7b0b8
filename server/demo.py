"""``planegate demo``: one whole run on a scratch repository, through the real MCP tools.

The demo makes a small Python project in a temporary directory (with its own git identity, so it
works on a machine that has none), points ``PLANEGATE_HOME`` at a scratch directory, and drives
the same tools an agent would, through an in-memory MCP client, printing each step.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

DEMO_FILES = {
    "README.md": "# textstats\n\nA tiny library the planegate demo changes.\n",
    "textstats/__init__.py": '"""Text statistics."""\n',
    "textstats/words.py": "def word_count(text: str) -> int:\n    return len(text.split())\n",
    "tests/test_words.py": (
        "from textstats.words import word_count\n\n\ndef test_word_count():\n    assert word_count('a b c') == 3\n"
    ),
}

REQUIREMENTS = [
    {
        "id": "R1",
        "statement": "The library reports the number of lines in a text.",
        "acceptance_criteria": ["line_count('a\\nb') == 2", "line_count('') == 0"],
    },
    {
        "id": "R2",
        "statement": "The library reports the average word length of a text.",
        "acceptance_criteria": ["average_word_length('ab abcd') == 3.0", "an empty text gives 0.0"],
    },
]

MODULES = [
    {"name": "lines", "owns": ["textstats/lines.py"], "depends_on": []},
    {"name": "words", "owns": ["textstats/words.py", "textstats/__init__.py"], "depends_on": []},
    {"name": "tests", "owns": ["tests/**"], "depends_on": ["lines", "words"]},
]

TASKS = [
    {
        "id": "line-count",
        "title": "Add line_count",
        "goal": "Add textstats/lines.py with line_count(text) and a test.",
        "scope": ["textstats/lines.py"],
        "requirements": ["R1"],
        "acceptance": ["tests/test_lines.py covers empty text"],
    },
    {
        "id": "avg-word-length",
        "title": "Add average_word_length",
        "goal": "Add average_word_length(text) to textstats/words.py, with a test.",
        "depends_on": ["line-count"],
        "scope": ["textstats/words.py"],
        "requirements": ["R2"],
    },
]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, timeout=60)


def make_scratch_repo(root: Path) -> Path:
    repo = root / "textstats"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.name", "planegate demo")
    _git(repo, "config", "user.email", "demo@planegate.invalid")
    for name, text in DEMO_FILES.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "textstats: initial")
    return repo


class Printer:
    def __init__(self) -> None:
        self.step = 0

    def __call__(self, title: str, detail: str = "") -> None:
        self.step += 1
        print(f"\n[{self.step}] {title}")
        if detail:
            for line in detail.rstrip().splitlines():
                print(f"    {line}")


async def _call(client: Any, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise SystemExit(f"demo: {tool} failed: {text}")
    return dict(result.structured_content or {})


async def drive(home: Path, repo: Path, say: Printer) -> str:
    from mcp import Client

    from planegate.tools.config import Settings

    from .app import build_server

    server = build_server(Settings(home=home, actor="agent:demo"))
    async with Client(server) as client:
        started = await _call(client, "start_run", {"repo": str(repo), "goal": "Add line and word statistics"})
        run = started["run"]
        say(
            "start_run", f"run {run} on {repo}\nbase {started['base_sha'][:12]}, branch {started['integration_branch']}"
        )
        frozen = await _call(client, "freeze_requirements", {"run": run, "requirements": REQUIREMENTS})
        say("freeze_requirements", f"version {frozen['version']}, sha256 {frozen['content_sha256'][:16]}")
        arch = await _call(
            client,
            "freeze_architecture",
            {
                "run": run,
                "modules": MODULES,
                "decisions": [{"title": "pure functions", "decision": "statistics are pure functions of the text"}],
            },
        )
        say("freeze_architecture", f"version {arch['version']}: modules lines, words, tests")
        graph = await _call(client, "register_graph", {"run": run, "tasks": TASKS})
        say("register_graph", f"waves: {json.dumps(graph['waves'])}\ncoverage: {json.dumps(graph['coverage'])}")
        status = await _call(client, "get_status", {"run": run})
        say(
            "get_status",
            f"stage {status['status']['stage']}, counts {status['status']['counts']}\nnext: {status['next_action']}",
        )
        server.env_holder.close()  # type: ignore[attr-defined]
        return str(run)


def run_demo(keep: bool = False) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="planegate-demo-"))
    home = scratch / "home"
    say = Printer()
    try:
        repo = make_scratch_repo(scratch)
        say("scratch repository", f"{repo} (a tiny Python library, one commit)")
        run = anyio.run(drive, home, repo, say)
        print(f"\ndemo finished: run {run}")
        if keep:
            print(f"kept: repository {repo}; state PLANEGATE_HOME={home}")
            print(f"inspect: PLANEGATE_HOME={home} planegate status {run}")
        return 0
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
        sys.stdout.flush()
