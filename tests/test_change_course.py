"""Runs that change course: amending the graph after dispatch, abandoning a run, and both of them
refused (changing nothing) or raced by two sessions."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from planegate.server.app import build_server
from planegate.store import VOUCHED, verify_ledger
from planegate.tools.config import Settings
from planegate.tools.control.amend import plan_amendment, record_amendment
from planegate.tools.env import Env
from planegate.tools.errors import Conflict, InvalidInput, WrongState
from planegate.tools.execution.course import abandon_run, amend_graph
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.gates.accept import accept_task
from planegate.tools.gates.approval_view import describe
from planegate.tools.gates.release import evaluate_run
from planegate.tools.models import TaskSpec
from planegate.tools.report.report import build_report
from planegate.tools.report.status import get_status
from tests.execution import MUL, MUL_TEST, calc_repo, finish_calc, open_env, planned_run, policy_toml, write
from tests.helpers import call, commit_all, git, refused


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


def ledger_state(env: Env) -> dict[str, Any]:
    """Everything a refusal must leave alone: the events and every vouched table's rows."""
    state: dict[str, Any] = {"events": env.store.event_count()}
    for table in VOUCHED:
        state[table] = env.store.rows(f"SELECT * FROM {table} ORDER BY rowid")
    state["jobs"] = env.store.rows("SELECT id, status FROM jobs ORDER BY id")
    return state


def spec(task: str, **fields: Any) -> TaskSpec:
    values: dict[str, Any] = {
        "id": task,
        "title": f"Task {task}",
        "goal": f"do {task}",
        "scope": ["src/text.py"],
        "requirements": ["R2"],
    }
    values.update(fields)
    return TaskSpec(**values)


# -- amend_graph -----------------------------------------------------------------------------------


def test_amend_graph_adds_cancels_and_changes_tasks_and_returns_waves_and_coverage(env: Env, tmp_path: Path) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    dispatch_task(env, run, "text")  # dispatched: it can be cancelled, not changed
    result = amend_graph(
        env,
        run,
        add=[spec("shout2", title="Shout louder", depends_on=["calc"])],
        cancel=["text"],
        change=[spec("docs", title="Document mul", goal="Document mul in a docstring", scope=["src/calc.py"],
                     requirements=["R1"], depends_on=["calc"], acceptance=["a docstring"])],
        reason="whisper moves into a task that waits for calc",
    )  # fmt: skip
    assert (result.added, result.cancelled, result.changed) == (["shout2"], ["text"], ["docs"])
    assert result.waves == [["calc", "text"], ["docs", "shout2"]]
    assert result.coverage == {"R1": ["calc", "docs"], "R2": ["shout2"]}
    assert result.ready == ["calc"] and result.next_step == f"dispatch_task(run={run!r}, task='calc')"
    rows = {r["id"]: r for r in env.store.rows("SELECT * FROM tasks WHERE run_id = ?", (run,))}
    assert rows["text"]["status"] == "cancelled"
    assert rows["text"]["cancel_reason"] == "whisper moves into a task that waits for calc"
    assert rows["shout2"]["status"] == "blocked" and rows["shout2"]["wave"] == 1
    assert rows["docs"]["goal"] == "Document mul in a docstring"
    assert json.loads(rows["docs"]["acceptance"]) == ["a docstring"]
    assert Path(rows["text"]["worktree"]).is_dir(), "a cancelled task's worktree is kept for inspection"
    edges = env.store.rows("SELECT task_id, depends_on FROM task_edges WHERE run_id = ? ORDER BY task_id", (run,))
    assert [(e["task_id"], e["depends_on"]) for e in edges] == [("docs", "calc"), ("shout2", "calc")]
    [version] = env.store.rows("SELECT * FROM graph_versions WHERE run_id = ? AND amendment IS NOT NULL", (run,))
    assert version["version"] == 2 and version["reason"] == "whisper moves into a task that waits for calc"
    assert json.loads(version["amendment"]) == {
        "added": ["shout2"],
        "cancelled": ["text"],
        "changed": {"docs": ["title", "goal", "acceptance"]},
    }
    assert verify_ledger(env.store).ok
    # The human sees every amendment: in the approval and in the report.
    _, gates = evaluate_run(env, run)
    head = env.repo(env.run_row(run)["repo"]).branch_sha(env.run_row(run)["integration_branch"])
    shown = describe(env, env.run_row(run), str(head), gates, "interactive", None)
    assert "Graph amendments after dispatch:" in shown
    assert "reason: whisper moves into a task that waits for calc" in shown
    for line in ("added shout2: Shout louder", "cancelled text: Whisper", "changed docs (title, goal, acceptance)"):
        assert line in shown, line
    markdown, _, _ = build_report(env, run)
    assert "## Changes of course" in markdown and "whisper moves into a task that waits for calc" in markdown
    assert "**added** `shout2`" in markdown and "**cancelled** `text`" in markdown


