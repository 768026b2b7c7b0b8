"""Run every ``bench/bench_*.py`` and gather their JSON into one object keyed by script name.

The object is printed and written to ``bench/results/latest.json`` (git-ignored). A script that
fails, times out or prints something other than one JSON object is recorded with its exit code
and the tail of its stderr instead. ``--quick`` is passed to the scripts that accept it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, emit, log, parser

SCRIPT_TIMEOUT_S = 1800
RESULTS = BENCH_DIR / "results" / "latest.json"


def run_script(script: Path, quick: bool) -> dict[str, Any]:
    argv = [sys.executable, str(script), *(["--quick"] if quick else [])]
    began = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, check=False)
        if quick and done.returncode == 2 and "unrecognized arguments: --quick" in done.stderr:
            done = subprocess.run(argv[:-1], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        return {"error": f"timed out after {exc.timeout} s", "stderr_tail": _tail(exc.stderr)}
    elapsed = round(time.perf_counter() - began, 1)
    if done.returncode != 0:
        return {"error": f"exit code {done.returncode}", "script_s": elapsed, "stderr_tail": _tail(done.stderr)}
    try:
        result = json.loads(done.stdout)
    except ValueError as exc:
        return {"error": f"stdout is not one JSON object: {exc}", "script_s": elapsed, "stdout": done.stdout[:2000]}
    if not isinstance(result, dict):
        return {"error": "stdout is JSON but not an object", "script_s": elapsed}
    return {**result, "script_s": elapsed}


def _tail(text: str | bytes | None, lines: int = 15) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:])


def main() -> None:
    args = parser(__doc__ or "", quick_help="pass --quick to every script (smoke test sizes)").parse_args()
    results: dict[str, Any] = {}
    for script in sorted(BENCH_DIR.glob("bench_*.py")):
        log(f"== {script.name}")
        results[script.stem] = run_script(script, args.quick)
        outcome = results[script.stem].get("meets_target", results[script.stem].get("error"))
        log(f"   {script.stem}: meets_target={outcome} ({results[script.stem].get('script_s')} s)")
    summary = {name: result.get("meets_target") for name, result in results.items()}
    combined = {"quick": args.quick, "meets_target": summary, "results": results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(combined, indent=2, ensure_ascii=False) + "\n")
    log(f"written to {RESULTS}")
    emit(combined)


if __name__ == "__main__":
    main()
