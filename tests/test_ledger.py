"""The ledger: migrations, the hash chain, `ledger verify`, and compare-and-set across processes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from planegate.store import Store, canonical_json, verify_ledger
from planegate.store.chain import event_body
from planegate.store.schema import migrate, migrations


def planegate(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def filled_store(path: Path, events: int = 5) -> Store:
    store = Store(path, actor="test")
    with store.write() as w:
        w.insert(
            "runs",
            {
                "id": "r1",
                "repo": "/x",
                "goal": "g",
                "base_ref": "HEAD",
                "base_sha": "a" * 40,
                "integration_branch": "planegate/r1/integration",
                "stage": "draft",
                "policy": "{}",
                "policy_sha256": hashlib.sha256(b"{}").hexdigest(),
                "created_at": w.at,
                "updated_at": w.at,
            },
        )
        w.event("run.started", run="r1", stage_from=None, stage_to="draft")
        w.execute(
            "INSERT INTO tasks (run_id, id, seq, title, goal, status, wave, depends_on, scope, requirements,"
            " acceptance, updated_at) VALUES ('r1', 't1', 0, 'T', 'G', 'ready', 0, '[]', '[]', '[]', '[]', ?)",
            (w.at,),
        )
        w.event("graph.registered", run="r1", statuses={"t1": "ready"})
    for index in range(events - 2):
        with store.write() as w:
            w.event("note", run="r1", index=index, text="ünïcode ✓")
    return store


def test_a_blank_file_is_migrated_to_the_latest_schema(tmp_path: Path) -> None:
    with Store(tmp_path / "ledger.db") as store:
        tables = set(store.db.table_names())
        applied = [m.name for m in migrations.applied(store.db)]
        assert store.scalar("PRAGMA journal_mode") == "wal"
    assert {"runs", "tasks", "events", "jobs", "evidence", "reviews", "findings", "approvals"} <= tables
    assert applied == [m.name for m in migrations._migrations]


def test_a_ledger_on_the_previous_schema_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    db = Database(path)
    migrate(db, stop_before="m002_execution")
    db.execute(
        "INSERT INTO runs (id, repo, goal, base_ref, base_sha, integration_branch, stage, policy, policy_sha256,"
        " created_at, updated_at) VALUES ('old', '/r', 'g', 'HEAD', 'abc', 'b', 'draft', '{}', '0', 't', 't')"
    )
    assert "jobs" not in db.table_names()
    db.close()
    with Store(path) as store:
        assert store.scalar("SELECT goal FROM runs WHERE id = 'old'") == "g"
        assert "jobs" in store.db.table_names()
        assert "executor" in {c.name for c in store.db["tasks"].columns}
        assert "requirements_version" in {c.name for c in store.db["reviews"].columns}


def bytes_read() -> int:
    """Bytes this process has read through read(2)/pread(2) so far (Linux's per-process I/O count)."""
    return int(
        next(line for line in Path("/proc/self/io").read_text().splitlines() if line.startswith("rchar:")).split()[1]
    )


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="reads Linux's per-process I/O counters")
@pytest.mark.parametrize(
    ("table", "lookup", "rows"),
    [
        # Reading event_id stops before the content, so even the large row's own lookup is cheap.
        ("row_vouches", "SELECT event_id FROM row_vouches WHERE tbl = ? AND key = ?", (99, 100, 101)),
        ("git_facts", "SELECT facts FROM git_facts WHERE repo = ? AND base = ? AND head = ? AND integration = ? "
         "AND harness = ?", (99, 101)),
    ],
)  # fmt: skip
def test_a_key_lookup_does_not_read_a_large_row_on_its_way(
    tmp_path: Path, table: str, lookup: str, rows: tuple[int, ...]
) -> None:
    # A vouched task graph can be megabytes. Kept whole in a key tree, every search that passed it
    # read all of it to compare keys (2.6 ms on a new connection, 1 ms warm, ten times a status).
    path = tmp_path / "ledger.db"
    Store(path).close()
    big = "x" * 2_000_000
    with sqlite3.connect(path) as conn:
        if table == "row_vouches":
            keys = [("graph_versions", canonical_json(["r1", n])) for n in range(1, 200)]
            conn.executemany(
                "INSERT INTO row_vouches (tbl, key, event_id, digest, content) VALUES (?, ?, 1, 'd', ?)",
                [(*key, big if n == 100 else "{}") for n, key in enumerate(keys)],
            )
        else:
            keys = [("/repo", "b" * 40, f"{n:040x}", "i" * 40, "[]") for n in range(200)]
            conn.executemany(
                "INSERT INTO git_facts (repo, base, head, integration, harness, facts, computed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 't')",
                [(*key, big if n == 100 else "{}") for n, key in enumerate(keys)],
            )
    with Store(path) as store:  # a new connection: nothing of the table in its page cache
        before = bytes_read()
        found = [store.conn.execute(lookup, keys[n]).fetchone() for n in rows]
        read = bytes_read() - before
    assert all(row is not None for row in found)
    assert read < 200_000, f"{len(rows)} lookups read {read:,} bytes beside a {len(big):,}-byte row"


