"""accept_task's merge path: the gates' merge check is committed as the merge, a head merged
before a crash is recorded rather than merged again, and a branch that moves after the gates is
merged onto its new tip."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from planegate.store import verify_ledger
from planegate.tools import gitrepo as gitrepo_module
from planegate.tools.env import Env
from planegate.tools.errors import GitError
from planegate.tools.gates import accept as accept_module
from planegate.tools.gates import facts as facts_module
from planegate.tools.gates.accept import accept_task
from planegate.tools.gitrepo import GitRepo, MergeResult, dirty_paths
from tests.execution import calc_repo, finish_calc, open_env, planned_run
from tests.helpers import commit_all, git, make_repo


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


@pytest.fixture
def ready(env: Env, tmp_path: Path) -> tuple[Env, str, Path, str]:
    """A run whose task `calc` holds every gate on its head: (env, run, repo, head)."""
    repo = calc_repo(tmp_path / "calc", require_red_green=False)
    run = planned_run(env, repo)
    worktree = finish_calc(env, run)
    return env, run, repo, git(worktree, "rev-parse", "HEAD")


def git_commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every git process started from now on (its argv after ``git``)."""
    started: list[list[str]] = []
    popen = subprocess.Popen.__init__

    def counted(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
        if isinstance(args, list) and args[:1] == ["git"]:
            started.append([str(a) for a in args[1:]])
        popen(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", counted)
    return started


def test_accept_commits_the_tree_the_merge_gate_computed(
    ready: tuple[Env, str, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, run, repo, head = ready
    started = git_commands(monkeypatch)
    accepted = accept_task(env, run, "calc")
    verbs = [next(a for a in argv if not a.startswith("-") and "=" not in a) for argv in started]
    assert verbs.count("merge-tree") == 1, verbs  # the gate's check; the merge reuses its tree
    assert "merge-base" not in verbs  # not merged before: the merged tree differs from the tip's
    assert "rev-parse" not in verbs  # the repository was opened by the gates; tags are created, not looked up
    # diff (listing and patch in one), merge-tree, status, config, commit-tree, update-ref, tag, worktree
    assert len(started) <= 8, verbs
    assert verbs.count("diff") == 1, verbs
    merged_tree = git(repo, "rev-parse", f"{accepted.merge_sha}^{{tree}}")
    tip_before = git(repo, "rev-parse", f"{accepted.merge_sha}^1")
    assert merged_tree == git(repo, "merge-tree", "--write-tree", tip_before, head)
    assert git(repo, "rev-parse", f"{accepted.merge_sha}^2") == head
    assert git(repo, "cat-file", "-t", accepted.checkpoint) == "tag"
    assert verify_ledger(env.store).ok


def test_a_cold_accept_asks_git_for_the_diff_the_merge_check_and_the_worktree_state_at_once(
    ready: tuple[Env, str, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of the head is known in this process yet: the three questions the gates ask git run
    side by side, each made to take a second here, so they must all be under way at one moment."""
    env, run, _, _ = ready
    facts_module.forget_cached()
    run_git = gitrepo_module._run_git
    spans: dict[str, tuple[float, float]] = {}

    def slow(cwd: Path, args: tuple[str, ...], environ: Any) -> Any:
        if args[0] not in ("diff", "merge-tree", "status") or args[0] in spans:
            return run_git(cwd, args, environ)
        began = time.monotonic()
        time.sleep(1.0)
        found = run_git(cwd, args, environ)
        spans[args[0]] = (began, time.monotonic())
        return found

    monkeypatch.setattr(gitrepo_module, "_run_git", slow)
    accept_task(env, run, "calc")
    assert set(spans) == {"diff", "merge-tree", "status"}
    assert max(began for began, _ in spans.values()) < min(ended for _, ended in spans.values()), spans


def test_a_head_merged_before_a_crash_is_recorded_not_merged_again(ready: tuple[Env, str, Path, str]) -> None:
    env, run, repo, head = ready
    branch = f"planegate/{run}/integration"
    landed = GitRepo(repo).merge(branch, head, "planegate: accept calc (the attempt that crashed)")
    assert landed.ok and landed.sha is not None
    accepted = accept_task(env, run, "calc")
    assert accepted.merge_sha == landed.sha == git(repo, "rev-parse", branch)
    assert "already merged" in (accepted.note or "")
    assert git(repo, "rev-parse", f"{accepted.checkpoint}^{{commit}}") == landed.sha
    assert env.task_row(run, "calc")["status"] == "accepted"
    assert verify_ledger(env.store).ok


def test_a_checkpoint_tag_left_by_a_crashed_attempt_is_reused(ready: tuple[Env, str, Path, str]) -> None:
    env, run, repo, head = ready
    branch = f"planegate/{run}/integration"
    landed = GitRepo(repo).merge(branch, head, "planegate: accept calc (the attempt that crashed)")
    assert landed.sha is not None
    git(repo, "tag", "-a", "-m", "left behind", f"planegate/{run}/cp-1", landed.sha)
    git(repo, "tag", f"planegate/{run}/cp-2", git(repo, "rev-parse", "main"))  # a tag for another commit
    accepted = accept_task(env, run, "calc")
    assert accepted.checkpoint == f"planegate/{run}/cp-1" and accepted.merge_sha == landed.sha
    assert git(repo, "rev-parse", f"planegate/{run}/cp-2") == git(repo, "rev-parse", "main")


def test_a_tag_number_taken_by_another_commit_is_skipped(ready: tuple[Env, str, Path, str]) -> None:
    env, run, repo, _ = ready
    git(repo, "tag", f"planegate/{run}/cp-1", git(repo, "rev-parse", "main"))
    accepted = accept_task(env, run, "calc")
    assert accepted.checkpoint == f"planegate/{run}/cp-2"
    assert git(repo, "rev-parse", f"{accepted.checkpoint}^{{commit}}") == accepted.merge_sha


def test_an_integration_branch_moved_after_the_gates_is_merged_onto_its_new_tip(
    ready: tuple[Env, str, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, run, repo, head = ready
    branch = f"planegate/{run}/integration"
    evaluate = accept_module.evaluate_task
    moved: list[str] = []

    def evaluate_then_move(*args: Any, **kwargs: Any) -> Any:
        found = evaluate(*args, **kwargs)
        scratch = repo.parent / "mover"
        git(repo, "worktree", "add", "-q", str(scratch), branch)
        (scratch / "NOTES.md").write_text("landed while calc was being checked\n")
        moved.append(commit_all(scratch, "notes"))
        git(repo, "worktree", "remove", "--force", str(scratch))
        return found

    monkeypatch.setattr(accept_module, "evaluate_task", evaluate_then_move)
    accepted = accept_task(env, run, "calc")
    assert git(repo, "rev-parse", f"{accepted.merge_sha}^1") == moved[0]
    assert git(repo, "rev-parse", f"{accepted.merge_sha}^2") == head
    files = git(repo, "ls-tree", "-r", "--name-only", accepted.merge_sha).splitlines()
    assert "NOTES.md" in files and "tests/test_mul.py" in files


def test_a_checked_tree_that_is_gone_is_merged_again(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "one\n"})
    git(repo, "branch", "target")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "b.txt").write_text("two\n")
    head = commit_all(repo, "add b")
    adapter = GitRepo(repo)
    target = adapter.branch_sha("target")
    gone = MergeResult(True, tree="1" * 40, target=target, source=head)
    result = adapter.merge("target", head, "merge feature", checked=gone)
    assert result.ok and git(repo, "rev-parse", "target") == result.sha
    assert git(repo, "ls-tree", "--name-only", "target").splitlines() == ["a.txt", "b.txt"]


def test_tree_of_reads_loose_and_packed_commits(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "one\n"})
    adapter = GitRepo(repo)
    commit = git(repo, "rev-parse", "HEAD")
    expected = git(repo, "rev-parse", "HEAD^{tree}")
    assert adapter.tree_of(commit) == expected
    git(repo, "gc", "-q")
    assert not (repo / ".git" / "objects" / commit[:2] / commit[2:]).exists()
    assert adapter.tree_of(commit) == expected
    assert adapter.tree_of("0" * 40) is None


def test_dirty_paths_never_reports_on_a_repository_around_a_missing_worktree(tmp_path: Path) -> None:
    outer = make_repo(tmp_path / "outer", {"a.txt": "one\n"})
    inside = outer / "not-a-worktree"
    inside.mkdir()
    (inside / "stray.txt").write_text("x\n")
    with pytest.raises(GitError, match="git status failed"):
        dirty_paths(inside)
    worktree = tmp_path / "wt"
    git(outer, "worktree", "add", "-q", "--detach", str(worktree))
    assert dirty_paths(worktree) == []
    (worktree / "new.txt").write_text("x\n")
    assert dirty_paths(worktree) == ["new.txt"]


def wait_until_gone(path: Path) -> None:
    deadline = time.monotonic() + 30
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not path.exists(), f"{path} was not deleted in the background"


def test_a_retired_worktree_is_gone_for_git_at_once_and_its_files_are_deleted_in_the_background(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "one\n"})
    parent = tmp_path / "worktrees"
    parent.mkdir()
    leftover = parent / ".removing-old-1-2"  # set aside by a process that stopped before deleting it
    (leftover / "deep").mkdir(parents=True)
    (leftover / "deep" / "f.txt").write_text("x\n")
    worktree = parent / "t1"
    git(repo, "worktree", "add", "-q", "-b", "task", str(worktree))
    adapter = GitRepo(repo)
    adapter.retire_worktree(worktree)
    assert not worktree.exists()
    assert str(worktree) not in git(repo, "worktree", "list", "--porcelain")
    git(repo, "branch", "-D", "task")  # no longer checked out anywhere
    for aside in [leftover, *parent.glob(".removing-t1-*")]:
        wait_until_gone(aside)
    git(repo, "worktree", "add", "-q", "-b", "again", str(worktree))  # the same path can be used again
    assert (worktree / "a.txt").read_text() == "one\n"


def test_a_locked_worktree_is_left_to_git_which_refuses(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "one\n"})
    worktree = tmp_path / "t1"
    git(repo, "worktree", "add", "-q", "-b", "task", str(worktree))
    git(repo, "worktree", "lock", str(worktree))
    with pytest.raises(GitError, match="locked"):
        GitRepo(repo).retire_worktree(worktree)
    assert (worktree / "a.txt").is_file()


def test_a_worktree_of_another_repository_is_never_retired_through_this_one(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "one\n"})
    other = make_repo(tmp_path / "o", {"b.txt": "two\n"})
    worktree = tmp_path / "t1"
    git(other, "worktree", "add", "-q", "-b", "task", str(worktree))
    with pytest.raises(GitError):
        GitRepo(repo).retire_worktree(worktree)
    assert (worktree / "b.txt").is_file() and str(worktree) in git(other, "worktree", "list", "--porcelain")


def test_the_identity_is_asked_of_git_again_only_when_a_config_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "one\n"})
    adapter = GitRepo(repo)
    git(repo, "config", "user.name", "First")
    started = git_commands(monkeypatch)
    assert adapter.identity()[0] == "First" and adapter.identity()[0] == "First"
    assert sum(args[:1] == ["config"] for args in started) == 1
    git(repo, "config", "user.name", "Second")
    assert adapter.identity()[0] == "Second"
    home = tmp_path / "home"
    home.mkdir()
    (home / "included").write_text("[user]\n\tname = Included\n")
    (home / "global").write_text(f"[include]\n\tpath = {home / 'included'}\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "global"))
    git(repo, "config", "--unset", "user.name")
    before = len(started)
    assert adapter.identity()[0] == "Included" and adapter.identity()[0] == "Included"
    assert sum(args[:1] == ["config"] for args in started[before:]) == 2  # an include: git is asked each time
