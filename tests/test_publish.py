"""Publishing an accepted run: a real bare remote, and a scripted `gh` that records its argv."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from planegate.server.app import build_server
from planegate.store import verify_ledger
from planegate.tools.config import Settings
from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.env import Env
from planegate.tools.errors import InvalidInput, WrongState
from planegate.tools.models import Module, Requirement, TaskSpec
from planegate.tools.report.publish import BODY_LIMIT, pr_body, publish_run
from planegate.tools.report.status import get_status
from tests.execution import calc_repo, open_env, planned_run
from tests.helpers import call, git
from tests.lifecycle import accepted_run, planegate, quick_repo

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


@pytest.fixture
def gh_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH with git and the scripted gh only; the file gh records its calls in."""
    log = tmp_path / "gh.log"
    monkeypatch.setenv("PATH", f"{tools_bin(tmp_path, gh=True)}")
    monkeypatch.setenv("FAKE_GH_LOG", str(log))
    monkeypatch.delenv("FAKE_GH_MODE", raising=False)
    return log


def tools_bin(tmp_path: Path, *, gh: bool) -> Path:
    """A PATH folder holding git (and the scripted gh when asked): no other gh can answer."""
    folder = tmp_path / ("bin-gh" if gh else "bin")
    folder.mkdir(exist_ok=True)
    git_path = shutil.which("git")
    assert git_path is not None
    extra = (("gh", str(FAKES / "gh")), ("python3", sys.executable)) if gh else ()
    for name, target in (("git", git_path), *extra):
        link = folder / name
        if not link.exists():
            link.symlink_to(target)
    return folder


def calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def with_remote(repo: Path, tmp_path: Path) -> Path:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    return remote


