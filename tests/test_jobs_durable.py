"""Jobs under faults, with real processes: `kill -9` of `planegate serve` and `planegate worker`
mid-executor and mid-check, the retry limit across restarts after the lease, immediate reclaim of
a dead owner's job, and the operator's pause, drain and cancel with a job running.

The executor and the check are one script whose side effect is counted: it appends a line to a
file outside the worktree after sleeping (long on a first attempt, short on a retry), either
itself or through a grandchild in its process group. Every process it starts carries the test's
token in its argv, so what is left behind is found by scanning /proc for that token.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from planegate.store import now_iso, verify_ledger
from planegate.tools.env import Env
from planegate.tools.execution.checks import checks_result, start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.execution.jobs import cancel_jobs, claim, run_job
from planegate.tools.execution.jobview import job_result
from planegate.tools.report.status import get_status
from tests.execution import MUL, calc_repo, open_env, planned_run, write
from tests.helpers import call, commit_all

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")

CLI = [sys.executable, "-m", "planegate.server.cli"]

EFFECT = """\
import os, pathlib, subprocess, sys, time
token, counter, markers, mode, first = sys.argv[1:6]
markers = pathlib.Path(markers)
retry = any(markers.iterdir()) and mode != "stubborn"
(markers / str(os.getpid())).touch()
pause = 0.2 if retry else float(first)
code = f"import time; time.sleep({pause}); open({counter!r}, 'a').write('done\\\\n')"
if mode == "grandchild":
    sys.exit(subprocess.call([sys.executable, "-c", code, token]))
