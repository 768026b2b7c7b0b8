"""Git facts computed once per head by the worker, and a get_status that never waits for git.

Real repositories and ledgers; git processes are counted at ``subprocess.Popen``, so "no git"
means none was started."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from planegate.tools.env import Env
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.execution.jobs import Worker
from planegate.tools.gates import facts as facts_module
from planegate.tools.gates.accept import accept_task
from planegate.tools.gates.facts import GIT_GATES, refresh_moved_heads
from planegate.tools.gates.gates import GatesUnmet
from planegate.tools.gitrepo import RefReader
from planegate.tools.models import StatusResult
from planegate.tools.report import status as status_module
from planegate.tools.report.status import get_status
from tests.execution import MUL, MUL_TEST, calc_repo, drain, finish_calc, open_env, planned_run, write
from tests.helpers import commit_all, git, make_repo

FAKE_KEY_ID = "AKIA" + "Q3EGRZ7XWJ5TK4MB"  # made up, in the shape the AWS detector knows


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


@pytest.fixture(autouse=True)
def fresh_process_caches() -> None:
    """Each test starts as a new process would: nothing seen, nothing computed in memory."""
    facts_module.forget_cached()
    facts_module._seen.clear()
    facts_module._failed.clear()
    facts_module._identity_read.clear()


class GitCount:
    """Counts the git processes started while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started: list[list[str]] = []
        popen = subprocess.Popen.__init__
        outer = self

        def counted(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
            if isinstance(args, list) and args[:1] == ["git"]:
                outer.started.append([str(a) for a in args[1:]])
            popen(self, args, *rest, **kwargs)

        monkeypatch.setattr(subprocess.Popen, "__init__", counted)


def gates(status: StatusResult, task: str) -> dict[str, tuple[bool, str]]:
    assert status.status is not None
    active = next(t for t in status.status.active if t.task == task)
    # status lists the unmet gates with their reasons and names the ones that hold
    return {**{name: (True, "") for name in active.met}, **{g.gate: (g.ok, g.reason) for g in active.gates}}


def stored_rows(env: Env) -> int:
    return int(env.store.scalar("SELECT COUNT(*) FROM git_facts"))


def test_get_status_runs_no_git_and_says_which_head_is_being_computed(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc", max_parallel=1))
    worktree = finish_calc(env, run)
    head = git(worktree, "rev-parse", "HEAD")
    count = GitCount(monkeypatch)

    status = get_status(env, run, wait_for_git=False)
    assert count.started == []
    shown = gates(status, "calc")
    for gate in GIT_GATES:
        ok, reason = shown[gate]
        assert not ok and reason.startswith(f"computing for head {head[:12]}"), (gate, reason)
    assert shown["checks"][0] and shown["ledger"][0]  # gates that need no git are judged as usual
    assert status.status is not None and status.status.active[0].head_sha == head
    assert "computing for head" in status.next_action and f"get_status({run!r}) again" in status.next_action

    assert refresh_moved_heads(env) == 1
    count.started.clear()
    status = get_status(env, run, wait_for_git=False)
    assert count.started == []
    assert all(ok for ok, _ in gates(status, "calc").values())
    assert status.next_action == f"accept_task(run={run!r}, task='calc')"


def test_the_worker_computes_each_head_once_and_notices_a_new_commit_by_its_ref(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    worktree = finish_calc(env, run)
    assert refresh_moved_heads(env) == 1
    count = GitCount(monkeypatch)
    assert refresh_moved_heads(env) == 0
    assert count.started == []  # nothing moved: two ref files read, no git

    write(worktree, {"src/calc.py": MUL + "\n\ndef div(a, b):\n    return a / b\n"})
    moved = commit_all(worktree, "div")
    assert refresh_moved_heads(env) == 1
    assert any(moved in argv for argv in count.started)
    status = get_status(env, run, wait_for_git=False)
    assert status.status is not None and status.status.active[0].head_sha == moved
    assert gates(status, "calc")["scope"][0]
    assert not gates(status, "calc")["checks"][0]  # the evidence is on the older head
    assert stored_rows(env) == 2


def test_another_process_finds_the_stored_facts_and_computes_nothing(
    env: Env, tmp_path: Path, fresh_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    finish_calc(env, run)
    assert refresh_moved_heads(env) == 1
    facts_module.forget_cached()
    facts_module._seen.clear()  # as a worker in another process would start
    other = open_env(fresh_machine, actor="planegate:worker")
    try:
        count = GitCount(monkeypatch)
        assert refresh_moved_heads(other) == 0
        # opening the repository (rev-parse) and reading its committer identity once (config) for
        # the acceptances to come: nothing about the head is computed again
        assert [argv for argv in count.started if argv[:1] not in (["rev-parse"], ["config"])] == []
        assert len([argv for argv in count.started if argv[:1] == ["config"]]) == 1
    finally:
        other.close()


def test_facts_follow_the_integration_tip_when_another_task_is_accepted(env: Env, tmp_path: Path) -> None:
    repo = calc_repo(tmp_path / "calc", max_parallel=3)
    run = planned_run(env, repo)
    text = Path(dispatch_task(env, run, "text").worktree)
    write(text, {"src/text.py": "def shout(s):\n    return s.upper()\n\n\ndef whisper(s):\n    return s.lower()\n"})
    commit_all(text, "whisper")
    finish_calc(env, run)
    assert refresh_moved_heads(env) == 2
    accept_task(env, run, "calc")
    assert refresh_moved_heads(env) == 1  # text: same head, new integration tip
    integration = git(repo, "rev-parse", f"planegate/{run}/integration")
    stored = env.store.rows("SELECT integration FROM git_facts WHERE integration = ?", (integration,))
    assert len(stored) == 1


def test_stored_facts_are_shown_but_never_trusted_by_accept(env: Env, tmp_path: Path) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    finish_calc(env, run, {"src/calc.py": MUL + f"\nKEY = {FAKE_KEY_ID!r}\n", "tests/test_mul.py": MUL_TEST})
    refresh_moved_heads(env)
    assert not gates(get_status(env, run, wait_for_git=False), "calc")["secrets"][0]

    # An edit outside planegate hides the secret from what get_status shows …
    row = env.store.one("SELECT repo, base, head, integration, harness, facts FROM git_facts")
    assert row is not None
    cleaned = {**json.loads(row["facts"]), "secrets": []}
    env.store.conn.execute(
        "UPDATE git_facts SET facts = ? WHERE head = ?", (json.dumps(cleaned, separators=(",", ":")), row["head"])
    )
    assert gates(get_status(env, run, wait_for_git=False), "calc")["secrets"][0]
    # … but accepting computes its facts from git itself.
    facts_module.forget_cached()
    with pytest.raises(GatesUnmet) as refused:
        accept_task(env, run, "calc")
    assert any(g.gate == "secrets" and "AWS Access Key" in g.reason for g in refused.value.unmet)
    assert env.task_row(run, "calc")["status"] == "in_progress"


def test_get_status_without_a_worker_computes_what_is_missing_and_stores_nothing(env: Env, tmp_path: Path) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    finish_calc(env, run)
    status = get_status(env, run)  # the default: a process with no worker, such as `planegate status`
    assert all(ok for ok, _ in gates(status, "calc").values())
    assert stored_rows(env) == 0


def test_pending_facts_wake_this_process_s_worker(env: Env, tmp_path: Path) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    finish_calc(env, run)
    worker = Worker(env)
    assert not worker._wake.is_set()
    get_status(env, run, wait_for_git=False)
    assert worker._wake.is_set()


def test_a_worker_loop_stores_the_facts_of_moved_heads_and_loads_the_secret_scanner(env: Env, tmp_path: Path) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    commit_all(worktree, "mul")
    start_checks(env, run, "calc")

    async def work() -> str:
        with anyio.fail_after(120):
            return await Worker(env).run(stop_when_idle=True)

    assert anyio.run(work) == "idle"
    assert stored_rows(env) == 1
    assert facts_module._warmed.is_set()
    assert all(ok for ok, _ in gates(get_status(env, run, wait_for_git=False), "calc").values())
    assert drain(env) == []


def test_the_worker_reads_the_committer_identity_so_the_first_accept_asks_git_for_nothing_more(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    finish_calc(env, run)
    repo = env.repo(env.run_row(run)["repo"])
    assert repo._identity is None  # nothing has read it yet in this process
    assert refresh_moved_heads(env) == 1
    assert repo._identity is not None
    count = GitCount(monkeypatch)
    accept_task(env, run, "calc")
    assert [argv for argv in count.started if argv[:1] == ["config"]] == []
    assert env.task_row(run, "calc")["status"] == "accepted"


def test_branch_tips_are_read_from_ref_files_of_repositories_and_worktrees(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "one\n"})
    git(repo, "branch", "feature")
    main = git(repo, "rev-parse", "main")
    reader = RefReader(repo)
    assert reader.branch_sha("main") == main and reader.branch_sha("feature") == main
    assert reader.branch_sha("missing") is None
    git(repo, "pack-refs", "--all")
    assert RefReader(repo).branch_sha("feature") == main
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "side", str(worktree))
    (worktree / "b.txt").write_text("two\n")
    side = commit_all(worktree, "side")
    assert RefReader(worktree).branch_sha("side") == side == RefReader(repo).branch_sha("side")
    assert RefReader(tmp_path / "not-a-repo").branch_sha("main") is not None  # unknown: ask git
    assert not isinstance(RefReader(tmp_path / "not-a-repo").branch_sha("main"), str)


def test_the_start_up_warm_up_answers_get_status_for_runs_in_progress_without_git(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from planegate.tools.report.status import warm_up

    run = planned_run(env, calc_repo(tmp_path / "calc", max_parallel=1))
    finish_calc(env, run)
    seen: list[tuple[str | None, bool]] = []
    real = status_module.get_status

    def recording(env: Env, run: str | None = None, *, wait_for_git: bool = True) -> StatusResult:
        seen.append((run, wait_for_git))
        return real(env, run, wait_for_git=wait_for_git)

    monkeypatch.setattr(status_module, "get_status", recording)
    count = GitCount(monkeypatch)
    before = env.store.event_count()
    assert warm_up(env) == 1
    assert seen == [(run, False), (None, True)] and count.started == []
    assert env.store.event_count() == before and stored_rows(env) == 0  # nothing written
