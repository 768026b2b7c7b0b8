"""``get_status`` on a 5,000-task run whose ledger holds 1,000,000 events (DESIGN §8: ≤ 15 ms).

The run is built as in ``bench_graph`` (plus a few tasks put in progress, so the active-task
part of the status has rows to read), then events are appended through ``Writer.event`` until
the events table has 1,000,000 rows. The first build takes a few minutes and is cached under
``~/.cache/planegate-bench/``; a cached ledger is verified before it is used. Timed: the domain
calls ``get_status(env, run)`` and ``get_status(env)``, each after a few warm-up calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from _common import emit, log, parser, scratch, summary_ms
from _workload import big_ledger, open_env, sizes_for

from planegate.tools.report.status import get_status

TARGET_MS = 15.0
WARMUP = 5


def timed(call: Callable[[], Any], repetitions: int) -> tuple[list[float], Any]:
    for _ in range(WARMUP):
        call()
    samples: list[float] = []
    result: Any = None
    for _ in range(repetitions):
        began = time.perf_counter()
        result = call()
        samples.append(time.perf_counter() - began)
    return samples, result


def main() -> None:
    args = parser(__doc__ or "", quick_help="500 tasks, 50,000 events").parse_args()
    sizes = sizes_for(args.quick)
    repetitions = 50
    with scratch("status") as root:
        ledger = big_ledger(sizes, root)
        env = open_env()
        try:
            began = time.perf_counter()
            first = get_status(env, ledger.run)
            first_call_s = time.perf_counter() - began
            run_samples, status = timed(lambda: get_status(env, ledger.run), repetitions)
            list_samples, listing = timed(lambda: get_status(env), repetitions)
        finally:
            env.close()
    assert status.status is not None and first.status is not None
    log(f"get_status(run): p50 {summary_ms(run_samples)['p50_ms']} ms")
    with_run = summary_ms(run_samples)
    median_ms = float(with_run["p50_ms"])
    emit(
        {
            "benchmark": "get_status",
            "quick": args.quick,
            "ledger": ledger.describe(),
            "get_status_run": with_run,
            "get_status_run_first_call_ms": round(first_call_s * 1000, 3),
            "get_status_no_run": summary_ms(list_samples),
            "status_counts": status.status.counts,
            "status_json_bytes": len(status.model_dump_json(exclude_none=True)),
            "runs_listed": len(listing.runs or []),
            "target": f"get_status(run) median ≤ {TARGET_MS} ms",
            "meets_target": median_ms <= TARGET_MS,
        }
    )


if __name__ == "__main__":
    main()
