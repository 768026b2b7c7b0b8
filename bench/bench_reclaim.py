"""How soon a job whose owner was killed is taken over on the same host, and what is left behind.

DESIGN §8: kill of a job's owner → reclaim, same host ≤ 2 s. A claim records the owner's pid and
the process's start time; a worker on the same host that finds the owner dead takes the job over
at its next poll (``job_poll_s``, 0.5 s) instead of waiting for the lease (``PLANEGATE_JOB_LEASE_S``,
30 s here, the default), and first ends what is left of the dead attempt's process group.

For each trial a ``checks`` job is queued on a dispatched task whose only check writes a marker
file named after its pid and sleeps (30 s on the first attempt, 0.2 s once a marker from an earlier
attempt exists). The owner is SIGKILLed once the check runs and its process group is recorded.
Three variants:

- standby: a second ``planegate worker`` is already waiting when the first is killed;
- cold: ``planegate worker`` is started right after the kill (its start-up counts);
- serve: the owner is ``planegate serve`` (its worker runs the job); a new ``planegate serve`` is
  started right after the kill, with no client message (its worker starts ``WORKER_START_S`` after
  the server is up).

Measured from the kill by polling the ledger every 10 ms: the first event of the job's takeover
(``job.reclaimed``, or ``job.lease_released`` + ``job.started`` when a starting process's reconcile
finds the dead owner), the job's ``succeeded``, and how long the killed attempt's check process
outlived its owner (the parent-death signal). After each trial, processes still carrying the
bench's token are counted (nothing kills them on the bench's behalf before that count).

Baselines, measured in the same run: a bare ``planegate worker --exit-when-idle`` on the same ledger
with nothing to do (process start to exit), so ``cold`` reads as start-up plus detection; a bare
``planegate serve`` answering ``initialize`` over stdio, so ``serve`` reads as the server's start-up
plus its worker's 1 s delay plus detection; and the lease, which is what a takeover waited for
before.
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

from _common import PLANEGATE, StdioServer, emit, git, log, make_repo, parser, quantile, scratch
from _workload import open_env

from planegate.server.app import WORKER_START_S
from planegate.tools.config import Settings
from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.env import Env
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.models import Module, Requirement, TaskSpec

TOKEN = f"planegate-bench-reclaim-{uuid.uuid4().hex[:12]}"
LEASE_S = 30.0
FIRST_SLEEP_S = 30.0
RETRY_SLEEP_S = 0.2
POLL_S = 0.01
START_TIMEOUT_S = 60.0
TARGET_S = 2.0
TAKEOVER_KINDS = ("job.reclaimed", "job.lease_released", "job.started")
VARIANTS = ("standby", "cold", "serve")


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
    """Live (non-zombie) processes whose argv carries this script's token."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with suppress(OSError):
            stat = (entry / "stat").read_text()
            if TOKEN.encode() in (entry / "cmdline").read_bytes() and stat[stat.rfind(")") + 2] not in "ZX":
                found.append(int(entry.name))
    return found


def kill_token_processes() -> int:
    pids = token_pids()
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


