"""Cleanup: what accept_run removes, each rule of `planegate gc`, and the disk a run's worktrees use."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from planegate.store import verify_ledger
from planegate.tools.env import Env
from planegate.tools.execution.course import abandon_run
from planegate.tools.execution.dispatch import cancel_task, dispatch_task
from planegate.tools.execution.gc import collect_garbage, stale_worktrees
from planegate.tools.report.status import get_status
from tests.execution import calc_repo, open_env, planned_run, write
from tests.helpers import git
from tests.lifecycle import accepted_run, planegate, quick_repo

DAY = dt.timedelta(days=1)


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def branch_exists(repo: Path, branch: str) -> bool:
    return bool(git(repo, "branch", "--list", branch))


def restore_worktree(repo: Path, env: Env, run: str, task: str) -> Path:
    """Put a task's worktree back where the ledger says it was (as a run from before cleanup left it)."""
    row = env.task_row(run, task)
    if not branch_exists(repo, row["branch"]):
        git(repo, "branch", row["branch"], row["accepted_sha"])
    git(repo, "worktree", "add", "--quiet", row["worktree"], row["branch"])
    return Path(row["worktree"])


def test_accept_run_removes_the_merged_task_branches_and_worktrees(env: Env, tmp_path: Path) -> None:
    repo = quick_repo(tmp_path / "calc")
    run = accepted_run(env, repo)
    row = env.task_row(run, "calc")
    assert not Path(row["worktree"]).exists()
    assert not branch_exists(repo, f"planegate/{run}/calc")
    assert branch_exists(repo, f"planegate/{run}/integration"), "the integration branch is what the run delivered"
    assert git(repo, "tag", "--list", f"planegate/{run}/cp-*"), "checkpoint tags anchor the ledger"
    [event] = env.store.rows("SELECT payload FROM events WHERE run_id = ? AND kind = 'run.cleaned'", (run,))
    assert row["accepted_sha"] in event["payload"], "the deleted branch's sha is recorded, so it can be restored"
    assert verify_ledger(env.store).ok


def test_the_policy_keeps_branches_and_worktrees_and_gc_respects_it(env: Env, tmp_path: Path) -> None:
    repo = quick_repo(tmp_path / "calc", retain_worktrees=True, retain_branches=True)
    run = accepted_run(env, repo)
    row = env.task_row(run, "calc")
    assert Path(row["worktree"]).is_dir() and branch_exists(repo, row["branch"])
    report = collect_garbage(env, now=now() + 30 * DAY)
    assert Path(row["worktree"]).is_dir() and branch_exists(repo, row["branch"])
    assert any("retain_worktrees" in a.detail for a in report.kept)


def test_gc_removes_a_clean_merged_worktree_and_its_merged_branch(env: Env, tmp_path: Path) -> None:
    repo = quick_repo(tmp_path / "calc")
    run = accepted_run(env, repo)
    worktree = restore_worktree(repo, env, run, "calc")
    report = collect_garbage(env)
    rules = {(a.rule, a.task) for a in report.done}
    assert ("merged", "calc") in rules and ("branch", "calc") in rules
    assert not worktree.exists() and not branch_exists(repo, f"planegate/{run}/calc")
    assert not stale_worktrees(env.repo(str(repo)))
    assert verify_ledger(env.store).ok


def test_gc_parks_uncommitted_work_on_the_task_branch_before_removing_the_worktree(env: Env, tmp_path: Path) -> None:
    repo = quick_repo(tmp_path / "calc")
    run = accepted_run(env, repo)
    worktree = restore_worktree(repo, env, run, "calc")
    write(worktree, {"src/calc.py": "# a later idea\n", "scratch.txt": "notes\n"})
    report = collect_garbage(env)
    assert [a.rule for a in report.done if a.task == "calc"][:2] == ["parked", "merged"]
    branch = f"planegate/{run}/calc"
    assert not worktree.exists() and branch_exists(repo, branch), "the parked work lives on its branch"
    assert git(repo, "log", "-1", "--format=%s", branch) == "planegate: parked"
    assert git(repo, "show", f"{branch}:scratch.txt") == "notes"
    assert any(a.rule == "kept" and "integration branch lacks" in a.detail for a in report.kept)