def test_the_previous_schemas_key_trees_are_rebuilt_with_their_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    db = Database(path)
    migrate(db, stop_before="m014_large_rows_out_of_key_trees")
    db.execute("INSERT INTO row_vouches VALUES ('runs', '[\"r1\"]', 7, 'digest', '{\"id\":\"r1\"}')")
    db.execute("INSERT INTO git_facts VALUES ('/r', 'b', 'h', 'i', '[]', '{\"files\":[]}', '2026-01-01')")
    db.close()
    with Store(path) as store:
        assert store.rows("SELECT * FROM row_vouches") == [
            {"tbl": "runs", "key": '["r1"]', "event_id": 7, "digest": "digest", "content": '{"id":"r1"}'}
        ]
        assert store.rows("SELECT * FROM git_facts") == [
            {"repo": "/r", "base": "b", "head": "h", "integration": "i", "harness": "[]", "facts": '{"files":[]}',
             "computed_at": "2026-01-01"}
        ]  # fmt: skip
        schema = {row["name"]: row["sql"] for row in store.rows("SELECT name, sql FROM sqlite_master")}
    assert "WITHOUT ROWID" not in schema["row_vouches"] + schema["git_facts"]
    assert "git_facts_by_age" in schema
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError):  # the keys still refuse a duplicate
        conn.execute("INSERT INTO row_vouches VALUES ('runs', '[\"r1\"]', 8, 'd', NULL)")


