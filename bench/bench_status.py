"""``get_status`` on a 5,000-task run whose ledger holds 1,000,000 events.

Targets: DESIGN §8, median ≤ 15 ms; issue 11 §2, ``get_status(run)`` p50 ≤ 5 ms and p99 ≤ 10 ms in
every call, including the first after a new commit on an active task and the first of a process.

The run is built as in ``bench_graph``, with 8 tasks in progress whose branches hold real commits,
then events are appended until the ledger has 1,000,000 (cached under ``~/.cache/planegate-bench/``;
see ``_workload``). The run is pointed at a private copy of its repository, so commits made here
leave the cache alone. A job worker runs in this process, in a thread, as in ``planegate serve``:
it computes each head's git facts when the head moves, and ``get_status`` is called as the server
calls it (``wait_for_git=False``: it reads the stored facts and runs no git). Measured:

- steady: repeated calls, nothing moving;
- after a commit: a new commit on one active task (untimed), then the first call (and the second);
  interleaved with the baseline of the same run, the call computing that head's facts on demand
  as before (``wait_for_git=True`` with nothing stored for the new head); and how long the worker
  took to store the new head's facts;
- first call of a process: a fresh Python process imports the status module, opens the ledger
  and calls once (the call alone is timed; the import and the open are reported beside it);
  interleaved with fresh processes that compute on demand (the baseline), and with fresh
  processes that first run the server's start-up warm-up (``status.warm_up``, which a server runs
  in the background once ``initialize`` is answered) and then call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio.from_thread
from _common import PROJECT_DIR, emit, log, parser, quantile, scratch, summary_ms
from _workload import big_ledger, commit_files, open_env, private_repo, sizes_for, task_file

from planegate.tools.env import Env
from planegate.tools.execution.jobs import Worker
from planegate.tools.gates import facts
from planegate.tools.report.status import get_status

TARGET_MEDIAN_MS = 15.0
TARGET_P50_MS = 5.0
TARGET_P99_MS = 10.0
WARMUP = 5
STORED_TIMEOUT_S = 120.0

# A fresh process: import, open, one timed call (and a second), as JSON on stdout. With "old", the
# stored facts are ignored, so the call computes every head's facts as get_status did before.
FRESH = """
import json, sys, time
began = time.perf_counter()
from planegate.tools.gates import facts
from planegate.tools.report.status import get_status
from planegate.tools.config import Settings
from planegate.tools.env import Env
imported = time.perf_counter()
env = Env.open(Settings.from_env(actor="user:bench"))
opened = time.perf_counter()
old = sys.argv[2] == "old"
if old:
    facts.stored_head_facts = lambda env, key: None
warmed = time.perf_counter()
if sys.argv[2] == "warm":
    from planegate.tools.report.status import warm_up
    warm_up(env)
    warmed = time.perf_counter()
    opened = warmed
first = get_status(env, sys.argv[1], wait_for_git=old)
called = time.perf_counter()
get_status(env, sys.argv[1], wait_for_git=old)
second = time.perf_counter()
pending = sum(1 for t in first.status.active for g in t.gates if g.reason.startswith("computing for head"))
print(json.dumps({"import_s": imported - began, "open_s": opened - imported, "first_s": called - opened,
                  "warm_up_s": warmed - imported if sys.argv[2] == "warm" else 0.0,
                  "second_s": second - called, "pending_gates": pending}))
env.close()
"""


@contextmanager
def background_worker(env: Env) -> Iterator[Worker]:
    """A job worker on ``env``'s ledger, in a thread of this process, as the server runs one."""
    worker = Worker(env.as_actor("planegate:worker"))
    with anyio.from_thread.start_blocking_portal() as portal:
        future = portal.start_task_soon(worker.run)
        try:
            yield worker
        finally:
            future.cancel()


_old = threading.local()


def _stored_unless_old(original: Callable[..., Any]) -> Callable[..., Any]:
    """``stored_head_facts`` that answers None in this thread while a baseline call runs."""

    def stored(env: Env, key: Any) -> Any:
        return None if getattr(_old, "on", False) else original(env, key)

    return stored


def wait_stored(env: Env, run: str, expect: int) -> float:
    """Seconds until the active tasks' current heads all have stored facts (bounded)."""
    began = time.perf_counter()
    deadline = time.monotonic() + STORED_TIMEOUT_S
    while time.monotonic() < deadline:
        status = get_status(env, run, wait_for_git=False)
        assert status.status is not None
        shown = status.status.active
        if len(shown) >= expect and not any(g.reason.startswith("computing for head") for t in shown for g in t.gates):
            return time.perf_counter() - began
        time.sleep(0.005)
    raise RuntimeError(f"the worker did not store the facts of {expect} heads within {STORED_TIMEOUT_S} s")


def timed(call: Callable[[], Any], repetitions: int) -> list[float]:
    for _ in range(WARMUP):
        call()
    samples: list[float] = []
    for _ in range(repetitions):
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return samples


def fresh_process(run: str, mode: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", FRESH, run, mode],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=PROJECT_DIR,
        env=dict(os.environ),
    )
    return json.loads(done.stdout)


def ms(values: list[float]) -> dict[str, float | int]:
    return summary_ms(values) if values else {"n": 0}


