"""The execution plane, domain level: dispatch, checks, red→green, gates, accept, cancel, rollback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from planegate.store import verify_ledger
from planegate.tools.control.evidence import record_evidence
from planegate.tools.env import Env
from planegate.tools.errors import Conflict, InvalidInput, NotFound, WrongState
from planegate.tools.execution.checks import checks_result, start_checks
from planegate.tools.execution.dispatch import cancel_task, dispatch_task
from planegate.tools.execution.reconcile import reconcile
from planegate.tools.gates.accept import accept_task
from planegate.tools.gates.gates import GatesUnmet
from planegate.tools.models import TaskSpec
from planegate.tools.report.status import get_status
from tests.execution import MUL, MUL_TEST, calc_repo, drain, finish_calc, open_env, planned_run, write
from tests.helpers import commit_all, git


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


def unmet(exc: pytest.ExceptionInfo[GatesUnmet]) -> dict[str, str]:
    return {g.gate: g.reason for g in exc.value.unmet}


def test_a_task_goes_through_dispatch_checks_red_green_and_accept(repo: Path, tmp_path: Path, env: Env) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    dispatched = dispatch_task(env, run, "calc")
    worktree = Path(dispatched.worktree)
    assert worktree.is_relative_to(env.settings.worktrees)
    assert dispatched.branch == f"planegate/{run}/calc"
    assert (worktree / ".planegate-task.md").read_text().startswith("# Task calc: Multiply")
    assert git(worktree, "status", "--porcelain") == ""  # the envelope stays out of the diff
    assert get_status(env, run).status.stage == "executing"  # type: ignore[union-attr]

    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    head = commit_all(worktree, "mul")
    job = start_checks(env, run, "calc")
    assert drain(env) == ["succeeded"]
    result = checks_result(env, job)
    assert result.all_passed and result.head_sha == head
    assert {line.check for line in result.results} == {"test", "red_green", "test_integrity"}
    assert "proven" in next(line.summary for line in result.results if line.check == "red_green")
    assert "holds" in next(line.summary for line in result.results if line.check == "test_integrity")

    status = get_status(env, run).status
    assert status is not None
    assert status.active[0].gates == []  # the gates that do not hold: none
    assert status.active[0].met == [
        "ledger",
        "dependencies",
        "scope",
        "budget",
        "secrets",
        "checks",
        "red_green",
        "tests",
        "review",
        "merge",
    ]

    accepted = accept_task(env, run, "calc")
    assert accepted.checkpoint == f"planegate/{run}/cp-1"
    assert accepted.unlocked == ["docs"] and accepted.worktree_removed and not worktree.exists()
    integration = git(repo, "rev-parse", f"planegate/{run}/integration")
    assert integration == accepted.merge_sha == git(repo, "rev-parse", f"{accepted.checkpoint}^{{commit}}")
    message = git(repo, "log", "-1", "--format=%B", integration)
    assert f"Planegate-Run: {run}" in message and "Planegate-Task: calc" in message
    assert "Planegate-Evidence: " in message
    assert git(repo, "rev-parse", f"{integration}^2") == head  # --no-ff merge of the task head
    assert git(repo, "config", "--get", "user.name") == "Test Author"
    assert git(repo, "log", "-1", "--format=%cn", integration) == "Test Author"
    assert verify_ledger(env.store).ok


def test_merges_on_a_machine_without_any_git_identity_use_the_documented_default(tmp_path: Path, env: Env) -> None:
    repo = calc_repo(tmp_path / "calc")
    git(repo, "config", "--unset", "user.name")
    git(repo, "config", "--unset", "user.email")
    run = planned_run(env, repo)
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    git(worktree, "add", "-A")
    git(worktree, "-c", "user.name=Worker", "-c", "user.email=w@example.invalid", "commit", "-qm", "mul")
    start_checks(env, run, "calc")
    drain(env)
    accepted = accept_task(env, run, "calc")
    assert git(repo, "log", "-1", "--format=%cn <%ce>", accepted.merge_sha) == "planegate <planegate@localhost>"


@pytest.mark.parametrize("bad", ["-x", "../x", "X", "a..b", "x.lock"])
def test_dispatch_refuses_malformed_task_ids(tmp_path: Path, env: Env, bad: str) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    before = env.store.event_count()
    with pytest.raises(InvalidInput, match=f"task id {bad!r}"):
        dispatch_task(env, run, bad)
    assert env.store.event_count() == before


def test_dispatch_refuses_a_run_that_is_not_planned_and_a_blocked_task(tmp_path: Path, env: Env) -> None:
    from planegate.tools.control.runs import start_run

    repo = calc_repo(tmp_path / "calc")
    draft = start_run(env, str(repo), "draft").run
    with pytest.raises((WrongState, NotFound)):
        dispatch_task(env, draft, "calc")
    run = planned_run(env, repo)
    before = env.store.event_count()
    with pytest.raises(WrongState, match=r"depends on calc \(ready\), not yet accepted"):
        dispatch_task(env, run, "docs")
    assert env.store.event_count() == before
    assert not (env.settings.worktrees / run / "docs").exists()


def test_dispatch_serialises_overlapping_scopes_and_respects_max_parallel(tmp_path: Path, env: Env) -> None:
    tasks = [
        TaskSpec(id="calc", title="a", goal="a", scope=["src/calc.py"], requirements=["R1"]),
        TaskSpec(id="calc2", title="b", goal="b", scope=["src/*.py"], requirements=["R1"]),
        TaskSpec(id="text", title="c", goal="c", scope=["src/text.py"], requirements=["R2"]),
        TaskSpec(id="more", title="d", goal="d", scope=["secrets/notes.md"], requirements=["R2"]),
    ]
    from planegate.tools.control.runs import freeze_architecture
    from tests.execution import Module

    repo = calc_repo(tmp_path / "calc", max_parallel=2)
    run = planned_run(env, repo, tasks=[tasks[0], tasks[2], tasks[3]])
    freeze_architecture(
        env,
        run,
        [Module(name="src", owns=["src/**"]), Module(name="secrets", owns=["secrets/**"])],
        [],
        amend_reason="one src module",
    )
    from planegate.tools.control.graph import register_graph

    register_graph(env, run, tasks)
    dispatch_task(env, run, "calc")
    with pytest.raises(Conflict, match=r"'calc2' \(src/\*\.py\) overlaps running task 'calc' \(src/calc.py\)"):
        dispatch_task(env, run, "calc2")
    dispatch_task(env, run, "text")
    with pytest.raises(Conflict, match="max_parallel is 2"):
        dispatch_task(env, run, "more")
    with pytest.raises(Conflict, match="already dispatched"):
        dispatch_task(env, run, "calc")
    assert len(list((env.settings.worktrees / run).iterdir())) == 2


def test_run_checks_refuses_uncommitted_changes(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL})
    with pytest.raises(WrongState, match=r"uncommitted changes .*src/calc.py; commit them"):
        start_checks(env, run, "calc")
    with pytest.raises(NotFound, match="check 'lint' is not in the run's policy"):
        start_checks(env, run, "calc", ["lint"])


def test_an_edit_outside_scope_or_in_a_denied_path_is_refused(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc", deny_paths=["src/__init__.py"]))
    worktree = finish_calc(env, run, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST, "src/text.py": "x = 1\n"})
    with pytest.raises(GatesUnmet) as refused:
        accept_task(env, run, "calc")
    assert "src/text.py" in unmet(refused)["scope"]
    git(worktree, "checkout", "HEAD~1", "--", "src/text.py")
    write(worktree, {"src/__init__.py": "# touched\n"})
    commit_all(worktree, "fix scope, touch a denied path")
    with pytest.raises(GatesUnmet) as refused:
        accept_task(env, run, "calc")
    assert "denied paths: src/__init__.py" in unmet(refused)["scope"]


def test_over_budget_committed_aws_key_and_failing_check_are_all_reported_at_once(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc", max_files=2))
    key = "AKIA" + "IOSFODNN7" + "EXAMPLE"
    files = {
        "src/calc.py": MUL + f'\nAWS_ACCESS_KEY_ID = "{key}"\n',
        "tests/test_mul.py": "from src.calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 7\n",
        "tests/test_more.py": "def test_nothing():\n    pass\n",
    }
    finish_calc(env, run, files)
    before = env.store.event_count()
    with pytest.raises(GatesUnmet) as refused:
        accept_task(env, run, "calc")
    reasons = unmet(refused)
    assert "3 files changed (max_files 2)" in reasons["budget"]
    assert "AWS Access Key at src/calc.py:" in reasons["secrets"]
    assert "test (exit 1" in reasons["checks"]
    assert "red_green" in reasons
    assert "Next:" in str(refused.value)
    assert env.store.event_count() == before
    repo = Path(env.run_row(run)["repo"])
    assert git(repo, "rev-parse", f"planegate/{run}/integration") == env.run_row(run)["base_sha"]


def test_evidence_made_before_a_new_commit_is_stale(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    worktree = finish_calc(env, run)
    write(worktree, {"README.md": "changed after the checks\n"})
    commit_all(worktree, "later")
    with pytest.raises(GatesUnmet) as refused:
        accept_task(env, run, "calc")
    assert "stale" in unmet(refused)["checks"]
    status = get_status(env, run).status
    assert status is not None
    assert all(e.stale for e in status.active[0].evidence)


def test_agent_reported_evidence_alone_never_satisfies_a_gate(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    commit_all(worktree, "mul")
    write(worktree, {"out.log": "1 passed\n"})
    with pytest.raises(InvalidInput, match="reserved for the server"):
        record_evidence(env, run, "calc", "test", "direct", "trust me", exit_code=0)
    with pytest.raises(InvalidInput, match="outside the task's worktree"):
        record_evidence(env, run, "calc", "test", "local", "ran it", artifacts=["../../../etc/passwd"])
    reported = record_evidence(env, run, "calc", "test", "local", "1 passed", "pytest", 0, ["out.log"])
    assert not reported.counted and reported.artifacts[0].sha256
    with pytest.raises(GatesUnmet) as refused:
        accept_task(env, run, "calc")
    assert "only has reported evidence, which is never counted" in unmet(refused)["checks"]
    status = get_status(env, run).status
    assert status is not None
    assert any("reports test passed, with no direct evidence" in r for r in status.risks)


def test_a_claimed_pass_that_the_server_sees_fail_is_recorded_as_a_misalignment(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST.replace("== 6", "== 7")})
    commit_all(worktree, "broken mul test")
    record_evidence(env, run, "calc", "test", "local", "all green on my machine", exit_code=0)
    start_checks(env, run, "calc", ["test"])
    drain(env)
    status = get_status(env, run).status
    assert status is not None
    assert any(r.startswith("misalignment on calc: reported evidence") for r in status.risks)
    kinds = [r["kind"] for r in env.store.rows("SELECT kind FROM events WHERE run_id = ?", (run,))]
    assert "task.misalignment" in kinds


def test_red_green_refuses_tests_that_also_pass_on_the_base(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    always = "from src.calc import add\n\n\ndef test_add_again():\n    assert add(1, 1) == 2\n"
    finish_calc(env, run, {"src/calc.py": MUL, "tests/test_again.py": always})
    with pytest.raises(GatesUnmet) as refused:
        accept_task(env, run, "calc")
    assert "also pass on the base" in unmet(refused)["red_green"]


def test_a_merge_conflict_sets_changes_requested_and_loses_nothing(tmp_path: Path, env: Env) -> None:
    repo = calc_repo(tmp_path / "calc", require_red_green=False)
    run = planned_run(env, repo)
    calc = finish_calc(env, run, {"src/calc.py": MUL, "tests/test_shared.py": "def test_a():\n    assert 1\n"})
    text = Path(dispatch_task(env, run, "text").worktree)
    write(
        text,
        {
            "src/text.py": "def whisper(s):\n    return s.lower()\n",
            "tests/test_shared.py": "def test_b():\n    assert 2\n",
        },
    )
    text_head = commit_all(text, "whisper")
    start_checks(env, run, "text")
    drain(env)
    accept_task(env, run, "calc")
    integration = git(repo, "rev-parse", f"planegate/{run}/integration")
    with pytest.raises(GatesUnmet) as refused:
        accept_task(env, run, "text")
    assert "conflicts in tests/test_shared.py" in unmet(refused)["merge"]
    assert env.task_row(run, "text")["status"] == "changes_requested"
    assert git(repo, "rev-parse", f"planegate/{run}/integration") == integration
    assert git(text, "rev-parse", "HEAD") == text_head and git(text, "status", "--porcelain") == ""
    assert not calc.exists()


def test_cancel_releases_the_lease_keeps_the_worktree_and_refuses_accepted_tasks(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "text").worktree)
    with pytest.raises(InvalidInput, match="reason is empty"):
        cancel_task(env, run, "text", " ")
    cancelled = cancel_task(env, run, "text", "not needed after all")
    row = env.task_row(run, "text")
    assert (row["status"], row["lease_owner"], row["cancel_reason"]) == ("cancelled", None, "not needed after all")
    assert worktree.is_dir() and cancelled.worktree == str(worktree)
    finish_calc(env, run)
    accept_task(env, run, "calc")
    with pytest.raises(WrongState, match="planegate rollback"):
        cancel_task(env, run, "calc", "oops")


def test_rollback_resets_integration_and_returns_later_tasks_to_ready(tmp_path: Path, env: Env) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    finish_calc(env, run)
    first = accept_task(env, run, "calc")
    text = Path(dispatch_task(env, run, "text").worktree)
    write(
        text,
        {
            "src/text.py": "def whisper(s):\n    return s.lower()\n",
            "tests/test_text.py": "from src.text import whisper\n\n\ndef test_w():\n    assert whisper('A') == 'a'\n",
        },
    )
    text_head = commit_all(text, "whisper")
    start_checks(env, run, "text")
    drain(env)
    second = accept_task(env, run, "text")
    assert second.checkpoint.endswith("cp-2")
    done = subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", "rollback", run, "--to", "cp-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "text" in done.stdout
    assert git(repo, "rev-parse", f"planegate/{run}/integration") == first.merge_sha
    assert env.task_row(run, "text")["status"] == "ready"
    assert env.task_row(run, "calc")["status"] == "accepted"
    assert git(repo, "rev-parse", "--verify", f"planegate/{run}/text")  # the branch is kept
    event = env.store.one("SELECT actor, payload FROM events WHERE kind = 'run.rolled_back'")
    assert event is not None and event["actor"].startswith("user:")
    assert json.loads(event["payload"])["undone"] == ["text"]
    again = dispatch_task(env, run, "text")  # the kept branch comes back with its commits
    assert git(Path(again.worktree), "rev-parse", "HEAD") == text_head
    assert verify_ledger(env.store).ok


def test_reconcile_removes_clean_orphan_worktrees_and_keeps_dirty_ones(tmp_path: Path, env: Env) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    clean = env.settings.worktrees / run / "ghost"
    dirty = env.settings.worktrees / run / "ghost2"
    git(repo, "worktree", "add", "-q", "-b", "g1", str(clean))
    git(repo, "worktree", "add", "-q", "-b", "g2", str(dirty))
    write(dirty, {"unsaved.txt": "work in progress\n"})
    retired = env.settings.worktrees / run / ".removing-calc-1-2"  # accept_task's process stopped before deleting it
    write(retired, {"src/calc.py": "x = 1\n"})
    report = reconcile(env)
    assert report.removed_orphans == [str(clean)] and report.kept_orphans == [str(dirty)]
    assert not clean.exists() and (dirty / "unsaved.txt").exists() and not retired.exists()
    assert git(repo, "rev-parse", "--verify", "g1")  # branches are never deleted
    status = get_status(env, run).status
    assert status is not None and any("uncommitted work" in r for r in status.risks)


def test_the_graph_cannot_be_replaced_once_a_task_is_dispatched(tmp_path: Path, env: Env) -> None:
    from planegate.tools.control.graph import register_graph
    from tests.execution import TASKS

    run = planned_run(env, calc_repo(tmp_path / "calc"))
    dispatch_task(env, run, "calc")
    before = env.store.event_count()
    with pytest.raises(WrongState, match=r"already has dispatched tasks \(calc \(in_progress\)\)"):
        register_graph(env, run, TASKS[:2])
    assert env.store.event_count() == before


def test_an_expired_lease_shows_as_a_risk_and_another_session_can_take_the_task_over(
    tmp_path: Path, fresh_machine: Path, env: Env
) -> None:
    import time

    run = planned_run(env, calc_repo(tmp_path / "calc", lease_minutes=0.01))
    first = dispatch_task(env, run, "calc")
    deadline = time.monotonic() + 10
    while not (status := get_status(env, run).status) or not status.active[0].lease_expired:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the lease did not expire"
        time.sleep(0.1)
    assert any("lease expired" in r for r in status.risks)
    other = open_env(fresh_machine, actor="agent:other")
    try:
        second = dispatch_task(other, run, "calc")
    finally:
        other.close()
    assert second.taken_over and second.worktree == first.worktree
    row = env.task_row(run, "calc")
    assert row["lease_owner"].startswith("agent:other@")
    assert env.store.scalar("SELECT COUNT(*) FROM events WHERE kind = 'task.taken_over'") == 1


def test_ledger_verify_re_hashes_artifacts_and_finds_an_edited_log(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    finish_calc(env, run)
    assert verify_ledger(env.store).ok
    log = Path(env.store.scalar("SELECT path FROM artifacts WHERE name = 'test.stdout.log' LIMIT 1"))
    log.write_text("1 passed (edited afterwards)\n")
    report = verify_ledger(env.store)
    assert not report.ok and report.chain_break is None
    assert any(str(log) in problem and "no longer hashes" in problem for problem in report.artifact_problems)


def test_the_run_keeps_the_policy_it_started_with(tmp_path: Path, env: Env) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    (repo / ".planegate" / "policy.toml").write_text("max_parallel = 50\nrequire_review = false\n")
    assert env.policy(env.run_row(run)).max_parallel == 2


def test_reconcile_survives_a_run_whose_repository_was_deleted(tmp_path: Path, env: Env) -> None:
    import shutil

    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    (env.settings.worktrees / run / "stray").mkdir()
    shutil.rmtree(repo)
    shutil.rmtree(worktree)
    report = reconcile(env)
    assert report.missing_worktrees == [f"{run}/calc: {worktree}"]
    assert report.kept_orphans == [str(env.settings.worktrees / run / "stray")]  # its repository is gone


def test_a_failed_check_s_job_reads_failed_and_keeps_its_evidence(tmp_path: Path, env: Env) -> None:
    from planegate.tools.execution.jobview import job_result

    run = planned_run(env, calc_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST.replace("== 6", "== 7")})
    commit_all(worktree, "mul with a wrong test")
    job = start_checks(env, run, "calc", ["test"])
    assert drain(env) == ["succeeded"]  # the job ran to its end; the check in it failed
    result = checks_result(env, job)
    assert (result.state, result.all_passed) == ("failed", False)
    assert [(line.check, line.exit_code, line.label) for line in result.results] == [
        ("test", 1, "direct"),
        ("test_integrity", 0, "direct"),  # the new test was not on the base, so nothing that passed there is lost
    ]
    assert result.error == "not passed: test (exit 1, direct)"
    assert result.next_step.startswith("fix what failed")
    view = job_result(env, job)
    assert (view.state, view.error, view.checks) == ("failed", result.error, result.results)


def test_paused_workers_claim_nothing_and_a_bad_mode_changes_nothing(tmp_path: Path, env: Env) -> None:
    from planegate.tools.execution.jobs import claim, set_worker_mode, worker_control

    run = planned_run(env, calc_repo(tmp_path / "calc"))
    finish_calc(env, run)
    start_checks(env, run, "calc", ["test"])
    before = env.store.event_count()
    with pytest.raises(InvalidInput, match="worker mode 'stopped' is unknown; use one of running, paused"):
        set_worker_mode(env, "stopped")
    assert env.store.event_count() == before
    assert set_worker_mode(env, "paused", "upgrade")[0] and not set_worker_mode(env, "paused")[0]
    assert claim(env, "w", 30) is None
    assert worker_control(env.store)["mode"] == "paused"
    set_worker_mode(env, "draining")
    assert claim(env, "w", 30) is None
    set_worker_mode(env, "running")
    assert drain(env) == ["succeeded"]
    assert env.store.event_count() > before
    assert verify_ledger(env.store).ok


def test_a_stale_view_of_a_dead_owner_never_takes_a_job_from_a_live_one(
    tmp_path: Path, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between reading which owners are dead and the claim's transaction another worker may have
    reclaimed the job: the claim re-checks the row it reads inside the transaction."""
    from planegate.tools.execution import jobs
    from planegate.tools.execution.jobs import claim, release_stale

    run = planned_run(env, calc_repo(tmp_path / "calc"))
    finish_calc(env, run)
    job = start_checks(env, run, "calc", ["test"])
    assert claim(env, "alive", 30) is not None  # held by this (live) process, lease 30 s
    monkeypatch.setattr(jobs, "_dead_owned", lambda reader, here: {job})
    assert claim(env, "other", 30) is None
    assert release_stale(env).queued == []
    row = env.store.one("SELECT status, lease_owner, attempts FROM jobs WHERE id = ?", (job,))
    assert row == {"status": "running", "lease_owner": "alive", "attempts": 1}


def test_a_dispatch_under_way_in_another_process_is_not_taken_for_a_deleted_worktree(
    env: Env, tmp_path: Path, fresh_machine: Path
) -> None:
    """Between its claim and its worktree, a dispatch holds the task's lock: a second dispatch in
    that window is refused and changes nothing, instead of seeing a claimed task without a worktree
    (what a worktree deleted by hand looks like) and taking it over."""
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    lock = fresh_machine / "locks" / f"dispatch-{run}-calc.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        events = env.store.event_count()
        with pytest.raises(Conflict, match="being dispatched by another call"):
            dispatch_task(env, run, "calc")
        assert env.store.event_count() == events and env.task_row(run, "calc")["status"] == "ready"
        assert not (fresh_machine / "worktrees" / run / "calc").exists()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert dispatch_task(env, run, "calc").worktree  # the lock dies with its holder