def test_a_task_added_after_its_dependencies_were_accepted_is_ready_and_reopens_the_release(
    env: Env, tmp_path: Path
) -> None:
    repo = calc_repo(tmp_path / "calc", require_red_green=False)
    run = planned_run(env, repo, [TaskSpec(id="calc", title="Mul", goal="mul", scope=["src/calc.py"],
                                           requirements=["R1", "R2"])])  # fmt: skip
    finish_calc(env, run)
    accept_task(env, run, "calc")
    with env.write() as w:  # the release review was requested: the run waits for it
        from planegate.tools.control.runs import set_stage

        set_stage(w, env.run_row(run), "release_review", "run.release_review", review="rv-test")
    result = amend_graph(env, run, add=[spec("whisper", depends_on=["calc"])], reason="whisper was forgotten")
    assert result.ready == ["whisper"] and result.next_step == f"dispatch_task(run={run!r}, task='whisper')"
    assert env.run_row(run)["stage"] == "executing"
    assert verify_ledger(env.store).ok


REFUSALS = [
    ("cancel an accepted task", "accepted work is immutable"),
    ("change an accepted task", "accepted work is immutable"),
    ("cancel an unknown id", "cancel names task 'nope', which is not in run"),
    ("change an unknown id", "change names task 'nope', which is not in run"),
    ("depend on an unknown id", "depends on 'nope', which is not a task of run"),
    ("introduce a cycle", "introduces a dependency cycle: docs → later → docs"),
    ("change a dispatched task", "it was dispatched, so it can no longer change"),
    ("add an existing id", "add names task 'docs', which is already in the graph"),
    ("lose coverage", "leaves requirement 'R2' served by no task"),
    ("strand a dependent", "task 'polish' depends on 'text', which this amendment cancels"),
    ("depend on a cancelled task", "which is cancelled by this amendment"),
    ("scope outside the architecture", "which no module owns"),
    ("unknown requirement", "names requirement 'R9', which is not frozen"),
    ("no reason", "reason is empty"),
    ("nothing to do", "the amendment is empty"),
]


def test_refused_amendments_change_nothing(env: Env, tmp_path: Path) -> None:
    """Each refusal is tried on the same run in turn: none may change an event or a row."""
    repo = calc_repo(tmp_path / "calc", require_red_green=False)
    tasks = [
        TaskSpec(id="calc", title="Mul", goal="mul", scope=["src/calc.py"], requirements=["R1"]),
        TaskSpec(id="text", title="Whisper", goal="whisper", scope=["src/text.py"], requirements=["R2"]),
        TaskSpec(id="docs", title="Docs", goal="docs", depends_on=["calc"], scope=["src/calc.py"], requirements=["R1"]),
        TaskSpec(id="polish", title="Polish", goal="polish", depends_on=["text"], scope=["src/text.py"],
                 requirements=["R2"]),
    ]  # fmt: skip
    run = planned_run(env, repo, tasks)
    finish_calc(env, run)
    accept_task(env, run, "calc")
    dispatch_task(env, run, "text")
    arguments: dict[str, dict[str, Any]] = {
        "cancel an accepted task": {"cancel": ["calc"]},
        "change an accepted task": {"change": [spec("calc", scope=["src/calc.py"], requirements=["R1"])]},
        "cancel an unknown id": {"cancel": ["nope"]},
        "change an unknown id": {"change": [spec("nope")]},
        "depend on an unknown id": {"add": [spec("later", depends_on=["nope"])]},
        "introduce a cycle": {
            "add": [spec("later", depends_on=["docs"])],
            "change": [spec("docs", scope=["src/calc.py"], requirements=["R1"], depends_on=["calc", "later"])],
        },
        "change a dispatched task": {"change": [spec("text", goal="whisper softly")]},
        "add an existing id": {"add": [spec("docs")]},
        "lose coverage": {"cancel": ["text", "polish"]},
        "strand a dependent": {"cancel": ["text"]},
        "depend on a cancelled task": {"cancel": ["text"], "add": [spec("w2", depends_on=["text"])]},
        "scope outside the architecture": {"add": [spec("later", scope=["README.md"])]},
        "unknown requirement": {"add": [spec("later", requirements=["R9"])]},
        "no reason": {"add": [spec("later")], "reason": "  "},
        "nothing to do": {},
    }
    before = ledger_state(env)
    for case, refusal in REFUSALS:
        given = dict(arguments[case])
        reason = given.pop("reason", "the plan changed")
        with pytest.raises((InvalidInput, WrongState)) as refused_with:
            amend_graph(env, run, reason=reason, **given)
        assert refusal in str(refused_with.value), (case, str(refused_with.value))
        assert ledger_state(env) == before, f"{case}: the refusal changed the ledger"