def remote_sha(remote: Path, branch: str) -> str:
    return git(remote, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")


def test_publish_run_pushes_the_accepted_head_and_opens_a_draft_pull_request_with_gh(
    env: Env, tmp_path: Path, gh_log: Path, fresh_machine: Path
) -> None:
    repo = quick_repo(tmp_path / "calc")
    remote = with_remote(repo, tmp_path)
    run = accepted_run(env, repo)
    assert get_status(env, run).next_action == f"publish_run(run={run!r})"
    main_before = remote_sha(remote, "main")
    result = publish_run(env, run)
    branch = f"planegate/{run}/integration"
    accepted = git(repo, "rev-parse", branch)
    assert (result.branch, result.base, result.sha, result.pushed) == (branch, "main", accepted, True)
    assert remote_sha(remote, branch) == accepted and remote_sha(remote, "main") == main_before
    assert result.pull_request == "https://github.com/acme/calc/pull/7" and result.commands == []
    auth, create = calls(gh_log)
    assert auth["argv"] == ["auth", "status"]
    assert create["argv"] == [
        "pr", "create", "--draft", "--base", "main", "--head", branch,
        "--title", "Grow the library", "--body-file", result.body,
    ]  # fmt: skip
    report = (fresh_machine / "artifacts" / run / "report" / "report.md").read_text()
    assert create["body"] == report and not result.truncated
    assert get_status(env, run).next_action.startswith("done: the run is accepted and published")
    [event] = env.store.rows("SELECT payload FROM events WHERE run_id = ? AND kind = 'run.published'", (run,))
    assert json.loads(event["payload"])["pull_request"] == result.pull_request
    assert verify_ledger(env.store).ok


def test_publish_again_finds_the_open_pull_request_instead_of_opening_another(
    env: Env, tmp_path: Path, gh_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = quick_repo(tmp_path / "calc")
    with_remote(repo, tmp_path)
    run = accepted_run(env, repo)
    publish_run(env, run)
    monkeypatch.setenv("FAKE_GH_MODE", "exists")
    again = publish_run(env, run)
    assert again.pushed is False and again.pull_request == "https://github.com/acme/calc/pull/3"
    assert calls(gh_log)[-1]["argv"][:3] == ["pr", "view", again.branch]


@pytest.mark.parametrize("situation", ["no gh", "logged out", "gh fails"])
def test_without_a_working_gh_the_branch_is_pushed_and_the_exact_commands_are_given(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, situation: str
) -> None:
    log = tmp_path / "gh.log"
    monkeypatch.setenv("FAKE_GH_LOG", str(log))
    monkeypatch.setenv("PATH", str(tools_bin(tmp_path, gh=situation != "no gh")))
    monkeypatch.setenv("FAKE_GH_MODE", {"logged out": "logged_out", "gh fails": "fail"}.get(situation, "ok"))
    repo = quick_repo(tmp_path / "calc")
    remote = with_remote(repo, tmp_path)
    run = accepted_run(env, repo)
    result = publish_run(env, run)
    assert result.pull_request is None and result.pushed
    assert remote_sha(remote, result.branch) == result.sha
    create = shlex.join(
        ["gh", "pr", "create", "--draft", "--base", "main", "--head", result.branch,
         "--title", "Grow the library", "--body-file", result.body]
    )  # fmt: skip
    expected = {"no gh": [create], "logged out": ["gh auth login", create], "gh fails": [create]}[situation]
    assert result.commands == expected
    why = {"no gh": "gh is not installed", "logged out": "gh is not logged in", "gh fails": "Head sha can't be blank"}
    assert why[situation] in result.next_step and "human or shell" in result.next_step
    if situation == "no gh":
        assert not log.exists()


def test_publish_refuses_the_default_branch_and_an_unaccepted_run_pushing_nothing(
    env: Env, tmp_path: Path, gh_log: Path
) -> None:
    repo = quick_repo(tmp_path / "calc", extra_policy='\n[publish]\nbranch = "main"\n')
    remote = with_remote(repo, tmp_path)
    main_before = remote_sha(remote, "main")
    run = accepted_run(env, repo)
    with pytest.raises(InvalidInput, match=r"refusing to push run .* to 'main', the default branch of origin"):
        publish_run(env, run)
    assert remote_sha(remote, "main") == main_before
    assert not env.store.rows("SELECT id FROM events WHERE kind = 'run.published'") and not calls(gh_log)
    open_run = planned_run(env, calc_repo(tmp_path / "other"))
    with pytest.raises(WrongState, match="only an accepted run is published"):
        publish_run(env, open_run)


def test_publish_without_the_remote_says_how_to_add_it(env: Env, tmp_path: Path, gh_log: Path) -> None:
    repo = quick_repo(tmp_path / "calc")
    run = accepted_run(env, repo)
    assert "needs the git remote 'origin'" in get_status(env, run).next_action
    with pytest.raises(InvalidInput, match="no git remote 'origin'; add it"):
        publish_run(env, run)


def test_a_report_longer_than_github_takes_is_cut_at_a_section_and_names_the_full_artifact(
    env: Env, tmp_path: Path, gh_log: Path, fresh_machine: Path
) -> None:
    repo = quick_repo(tmp_path / "calc")
    with_remote(repo, tmp_path)
    run = start_run(env, str(repo), "Grow the library a lot").run
    many = [
        Requirement(id=f"R{i}", statement=f"requirement {i}: " + "a long sentence " * 30,
                    acceptance_criteria=[f"criterion {i}: " + "checkable " * 30])
        for i in range(160)
    ]  # fmt: skip
    freeze_requirements(env, run, many)
    freeze_architecture(env, run, [Module(name="calc", owns=["src/calc.py"])], [])
    register_graph(env, run, [TaskSpec(id="calc", title="Mul", goal="mul", scope=["src/calc.py"],
                                       requirements=[r.id for r in many])])  # fmt: skip
    from planegate.tools.execution.checks import start_checks
    from planegate.tools.gates.accept import accept_task
    from planegate.tools.report.acceptance import accept_run
    from planegate.tools.review.review import request_review
    from tests.execution import drain, finish_calc

    finish_calc(env, run)
    accept_task(env, run, "calc")
    start_checks(env, run, None)
    drain(env)
    request_review(env, run, None, True)
    drain(env)
    accept_run(env, run)
    report = fresh_machine / "artifacts" / run / "report" / "report.md"
    assert len(report.read_text()) > BODY_LIMIT
    result = publish_run(env, run)
    body = calls(gh_log)[-1]["body"]
    assert result.truncated and len(body) <= BODY_LIMIT
    assert f"The full report is the artifact `{report}`" in body
    kept = body.split("\n\n---\n\n*This report is cut")[0]
    assert report.read_text().startswith(kept), "the body is the report's beginning, cut between sections"
    assert report.read_text()[len(kept) :].lstrip().startswith("## ")


def test_pr_body_keeps_short_reports_and_cuts_long_ones_at_a_section_boundary(tmp_path: Path) -> None:
    short = "# Title\n\n## A\n\ntext\n"
    assert pr_body(short, tmp_path / "r.md", "0" * 64) == (short, False)
    long = "# Title\n\n" + "".join(f"## Section {i}\n\n" + "x" * 9_000 + "\n\n" for i in range(12))
    body, cut = pr_body(long, tmp_path / "r.md", "f" * 64)
    assert cut and len(body) <= BODY_LIMIT and "## Section 6" in body and "## Section 7" not in body
    assert body.endswith(f"(sha256 `{'f' * 64}`).*\n") and str(tmp_path / "r.md") in body
    one_section = "## Only\n\n" + "y\n" * 40_000
    body, cut = pr_body(one_section, tmp_path / "r.md", "a" * 64)
    assert cut and len(body) <= BODY_LIMIT and body.startswith("## Only")


@pytest.mark.anyio
async def test_publish_run_through_the_tool_and_the_cli(tmp_path: Path, gh_log: Path, fresh_machine: Path) -> None:
    env = open_env(fresh_machine)
    repo = quick_repo(tmp_path / "calc")
    with_remote(repo, tmp_path)
    run = accepted_run(env, repo)
    env.close()
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=60)
    with anyio.fail_after(60):
        async with Client(server) as client:
            published = await call(client, "publish_run", run=run)
    assert published["pull_request"] == "https://github.com/acme/calc/pull/7"
    cli = planegate("publish", run, home=fresh_machine, path=os.environ["PATH"])
    assert cli.returncode == 0, cli.stderr
    assert (
        "already on the remote" in cli.stdout
        and "draft pull request: https://github.com/acme/calc/pull/7" in cli.stdout
    )