time.sleep(pause)
open(counter, "a").write("done\\n")
"""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


@dataclass
class Lab:
    """One test's scratch: the token, the counted side effect, the processes it starts."""

    root: Path
    home: Path
    token: str = field(default_factory=lambda: f"pgtest-{uuid.uuid4().hex[:12]}")
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.markers = self.root / "markers"
        self.markers.mkdir()
        self.counter = self.root / "effects.log"
        self.script = self.root / "effect.py"
        self.script.write_text(EFFECT)

    def argv(self, mode: str = "direct", first_s: float = 30.0) -> list[str]:
        return [sys.executable, str(self.script), self.token, str(self.counter), str(self.markers), mode, str(first_s)]

    def effects(self) -> int:
        return len(self.counter.read_text().splitlines()) if self.counter.exists() else 0

    def attempts_started(self) -> list[int]:
        return sorted(int(p.name) for p in self.markers.iterdir())

    def token_pids(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with suppress(OSError):
                    cmdline = (entry / "cmdline").read_bytes()
                    stat = (entry / "stat").read_text()
                    if self.token.encode() in cmdline and stat[stat.rfind(")") + 2] not in "ZX":
                        found.append(int(entry.name))
        return found

    def env_vars(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PLANEGATE_HOME": str(self.home), **extra}

    def start(self, *args: str, stdin: int | None = subprocess.DEVNULL, **extra: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"proc-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [*CLI, *args], env=self.env_vars(**extra), stdin=stdin, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.root / f"proc-{self.procs.index(proc)}.log").read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], env=self.env_vars(), capture_output=True, text=True, timeout=60)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for pid in self.token_pids():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def lab(tmp_path: Path, fresh_machine: Path) -> Iterator[Lab]:
    (tmp_path / "lab").mkdir()
    made = Lab(tmp_path / "lab", fresh_machine)
    try:
        yield made
    finally:
        made.close()


def effect_repo(lab: Lab, path: Path, *, check: list[str] | None = None, executor: list[str] | None = None) -> Path:
    repo = calc_repo(path)
    policy = "require_review = false\nrequire_red_green = false\nmax_parallel = 2\n"
    policy += f"\n[checks]\neffect = {json.dumps(check or ['true'])}\n"
    if executor:
        policy += f"\n[executor]\ncommand = {json.dumps(executor)}\n"
    (repo / ".planegate" / "policy.toml").write_text(policy)
    commit_all(repo, "policy with a counted side effect")
    return repo


def queue_executor(env: Env, run: str, task: str = "calc") -> int:
    job = dispatch_task(env, run, task, "command").job
    assert job is not None
    return job


def queue_checks(env: Env, run: str, task: str = "calc") -> int:
    """A checks job on the task, dispatching it (with a commit to check) the first time."""
    if env.task_row(run, task)["worktree"] is None:
        worktree = Path(dispatch_task(env, run, task).worktree)
        write(worktree, {"src/calc.py": MUL})
        commit_all(worktree, "mul")
    return start_checks(env, run, task)


def epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def job_of(env: Env, job: int) -> dict[str, Any]:
    row = env.store.one("SELECT * FROM jobs WHERE id = ?", (job,))
    assert row is not None
    return row


def events_of(env: Env, job: int) -> list[dict[str, Any]]:
    return [
        {**r, "payload": json.loads(r["payload"])}
        for r in env.store.rows(
            "SELECT kind, actor, at, payload FROM events WHERE json_extract(payload, '$.job') = ? ORDER BY id", (job,)
        )
    ]


def recorded_group(env: Env, job: int) -> dict[str, Any] | None:
    return env.store.one("SELECT * FROM job_processes WHERE job_id = ? AND ended_at IS NULL", (job,))


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def kill_when_running(lab: Lab, env: Env, job: int, proc: subprocess.Popen[bytes], processes: int) -> float:
    """SIGKILL ``proc`` once the job's script (and its grandchild) run and its group is recorded."""

    def running() -> bool:
        assert proc.poll() is None, lab.output(proc)
        scripts = [pid for pid in lab.attempts_started() if alive(pid)]
        return bool(scripts) and len(lab.token_pids()) >= processes and recorded_group(env, job) is not None

    wait_for(running, 60, "the side-effect script to run under the job")
    os.kill(proc.pid, signal.SIGKILL)
    killed = time.time()
    proc.wait(timeout=10)
    return killed


# --- kill -9 at each phase ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("victim", "phase", "mode"),
    [
        ("worker", "executor", "grandchild"),
        ("worker", "check", "direct"),
        ("serve", "executor", "direct"),
        ("serve", "check", "grandchild"),
    ],
)
def test_kill_9_mid_job_gives_exactly_one_side_effect_and_leaves_no_process(
    lab: Lab, tmp_path: Path, victim: str, phase: str, mode: str
) -> None:
    argv = lab.argv(mode)
    repo = effect_repo(lab, tmp_path / "calc", **({"executor": argv} if phase == "executor" else {"check": argv}))
    env = open_env(lab.home)
    try:
        run = planned_run(env, repo)
        job = queue_executor(env, run) if phase == "executor" else queue_checks(env, run)

        def start() -> subprocess.Popen[bytes]:
            if victim == "worker":
                return lab.start("worker", "--exit-when-idle")
            return lab.start("serve", stdin=subprocess.PIPE)  # a serve process runs its worker before any client

        first = start()
        killed = kill_when_running(lab, env, job, first, 2 if mode == "grandchild" else 1)
        [leader] = lab.attempts_started()
        wait_for(lambda: not alive(leader), 5, "the parent-death signal to end the script")
        if mode == "grandchild":
            assert lab.token_pids(), "the grandchild outlives its worker until the job is reclaimed"
        second = start()
        wait_for(lambda: job_of(env, job)["status"] not in ("queued", "running"), 90, "the reclaimed job to finish")
        row = job_of(env, job)
        assert (row["status"], row["attempts"]) == ("succeeded", 2), row
        assert lab.effects() == 1
        assert lab.token_pids() == []
        kinds = [e["kind"] for e in events_of(env, job)]
        taken = next(e for e in events_of(env, job) if e["kind"] in ("job.reclaimed", "job.lease_released"))
        assert taken["payload"]["why"] == "its worker died"
        reclaim_s = epoch(taken["at"]) - killed
        assert reclaim_s < 15, f"reclaimed {reclaim_s:.1f} s after the kill; the lease is 30 s"
        if mode == "grandchild":
            ended = [e["payload"] for e in events_of(env, job) if e["kind"] == "job.process_ended"]
            assert ended and ended[0]["attempt"] == 1 and ended[0]["outcome"] in ("terminated", "killed"), kinds
            assert kinds.index("job.process_ended") < kinds.index("job.succeeded")
        assert env.store.scalar("SELECT COUNT(*) FROM job_processes WHERE job_id = ? AND ended_at IS NULL", (job,)) == 0
        if victim == "serve":
            assert second.stdin is not None
            second.stdin.close()
        else:
            assert second.wait(timeout=30) == 0, lab.output(second)
        if phase == "check":
            assert checks_result(env, job).all_passed is True
        assert verify_ledger(env.store).ok
    finally:
        env.close()


def test_a_dead_owner_s_job_is_reclaimed_at_once_by_a_standby_worker(lab: Lab, tmp_path: Path) -> None:
    repo = effect_repo(lab, tmp_path / "calc", check=lab.argv())
    env = open_env(lab.home)
    try:
        run = planned_run(env, repo)
        job = queue_checks(env, run)
        first = lab.start("worker")
        wait_for(lambda: recorded_group(env, job), 60, "the first worker to run the check")
        standby = lab.start("worker")
        wait_for(lambda: "waiting for jobs" in lab.output(standby), 60, "the standby worker")
        killed = kill_when_running(lab, env, job, first, 1)
        lease_left = epoch(job_of(env, job)["lease_expires"]) - killed

        def reclaimed() -> dict[str, Any] | None:
            return next((e for e in events_of(env, job) if e["kind"] == "job.reclaimed"), None)

        event = wait_for(reclaimed, 20, "the standby worker to reclaim the job")
        took = epoch(event["at"]) - killed
        assert event["payload"]["why"] == "its worker died"
        assert took < 5 < lease_left - 20, f"reclaim took {took:.1f} s with {lease_left:.0f} s of lease left"
        wait_for(lambda: job_of(env, job)["status"] == "succeeded", 60, "the job to finish")
        assert lab.effects() == 1 and lab.token_pids() == []
        standby.kill()
    finally:
        env.close()


# --- the retry limit ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["executor", "checks"])
def test_a_job_killed_on_every_attempt_stops_at_its_limit_even_when_restarts_come_after_the_lease(
    lab: Lab, tmp_path: Path, kind: str
) -> None:
    argv = lab.argv("stubborn")
    repo = effect_repo(lab, tmp_path / "calc", **({"executor": argv} if kind == "executor" else {"check": argv}))
    env = open_env(lab.home)
    try:
        run = planned_run(env, repo)
        job = queue_executor(env, run) if kind == "executor" else queue_checks(env, run)
        limit = job_of(env, job)["max_attempts"]
        assert limit == (2 if kind == "executor" else 3)
        for attempt in range(1, limit + 1):
            worker = lab.start("worker", PLANEGATE_JOB_LEASE_S="1")
            wait_for(lambda n=attempt: len(lab.attempts_started()) == n, 60, f"attempt {attempt} to start")
            kill_when_running(lab, env, job, worker, 1)
            expires = job_of(env, job)["lease_expires"]
            wait_for(lambda e=expires: now_iso() > e, 10, "the lease to expire")  # the restart comes after it
        last = lab.start("worker", "--exit-when-idle", PLANEGATE_JOB_LEASE_S="1")
        assert last.wait(timeout=60) == 0, lab.output(last)
        assert "needs attention" in lab.output(last)
        row = job_of(env, job)
        assert row["status"] == "attention" and row["attempts"] == limit
        assert f"attempt {limit} of {limit} ended without an outcome (its worker died)" in row["error"]
        assert len(lab.attempts_started()) == limit, "a job ran past its max_attempts"
        assert lab.effects() == 0 and lab.token_pids() == []
        kinds = [e["kind"] for e in events_of(env, job)]
        assert kinds.count("job.lease_released") == limit - 1 and kinds.count("job.attention") == 1
        assert kinds.count("job.started") == limit

        status = get_status(env, run)
        assert status.status is not None
        [risk] = [r for r in status.status.risks if f"job {job}" in r]
        assert "needs attention" in risk and "Next:" in risk
        assert status.next_action == risk
        assert "run_checks" not in status.next_action.split("Next:")[0]
        assert job_result(env, job).next_step == risk
    finally:
        env.close()


# --- operator controls -------------------------------------------------------------------------


def test_pause_lets_the_running_job_finish_and_starts_nothing_until_resume(lab: Lab, tmp_path: Path) -> None:
    repo = effect_repo(lab, tmp_path / "calc", check=lab.argv(first_s=6.0))
    env = open_env(lab.home)
    try:
        run = planned_run(env, repo)
        first_job = queue_checks(env, run)
        worker = lab.start("worker")
        wait_for(lambda: lab.token_pids(), 60, "the first job to run")
        paused = lab.cli("worker", "pause", "--reason", "disk maintenance")
        assert paused.returncode == 0 and "workers paused" in paused.stdout, paused.stderr
        assert "1 job(s) running (they finish; nothing new starts)" in paused.stdout
        assert job_of(env, first_job)["status"] == "running"
        second_job = queue_checks(env, run)
        wait_for(lambda: job_of(env, first_job)["status"] == "succeeded", 30, "the running job to finish")
        assert lab.effects() == 1
        time.sleep(3 * env.settings.job_poll_s + 0.5)  # several polls of the worker
        assert job_of(env, second_job)["status"] == "queued"
        status = get_status(env, run)
        assert status.workers is not None and status.workers.startswith("workers paused by user:")
        assert "(disk maintenance)" in status.workers and "1 queued" in status.workers
        assert get_status(env).workers == status.workers
        assert "planegate worker resume" in checks_result(env, second_job).next_step
        assert lab.cli("worker", "pause").stdout.startswith("workers were already paused")

        assert lab.cli("worker", "resume").returncode == 0
        wait_for(lambda: job_of(env, second_job)["status"] == "succeeded", 30, "the queued job to run after resume")
        assert lab.effects() == 2 and get_status(env, run).workers is None
        kinds = [r["kind"] for r in env.store.rows("SELECT kind FROM events WHERE kind LIKE 'workers.%' ORDER BY id")]
        assert kinds == ["workers.paused", "workers.resumed"]
        assert worker.poll() is None
    finally:
        env.close()


def test_drain_finishes_running_jobs_claims_none_and_stops_the_worker(lab: Lab, tmp_path: Path) -> None:
    repo = effect_repo(lab, tmp_path / "calc", check=lab.argv(first_s=6.0))
    env = open_env(lab.home)
    try:
        run = planned_run(env, repo)
        first_job = queue_checks(env, run)
        worker = lab.start("worker")
        wait_for(lambda: lab.token_pids(), 60, "the first job to run")
        drained = lab.cli("worker", "drain", "--wait", "30")
        assert drained.returncode == 0, drained.stderr
        assert "workers draining" in drained.stdout and "1 job(s) running" in drained.stdout
        assert "drained: no job is running" in drained.stdout
        assert job_of(env, first_job)["status"] == "succeeded" and lab.effects() == 1
        second_job = queue_checks(env, run)
        assert worker.wait(timeout=30) == 0
        assert "stopped (drained)" in lab.output(worker)
        assert job_of(env, second_job)["status"] == "queued"
        note = get_status(env, run).workers
        assert note is not None and note.startswith("workers drained by") and "1 queued" in note
        again = lab.start("worker")  # a worker started while drained stops at once
        assert again.wait(timeout=30) == 0 and "stopped (drained)" in lab.output(again)
        assert lab.cli("worker", "resume").returncode == 0
        lab.start("worker", "--exit-when-idle")
        wait_for(lambda: job_of(env, second_job)["status"] == "succeeded", 60, "the queued job after resume")
        assert lab.effects() == 2
    finally:
        env.close()


def serve_params(lab: Lab) -> StdioServerParameters:
    return StdioServerParameters(command=CLI[0], args=[*CLI[1:], "serve"], env=lab.env_vars())


@pytest.mark.anyio
async def test_cancel_job_stops_a_running_job_s_processes_and_cancels_a_queued_one(lab: Lab, tmp_path: Path) -> None:
    repo = effect_repo(lab, tmp_path / "calc", executor=lab.argv("grandchild"), check=lab.argv(first_s=0.2))
    env = open_env(lab.home)
    try:
        run = planned_run(env, repo)
        job = queue_executor(env, run)
        lab.start("worker")  # another process runs the job; the server cancels it
        with anyio.fail_after(120):
            async with Client(serve_params(lab)) as client:
                await anyio.to_thread.run_sync(
                    lambda: wait_for(lambda: len(lab.token_pids()) == 2, 60, "the executor and its grandchild")
                )
                cancelled = await call(client, "cancel_job", job=job, reason="wrong approach")
                assert cancelled["was"] == "running" and cancelled["state"] == "cancelled"
                assert len(cancelled["stopped"]) == 1 and cancelled["stopped"][0].endswith("terminated")
                assert "worktree" in cancelled["next_step"]
                assert lab.token_pids() == [] and lab.effects() == 0
                again = await call(client, "cancel_job", job=job, reason="twice")
                assert again["was"] == "cancelled" and again["reason"] == "cancelled: wrong approach"

                assert lab.cli("worker", "pause").returncode == 0
                queued = await anyio.to_thread.run_sync(lambda: queue_checks(env, run))
                waited = time.monotonic()
                got = await call(client, "get_job", job=queued, wait_seconds=30)
                assert got["state"] == "queued" and time.monotonic() - waited < 10
                assert "planegate worker resume" in got["next_step"]
                dropped = await call(client, "cancel_job", job=queued, reason="not needed")
                assert dropped["was"] == "queued" and dropped["stopped"] == []
                assert lab.cli("worker", "resume").returncode == 0

                checked = await call(client, "run_checks", run=run, task="calc")
                assert checked["state"] == "succeeded", checked
        row = job_of(env, job)
        assert (row["status"], row["error"]) == ("cancelled", "cancelled: wrong approach")
        kinds = [e["kind"] for e in events_of(env, job)]
        assert "job.cancelled" in kinds and "job.process_ended" in kinds
        assert not any(k in kinds for k in ("job.succeeded", "job.failed", "executor.finished"))
        ended = next(e for e in events_of(env, job) if e["kind"] == "job.process_ended")
        assert ended["payload"]["by"] == "cancel" and ended["actor"].startswith("agent:")
        assert lab.effects() == 1  # the checks job's own side effect, once
    finally:
        env.close()


def test_a_worker_elsewhere_learns_of_a_cancel_at_its_next_heartbeat_and_stops(lab: Lab, tmp_path: Path) -> None:
    """The worker's side of a cancel it could not be reached for: only the ledger changes."""
    repo = effect_repo(lab, tmp_path / "calc", check=lab.argv())
    env = open_env(lab.home)
    try:
        run = planned_run(env, repo)
        job = queue_checks(env, run)
        claimed = claim(env, "far-away", 0.6)  # heartbeats every 0.2 s
        assert claimed is not None
        outcome: list[str] = []
        import threading

        thread = threading.Thread(target=lambda: outcome.append(run_job(env, claimed, "far-away", 0.6)))
        thread.start()
        try:
            wait_for(lambda: lab.token_pids(), 30, "the check to run")
            with env.write(actor="agent:elsewhere") as w:
                cancel_jobs(w, run, "calc", "cancelled on another host")
            started = time.monotonic()
            thread.join(timeout=20)
            assert not thread.is_alive() and outcome == ["lost"]
            assert time.monotonic() - started < 5
        finally:
            thread.join(timeout=20)
        assert lab.token_pids() == [] and lab.effects() == 0
        assert env.store.scalar("SELECT COUNT(*) FROM evidence WHERE job_id = ?", (job,)) == 0
        assert job_of(env, job)["status"] == "cancelled"
    finally:
        env.close()


def test_a_just_cancelled_job_s_processes_are_left_to_its_canceller_then_swept(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between cancel_job's write and its ending of the processes, a sweep (any worker of the host)
    leaves them alone, so the end is recorded as the cancel; a canceller that stopped there is
    covered by the first sweep after ``CANCEL_GRACE_S``."""
    from planegate.tools.execution import jobs
    from planegate.tools.execution.procs import host_key, process_start

    repo = effect_repo(lab, tmp_path / "calc", check=lab.argv())
    env = open_env(lab.home)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        run = planned_run(env, repo)
        job = queue_checks(env, run)
        with env.write() as w:
            w.insert(
                "job_processes",
                {
                    "job_id": job,
                    "attempt": 1,
                    "host": "here",
                    "host_key": host_key(),
                    "pgid": sleeper.pid,
                    "pid_start": process_start(sleeper.pid),
                    "command": "sleep",
                    "started_at": w.at,
                },
            )
            cancel_jobs(w, run, "calc", "cancelled: not needed")  # the canceller stops here
        assert jobs.end_stale_processes(env) == [] and alive(sleeper.pid)
        monkeypatch.setattr(jobs, "CANCEL_GRACE_S", 0.0)
        time.sleep(0.01)
        ended = jobs.end_stale_processes(env)
        assert [e.outcome for e in ended] == ["terminated"] and sleeper.wait(timeout=10) is not None
        assert [e["payload"]["by"] for e in events_of(env, job) if e["kind"] == "job.process_ended"] == ["sweep"]
    finally:
        with suppress(ProcessLookupError):
            os.killpg(sleeper.pid, signal.SIGKILL)
        sleeper.wait(timeout=10)
        env.close()