class Procs:
    """``planegate worker`` / ``planegate serve`` processes, each in its own session, all killed on exit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "PLANEGATE_JOB_LEASE_S": str(LEASE_S)}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        out = self.root / f"{name}.log"
        serve = args[:1] == ("serve",)
        with out.open("wb") as handle:
            proc = subprocess.Popen(
                [str(PLANEGATE), *args],
                env=self.env,
                stdin=subprocess.PIPE if serve else subprocess.DEVNULL,  # serve runs while its stdin is open
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc, out

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                with suppress(OSError):
                    proc.stdin.close()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
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


def baseline_start(root: Path, trials: int) -> list[float]:
    """A bare cold ``planegate worker`` on this ledger with nothing to do: start to exit."""
    procs = Procs(root / "logs")
    times = []
    try:
        for index in range(trials):
            started = time.monotonic()
            proc, _ = procs.start(f"baseline-{index}", "worker", "--exit-when-idle")
            proc.wait(timeout=START_TIMEOUT_S)
            times.append(time.monotonic() - started)
    finally:
        procs.close()
    return times


def baseline_serve(root: Path, trials: int) -> list[float]:
    """A bare ``planegate serve``: spawn to its ``initialize`` answer."""
    times = []
    for index in range(trials):
        with StdioServer(
            [str(PLANEGATE), "serve"], env=os.environ, stderr_path=root / "logs" / f"serve-baseline-{index}.log"
        ) as server:
            server.handshake(timeout=START_TIMEOUT_S)
            times.append(time.perf_counter() - server.started)
    return times


def trial(env: Env, run: str, task: str, root: Path, variant: str, index: int) -> dict[str, Any]:
    markers = root / "markers"
    for old in markers.iterdir():
        old.unlink()
    job = start_checks(env, run, task, ["slow"])
    owner_args = ("serve",) if variant == "serve" else ("worker",)
    procs = Procs(root / "logs")
    try:
        first, _ = procs.start(f"{variant}-{index}-first", *owner_args)

        def running() -> bool:
            if first.poll() is not None:
                raise RuntimeError(f"the first process exited with {first.returncode}")
            recorded = env.store.scalar(
                "SELECT COUNT(*) FROM job_processes WHERE job_id = ? AND ended_at IS NULL", (job,)
            )
            return bool(recorded and any(markers.iterdir()))

        wait_until(running, START_TIMEOUT_S, "the first process to start the check")
        if variant == "standby":
            _, log_path = procs.start(f"{variant}-{index}-second", "worker")
            wait_until(lambda: b"waiting for jobs" in log_path.read_bytes(), START_TIMEOUT_S, "the standby worker")
        row = env.store.one("SELECT owner_pid, lease_expires FROM jobs WHERE id = ?", (job,))
        assert row is not None
        if row["owner_pid"] != first.pid:
            raise RuntimeError(f"job {job} is held by pid {row['owner_pid']}, not by the first process ({first.pid})")
        [check_pid] = [int(p.name) for p in markers.iterdir()]
        last_event = int(env.store.scalar("SELECT COALESCE(MAX(id), 0) FROM events"))
        remaining_s = epoch(row["lease_expires"]) - time.time()
        os.kill(first.pid, signal.SIGKILL)
        killed = time.monotonic()
        killed_wall = time.time()
        if variant == "cold":
            procs.start(f"{variant}-{index}-second", "worker")
        elif variant == "serve":
            procs.start(f"{variant}-{index}-second", "serve")
        first.wait(timeout=10)

        check_gone: float | None = None
        reclaimed: float | None = None
        event = None
        while reclaimed is None or check_gone is None:
            if check_gone is None and check_pid not in token_pids():
                check_gone = time.monotonic()
            if reclaimed is None:
                event = env.store.one(
                    "SELECT id, kind, at FROM events WHERE id > ? AND kind IN (?, ?, ?)"
                    " AND json_extract(payload, '$.job') = ? ORDER BY id LIMIT 1",
                    (last_event, *TAKEOVER_KINDS, job),
                )
                reclaimed = time.monotonic() if event is not None else None
            if time.monotonic() - killed > LEASE_S + START_TIMEOUT_S:
                raise TimeoutError(f"job {job} was not taken over")
            time.sleep(POLL_S)

        def finished() -> dict[str, Any] | None:
            row = env.store.one("SELECT status, attempts, error FROM jobs WHERE id = ?", (job,))
            return row if row and row["status"] not in ("queued", "running") else None

        final = wait_until(finished, LEASE_S + START_TIMEOUT_S, "the job to finish")
        done = time.monotonic()
        if final["status"] != "succeeded":
            raise RuntimeError(f"job {job} ended {final['status']}: {final['error']}")
        leftovers = len(token_pids())
    finally:
        procs.close()
        kill_token_processes()
    reclaim_s = reclaimed - killed
    result = {
        "variant": variant,
        "job": job,
        "lease_remaining_at_kill_s": round(remaining_s, 3),
        "kill_to_reclaim_s": round(reclaim_s, 3),
        "kill_to_reclaim_by_event_time_s": round(epoch(event["at"]) - killed_wall, 3),
        "kill_to_succeeded_s": round(done - killed, 3),
        "check_outlived_owner_s": round(check_gone - killed, 3),
        "taken_over_by": event["kind"],
        "attempts": final["attempts"],
        "leftover_check_processes": leftovers,
    }
    log(
        f"{variant} #{index + 1}: reclaim {result['kill_to_reclaim_s']} s ({event['kind']}; lease left "
        f"{result['lease_remaining_at_kill_s']} s), succeeded {result['kill_to_succeeded_s']} s, check died "
        f"{result['check_outlived_owner_s']} s after its owner, {leftovers} left"
    )
    return result


def stats(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [float(r[key]) for r in rows]
    return {
        "min": round(min(values), 3),
        "median": round(quantile(values, 0.5), 3),
        "max": round(max(values), 3),
    }


def main() -> None:
    args = parser(__doc__ or "", quick_help="two trials per variant").parse_args()
    trials = 2 if args.quick else 10
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
            baseline = baseline_start(root, trials)
            serve_baseline = baseline_serve(root, trials)
            rows = [trial(env, run, task, root, variant, index) for index in range(trials) for variant in VARIANTS]
        finally:
            env.close()
            kill_token_processes()
    start_median = quantile(baseline, 0.5)
    by_variant: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        reclaim = stats(mine, "kill_to_reclaim_s")
        by_variant[variant] = {
            "kill_to_reclaim_s": reclaim,
            "kill_to_reclaim_by_event_time_s": stats(mine, "kill_to_reclaim_by_event_time_s"),
            "kill_to_succeeded_s": stats(mine, "kill_to_succeeded_s"),
            "check_outlived_owner_s": stats(mine, "check_outlived_owner_s"),
            "lease_remaining_at_kill_s": stats(mine, "lease_remaining_at_kill_s"),
            "reclaim_to_lease_ratio": round(reclaim["median"] / LEASE_S, 4),
            "reclaim_to_bare_worker_start_ratio": round(reclaim["median"] / start_median, 3),
            "reclaim_to_bare_serve_initialize_ratio": round(reclaim["median"] / quantile(serve_baseline, 0.5), 3),
            "meets_target": reclaim["max"] < TARGET_S,
            "trials": mine,
        }
    leftovers = sum(r["leftover_check_processes"] for r in rows)
    emit(
        {
            "benchmark": "job_reclaim_after_owner_death_same_host",
            "quick": args.quick,
            "trials_per_variant": trials,
            "lease_s": LEASE_S,
            "job_poll_s": Settings.model_fields["job_poll_s"].default,
            "baseline_bare_worker_start_s": stats([{"s": t} for t in baseline], "s"),
            "baseline_bare_serve_initialize_s": stats([{"s": t} for t in serve_baseline], "s"),
            "serve_worker_start_s": WORKER_START_S,
            "by_variant": by_variant,
            "attempts_per_job": sorted({r["attempts"] for r in rows}),
            "leftover_check_processes": leftovers,
            "target": f"kill → reclaim under {TARGET_S:g} s on the same host in every trial (DESIGN §8)",
            "meets_target": all(v["meets_target"] for v in by_variant.values()) and leftovers == 0,
        }
    )


if __name__ == "__main__":
    main()