def test_two_sessions_amending_at_once_give_one_winner_and_a_clear_refusal(fresh_machine: Path, tmp_path: Path) -> None:
    first, second = open_env(fresh_machine, "agent:one"), open_env(fresh_machine, "agent:two")
    try:
        run = planned_run(first, calc_repo(tmp_path / "calc"))
        dispatch_task(first, run, "calc")
        # Both sessions check their amendment against the same graph version, then write at once.
        plans = [
            plan_amendment(first, run, [spec("one", depends_on=["calc"])], [], [], "session one's idea"),
            plan_amendment(second, run, [spec("two", depends_on=["calc"])], [], [], "session two's idea"),
        ]
        outcomes: dict[str, Any] = {}
        start = threading.Barrier(2)

        def write(env: Env, plan: Any, name: str) -> None:
            start.wait(timeout=10)
            try:
                with env.write() as w:
                    outcomes[name] = record_amendment(w, env, plan)
            except Conflict as exc:
                outcomes[name] = exc

        threads = [
            threading.Thread(target=write, args=(first, plans[0], "one")),
            threading.Thread(target=write, args=(second, plans[1], "two")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        winners = [name for name, outcome in outcomes.items() if outcome == 2]
        losers = [outcome for outcome in outcomes.values() if isinstance(outcome, Conflict)]
        assert len(winners) == 1 and len(losers) == 1, outcomes
        assert "changed while this amendment was checked" in str(losers[0])
        assert "nothing was written" in str(losers[0])
        tasks = {r["id"] for r in first.store.rows("SELECT id FROM tasks WHERE run_id = ?", (run,))}
        assert ({"one", "two"} & tasks) == {winners[0]}
        assert verify_ledger(first.store).ok
    finally:
        first.close()
        second.close()


# -- abandon_run -------------------------------------------------------------------------------------


SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.mark.anyio
async def test_abandon_run_cancels_tasks_ends_their_jobs_removes_clean_worktrees_and_keeps_the_rest(
    tmp_path: Path, fresh_machine: Path
) -> None:
    repo = calc_repo(tmp_path / "calc")
    (repo / ".planegate" / "policy.toml").write_text(policy_toml() + f"\n[executor]\ncommand = {json.dumps(SLEEPER)}\n")
    commit_all(repo, "a slow command executor")
    env = open_env(fresh_machine)
    run = planned_run(env, repo)
    env.close()
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=0)
    with anyio.fail_after(120):
        async with Client(server) as client:
            calc = await call(client, "dispatch_task", run=run, task="calc")
            (Path(calc["worktree"]) / "notes.txt").write_text("uncommitted work\n")
            text = await call(client, "dispatch_task", run=run, task="text", executor="command")
            group = await _running_group(fresh_machine, text["job"])
            abandoned = await call(client, "abandon_run", run=run, reason="the approach is wrong")
            assert abandoned["cancelled_tasks"] == ["calc", "text", "docs"]
            assert text["job"] in abandoned["cancelled_jobs"]
            assert abandoned["removed_worktrees"] == [text["worktree"]]
            assert abandoned["kept_worktrees"] == [calc["worktree"]]
            assert "start_run" in abandoned["next_step"]
            assert _gone(group), "the executor's process group outlived the abandonment"
            again = await refused(client, "abandon_run", run=run, reason="twice")
            assert "already abandoned" in again and "the approach is wrong" in again
            listed = await call(client, "get_status")
            assert run not in [r["run"] for r in listed["runs"]] and listed["runs_hidden"] == 1
            assert "include_abandoned=True" in listed["next_action"]
            everything = await call(client, "get_status", include_abandoned=True)
            assert [r["stage"] for r in everything["runs"] if r["run"] == run] == ["abandoned"]
            assert "dispatch" in await refused(client, "dispatch_task", run=run, task="calc")
    env = open_env(fresh_machine)
    try:
        assert env.run_row(run)["stage"] == "abandoned"
        statuses = {r["id"]: (r["status"], r["cancel_reason"]) for r in env.store.rows(
            "SELECT * FROM tasks WHERE run_id = ?", (run,))}  # fmt: skip
        assert set(statuses.values()) == {("cancelled", "run abandoned: the approach is wrong")}
        for task in ("calc", "text", "docs"):
            if task != "docs":
                assert git(repo, "rev-parse", "--verify", f"planegate/{run}/{task}"), "branches are kept"
        assert git(repo, "rev-parse", "--verify", f"planegate/{run}/integration")
        assert not Path(text["worktree"]).exists() and Path(calc["worktree"], "notes.txt").is_file()
        assert verify_ledger(env.store).ok
    finally:
        env.close()


async def _running_group(home: Path, job: int) -> int:
    """The process group the job's executor runs in, once it is running."""
    env = open_env(home)
    try:
        for _ in range(600):
            row = env.store.one("SELECT pgid FROM job_processes WHERE job_id = ? AND ended_at IS NULL", (job,))
            if row is not None:
                return int(row["pgid"])
            await anyio.sleep(0.05)
    finally:
        env.close()
    raise AssertionError(f"job {job} never started its process")


def _gone(pgid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_abandon_run_refuses_an_accepted_run_and_an_empty_reason_changing_nothing(env: Env, tmp_path: Path) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    before = ledger_state(env)
    with pytest.raises(InvalidInput, match="reason is empty"):
        abandon_run(env, run, " ")
    assert ledger_state(env) == before
    with env.write() as w:
        w.execute("UPDATE runs SET stage = 'accepted' WHERE id = ?", (run,))
        w.event("run.accepted", run=run, stage_from="planned", stage_to="accepted", integration_sha="0" * 40)
    before = ledger_state(env)
    with pytest.raises(WrongState, match="an accepted run cannot be abandoned"):
        abandon_run(env, run, "too late")
    assert ledger_state(env) == before


def test_two_sessions_abandoning_at_once_give_one_winner_and_a_clear_refusal(
    fresh_machine: Path, tmp_path: Path
) -> None:
    first, second = open_env(fresh_machine, "agent:one"), open_env(fresh_machine, "agent:two")
    try:
        run = planned_run(first, calc_repo(tmp_path / "calc"))
        dispatch_task(first, run, "calc")
        outcomes: list[Any] = []
        start = threading.Barrier(2)

        def abandon(env: Env) -> None:
            start.wait(timeout=10)
            try:
                outcomes.append(abandon_run(env, run, f"{env.settings.actor} gives up"))
            except WrongState as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=abandon, args=(e,)) for e in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        refusals = [o for o in outcomes if isinstance(o, WrongState)]
        assert len(outcomes) == 2 and len(refusals) == 1, outcomes
        assert "already abandoned" in str(refusals[0]) and "gives up" in str(refusals[0])
        assert first.store.scalar("SELECT COUNT(*) FROM events WHERE kind = 'run.abandoned'") == 1
        assert verify_ledger(first.store).ok
    finally:
        first.close()
        second.close()


def test_an_abandoned_run_takes_no_amendment(env: Env, tmp_path: Path) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    abandon_run(env, run, "not needed")
    before = ledger_state(env)
    with pytest.raises(WrongState, match="abandoned"):
        amend_graph(env, run, add=[spec("later")], reason="one more")
    assert ledger_state(env) == before
    assert get_status(env).runs == [] and get_status(env).runs_hidden == 1
    assert [r.run for r in get_status(env, include_abandoned=True).runs or []] == [run]


def test_a_task_worktree_deleted_by_hand_is_made_again_by_dispatch_without_manual_git(env: Env, tmp_path: Path) -> None:
    import shutil

    run = planned_run(env, calc_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    head = commit_all(worktree, "mul")
    shutil.rmtree(worktree)
    again = dispatch_task(env, run, "calc")  # the lease is still held: nobody can work in a missing folder
    assert again.taken_over and Path(again.worktree) == worktree
    assert git(worktree, "rev-parse", "HEAD") == head and (worktree / "src/calc.py").read_text() == MUL


@pytest.mark.anyio
async def test_amend_graph_lists_tasks_by_reference_and_still_refuses_a_bad_task_by_name(
    tmp_path: Path, fresh_machine: Path
) -> None:
    """Its schema points at register_graph's task shape instead of repeating it; the arguments are
    still validated against the whole shape."""
    repo = calc_repo(tmp_path / "calc")
    env = open_env(fresh_machine)
    run = planned_run(env, repo)
    before = ledger_state(env)
    env.close()
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=0)
    with anyio.fail_after(60):
        async with Client(server) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            schema = tools["amend_graph"].input_schema
            pointer = {"type": "object", "description": "as register_graph's tasks"}
            assert schema["properties"]["add"]["items"] == pointer
            assert "$defs" not in schema and "TaskSpec" not in json.dumps(schema)
            task = {"id": "extra", "title": "Extra", "goal": "more", "requirements": ["R2"]}
            missing = await refused(client, "amend_graph", run=run, reason="more work", add=[task])
            assert "scope" in missing
            stray = {**task, "scope": ["src/text.py"], "owner": "me"}
            unknown = await refused(client, "amend_graph", run=run, reason="more work", add=[stray])
            assert "owner" in unknown
    env = open_env(fresh_machine)
    try:
        assert ledger_state(env) == before
    finally:
        env.close()
