"""Rows the chain vouches for: edits made with the `sqlite3` tool are refused by the gates and named
by `ledger verify`; checkpoint tags anchor the chain outside the file; old ledgers are upgraded."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlite_utils import Database

from planegate.store import Store, verify_ledger
from planegate.store.chain import GENESIS, canonical_json, chain_hash, event_body
from planegate.store.schema import migrate
from planegate.store.vouch import row_content
from planegate.tools.env import Env
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.gates.accept import accept_task
from planegate.tools.gates.facts import task_facts
from planegate.tools.gates.gates import GatesUnmet
from planegate.tools.gates.release import approve
from planegate.tools.report.acceptance import accept_run
from planegate.tools.report.status import get_status
from tests.execution import CALC, MUL, MUL_TEST, calc_repo, drain, finish_calc, open_env, planned_run, write
from tests.helpers import commit_all, git
from tests.test_review import release_ready, review, review_repo


@pytest.fixture
def env(fresh_machine: Path) -> Env:
    opened = open_env(fresh_machine)
    yield opened  # type: ignore[misc]
    opened.close()


def sqlite(env: Env, sql: str) -> None:
    """Edit the ledger the way anyone with a shell can: the sqlite3 command-line tool."""
    subprocess.run(["sqlite3", str(env.settings.ledger_path), sql], check=True, timeout=30, capture_output=True)


def planegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", *args], capture_output=True, text=True, timeout=120
    )


def gate_reasons(exc: pytest.ExceptionInfo[GatesUnmet]) -> dict[str, str]:
    return {g.gate: g.reason for g in exc.value.unmet}


def vouching_event(env: Env, table: str, key: str) -> int:
    return int(env.store.scalar("SELECT event_id FROM row_vouches WHERE tbl = ? AND key = ?", (table, key)))


def test_a_failing_check_edited_to_pass_is_refused_by_the_ledger_gate_and_named_by_verify(
    tmp_path: Path, env: Env
) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    wrong_mul = CALC + "\n\ndef mul(a, b):\n    return a + b\n"
    finish_calc(env, run, {"src/calc.py": wrong_mul, "tests/test_mul.py": MUL_TEST})
    failing = env.store.one(
        "SELECT id FROM evidence WHERE run_id = ? AND task_id = 'calc' AND kind = 'test' AND exit_code != 0", (run,)
    )
    assert failing is not None
    event = vouching_event(env, "evidence", f"[{failing['id']}]")
    integration = git(repo, "rev-parse", f"planegate/{run}/integration")

    sqlite(env, f"UPDATE evidence SET exit_code = 0 WHERE run_id = '{run}' AND task_id = 'calc'")

    with pytest.raises(GatesUnmet) as refused:
        accept_task(env, run, "calc")
    ledger = gate_reasons(refused)["ledger"]
    assert f"evidence {failing['id']} does not match event {event}" in ledger
    assert "the ledger was edited outside planegate; run `planegate ledger verify`" in ledger
    assert git(repo, "rev-parse", f"planegate/{run}/integration") == integration  # nothing merged
    shown = {g.gate: g for g in get_status(env, run).status.active[0].gates}  # type: ignore[union-attr]
    assert not shown["ledger"].ok and "planegate ledger verify" in shown["ledger"].reason

    report = verify_ledger(env.store)
    assert not report.ok
    assert f"evidence {failing['id']} does not match event {event}: exit_code (was 1, now 0)" in report.row_problems
    done = planegate("ledger", "verify")
    assert done.returncode == 1
    assert f"evidence {failing['id']} does not match event {event}: exit_code" in done.stderr


def test_a_policy_snapshot_edited_to_waive_checks_and_review_is_refused(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, review_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL})
    commit_all(worktree, "unchecked and unreviewed")
    policy = json.loads(env.run_row(run)["policy"])
    policy.update(checks={}, required_checks=[], require_review=False, require_red_green=False)
    event = vouching_event(env, "runs", canonical_json([run]))

    sqlite(env, f"UPDATE runs SET policy = '{json.dumps(policy)}' WHERE id = '{run}'")

    with pytest.raises(GatesUnmet) as refused:
        accept_task(env, run, "calc")
    assert [g.gate for g in refused.value.unmet] == ["ledger"]  # the forged policy waives everything else
    assert f"runs {run} does not match event {event}" in gate_reasons(refused)["ledger"]
    assert env.task_row(run, "calc")["status"] == "in_progress"
    assert any(
        p.startswith(f"runs {run} does not match event {event}: policy (was")
        for p in verify_ledger(env.store).row_problems
    )


def test_status_reads_the_runs_rows_once_and_names_an_edit_of_them_on_every_active_task(
    tmp_path: Path, env: Env
) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    for task in ("calc", "text"):
        dispatch_task(env, run, task)
    version = vouching_event(env, "requirement_versions", canonical_json([run, 1]))
    statements: list[str] = []
    env.store.conn.set_trace_callback(statements.append)
    try:
        before = get_status(env, run).status
    finally:
        env.store.conn.set_trace_callback(None)
    assert before is not None and [t.task for t in before.active] == ["calc", "text"]
    for table in ("requirement_versions", "policy_adoptions"):
        assert sum(f"FROM {table} " in s for s in statements) == 1, table  # not once per active task

    sqlite(env, f"UPDATE requirement_versions SET reason = 'quietly edited' WHERE run_id = '{run}'")

    after = get_status(env, run).status
    assert after is not None
    for task in after.active:
        ledger = next(g for g in task.gates if g.gate == "ledger")
        assert f"requirement_versions {run}/1 does not match event {version}" in ledger.reason, task.task


def test_a_forged_approval_row_is_refused_by_accept_run_and_named_by_verify(tmp_path: Path, env: Env) -> None:
    run = release_ready(env, tmp_path)
    head = git(Path(env.run_row(run)["repo"]), "rev-parse", f"planegate/{run}/integration")

    sqlite(
        env,
        "INSERT INTO approvals (run_id, by, via, head_sha, at)"
        f" VALUES ('{run}', 'alice', 'cli', '{head}', '2026-01-01T00:00:00.000Z')",
    )

    with pytest.raises(GatesUnmet) as refused:
        accept_run(env, run)
    assert "approvals 1 is vouched for by no event" in gate_reasons(refused)["ledger"]
    assert env.run_row(run)["stage"] == "release_review"
    assert (
        "approvals 1 is vouched for by no event (inserted outside planegate)" in verify_ledger(env.store).row_problems
    )


def test_a_deleted_evidence_row_stops_accept_run_and_a_deleted_finding_opens_no_gate(
    tmp_path: Path, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = release_ready(env, tmp_path)
    approve(env, run, by="alice", via="cli")
    evidence = env.store.one("SELECT id FROM evidence WHERE run_id = ? AND task_id = 'calc' LIMIT 1", (run,))
    assert evidence is not None

    sqlite(env, f"DELETE FROM evidence WHERE id = {evidence['id']}")

    with pytest.raises(GatesUnmet) as refused:
        accept_run(env, run)
    reason = gate_reasons(refused)["ledger"]
    assert reason.startswith("ledger verify found 1 problem(s): ")
    assert f"evidence {evidence['id']} is missing" in reason
    assert env.run_row(run)["stage"] == "release_review"

    other = planned_run(env, review_repo(tmp_path / "calc2"))
    finish_calc(env, other)
    monkeypatch.setenv("REVIEWER_MODE", "approve_high")
    review_id = review(env, other)
    sqlite(env, f"DELETE FROM findings WHERE review_id = '{review_id}' AND severity = 'high'")
    with pytest.raises(GatesUnmet, match="leaves open findings: high: unsafe input handling"):
        accept_task(env, other, "calc")
    assert any(p.startswith(f"findings {review_id}/0 is missing") for p in verify_ledger(env.store).row_problems)


def test_dependencies_come_from_the_vouched_task_row_not_the_edge_table(tmp_path: Path, env: Env) -> None:
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    sqlite(env, f"DELETE FROM task_edges WHERE run_id = '{run}' AND task_id = 'docs'")
    facts = task_facts(env, env.run_row(run), env.task_row(run, "docs"), live=False)
    assert facts.deps == [("calc", "ready")]
    assert any(p.startswith(f"task_edges {run}/docs/calc is missing") for p in verify_ledger(env.store).row_problems)


WHISPER_TEST = "from src.text import whisper\n\n\ndef test_whisper():\n    assert whisper('A') == 'a'\n"


def test_checkpoint_tags_carry_the_chain_head_and_catch_a_consistently_rewritten_ledger(
    tmp_path: Path, env: Env
) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    finish_calc(env, run)
    head_before = env.store.chain_head()
    first = accept_task(env, run, "calc")
    worktree = Path(dispatch_task(env, run, "text").worktree)
    write(
        worktree,
        {
            "src/text.py": "def shout(s):\n    return s.upper()\n\n\ndef whisper(s):\n    return s.lower()\n",
            "tests/test_whisper.py": WHISPER_TEST,
        },
    )
    commit_all(worktree, "whisper")
    start_checks(env, run, "text")
    drain(env)
    git(repo, "config", "--unset", "user.name")
    git(repo, "config", "--unset", "user.email")  # a machine without a git identity still gets tags
    second = accept_task(env, run, "text")

    assert git(repo, "cat-file", "-t", first.checkpoint) == "tag"
    message = git(repo, "tag", "-l", "--format=%(contents)", first.checkpoint)
    assert f"Planegate-Ledger-Event: {head_before.event_id}" in message
    assert f"Planegate-Ledger-Hash: {head_before.hash}" in message
    tagger = "--format=%(taggername) %(taggeremail)"
    assert git(repo, "tag", "-l", tagger, first.checkpoint) == "Test Author <author@example.invalid>"
    assert git(repo, "tag", "-l", tagger, second.checkpoint) == "planegate <planegate@localhost>"
    assert git(repo, "status", "--porcelain") == ""
    ok = planegate("ledger", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "2 checkpoint tag(s) match the chain" in ok.stdout

    # Rewrite the acceptance of `calc` (after cp-1's head, before cp-2's) and re-chain every later
    # event, as someone covering their tracks would: the chain verifies, the second tag does not.
    with sqlite3.connect(env.settings.ledger_path) as conn:
        accepted = conn.execute("SELECT id FROM events WHERE kind = 'task.accepted' AND task_id = 'calc'").fetchone()[0]
        prev = conn.execute("SELECT hash FROM events WHERE id = ?", (accepted - 1,)).fetchone()[0]
        later = conn.execute(
            "SELECT id, run_id, task_id, kind, actor, at, payload FROM events WHERE id >= ? ORDER BY id", (accepted,)
        ).fetchall()
        for event_id, run_id, task_id, kind, actor, at, payload in later:
            if event_id == accepted:
                data = json.loads(payload)
                data["review"] = "rv-forged"
                payload = canonical_json(data)
            digest = chain_hash(prev, event_body(event_id, run_id, task_id, kind, actor, at, payload))
            conn.execute(
                "UPDATE events SET payload = ?, prev_hash = ?, hash = ? WHERE id = ?", (payload, prev, digest, event_id)
            )
            prev = digest
    report = verify_ledger(env.store)
    assert report.chain_break is None and not report.row_problems
    broken = planegate("ledger", "verify")
    assert broken.returncode == 1
    assert f"tag {second.checkpoint} in {repo.resolve()} records event" in broken.stderr
    assert "the ledger was rewritten after it was tagged" in broken.stderr
    assert first.checkpoint + " " not in broken.stderr


def test_a_deleted_row_put_back_with_other_content_and_a_deleted_row_restored_are_named(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Store(path, actor="test") as store:
        with store.write() as w:
            w.insert("runs", RUN_ROW)
            for index, code in enumerate((1, 0)):
                w.insert("evidence", evidence_row(index + 1, code))
            w.event("evidence.recorded", run="r1", evidence=[1, 2], stage_to="draft")
        with store.write() as w:
            w.execute("DELETE FROM evidence WHERE id = 2")
            w.event("evidence.dropped", run="r1", evidence=2)
        recorded = store.one("SELECT * FROM evidence WHERE id = 1")
        assert recorded is not None and store.check_row("evidence", recorded) is None
        assert verify_ledger(store).ok
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM evidence WHERE id = 1")
        conn.execute("INSERT INTO evidence (id, run_id, kind, label, summary, exit_code, created_at)"
                     " VALUES (1, 'r1', 'test', 'direct', 'ok', 0, 't')")  # fmt: skip
        conn.execute("INSERT INTO evidence (id, run_id, kind, label, summary, exit_code, created_at)"
                     " VALUES (2, 'r1', 'test', 'direct', 'ok', 0, 't')")  # fmt: skip
    with Store(path, actor="test") as store:
        report = verify_ledger(store)
        forged = store.one("SELECT * FROM evidence WHERE id = 1")
        assert forged is not None
        problem = store.check_row("evidence", forged)
    assert problem is not None and str(problem).startswith("evidence 1 does not match event 1;")
    assert report.row_problems == [
        'evidence 1 does not match event 1: created_at (was "2026-01-01", now "t"), exit_code (was 1, now 0), '
        'summary (was "failed", now "ok")',
        "evidence 2 exists, but event 2 recorded its deletion (put back outside planegate)",
    ]


RUN_ROW = {
    "id": "r1",
    "repo": "/x",
    "goal": "g",
    "base_ref": "HEAD",
    "base_sha": "a" * 40,
    "integration_branch": "planegate/r1/integration",
    "stage": "draft",
    "policy": "{}",
    "policy_sha256": "0",
    "created_at": "2026-01-01",
    "updated_at": "2026-01-01",
}


def evidence_row(evidence_id: int, exit_code: int) -> dict[str, object]:
    return {
        "id": evidence_id,
        "run_id": "r1",
        "kind": "test",
        "label": "direct",
        "summary": "failed" if exit_code else "ok",
        "exit_code": exit_code,
        "created_at": "2026-01-01",
    }


def test_a_ledger_on_the_m003_schema_is_vouched_for_by_one_upgrade_event(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    db = Database(path)
    migrate(db, stop_before="m004_review_identity")
    db["runs"].insert({**RUN_ROW, "stage": "draft"})
    db["evidence"].insert(evidence_row(1, 1))
    prev = GENESIS
    for event_id, kind in ((1, "run.started"), (2, "evidence.recorded")):
        payload = canonical_json({"stage_to": "draft"} if event_id == 1 else {"evidence": 1})
        digest = chain_hash(prev, event_body(event_id, "r1", None, kind, "old", "2026-01-01", payload))
        db["events"].insert(
            {"id": event_id, "run_id": "r1", "task_id": None, "kind": kind, "actor": "old", "at": "2026-01-01",
             "payload": payload, "prev_hash": prev, "hash": digest}
        )  # fmt: skip
        prev = digest
    db.close()

    with Store(path) as store:
        upgrade = store.one("SELECT id, kind, actor, payload FROM events WHERE id = 3")
        report = verify_ledger(store)
        row = store.one("SELECT * FROM evidence WHERE id = 1")
        assert row is not None and store.check_row("evidence", row) is None
    assert upgrade is not None and upgrade["kind"] == "ledger.rows_vouched_at_upgrade"
    assert upgrade["actor"] == "planegate:upgrade"
    assert "trusted as they stood at this upgrade" in json.loads(upgrade["payload"])["note"]
    assert report.ok and report.events_verified == 3 and report.rows_verified == 2

    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE evidence SET exit_code = 0")
    with Store(path) as store:
        assert verify_ledger(store).row_problems == ["evidence 1 does not match event 3: exit_code (was 1, now 0)"]
        assert store.event_count() == 3  # opening again migrates nothing and vouches nothing new


def test_a_blank_ledger_needs_no_upgrade_event(tmp_path: Path) -> None:
    with Store(tmp_path / "ledger.db") as store:
        assert store.event_count() == 0
        assert store.chain_head() == (0, GENESIS)


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from planegate.store import Store
    path, go, name, count = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    store = Store(path, actor=name)
    (go.parent / ("ready-" + name)).touch()
    while not go.exists():
        time.sleep(0.001)
    for n in range(count):
        with store.write() as w:
            row = w.insert("evidence", {"run_id": "r1", "kind": "test", "label": "direct", "summary": name + str(n),
                                        "exit_code": n % 2, "created_at": w.at})
            w.execute("UPDATE runs SET updated_at = ? WHERE id = 'r1'", (w.at,))
            if n % 3:
                w.event("evidence.recorded", run="r1", evidence=row)
    store.close()
    """
)


