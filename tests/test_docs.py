"""The docs stay true: README's commands and registration snippets, the skill, the agent card."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_opens_with_the_demo_and_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL)
    assert first_block and readme.index("```bash") < readme.index("planegate is an MCP server")
    commands = [line for line in first_block.group(1).splitlines() if line and not line.startswith("#")]
    assert commands[0].endswith("planegate demo") and "pip install ." in commands[0]
    assert commands[1] == "tests/run"
    assert "tests/run" in (ROOT / ".ci" / "run").read_text()


def test_the_registration_snippets_in_the_readme_parse() -> None:
    readme = (ROOT / "README.md").read_text()
    toml_block = re.search(r"```toml\n(\[mcp_servers\.planegate\].*?)```", readme, re.DOTALL)
    assert toml_block
    server = tomllib.loads(toml_block.group(1))["mcp_servers"]["planegate"]
    assert server["command"] == "planegate" and server["args"] == ["serve"]
    assert {"startup_timeout_sec", "tool_timeout_sec"} <= set(server)
    json_block = re.search(r"```json\n(\{\"mcpServers\".*?)```", readme, re.DOTALL)
    assert json_block
    assert json.loads(json_block.group(1))["mcpServers"]["planegate"]["args"] == ["serve"]
    assert "codex mcp add planegate -- planegate serve" in readme
    assert "claude mcp add planegate -- planegate serve" in readme


def test_the_skill_is_the_servers_runbook_with_a_short_description() -> None:
    skill = (ROOT / "skills" / "planegate" / "SKILL.md").read_text()
    front, body = re.match(r"---\n(.*?)\n---\n\n(.*)", skill, re.DOTALL).groups()  # type: ignore[union-attr]
    meta = yaml.safe_load(front)
    assert meta["name"] == "planegate"
    assert 0 < len(meta["description"]) < 1024
    assert body == (ROOT / "server" / "runbook.md").read_text()


def test_the_agent_card_declares_the_mcp_server_over_stdio() -> None:
    card = yaml.safe_load((ROOT / "skills" / "planegate" / "agents" / "openai.yaml").read_text())
    assert {"display_name", "short_description", "default_prompt"} <= set(card["interface"])
    [tool] = card["dependencies"]["tools"]
    assert (tool["type"], tool["value"], tool["transport"], tool["command"]) == (
        "mcp",
        "planegate",
        "stdio",
        "planegate serve",
    )


def test_every_policy_key_is_documented_in_the_readme_and_the_template() -> None:
    from planegate.tools.policy import DEFAULT_POLICY_TOML, Policy

    readme = (ROOT / "README.md").read_text()
    for key in Policy.model_fields:
        assert key in readme, f"policy key {key!r} is not in the README"
        assert key in DEFAULT_POLICY_TOML or key in ("checks",), f"policy key {key!r} is not in the template"
