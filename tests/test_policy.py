"""The policy file: defaults, the commented template `planegate init` writes, refusals with file,
line and key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from planegate.tools.errors import PolicyError
from planegate.tools.policy import Policy, detect_test_command, parse_policy, policy_template


def test_no_policy_file_means_the_documented_defaults(tmp_path: Path) -> None:
    from planegate.tools.control.runs import policy_at
    from planegate.tools.gitrepo import GitRepo
    from tests.helpers import git, make_repo

    repo = make_repo(tmp_path / "r")
    policy, source = policy_at(GitRepo(repo), git(repo, "rev-parse", "HEAD"))
    assert source.startswith("defaults")
    assert (policy.max_files, policy.max_changed_lines, policy.max_parallel) == (25, 1200, 2)
    assert policy.require_review and policy.require_red_green and policy.require_architecture
    assert ".planegate/**" in policy.denied


@pytest.mark.parametrize(
    ("files", "command"),
    [
        ({"package.json": '{"scripts": {"test": "vitest"}}'}, ["npm", "test", "--silent"]),
        ({"go.mod": "module x\n"}, ["go", "test", "./..."]),
        ({"Cargo.toml": "[package]\n"}, ["cargo", "test"]),
        ({"pyproject.toml": "[project]\n"}, ["python", "-m", "pytest", "-q"]),
        ({"README.md": "nothing to test\n"}, None),
    ],
)
def test_init_detects_the_obvious_test_command(
    tmp_path: Path, files: dict[str, str], command: list[str] | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert detect_test_command(tmp_path) == command
    policy = parse_policy(policy_template(command))
    assert policy.checks == ({"test": [command]} if command else {})


def test_planegate_init_writes_a_valid_commented_policy_and_prints_registration(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    cli = [sys.executable, "-m", "planegate.server.cli", "init", str(tmp_path)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "codex mcp add planegate -- planegate serve" in done.stdout
    assert "claude mcp add planegate -- planegate serve" in done.stdout
    written = (tmp_path / ".planegate" / "policy.toml").read_text()
    assert written.count("#") > 20 and parse_policy(written).checks["test"] == [["python", "-m", "pytest", "-q"]]
    again = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "--force" in again.stderr


@pytest.mark.parametrize(
    ("text", "where", "key"),
    [
        ('max_files = 25\nmax_parallel = "two"\n', "policy.toml:2", "'max_parallel'"),
        ("max_files = 25\n\n[review]\nreviewer = 'gemini'\n", "policy.toml:4", "'review.reviewer'"),
        ("max_fils = 3\n", "policy.toml:1", "'max_fils': unknown key"),
        ('deny_paths = ["../etc/**"]\n', "policy.toml:1", "'deny_paths'"),
        ('required_checks = ["lint"]\n[checks]\ntest = ["pytest"]\n', "policy.toml", "'lint'"),
        ("max_files = \n", "policy.toml: not valid TOML", "line 1"),
        ('[checks]\ntest = [["npm", "run", "build"], "npm test"]\n', "policy.toml:2", "is not a non-empty argv list"),
        ("[checks]\ntest = [[]]\n", "policy.toml:2", "'checks.test'"),
        ('[worktree]\nsetup = ["npm ci", ["x"]]\n', "policy.toml:2", "'worktree.setup'"),
        ('[worktree]\nlink = ["../node_modules"]\n', "policy.toml:2", "must be a path inside the repository"),
        ('[worktree]\nlink = ["node_modules", "node_modules/.bin"]\n', "policy.toml:2", "overlap"),
        ('[worktree]\ncopy = ["**/*.env"]\n', "policy.toml:2", "the whole tree"),
        ('\n[worktree]\nenv = { PATH = "/opt/bin" }\n', "policy.toml:3", "the toolchain rules"),
        (
            '[worktree]\nlink = [{ path = "node_modules", lockfile = "package-lock.json" }]\n',
            "policy.toml:2",
            "unknown key",
        ),
        ("[worktree]\ntimeout_s = 0\n", "policy.toml:2", "'worktree.timeout_s'"),
    ],
)
def test_a_malformed_policy_is_refused_naming_file_line_and_key(text: str, where: str, key: str) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy(text, "repo/.planegate/policy.toml")
    assert where in str(refused.value) and key in str(refused.value)


def test_every_field_of_the_template_parses_into_the_defaults() -> None:
    assert parse_policy(policy_template(["pytest"])).model_dump(exclude={"checks"}) == Policy().model_dump(
        exclude={"checks"}
    )


def test_a_single_argv_check_and_a_list_of_steps_both_parse_and_old_snapshots_still_load() -> None:
    policy = parse_policy('[checks]\nlint = ["ruff", "check"]\ntest = [["npm", "run", "build"], ["npm", "test"]]\n')
    assert policy.checks == {"lint": [["ruff", "check"]], "test": [["npm", "run", "build"], ["npm", "test"]]}
    old_snapshot = json.loads(Policy().canonical()) | {"checks": {"test": ["pytest", "-q"]}}
    assert Policy.model_validate(old_snapshot).checks == {"test": [["pytest", "-q"]]}
    worktree = parse_policy('[worktree]\ncopy = [".env"]\nlink = ["node_modules"]\n')
    again = Policy.model_validate(json.loads(worktree.canonical()))
    assert again == worktree and '"copy":[".env"]' in worktree.canonical()
