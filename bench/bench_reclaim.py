"""How long a checks job waits after its worker dies before another worker takes it over.

DESIGN §6: a job whose lease expired (its process died) is reclaimed by another worker. Expected
delay: about the lease (``PLANEGATE_JOB_LEASE_S``), since the dead worker's last heartbeat set
``lease_expires`` to then + lease, plus up to one poll (``job_poll_s``, 0.5 s) of the survivor.

For each lease setting a ``checks`` job is queued on a dispatched task whose only check writes a
marker file named after its pid and then sleeps (30 s on the first attempt, 0.5 s once a marker
from an earlier attempt exists). ``planegate worker`` (the installed console script) is started
with ``PLANEGATE_JOB_LEASE_S`` set; once the check is running (marker present, job row running) the
worker is SIGKILLed, then the check process it orphaned (found by a unique token in its argv) is
killed too. Two variants:

- cold: the second ``planegate worker`` is started right after the kill (its start-up counts);
- standby: the second worker is started before the kill and has printed that it is waiting.

Measured from the kill by polling the ledger every 10 ms: the second worker's first event about the
job (``job.reclaimed``; or ``job.lease_released`` + ``job.started`` when its start-up reconcile finds
the lease already expired) and the job's ``succeeded``. ``lease_remaining_at_kill_s`` is read from
the job row just before the kill, so ``reclaim_minus_remaining_s`` is the detection latency alone.
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
from contextlib import suppress
from pathlib import Path
from typing import Any

from _common import PLANEGATE, emit, git, log, make_repo, parser, quantile, scratch
from _workload import open_env

from planegate.tools.config import Settings
from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.env import Env
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.models import Module, Requirement, TaskSpec

TOKEN = f"planegate-bench-reclaim-{uuid.uuid4().hex[:12]}"
FIRST_SLEEP_S = 30.0
RETRY_SLEEP_S = 0.5
POLL_S = 0.01
START_TIMEOUT_S = 60.0
SLACK_S = 1.0
TAKEOVER_KINDS = ("job.reclaimed", "job.lease_released", "job.started")


def check_argv(markers: Path) -> list[str]:
    code = (
        f"# {TOKEN}\n"
        "import os, pathlib, time\n"
        f"markers = pathlib.Path({str(markers)!r})\n"
        "retry = any(markers.iterdir())\n"
        "(markers / str(os.getpid())).touch()\n"
        f"time.sleep({RETRY_SLEEP_S} if retry else {FIRST_SLEEP_S})\n"
    )
    return [sys.executable, "-c", code]


def planned_task(env: Env, repo: Path) -> tuple[str, str]:
    run = start_run(env, str(repo), "Benchmark job reclaim").run
    freeze_requirements(env, run, [Requirement(id="R1", statement="calc adds", acceptance_criteria=["add works"])])
    freeze_architecture(env, run, [Module(name="calc", owns=["src/**"])], [])
    task = "calc"
    register_graph(env, run, [TaskSpec(id=task, title="Calc", goal="Grow calc", scope=["src/**"], requirements=["R1"])])
    worktree = Path(dispatch_task(env, run, task).worktree)
    (worktree / "src" / "calc.py").write_text("def add(a, b):\n    return a + b\n\n\ndef one():\n    return 1\n")
    git(worktree, "commit", "-q", "-am", "one")
    return run, task


def epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def token_pids() -> list[int]:
    """Live processes whose argv carries this script's token (the check processes it caused)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with suppress(OSError):
            if TOKEN.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def kill_token_processes() -> int:
    pids = token_pids()
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


class Workers:
    """``planegate worker`` processes, each in its own session, all killed on exit."""

    def __init__(self, root: Path, lease_s: float) -> None:
        self.root = root
        self.env = {**os.environ, "PLANEGATE_JOB_LEASE_S": str(lease_s)}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
        out = self.root / f"{name}.log"
        with out.open("wb") as handle:
            proc = subprocess.Popen(
                [str(PLANEGATE), "worker", *extra],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc, out

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_S)