def test_cancelled_work_is_kept_retain_days_then_removed_and_dirty_work_parked(env: Env, tmp_path: Path) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    clean = Path(dispatch_task(env, run, "text").worktree)
    dirty = Path(dispatch_task(env, run, "calc").worktree)
    write(dirty, {"src/calc.py": "half done\n"})
    cancel_task(env, run, "text", "not needed")
    cancel_task(env, run, "calc", "wrong approach")
    early = collect_garbage(env, now=now() + 6 * DAY)
    assert clean.is_dir() and dirty.is_dir()
    assert {a.task for a in early.kept if "kept until" in a.detail} == {"calc", "text"}
    late = collect_garbage(env, now=now() + 8 * DAY)
    assert not clean.exists() and not dirty.exists()
    assert {(a.rule, a.task) for a in late.done} >= {("retention", "text"), ("retention", "calc"), ("parked", "calc")}
    assert branch_exists(repo, f"planegate/{run}/text"), "a cancelled task's branch is kept"
    assert git(repo, "log", "-1", "--format=%s", f"planegate/{run}/calc") == "planegate: parked"
    assert verify_ledger(env.store).ok


def test_an_abandoned_runs_worktrees_follow_retain_days_from_the_abandonment(env: Env, tmp_path: Path) -> None:
    repo = calc_repo(tmp_path / "calc")
    (repo / ".planegate" / "policy.toml").write_text((repo / ".planegate" / "policy.toml").read_text().replace(
        "max_parallel = 2", "max_parallel = 2\nretain_days = 2"))  # fmt: skip
    git(repo, "commit", "-qam", "retain two days")
    run = planned_run(env, repo)
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"notes.txt": "keep me\n"})
    abandoned = abandon_run(env, run, "superseded")
    assert abandoned.kept_worktrees == [str(worktree)]
    assert worktree.is_dir() and any("retain_days = 2" in a.detail for a in collect_garbage(env, now=now() + DAY).kept)
    collect_garbage(env, now=now() + 3 * DAY)
    assert not worktree.exists()
    assert git(repo, "show", f"planegate/{run}/calc:notes.txt") == "keep me"


def test_gc_prunes_git_entries_of_worktrees_deleted_by_hand_and_dry_run_changes_nothing(
    env: Env, tmp_path: Path, fresh_machine: Path
) -> None:
    import shutil

    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    cancelled = Path(dispatch_task(env, run, "text").worktree)
    cancel_task(env, run, "text", "not needed")
    gone = Path(dispatch_task(env, run, "calc").worktree)
    shutil.rmtree(gone)
    events = env.store.event_count()
    cli = planegate("gc", "--dry-run", home=fresh_machine)
    assert cli.returncode == 0, cli.stderr
    assert "[dry run] pruned" in cli.stdout and str(gone) in cli.stdout and "dry run: nothing was changed" in cli.stdout
    dry = collect_garbage(env, dry_run=True, now=now() + 8 * DAY)
    assert {a.rule for a in dry.done} == {"pruned", "retention"}
    assert cancelled.is_dir() and stale_worktrees(env.repo(str(repo))) == [str(gone)]
    assert env.store.event_count() == events
    real = planegate("gc", home=fresh_machine)
    assert real.returncode == 0, real.stderr
    assert "pruned" in real.stdout and not stale_worktrees(env.repo(str(repo)))
    assert cancelled.is_dir(), "retain_days have not passed in real time"
    assert Path(dispatch_task(env, run, "calc").worktree).is_dir(), "the task takes its worktree back"


def test_get_status_shows_the_disk_the_runs_worktrees_use_from_a_cache(env: Env, tmp_path: Path) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    (worktree / "big.bin").write_bytes(b"x" * 300_000)
    first = get_status(env, run).status
    assert first is not None and first.disk is not None
    deadline = time.monotonic() + 30
    while env.store.one("SELECT * FROM disk_usage WHERE run_id = ?", (run,)) is None:
        assert time.monotonic() < deadline, "the background measurement never finished"
        time.sleep(0.05)
    row = env.store.one("SELECT * FROM disk_usage WHERE run_id = ?", (run,))
    assert row is not None and row["worktrees"] == 1 and row["bytes"] >= 300_000
    second = get_status(env, run).status
    assert (
        second is not None
        and second.disk == f"1 worktree(s), {row['bytes'] / 1024:.1f} KiB (measured {row['measured_at']})"
    )
    (worktree / "bigger.bin").write_bytes(b"x" * 300_000)
    assert get_status(env, run).status.disk == second.disk, "a fresh figure is not measured again"  # type: ignore[union-attr]
    cli = planegate("status", run, home=Path(env.settings.home))
    assert "worktrees on disk: 1 worktree(s)" in cli.stdout
