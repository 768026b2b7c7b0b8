"""The one-line installs stay true: package metadata, the built dists, the wheel in a fresh virtualenv
(and under uvx), the MCP registry's server.json, and the plugin manifests agreeing with all of them."""

from __future__ import annotations

import email
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, FormatChecker

from planegate.server import __version__

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
SCHEMA = DATA / "mcp-registry" / "server.schema.json"
SCHEMA_SHA256 = "3fba09590c99f61735d234822279f4223fab9e300c0a81e81c91ab62a4114de0"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# planegate sets these for the executors and checks it starts; users do not
SET_FOR_CHILDREN = {
    "PLANEGATE_TASK",
    "PLANEGATE_ENVELOPE",
    "PLANEGATE_RUN",
    "PLANEGATE_REVIEW",
    "PLANEGATE_TEST_REPORT",
    "PLANEGATE_TEST_SELECT",
}


def load(name: str) -> Any:
    return json.loads((ROOT / name).read_text())


def server_json_errors(document: dict[str, Any]) -> list[str]:
    validator = Draft7Validator(json.loads(SCHEMA.read_text()), format_checker=FormatChecker())
    return sorted(f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document))


def test_server_json_is_valid_against_the_vendored_registry_schema() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256, "the vendored schema was edited"
    document = load("server.json")
    assert document["$schema"] == json.loads(SCHEMA.read_text())["$id"]
    assert server_json_errors(document) == []
    # the schema has teeth: what the registry refuses, it refuses here too
    [package] = document["packages"]
    for broken in (
        {**document, "description": "x" * 101},
        {**document, "packages": [{**package, "version": "latest"}]},
        {**document, "name": "planegate"},
        {**document, "packages": [{k: v for k, v in package.items() if k != "transport"}]},
    ):
        assert server_json_errors(broken), broken


def test_server_json_runs_the_pypi_package_with_uvx_over_stdio() -> None:
    document = load("server.json")
    [package] = document["packages"]
    assert (package["registryType"], package["identifier"], package["runtimeHint"]) == ("pypi", PROJECT["name"], "uvx")
    assert package["transport"] == {"type": "stdio"}
    assert package["packageArguments"] == [{"type": "positional", "value": "serve"}]
    assert document["version"] == package["version"] == PROJECT["version"] == __version__


def test_server_json_names_every_environment_variable_planegate_reads() -> None:
    read: set[str] = set()
    for folder in ("server", "tools", "store", "bridge"):
        for source in (ROOT / folder).rglob("*.py"):
            read |= set(re.findall(r"\b(PLANEGATE_[A-Z0-9_]+)\b", source.read_text()))
    [package] = load("server.json")["packages"]
    declared = {v["name"] for v in package["environmentVariables"]}
    assert declared == read - SET_FOR_CHILDREN, (
        f"undeclared: {sorted(read - SET_FOR_CHILDREN - declared)}, declared but never read: "
        f"{sorted(declared - read)}; add each to server.json's environmentVariables (or drop it)"
    )
    assert all(v["description"] for v in package["environmentVariables"])


def test_the_readme_carries_the_registry_ownership_marker() -> None:
    name = load("server.json")["name"]
    readme = (ROOT / "README.md").read_text()
    # the registry looks for `mcp-name: <name>` ending at a character a name cannot contain
    assert re.search(rf"mcp-name: {re.escape(name)}(?![a-zA-Z0-9._/-])", readme)
    assert f"<!-- mcp-name: {name} -->" in readme, "as an HTML comment: kept on PyPI, hidden on GitHub"


def test_one_version_and_one_home_across_the_package_the_registry_and_the_plugins() -> None:
    urls = PROJECT["urls"]
    home = urls["Repository"]
    owner, repo = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", home).groups()  # type: ignore[union-attr]
    plugin, marketplace, server = (
        load(".claude-plugin/plugin.json"),
        load(".claude-plugin/marketplace.json"),
        load("server.json"),
    )
    [entry] = marketplace["plugins"]
    assert {plugin["version"], entry["version"], server["version"]} == {PROJECT["version"]}
    assert plugin["name"] == entry["name"] == marketplace["name"] == PROJECT["name"] == repo
    assert urls["Homepage"] == plugin["homepage"] == plugin["repository"] == server["repository"]["url"] == home
    assert server["name"] == f"io.github.{owner}/{repo}"
    assert plugin["license"] == PROJECT["license"] and (ROOT / "LICENSE").is_file()
    assert entry["source"] == "./", "the repository is its own plugin"


def test_the_plugin_wires_the_server_and_the_hook_to_the_installed_command() -> None:
    from planegate.server.cli import build_parser

    server = load(".mcp.json")["mcpServers"]["planegate"]
    [[stop]] = [group["hooks"] for group in load("hooks/hooks.json")["hooks"]["Stop"]]
    for command in (" ".join([server["command"], *server["args"]]), stop["command"]):
        program, *args = command.split()
        assert program == "planegate" and program in PROJECT["scripts"]
        build_parser().parse_args(args)  # a subcommand the CLI has
    assert stop["type"] == "command" and 0 < stop["timeout"] <= 60
    assert (ROOT / "skills" / "planegate" / "SKILL.md").is_file()


def _run(argv: list[str], timeout: float, **kwargs: Any) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)  # a build, a fresh venv from the index, the demo and uvx
def test_the_built_wheel_installs_into_a_fresh_venv_and_runs_the_demo(tmp_path: Path) -> None:
    source = tmp_path / "source"
    files = _run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"], 60).split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)], 300)
    version = PROJECT["version"]
    wheel, sdist = dist / f"planegate-{version}-py3-none-any.whl", dist / f"planegate-{version}.tar.gz"
    assert wheel.is_file() and sdist.is_file(), sorted(p.name for p in dist.iterdir())
    assert "PASSED" in _run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], 120)

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(archive.read(f"planegate-{version}.dist-info/METADATA"))
    assert f"planegate-{version}.dist-info/licenses/LICENSE" in names
    assert "planegate/server/runbook.md" in names and "planegate/server/hook.py" in names
    assert metadata["License-Expression"] == "MIT" and metadata["License-File"] == "LICENSE"
    assert set(metadata.get_all("Classifier")) == set(PROJECT["classifiers"])
    assert {u.split(", ", 1)[0] for u in metadata.get_all("Project-URL")} == set(PROJECT["urls"])
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert f"mcp-name: {load('server.json')['name']}" in metadata.get_payload(), "the registry reads it on PyPI"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], 120)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], 600)
    home, user = tmp_path / "planegate-home", tmp_path / "user"
    user.mkdir()
    env = {**os.environ, "PLANEGATE_HOME": str(home), "HOME": str(user), "TMPDIR": str(tmp_path)}
    planegate = str(venv / "bin" / "planegate")
    assert _run([planegate, "--version"], 60, env=env).strip() == f"planegate {version}"
    demo = _run([planegate, "demo"], 300, env=env, cwd=user)
    assert "demo finished: run" in demo and "accepted" in demo

    # `uvx planegate …` once published: the same wheel through uv's own resolver
    uvx = Path(sys.executable).parent / "uvx"
    if not uvx.exists():
        pytest.fail("uvx is missing from the dev dependencies; pip install -e '.[dev]'")
    uv_env = {
        **env,
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "UV_TOOL_DIR": str(tmp_path / "uv-tools"),
        "UV_PYTHON_DOWNLOADS": "never",
    }
    base_python = getattr(sys, "_base_executable", sys.executable)
    out = _run([str(uvx), "--python", base_python, "--from", str(wheel), "planegate", "--version"], 600, env=uv_env)
    assert out.strip() == f"planegate {version}"