def trial(env: Env, run: str, task: str, root: Path, lease_s: float, variant: str, index: int) -> dict[str, Any]:
    markers = root / "markers"
    for old in markers.iterdir():
        old.unlink()
    job = start_checks(env, run, task, ["slow"])
    workers = Workers(root / "logs", lease_s)
    try:
        first, _ = workers.start(f"l{lease_s}-{variant}-{index}-first")

        def running() -> dict[str, Any] | None:
            row = env.store.one("SELECT status, lease_owner, lease_expires FROM jobs WHERE id = ?", (job,))
            if first.poll() is not None:
                raise RuntimeError(f"the first worker exited with {first.returncode}")
            return row if row and row["status"] == "running" and any(markers.iterdir()) else None

        wait_until(running, START_TIMEOUT_S, "the first worker to start the check")
        if variant == "standby":
            _, log_path = workers.start(f"l{lease_s}-{variant}-{index}-second", "--exit-when-idle")
            wait_until(lambda: b"waiting for jobs" in log_path.read_bytes(), START_TIMEOUT_S, "the standby worker")
        row = env.store.one("SELECT lease_owner, lease_expires FROM jobs WHERE id = ?", (job,))
        assert row is not None
        owner_pid = int(row["lease_owner"].split(":")[-2])
        if owner_pid != first.pid:
            raise RuntimeError(f"job {job} is held by {row['lease_owner']}, not by the first worker ({first.pid})")
        last_event = int(env.store.scalar("SELECT COALESCE(MAX(id), 0) FROM events"))
        remaining_s = epoch(row["lease_expires"]) - time.time()
        os.killpg(first.pid, signal.SIGKILL)
        killed = time.monotonic()
        killed_wall = time.time()
        first.wait(timeout=10)
        orphans = kill_token_processes()
        if variant == "cold":
            workers.start(f"l{lease_s}-{variant}-{index}-second", "--exit-when-idle")

        def taken_over() -> dict[str, Any] | None:
            return env.store.one(
                "SELECT id, kind, at FROM events WHERE id > ? AND kind IN (?, ?, ?)"
                " AND json_extract(payload, '$.job') = ? ORDER BY id LIMIT 1",
                (last_event, *TAKEOVER_KINDS, job),
            )

        timeout = lease_s + START_TIMEOUT_S
        event = wait_until(taken_over, timeout, "the second worker to take the job over")
        reclaimed = time.monotonic()

        def finished() -> dict[str, Any] | None:
            row = env.store.one("SELECT status, attempts, error FROM jobs WHERE id = ?", (job,))
            return row if row and row["status"] not in ("queued", "running") else None

        final = wait_until(finished, timeout, "the job to finish")
        done = time.monotonic()
        if final["status"] != "succeeded":
            raise RuntimeError(f"job {job} ended {final['status']}: {final['error']}")
        for proc in workers.procs[1:]:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        second_exit = workers.procs[-1].returncode
    finally:
        workers.close()
        kill_token_processes()
    reclaim_s = reclaimed - killed
    result = {
        "variant": variant,
        "job": job,
        "lease_remaining_at_kill_s": round(remaining_s, 3),
        "kill_to_reclaim_s": round(reclaim_s, 3),
        "kill_to_reclaim_by_event_time_s": round(epoch(event["at"]) - killed_wall, 3),
        "kill_to_succeeded_s": round(done - killed, 3),
        "reclaim_minus_lease_s": round(reclaim_s - lease_s, 3),
        "reclaim_minus_remaining_s": round(reclaim_s - remaining_s, 3),
        "taken_over_by": event["kind"],
        "attempts": final["attempts"],
        "orphaned_checks_killed": orphans,
        "second_worker_exit": second_exit,
    }
    log(
        f"lease {lease_s} s {variant} #{index + 1}: reclaim {result['kill_to_reclaim_s']} s "
        f"(lease left {result['lease_remaining_at_kill_s']} s, {event['kind']}), "
        f"succeeded {result['kill_to_succeeded_s']} s"
    )
    return result


def median(rows: list[dict[str, Any]], key: str) -> float:
    return round(quantile([float(r[key]) for r in rows], 0.5), 3)


def main() -> None:
    args = parser(__doc__ or "", quick_help="lease 2 s only, one trial per variant").parse_args()
    leases = [2.0] if args.quick else [2.0, 5.0]
    trials = 1 if args.quick else 3
    per_lease: dict[str, Any] = {}
    ok = True
    with scratch("reclaim") as root:
        markers = root / "markers"
        markers.mkdir()
        (root / "logs").mkdir()
        policy = (
            f"require_review = false\nrequire_red_green = false\n\n[checks]\nslow = {json.dumps(check_argv(markers))}\n"
        )
        repo = make_repo(
            root / "repo",
            {"src/calc.py": "def add(a, b):\n    return a + b\n", ".planegate/policy.toml": policy},
        )
        env = open_env("agent:bench")
        try:
            run, task = planned_task(env, repo)
            for lease_s in leases:
                rows = [
                    trial(env, run, task, root, lease_s, variant, index)
                    for index in range(trials)
                    for variant in ("cold", "standby")
                ]
                summary: dict[str, Any] = {}
                for variant in ("cold", "standby"):
                    mine = [r for r in rows if r["variant"] == variant]
                    summary[variant] = {
                        key: median(mine, key)
                        for key in (
                            "kill_to_reclaim_s",
                            "kill_to_succeeded_s",
                            "reclaim_minus_lease_s",
                            "lease_remaining_at_kill_s",
                            "reclaim_minus_remaining_s",
                        )
                    }
                lease_ok = all(
                    r["kill_to_reclaim_s"] >= r["lease_remaining_at_kill_s"] - 0.05
                    and r["kill_to_reclaim_s"] <= lease_s + SLACK_S
                    and r["attempts"] == 2
                    for r in rows
                )
                ok = ok and lease_ok
                per_lease[f"{lease_s:g}"] = {"medians": summary, "meets_target": lease_ok, "trials": rows}
            leftovers = token_pids()
        finally:
            env.close()
            kill_token_processes()
    emit(
        {
            "benchmark": "job_reclaim_after_worker_death",
            "quick": args.quick,
            "trials_per_variant": trials,
            "job_poll_s": Settings.model_fields["job_poll_s"].default,
            "by_lease_s": per_lease,
            "leftover_check_processes": len(leftovers),
            "target": (
                f"kill → reclaim between the lease left at the kill and lease + {SLACK_S:g} s, every trial "
                "(DESIGN §6: an expired lease is reclaimed by another worker; expected ≈ the lease)"
            ),
            "meets_target": ok and not leftovers,
        }
    )


if __name__ == "__main__":
    main()
