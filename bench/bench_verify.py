"""``planegate ledger verify`` on a ledger of 1,000,000 events (DESIGN §8: ≤ 10 s).

Uses the ledger ``bench_status`` builds (from the cache under ``~/.cache/planegate-bench/`` when
there, building it otherwise: a few minutes). Timed: the CLI as a subprocess, start to exit,
and the ``verify_ledger`` function in this process (opening the store timed apart).
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from _common import PLANEGATE, emit, log, parser, scratch
from _workload import big_ledger, sizes_for

from planegate.store import Store, verify_ledger

TARGET_S = 10.0
CLI_TIMEOUT_S = 300


def main() -> None:
    args = parser(__doc__ or "", quick_help="a 50,000-event ledger").parse_args()
    sizes = sizes_for(args.quick)
    with scratch("verify") as root:
        ledger = big_ledger(sizes, root)
        log("planegate ledger verify …")
        began = time.perf_counter()
        done = subprocess.run(
            [str(PLANEGATE), "ledger", "verify"],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        cli_s = time.perf_counter() - began
        found = re.search(r"(\d+) events verified", done.stdout)
        cli_count = int(found.group(1)) if found else None
        log("verify_ledger() …")
        began = time.perf_counter()
        store = Store(ledger.path, actor="user:bench")
        open_s = time.perf_counter() - began
        try:
            began = time.perf_counter()
            report = verify_ledger(store)
            function_s = time.perf_counter() - began
        finally:
            store.close()
    cli_ok = done.returncode == 0 and cli_count == sizes.events
    emit(
        {
            "benchmark": "ledger_verify",
            "quick": args.quick,
            "ledger": ledger.describe(),
            "cli_s": round(cli_s, 3),
            "cli_exit_code": done.returncode,
            "cli_output": (done.stdout or done.stderr).strip()[:500],
            "cli_events_verified": cli_count,
            "function_s": round(function_s, 3),
            "function_store_open_s": round(open_s, 4),
            "function_events_verified": report.events_verified,
            "function_ok": report.ok,
            "events_per_s_function": round(report.events_verified / function_s),
            "target": f"planegate ledger verify (CLI, start to exit) ≤ {TARGET_S} s and ok",
            "meets_target": cli_ok and report.ok and cli_s <= TARGET_S,
        }
    )


if __name__ == "__main__":
    main()
