"""Run metrics from the ledger: `planegate stats` on a finished run, and the report's Timing section.

The finished run is the demo's (a real change taken through planegate: command executors, real
checks, reviews, a refused accept_run, a signed approval), kept with --keep. Its numbers are
checked against the events they come from, computed here independently.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.jobs import claim, run_job
from planegate.tools.report.stats import PHASES, duration, run_stats
from tests.execution import MUL, MUL_TEST, calc_repo, drain, open_env, planned_run, write
from tests.helpers import commit_all

CLI = [sys.executable, "-m", "planegate.server.cli"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("stats")
    (root / "user-home").mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(root),
        "HOME": str(root / "user-home"),
        "GIT_CONFIG_GLOBAL": str(root / "user-home" / ".gitconfig"),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run([*CLI, "demo", "--keep"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    home = Path(re.search(r"state PLANEGATE_HOME=(\S+)", done.stdout).group(1))  # type: ignore[union-attr]
    run = re.search(r"demo finished: run (\S+) accepted", done.stdout).group(1)  # type: ignore[union-attr]
    yield home, run


def stats_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLANEGATE_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([*CLI, "stats", *args], env=env, capture_output=True, text=True, timeout=60)


def events(home: Path, run: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"{(home / 'ledger.db').as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM events WHERE run_id = ? ORDER BY id", (run,)).fetchall()
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]
    finally:
        conn.close()


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_stats_of_a_finished_run_account_for_every_phase_of_every_task(finished: tuple[Path, str]) -> None:
    home, run = finished
    done = stats_cli(home, run, "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    log = events(home, run)
    started, accepted = log[0]["at"], next(e["at"] for e in log if e["kind"] == "run.accepted")
    assert stats["stage"] == "accepted" and stats["ended_at"] == accepted
    assert stats["wall_s"] == pytest.approx((at(accepted) - at(started)).total_seconds(), abs=0.002)
    assert [t["task"] for t in stats["tasks"]] == ["line-count", "avg-word-length"]
    for task in stats["tasks"]:
        assert set(task["phases"]) == set(PHASES), task
        assert all(seconds >= 0 for seconds in task["phases"].values())
        assert task["jobs"] == {"executor": 1, "checks": 1, "review": 1} and task["retries"] == 0
        # the executor phase, recomputed from its job's events
        job = next(e["payload"]["job"] for e in log if e["kind"] == "job.queued" and e["task_id"] == task["task"])
        begun = next(e["at"] for e in log if e["kind"] == "job.started" and e["payload"]["job"] == job)
        ended = next(e["at"] for e in log if e["kind"] == "job.succeeded" and e["payload"]["job"] == job)
        assert task["phases"]["executor"] == pytest.approx((at(ended) - at(begun)).total_seconds(), abs=0.002)
    for phase in PHASES:
        assert stats["totals"][phase] == pytest.approx(sum(t["phases"][phase] for t in stats["tasks"]), abs=0.002)
    assert stats["review_latency"]["count"] == 3 and stats["review_latency"]["open"] == 0
    assert stats["refusals"] == {"human_approval": 1} and stats["refused_calls"] == 1
    assert {"approval_wait", "accept", "checks", "review_wait"} <= set(stats["release"])
    assert stats["jobs"] == {"checks": {"succeeded": 3}, "executor": {"succeeded": 2}, "review": {"succeeded": 3}}
    assert stats["retries"] == 0 and stats["dispositions"] == {}


def test_stats_print_a_table_per_task_and_one_line_per_run(finished: tuple[Path, str]) -> None:
    home, run = finished
    table = stats_cli(home, run)
    assert table.returncode == 0, table.stderr
    for shown in ("time per phase per task", "line-count", "avg-word-length", "red→green", "review wait"):
        assert shown in table.stdout
    assert "review latency: 3 review(s)" in table.stdout
    assert "gate refusals: 1 refused call(s) (human_approval ×1)" in table.stdout
    listing = stats_cli(home)
    assert listing.returncode == 0 and run in listing.stdout
    assert json.loads(stats_cli(home, "--json").stdout)["runs"][0]["run"] == run
    unknown = stats_cli(home, "no-such-run")
    assert unknown.returncode == 1 and "run 'no-such-run' not found" in unknown.stderr


def test_the_report_written_at_acceptance_has_the_timing_section(finished: tuple[Path, str]) -> None:
    home, run = finished
    report = (home / "artifacts" / run / "report" / "report.md").read_text()
    timing = report[report.index("## Timing") :]
    assert "| `line-count` | accepted |" in timing and "| **all** |" in timing
    assert "1 acceptance call(s) refused (human_approval ×1)" in timing
    assert "review latency: median" in timing


def test_a_job_taken_over_after_its_worker_died_counts_as_a_retry(tmp_path: Path, fresh_machine: Path) -> None:
    env = open_env(fresh_machine)
    run = planned_run(env, calc_repo(tmp_path / "calc"))
    from planegate.tools.execution.dispatch import dispatch_task

    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    commit_all(worktree, "mul")
    start_checks(env, run, "calc")
    assert claim(env, "dies", lease_s=0.05) is not None  # its worker is gone before it runs anything
    time.sleep(0.1)
    job = claim(env, "takes-over", lease_s=30)
    assert job is not None and job["attempts"] == 2
    assert run_job(env, job, "takes-over", 30) == "succeeded"
    assert drain(env) == []
    stats = run_stats(env.store, run)
    calc = next(t for t in stats.tasks if t.task == "calc")
    assert stats.retries == 1 and calc.retries == 1 and calc.jobs == {"checks": 1}
    assert calc.phases["checks"] > 0.05 and "accept" not in calc.phases  # still open: not counted
    assert stats.ended_at is None and stats.wall_s is None
    env.close()


def test_durations_read_at_a_glance() -> None:
    assert [duration(s) for s in (None, 0.04, 9.96, 42, 184, 7500)] == [
        "—",
        "0.0 s",
        "10.0 s",
        "42 s",
        "3 m 04 s",
        "2 h 05 m",
    ]