def test_task_counts_follow_every_write_to_tasks_with_or_without_planegate(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    db = Database(path)
    migrate(db, stop_before="m015_task_counts")
    task = (
        "INSERT INTO tasks (run_id, id, seq, title, goal, status, wave, depends_on, scope, requirements, acceptance,"
        " updated_at) VALUES (?, ?, ?, 'T', 'G', ?, 0, '[]', '[]', '[]', '[]', 't')"
    )
    for run in ("r1", "r2"):
        db.execute(
            "INSERT INTO runs (id, repo, goal, base_ref, base_sha, integration_branch, stage, policy, policy_sha256,"
            " created_at, updated_at) VALUES (?, '/r', 'g', 'HEAD', 'abc', 'b', 'draft', '{}', '0', 't', 't')",
            (run,),
        )
    for seq, status in enumerate(["ready", "ready", "blocked", "in_progress"]):
        db.execute(task, ("r1", f"t{seq}", seq, status))
    db.conn.commit()
    db.close()

    def counted(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
        kept = conn.execute("SELECT run_id, status, n FROM task_counts WHERE n > 0 ORDER BY 1, 2").fetchall()
        truth = conn.execute("SELECT run_id, status, COUNT(*) FROM tasks GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
        return kept, truth

    with Store(path) as store:  # the upgrade counts the tasks already there
        kept, truth = counted(store.conn)
        assert kept == truth == [("r1", "blocked", 1), ("r1", "in_progress", 1), ("r1", "ready", 2)]
    with sqlite3.connect(path) as conn:  # the triggers are in the file: any writer keeps the counts
        for change, args in [
            ("UPDATE tasks SET status = 'accepted' WHERE id = 't3'", ()),
            ("UPDATE tasks SET status = 'ready', title = 'X' WHERE status = 'blocked'", ()),
            ("UPDATE tasks SET title = 'only the title'", ()),
            ("DELETE FROM tasks WHERE id = 't0'", ()),
            (task, ("r2", "t9", 9, "ready")),
            ("UPDATE tasks SET run_id = 'r2' WHERE id = 't1'", ()),
            ("DELETE FROM tasks", ()),
        ]:
            conn.execute(change, args)
            kept, truth = counted(conn)
            assert kept == truth, change


def test_event_bodies_are_the_canonical_json_of_the_event() -> None:
    payload = {"b": [1, {"z": None, "a": "é"}], "a": 'quote " and \\ backslash'}
    body = event_body(7, "run", None, "kind", "actor", "2026-01-01T00:00:00.000Z", canonical_json(payload))
    expected = {
        "actor": "actor",
        "at": "2026-01-01T00:00:00.000Z",
        "id": 7,
        "kind": "kind",
        "payload": payload,
        "run": "run",
        "task": None,
    }
    assert body == canonical_json(expected)


def test_a_clean_ledger_verifies_and_the_cli_prints_the_count(fresh_machine: Path) -> None:
    filled_store(fresh_machine / "ledger.db", events=6).close()
    done = planegate("ledger", "verify")
    assert done.returncode == 0, done.stderr
    assert "6 events verified" in done.stdout


def test_editing_one_event_row_breaks_verify_at_that_event(fresh_machine: Path) -> None:
    filled_store(fresh_machine / "ledger.db", events=6).close()
    with sqlite3.connect(fresh_machine / "ledger.db") as conn:
        conn.execute("UPDATE events SET payload = ? WHERE id = 4", (json.dumps({"index": 1, "text": "forged"}),))
    done = planegate("ledger", "verify")
    assert done.returncode == 1
    assert "first broken event: 4 (note)" in done.stderr
    assert "events before it verified: 3" in done.stderr


def test_editing_a_column_deleting_an_event_or_a_status_is_found(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    filled_store(path, events=6).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE events SET actor = 'someone-else' WHERE id = 5")
    with Store(path) as store:
        report = verify_ledger(store)
    assert report.chain_break is not None and report.chain_break.event_id == 5
    assert "a column of the row" in report.chain_break.what

    filled_store(tmp_path / "b.db", events=6).close()
    with sqlite3.connect(tmp_path / "b.db") as conn:
        conn.execute("DELETE FROM events WHERE id = 3")
    with Store(tmp_path / "b.db") as store:
        broken = verify_ledger(store).chain_break
    assert broken is not None and broken.event_id == 4 and "event 3 missing" in broken.what

    filled_store(tmp_path / "c.db", events=3).close()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        conn.execute("UPDATE tasks SET status = 'accepted' WHERE id = 't1'")
    with Store(tmp_path / "c.db") as store:
        report = verify_ledger(store)
    assert report.chain_break is None and not report.ok
    assert report.state_problems == ["task r1/t1: status is 'accepted' but its events last recorded 'ready'"]


def test_a_failed_transaction_leaves_no_event(tmp_path: Path) -> None:
    store = filled_store(tmp_path / "ledger.db", events=2)
    with pytest.raises(RuntimeError), store.write() as w:
        w.event("half", run="r1")
        raise RuntimeError("crash in the middle")
    assert store.event_count() == 2
    assert verify_ledger(store).ok
    store.close()


RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from planegate.store import Store
    path, go = Path(sys.argv[1]), Path(sys.argv[2])
    store = Store(path, actor=sys.argv[3])
    (go.parent / ("ready-" + sys.argv[3])).touch()
    while not go.exists():
        time.sleep(0.001)
    with store.write() as w:
        won = w.cas("tasks", {"run_id": "r1", "id": "t1"}, {"status": "ready"}, {"status": "in_progress"})
        if won:
            w.event("task.dispatched", run="r1", task="t1", **{"from": "ready", "to": "in_progress"})
    print("won" if won else "lost")
    """
)


@pytest.mark.parametrize("attempt", range(3))
def test_two_processes_racing_for_one_status_change_give_one_winner(tmp_path: Path, attempt: int) -> None:
    path = tmp_path / "ledger.db"
    filled_store(path, events=2).close()
    go = tmp_path / "go"
    racers = [
        subprocess.Popen([sys.executable, "-c", RACER, str(path), str(go), f"p{i}"], stdout=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"ready-p{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline, "racers did not open the ledger in time"
        time.sleep(0.01)
    go.touch()
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in racers)
    assert outcomes == ["lost", "won"]
    with Store(path) as store:
        assert store.scalar("SELECT status FROM tasks WHERE id = 't1'") == "in_progress"
        assert store.scalar("SELECT COUNT(*) FROM events WHERE kind = 'task.dispatched'") == 1
        assert verify_ledger(store).ok
