"""The git adapter's merges, with git's in-memory merge and with the scratch-worktree way older
git needs: both merge --no-ff, both leave everything untouched on a conflict."""

from __future__ import annotations

from pathlib import Path

import pytest

from planegate.tools.gitrepo import GitRepo
from tests.helpers import commit_all, git, make_repo


@pytest.fixture(params=[True, False], ids=["merge-tree", "scratch-worktree"])
def merging(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[GitRepo, Path]:
    repo = make_repo(tmp_path / "r", {"a.txt": "one\n", "b.txt": "two\n"})
    git(repo, "branch", "target")
    adapter = GitRepo(repo)
    adapter.merge_in_memory = request.param
    return adapter, repo


def test_a_clean_merge_moves_only_the_target_branch(merging: tuple[GitRepo, Path]) -> None:
    adapter, repo = merging
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "a.txt").write_text("one, changed\n")
    head = commit_all(repo, "change a")
    git(repo, "checkout", "-q", "main")
    result = adapter.merge("target", head, "merge feature\n\nPlanegate-Task: feature")
    assert result.ok and result.sha == git(repo, "rev-parse", "target")
    assert git(repo, "rev-parse", f"{result.sha}^2") == head
    assert git(repo, "log", "-1", "--format=%B", "target").startswith("merge feature")
    assert git(repo, "status", "--porcelain") == "" and (repo / "a.txt").read_text() == "one\n"
    assert git(repo, "worktree", "list").count("\n") == 0


def test_a_conflict_lists_the_files_and_moves_nothing(merging: tuple[GitRepo, Path]) -> None:
    adapter, repo = merging
    git(repo, "checkout", "-q", "target")
    (repo / "b.txt").write_text("two, on target\n")
    before = commit_all(repo, "target edits b")
    git(repo, "checkout", "-q", "-b", "feature", "main")
    (repo / "b.txt").write_text("two, on feature\n")
    head = commit_all(repo, "feature edits b")
    result = adapter.merge("target", head, "merge feature")
    assert not result.ok and result.conflicts == ["b.txt"]
    assert git(repo, "rev-parse", "target") == before
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "worktree", "list").count("\n") == 0
