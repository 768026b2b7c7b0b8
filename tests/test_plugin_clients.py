"""The repository as a plugin, checked by the real Claude Code and Codex CLIs from npm, offline.

The clients come from ``.cache/npm-clients`` (``tests/run`` installs the pinned versions). Each test
gives them a fresh HOME, a copy of the repository as a clone would have it, and this checkout's
virtualenv first on PATH, so ``planegate serve`` and ``planegate hook stop`` are this code. The
model APIs are stand-ins on 127.0.0.1 (``tests/fakemodel.py``); nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from planegate.tools.env import Env
from planegate.tools.execution.dispatch import dispatch_task
from tests.execution import calc_repo, open_env, planned_run
from tests.fakemodel import DONE, MessagesAPI, ResponsesAPI

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = Path(os.environ.get("PLANEGATE_NPM_CLIENTS", ROOT / ".cache" / "npm-clients"))
VENV_BIN = Path(sys.executable).parent


def client(name: str) -> str:
    path = CLIENTS / "node_modules" / ".bin" / name
    if path.exists() and os.access(path, os.X_OK):
        return str(path)
    reason = f"{name} is not installed under {CLIENTS}; tests/run installs it with npm"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the plugin tests must run)")
    pytest.skip(reason)


def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a client in its own process group and leave nothing of it behind (MCP servers included)."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(argv)} did not finish in {timeout} s:\n{out}\n{err}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def ok(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    done = run(argv, env, cwd, timeout)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The repository's files as a clone would have them: tracked and new ones, nothing ignored."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    dest = tmp_path / "planegate-checkout"
    for name in filter(None, files.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


@pytest.fixture
def client_env(tmp_path: Path, fresh_machine: Path) -> dict[str, str]:
    home = tmp_path / "client-home"
    home.mkdir()
    return {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "MCP_TIMEOUT": "30000",
    }


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


def test_claude_validates_the_marketplace_and_the_plugin_strictly(
    checkout: Path, client_env: dict[str, str], tmp_path: Path
) -> None:
    claude = client("claude")
    marketplace = ok([claude, "plugin", "validate", "--strict", "."], client_env, checkout)
    assert "Validating marketplace manifest" in marketplace and "✔ Validation passed" in marketplace
    # only a plugin manifest gets its skills and hooks checked, so the plugin is validated on its own too
    plugin = ok([claude, "plugin", "validate", "--strict", ".claude-plugin/plugin.json"], client_env, checkout)
    assert "Validating plugin manifest" in plugin and "✔ Validation passed" in plugin
    hooks, skill = checkout / "hooks" / "hooks.json", checkout / "skills" / "planegate" / "SKILL.md"
    for path, good, bad, complaint in (
        (hooks, '"Stop"', '"Stopp"', "Stopp"),
        (skill, "\ndescription:", "\nsummary:", "No description in frontmatter"),
    ):
        text = path.read_text()
        path.write_text(text.replace(good, bad, 1))
        broken = run([claude, "plugin", "validate", "--strict", ".claude-plugin/plugin.json"], client_env, checkout)
        assert broken.returncode == 1 and complaint in broken.stdout + broken.stderr, broken.stdout
        path.write_text(text)


@pytest.mark.slow
def test_claude_installs_the_plugin_and_reports_planegate_connected(
    checkout: Path, client_env: dict[str, str], tmp_path: Path
) -> None:
    claude = client("claude")
    ok([claude, "plugin", "marketplace", "add", str(checkout)], client_env, tmp_path)
    ok([claude, "plugin", "install", "planegate@planegate"], client_env, tmp_path)
    details = ok([claude, "plugin", "details", "planegate@planegate"], client_env, tmp_path)
    for component in ("Skills (1)  planegate", "Hooks (1)  Stop", "MCP servers (1)  planegate"):
        assert component in details, details
    listed = ok([claude, "mcp", "list"], client_env, tmp_path)  # exits 0 even when a server fails: read it
    assert "plugin:planegate:planegate: planegate serve - ✔ Connected" in listed, listed
    # the README's registration line without the plugin
    project = tmp_path / "project"
    project.mkdir()
    ok([claude, "mcp", "add", "planegate", "--", "planegate", "serve"], client_env, project)
    listed = ok([claude, "mcp", "list"], client_env, project)
    assert "\nplanegate: planegate serve - ✔ Connected" in listed, listed


def test_codex_adds_the_marketplace_and_installs_the_plugin(
    checkout: Path, client_env: dict[str, str], tmp_path: Path
) -> None:
    codex = client("codex")
    ok([codex, "plugin", "marketplace", "add", str(checkout)], client_env, tmp_path)
    available = json.loads(ok([codex, "plugin", "list", "--json", "--available"], client_env, tmp_path))
    [entry] = [p for p in available["available"] if p["pluginId"] == "planegate@planegate"]
    assert entry["version"] == "0.1.0" and entry["source"]["path"] == str(checkout)
    ok([codex, "plugin", "add", "planegate@planegate"], client_env, tmp_path)
    installed = json.loads(ok([codex, "plugin", "list", "--json"], client_env, tmp_path))
    [plugin] = [p for p in installed["installed"] if p["pluginId"] == "planegate@planegate"]
    assert plugin["installed"] and plugin["enabled"]
    server = json.loads(ok([codex, "mcp", "get", "planegate", "--json"], client_env, tmp_path))
    assert server["transport"]["command"] == "planegate" and server["transport"]["args"] == ["serve"]
    prompt = ok([codex, "debug", "prompt-input", "hello"], client_env, tmp_path)
    assert "planegate:planegate: Orchestrate a multi-step software change" in prompt, "Codex loads the skill"


def _a_run_with_a_dispatched_task(env: Env, tmp_path: Path) -> tuple[str, Path]:
    repo = calc_repo(tmp_path / "calc")
    run_id = planned_run(env, repo)
    dispatch_task(env, run_id, "calc")
    return run_id, repo


@pytest.mark.slow
def test_claude_is_kept_working_when_it_claims_done_on_an_unfinished_run(
    checkout: Path, client_env: dict[str, str], tmp_path: Path, env: Env
) -> None:
    claude = client("claude")
    run_id, repo = _a_run_with_a_dispatched_task(env, tmp_path)
    ok([claude, "plugin", "marketplace", "add", str(checkout)], client_env, tmp_path)
    ok([claude, "plugin", "install", "planegate@planegate"], client_env, tmp_path)
    api = MessagesAPI()
    try:
        model_env = {**client_env, "ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": api.url}
        result = json.loads(ok([claude, "-p", "finish the work", "--output-format", "json"], model_env, repo))
        turns = api.agent_turns()
    finally:
        api.close()
    assert result["subtype"] == "success" and result["result"] == DONE
    # the first "done" was blocked and its reason became the next message; the second, with the run
    # unmoved, was let through instead of looping
    assert len(turns) == 2, [json.dumps(t)[:200] for t in turns]
    feedback = json.dumps(turns[1]["messages"][-1])
    assert "Stop hook feedback:" in feedback and f"planegate: run {run_id}" in feedback
    assert "calc in_progress" in feedback and "Next call:" in feedback


@pytest.mark.slow
def test_codex_is_kept_working_when_it_claims_done_on_an_unfinished_run(
    checkout: Path, client_env: dict[str, str], tmp_path: Path, env: Env
) -> None:
    codex = client("codex")
    run_id, repo = _a_run_with_a_dispatched_task(env, tmp_path)
    api = ResponsesAPI()
    try:
        config = Path(client_env["HOME"]) / ".codex" / "config.toml"
        config.parent.mkdir(parents=True)
        # top-level keys first: anything after a [table] header would land in that table
        config.write_text(
            'model = "gpt-test"\nmodel_provider = "fake"\n\n[model_providers.fake]\nname = "fake"\n'
            f'base_url = "{api.url}/v1"\nwire_api = "responses"\nenv_key = "FAKE_API_KEY"\n'
        )
        ok([codex, "plugin", "marketplace", "add", str(checkout)], client_env, tmp_path)
        ok([codex, "plugin", "add", "planegate@planegate"], client_env, tmp_path)
        done = ok(
            # hooks from a plugin run only once trusted; the flag stands in for the user's "Trust all"
            [codex, "exec", "--skip-git-repo-check", "--dangerously-bypass-hook-trust", "finish the work"],
            {**client_env, "FAKE_API_KEY": "x"},
            repo,
        )
        turns = api.agent_turns()
    finally:
        api.close()
    assert DONE in done
    assert len(turns) == 2, [json.dumps(t)[:200] for t in turns]
    feedback = json.dumps(turns[1]["input"])
    assert "hook_prompt" in feedback and f"planegate: run {run_id}" in feedback and "calc in_progress" in feedback