def test_several_processes_writing_vouched_rows_at_once_leave_a_ledger_that_verifies(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Store(path, actor="test") as store, store.write() as w:
        w.insert("runs", RUN_ROW)
        w.event("run.started", run="r1", stage_from=None, stage_to="draft")
    go = tmp_path / "go"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(go), f"p{i}", "30"], stderr=subprocess.PIPE)
        for i in range(4)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-p{i}").exists() for i in range(4)):
        assert time.monotonic() < deadline, "writers did not open the ledger in time"
        time.sleep(0.01)
    go.touch()
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()
    with Store(path) as store:
        report = verify_ledger(store)
        assert store.scalar("SELECT COUNT(*) FROM evidence") == 120
        assert store.scalar("SELECT COUNT(*) FROM events WHERE kind = 'ledger.rows'") == 40  # writes without an event
    assert report.ok, report.problems
    assert report.rows_verified == 121


def test_a_row_digest_covers_every_non_null_column_as_canonical_json(tmp_path: Path) -> None:
    row = {"b": 'é " \\ \n', "a": 1, "n": None, "f": 1.5}
    assert row_content(row) == canonical_json({"a": 1, "b": 'é " \\ \n', "f": 1.5})
    assert row_content({"x": b"\x01"}) == canonical_json({"x": {"blob": "01"}})  # a BLOB never equals text
    with Store(tmp_path / "ledger.db", actor="test") as store:
        with store.write() as w:
            w.insert("runs", {**RUN_ROW, "id": 'r-ü "1"'})
            w.insert("evidence", {**evidence_row(7, 0), "run_id": 'r-ü "1"', "summary": "ok ✓\u2028"})
            w.event("run.started", run='r-ü "1"', stage_to="draft")
        assert verify_ledger(store).ok
        assert store.check_row("runs", store.one("SELECT * FROM runs") or {}) is None
