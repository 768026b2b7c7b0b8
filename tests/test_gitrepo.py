"""The git adapter's merges, with git's in-memory merge and with the scratch-worktree way older
git needs: both merge --no-ff, both leave everything untouched on a conflict."""

from __future__ import annotations

import hashlib
import subprocess
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


def test_the_diff_from_one_process_is_what_git_prints_for_each_part(tmp_path: Path) -> None:
    """``GitRepo.diff`` reads the listing and the patch from one ``git diff``; each part must be
    what git prints for it alone, for every kind of path and content a change can hold."""
    repo = make_repo(tmp_path / "r", {"kept.txt": "one\n", "gone.txt": "bye\n", "mode.sh": "echo\n"})
    base = git(repo, "rev-parse", "HEAD")
    (repo / "kept.txt").write_text("one\ntwo\n")
    (repo / "gone.txt").unlink()
    (repo / "mode.sh").chmod(0o755)
    (repo / "blob.bin").write_bytes(b"\x00\x01binary\xff")
    (repo / "late-nul.txt").write_bytes(b"a" * 9000 + b"\x00tail\n")  # text to git: no NUL in its first 8,000
    (repo / "d ir").mkdir()
    (repo / "d ir" / "tab\there \u00e9.txt").write_text("odd name\n")
    (repo / "link").symlink_to("kept.txt")
    head = commit_all(repo, "every kind of change")

    found = GitRepo(repo).diff(base, head)

    args = ("--no-renames", "--no-ext-diff", base, head, "--")
    patch = subprocess.run(
        ["git", "diff", "--no-color", "--full-index", "--binary", *args], cwd=repo, capture_output=True, check=True
    ).stdout
    assert found.text == patch.decode("utf-8", "replace") and b"\x00tail" in patch
    assert found.sha256 == hashlib.sha256(patch).hexdigest()
    numstat = git(repo, "diff", "--numstat", *args).splitlines()
    assert len(found.files) == len(numstat) == 7
    assert {f.path for f in found.files} == {r.path for r in found.raw}
    assert {f.path: (f.added, f.deleted, f.binary) for f in found.files}["blob.bin"] == (0, 0, True)
    raw = {r.path: (r.old_mode, r.new_mode, r.status) for r in found.raw}
    assert raw["gone.txt"][2] == "D" and raw["mode.sh"][:2] == ("100644", "100755")
    assert raw["link"] == ("000000", "120000", "A") and raw["d ir/tab\there \u00e9.txt"][2] == "A"
    assert GitRepo(repo).diff(head, head).files == [] and GitRepo(repo).diff(head, head).text == ""
