"""Gate evaluation time, and what confirming rows against their events adds to it.

On the 5,000-task, 1,000,000-event ledger of ``bench_status`` (from the cache), each of the 8
tasks in progress is given what the gates read on a real task — direct evidence of three kinds
(20 rows), three completed reviews with their stored replies — written through ``Store.write()``
so every row is vouched for. Timed, 50 rounds each after warm-ups:

- ``evaluate_task`` for one task (the task gates, as ``get_status`` and ``accept_task`` run them),
  with the row checks' caches warm (repeated calls) and with row checks switched off (the
  baseline), alternating call by call so the machine's load weighs on both alike; and cold (a
  fresh cache before every call: each vouching event is re-authenticated);
- ``get_status(run)`` with and without row checks, alternating the same way;
- the whole-ledger verify that ``accept_run`` adds (one call).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from _common import emit, log, parser, quantile, scratch, summary_ms
from _workload import big_ledger, open_env, sizes_for

from planegate.store import Store
from planegate.store.vouch import RowChecker
from planegate.tools.env import Env
from planegate.tools.gates.facts import evaluate_task
from planegate.tools.gates.release import whole_ledger_gate
from planegate.tools.report.status import get_status

ROUNDS = 50
WARMUP = 5


def give_tasks_history(env: Env, run: str, tasks: list[str]) -> None:
    """Evidence and reviews on each task, as the gates would find them on a real one."""
    reply = json.dumps(
        {
            "review_id": "ab" * 12,
            "verdict": "approve",
            "summary": "looks right " * 40,
            "findings": [
                {"severity": "info", "file": f"src/f{i}.py", "line": i, "title": f"note {i}", "detail": "d" * 200}
                for i in range(10)
            ],
        }
    )
    for task in tasks:
        with env.write("agent:bench") as w:
            for n in range(20):
                evidence = w.insert(
                    "evidence",
                    {
                        "run_id": run,
                        "task_id": task,
                        "kind": ("test", "lint", "red_green")[n % 3],
                        "label": "direct",
                        "summary": f"checks passed: {n} passed, 0 failed",
                        "command": "python -m pytest -q",
                        "exit_code": 0,
                        "duration_ms": 2400,
                        "created_at": w.at,
                    },
                )
                w.event("check.recorded", run=run, task=task, evidence=evidence)
            for n in range(3):
                w.insert(
                    "reviews",
                    {
                        "id": f"rv-{task}-{n}",
                        "run_id": run,
                        "task_id": task,
                        "nonce": "ab" * 12,
                        "reviewer": "command:reviewer",
                        "status": "completed",
                        "verdict": "approve",
                        "summary": "fine",
                        "base_sha": "0" * 40,
                        "head_sha": f"{n:040x}",
                        "diff_sha256": "0" * 64,
                        "requirements_version": 1,
                        "reply": reply,
                        "created_at": w.at,
                        "completed_at": w.at,
                    },
                )
                w.event("review.completed", run=run, task=task, review=f"rv-{task}-{n}")


Samples = tuple[list[float], list[float]]


def timed(call: Callable[[], Any], before: Callable[[], None] | None = None) -> Samples:
    """Wall-clock and CPU seconds of ``ROUNDS`` calls (CPU time stays readable on a busy machine)."""
    for _ in range(WARMUP):
        call()
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(ROUNDS):
        if before is not None:
            before()
        measure(call, wall, cpu)
    return wall, cpu


def measure(call: Callable[[], Any], wall: list[float], cpu: list[float]) -> None:
    began, began_cpu = time.perf_counter(), time.process_time()
    call()
    wall.append(time.perf_counter() - began)
    cpu.append(time.process_time() - began_cpu)


def with_and_without_row_checks(call: Callable[[], Any]) -> tuple[Samples, Samples]:
    """``call`` timed with row checks and without, alternating round by round so that the load of
    the machine weighs on both alike."""
    store_check = Store.check_row
    checked: Samples = ([], [])
    unchecked: Samples = ([], [])
    try:
        for index in range(WARMUP + ROUNDS):
            for on in (True, False):
                Store.check_row = store_check if on else lambda self, table, row: None  # type: ignore[method-assign,assignment,misc]
                if index < WARMUP:
                    call()
                else:
                    measure(call, *(checked if on else unchecked))
    finally:
        Store.check_row = store_check  # type: ignore[method-assign]
    return checked, unchecked


def p50_ms(samples: list[float]) -> float:
    return round(quantile(samples, 0.5) * 1000, 3)


def main() -> None:
    args = parser(__doc__ or "", quick_help="500 tasks, 50,000 events").parse_args()
    sizes = sizes_for(args.quick)
    with scratch("gates") as root:
        ledger = big_ledger(sizes, root)
        env = open_env()
        try:
            run_row = env.run_row(ledger.run)
            active = env.store.rows(
                "SELECT * FROM tasks WHERE run_id = ? AND status = 'in_progress' ORDER BY seq", (ledger.run,)
            )
            log(f"giving {len(active)} tasks evidence and reviews …")
            give_tasks_history(env, ledger.run, [t["id"] for t in active])
            active = [env.task_row(ledger.run, t["id"]) for t in active]
            store_check = Store.check_row
            confirmed: dict[str, int] = {}

            def counting(self: Store, table: str, row: dict[str, Any]) -> Any:
                confirmed[table] = confirmed.get(table, 0) + 1
                return store_check(self, table, row)

            Store.check_row = counting  # type: ignore[method-assign]
            try:
                _, gates = evaluate_task(env, run_row, active[0], live=False)
            finally:
                Store.check_row = store_check  # type: ignore[method-assign]
            assert next(g for g in gates if g.gate == "ledger").ok, gates

            def one_task() -> None:
                evaluate_task(env, run_row, active[0], live=False)

            def fresh_checker() -> None:
                env.store.rows_checker = RowChecker()

            warm, unchecked = with_and_without_row_checks(one_task)
            cold = timed(one_task, fresh_checker)
            status_checked, status_unchecked = with_and_without_row_checks(lambda: get_status(env, ledger.run))
            log("the whole-ledger verify accept_run adds …")
            began = time.perf_counter()
            whole = whole_ledger_gate(env, ledger.run)
            whole_s = time.perf_counter() - began
        finally:
            env.close()
    warm_cpu, cold_cpu, unchecked_cpu = p50_ms(warm[1]), p50_ms(cold[1]), p50_ms(unchecked[1])
    status_cpu, status_unchecked_cpu = p50_ms(status_checked[1]), p50_ms(status_unchecked[1])
    status_ms = summary_ms(status_checked[0])
    emit(
        {
            "benchmark": "gates",
            "quick": args.quick,
            "ledger": ledger.describe(),
            "tasks_in_progress": len(active),
            "evidence_rows_per_task": 20,
            "reviews_per_task": 3,
            "rows_confirmed_per_task_evaluation": confirmed,
            "evaluate_task_row_checks_warm": summary_ms(warm[0]),
            "evaluate_task_row_checks_cold": summary_ms(cold[0]),
            "evaluate_task_without_row_checks": summary_ms(unchecked[0]),
            "evaluate_task_cpu_p50_ms": {"warm": warm_cpu, "cold": cold_cpu, "without_row_checks": unchecked_cpu},
            "evaluate_task_cpu_p50_ratio_warm_vs_without": round(warm_cpu / unchecked_cpu, 3),
            "get_status_run_row_checks": status_ms,
            "get_status_run_without_row_checks": summary_ms(status_unchecked[0]),
            "get_status_cpu_p50_ms": {"row_checks": status_cpu, "without_row_checks": status_unchecked_cpu},
            "get_status_cpu_p50_ratio": round(status_cpu / status_unchecked_cpu, 3),
            "accept_run_whole_ledger_verify_s": round(whole_s, 3),
            "accept_run_whole_ledger_verify_ok": whole.ok,
            "target": "get_status(run) median ≤ 15 ms with row checks (DESIGN §8)",
            "meets_target": float(status_ms["p50_ms"]) <= 15.0 and whole.ok,
        }
    )


if __name__ == "__main__":
    main()