def meets(samples: list[float]) -> bool:
    return quantile(samples, 0.5) * 1000 <= TARGET_P50_MS and quantile(samples, 0.99) * 1000 <= TARGET_P99_MS


def main() -> None:
    args = parser(__doc__ or "", quick_help="500 tasks, 50,000 events; 5 commits and 5 processes per side").parse_args()
    sizes = sizes_for(args.quick)
    repetitions = 50
    rounds = 5 if args.quick else 10
    original = facts.stored_head_facts
    facts.stored_head_facts = _stored_unless_old(original)  # type: ignore[assignment]
    with scratch("status") as root:
        ledger = big_ledger(sizes, root)
        env = open_env()
        try:
            run = ledger.run
            repo = private_repo(env, run, root)
            active = [
                r["id"]
                for r in env.store.rows(
                    "SELECT id FROM tasks WHERE run_id = ? AND status = 'in_progress' ORDER BY seq", (run,)
                )
            ]
            base = env.run_row(run)["base_sha"]
            versions = dict.fromkeys(active, 1)
            new_first: list[float] = []
            new_second: list[float] = []
            old_first: list[float] = []
            stored_after: list[float] = []
            pending_seen = 0
            fresh: dict[str, list[dict[str, float]]] = {"new": [], "old": []}
            with background_worker(env):
                log("waiting for the worker to store the active heads' facts …")
                initial_s = wait_stored(env, run, len(active))
                log(f"  {initial_s:.2f} s; steady calls …")
                steady = timed(lambda: get_status(env, run, wait_for_git=False), repetitions)
                listing = timed(lambda: get_status(env), repetitions)
                log(f"after-commit calls: {rounds} per side, interleaved …")
                for index in range(2 * rounds):
                    task = active[index % len(active)]
                    versions[task] += 1
                    path = env.task_row(run, task)["scope"]
                    commit_files(
                        repo,
                        f"planegate/{run}/{task}",
                        base,
                        {json.loads(path)[0]: task_file(task, versions[task])},
                        f"{task}: version {versions[task]}",
                    )
                    baseline = index % 2 == 1
                    _old.on = baseline
                    try:
                        began = time.perf_counter()
                        status = get_status(env, run, wait_for_git=baseline)
                        first_s = time.perf_counter() - began
                    finally:
                        _old.on = False
                    if baseline:
                        old_first.append(first_s)
                    else:
                        assert status.status is not None
                        pending_seen += any(
                            g.reason.startswith("computing for head") for t in status.status.active for g in t.gates
                        )
                        new_first.append(first_s)
                        began = time.perf_counter()
                        get_status(env, run, wait_for_git=False)
                        new_second.append(time.perf_counter() - began)
                    stored_after.append(wait_stored(env, run, len(active)) + (0.0 if baseline else first_s))
                log(f"fresh processes: {rounds} per side, interleaved …")
                fresh["warm"] = []
                for index in range(3 * rounds):
                    mode = ("new", "warm", "old")[index % 3]
                    fresh[mode].append(fresh_process(run, mode))
        finally:
            env.close()
            facts.stored_head_facts = original  # type: ignore[assignment]
    first_of_process = [r["first_s"] for r in fresh["new"]]
    every_case = {
        "steady": meets(steady),
        "first_after_commit": meets(new_first),
        "first_of_process": meets(first_of_process),
        "first_of_process_after_start_up_warm_up": meets([r["first_s"] for r in fresh["warm"]]),
    }
    median_ms = quantile(steady, 0.5) * 1000
    emit(
        {
            "benchmark": "get_status",
            "quick": args.quick,
            "ledger": ledger.describe(),
            "active_tasks": len(active),
            "get_status_run": ms(steady),
            "get_status_no_run": ms(listing),
            "first_after_commit": ms(new_first),
            "second_after_commit": ms(new_second),
            "first_after_commit_shown_computing": f"{pending_seen} of {len(new_first)}",
            "first_after_commit_baseline_computing_on_demand": ms(old_first),
            "commit_to_facts_stored_by_worker": ms(stored_after),
            "first_of_process": ms(first_of_process),
            "first_of_process_second_call": ms([r["second_s"] for r in fresh["new"]]),
            "first_of_process_import_and_open": ms([r["import_s"] + r["open_s"] for r in fresh["new"]]),
            "first_of_process_baseline_computing_on_demand": ms([r["first_s"] for r in fresh["old"]]),
            "first_of_process_after_start_up_warm_up": ms([r["first_s"] for r in fresh["warm"]]),
            "start_up_warm_up_incl_open": ms([r["warm_up_s"] for r in fresh["warm"]]),
            "worker_stored_initial_heads_s": round(initial_s, 3),
            "targets": {
                "design": f"get_status(run) median ≤ {TARGET_MEDIAN_MS} ms",
                "issue_11": f"p50 ≤ {TARGET_P50_MS} ms and p99 ≤ {TARGET_P99_MS} ms: steady, first after a commit, "
                "first of a process",
            },
            "meets_each": every_case,
            "meets_target": median_ms <= TARGET_MEDIAN_MS and all(every_case.values()),
        }
    )


if __name__ == "__main__":
    main()
