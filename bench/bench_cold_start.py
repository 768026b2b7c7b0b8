"""Cold start of ``planegate serve`` (stdio) to its ``initialize`` answer, against ``mcp-server-git``.

DESIGN §8: ≤ 1.1× the reference measured in the same run; issue 11 §5: ≤ 1.0×. For each server: spawn the process,
write one ``initialize`` line to its stdin at once, time until the answer line arrives on its
stdout, kill it. The two servers alternate, after one untimed start each to warm the page cache.
The reference is installed into a cached venv (``~/.cache/planegate-bench/mcp-server-git``) the
first time. Then ``python -X importtime`` names the imports ``planegate serve`` pays for before
it answers (the same for the reference, by top-level package, for comparison).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    CACHE_DIR,
    PLANEGATE,
    StdioServer,
    emit,
    encode,
    initialize_params,
    log,
    make_repo,
    parser,
    quantile,
    scratch,
    serve_argv,
)

TARGET_RATIO = 1.1  # DESIGN §8
TARGET_RATIO_ISSUE_11 = 1.0  # issue 11 §5: at the floor
TIMEOUT_S = 60.0
REFERENCE = "mcp-server-git"
REFERENCE_VENV = CACHE_DIR / REFERENCE
INSTALL_TIMEOUT_S = 600
WATCHED = (
    "git",
    "playwright",
    "detect_secrets",
    "rich",
    "sqlite_utils",
    "sqlite3",
    "planegate.store",
    "planegate.tools",
)


def reference_script() -> Path:
    """The reference's console script, installing it into its cached venv when missing."""
    script = REFERENCE_VENV / "bin" / REFERENCE
    if not script.is_file():
        log(f"installing {REFERENCE} into {REFERENCE_VENV} …")
        subprocess.run([sys.executable, "-m", "venv", str(REFERENCE_VENV)], check=True, timeout=INSTALL_TIMEOUT_S)
        subprocess.run(
            [str(REFERENCE_VENV / "bin" / "python"), "-m", "pip", "install", "-q", REFERENCE],
            check=True,
            timeout=INSTALL_TIMEOUT_S,
            stdout=sys.stderr,
        )
    return script


def reference_version() -> str:
    done = subprocess.run(
        [str(REFERENCE_VENV / "bin" / "python"), "-m", "pip", "show", REFERENCE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"^Version: (\S+)", done.stdout, re.MULTILINE)
    return found.group(1) if found else "unknown"


def time_to_initialize(argv: list[str], stderr_path: Path) -> tuple[float, Any]:
    """Seconds from spawn to the ``initialize`` answer line, and the answer."""
    line = encode({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params()})
    with StdioServer(argv, env=dict(os.environ), stderr_path=stderr_path) as server:
        server.send_raw(line)
        answer = server.wait_response(1, TIMEOUT_S)
        elapsed = time.perf_counter() - server.started
    return elapsed, answer


@dataclass(frozen=True)
class Import:
    self_us: int
    cumulative_us: int
    depth: int
    module: str


IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def imports_until_initialize(argv: list[str], stderr_path: Path) -> list[Import]:
    """``-X importtime`` records of everything imported before the ``initialize`` answer."""
    time_to_initialize(argv, stderr_path)
    imports = []
    for match in IMPORT_LINE.finditer(stderr_path.read_text(errors="replace")):
        self_us, cumulative_us, indent, module = match.groups()
        imports.append(Import(int(self_us), int(cumulative_us), len(indent) // 2, module))
    return imports


def top_packages(imports: list[Import], count: int = 10) -> list[dict[str, Any]]:
    """Self import time summed per top-level package, largest first."""
    totals: dict[str, int] = defaultdict(int)
    for item in imports:
        totals[item.module.split(".")[0]] += item.self_us
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:count]
    return [{"package": name, "self_ms": round(us / 1000, 1)} for name, us in ranked]


def package_cost(imports: list[Import], package: str) -> dict[str, Any] | None:
    """What ``package`` cost before the answer, and who pulled its costliest module in.

    ``-X importtime`` prints a module after the modules it imports, one level deeper, so the
    importer is the next line with a smaller depth. A chain that stops short of the entry point
    (or is empty) means the import ran inside a function, not at module level.
    """
    members = [i for i, item in enumerate(imports) if item.module == package or item.module.startswith(package + ".")]
    if not members:
        return None
    index = max(members, key=lambda i: imports[i].cumulative_us)
    chain, depth = [], imports[index].depth
    for later in imports[index + 1 :]:
        if later.depth < depth:
            chain.append(later.module)
            depth = later.depth
    return {
        "self_ms": round(sum(imports[i].self_us for i in members) / 1000, 1),
        "costliest": imports[index].module,
        "costliest_cumulative_ms": round(imports[index].cumulative_us / 1000, 1),
        "imported_by": chain,
    }


def import_report(imports: list[Import]) -> dict[str, Any]:
    return {
        "modules_imported": len(imports),
        "total_self_ms": round(sum(i.self_us for i in imports) / 1000, 1),
        "top_cumulative": [
            {
                "module": i.module,
                "cumulative_ms": round(i.cumulative_us / 1000, 1),
                "self_ms": round(i.self_us / 1000, 1),
            }
            for i in sorted(imports, key=lambda i: -i.cumulative_us)[:10]
        ],
        "top_self": [
            {"module": i.module, "self_ms": round(i.self_us / 1000, 1)}
            for i in sorted(imports, key=lambda i: -i.self_us)[:10]
        ],
        "top_packages_self": top_packages(imports),
        "watched_loaded_before_answer": {name: package_cost(imports, name) is not None for name in WATCHED},
        "watched_costs": {name: cost for name in WATCHED if (cost := package_cost(imports, name)) is not None},
    }


def stats(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(quantile(samples, 0.5) * 1000, 1),
        "p90_ms": round(quantile(samples, 0.9) * 1000, 1),
        "min_ms": round(min(samples) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


def main() -> None:
    args = parser(__doc__ or "", quick_help="3 starts of each instead of 10").parse_args()
    rounds = 3 if args.quick else 10
    reference = reference_script()
    with scratch("cold-start") as root:
        repo = make_repo(root / "repo")
        servers = {
            "planegate": serve_argv(),
            REFERENCE: [str(reference), "--repository", str(repo)],
        }
        samples: dict[str, list[float]] = {name: [] for name in servers}
        answers: dict[str, Any] = {}
        for name, argv in servers.items():
            time_to_initialize(argv, root / f"{name}.stderr")  # untimed: warms the page cache
        for index in range(rounds):
            order = list(servers) if index % 2 == 0 else list(reversed(servers))
            for name in order:
                elapsed, answers[name] = time_to_initialize(servers[name], root / f"{name}.stderr")
                samples[name].append(elapsed)
            log(f"  round {index + 1}: " + ", ".join(f"{n} {samples[n][-1] * 1000:.0f} ms" for n in servers))
        log("import times …")
        planegate_imports = imports_until_initialize(
            [sys.executable, "-X", "importtime", str(PLANEGATE), "serve"], root / "planegate-importtime.stderr"
        )
        reference_imports = imports_until_initialize(
            [str(REFERENCE_VENV / "bin" / "python"), "-X", "importtime", str(reference), "--repository", str(repo)],
            root / "reference-importtime.stderr",
        )
    planegate, ref = stats(samples["planegate"]), stats(samples[REFERENCE])
    ratio = planegate["median_ms"] / ref["median_ms"]
    emit(
        {
            "benchmark": "cold_start",
            "quick": args.quick,
            "rounds": rounds,
            "planegate": {**planegate, "command": "planegate serve"},
            "reference": {**ref, "command": f"{REFERENCE} --repository <repo>", "version": reference_version()},
            "ratio_median": round(ratio, 3),
            "ratio_p90": round(planegate["p90_ms"] / ref["p90_ms"], 3),
            "answers_ok": all(b'"result"' in answer for answer in answers.values()),
            "planegate_imports": import_report(planegate_imports),
            "reference_imports": {
                "modules_imported": len(reference_imports),
                "total_self_ms": round(sum(i.self_us for i in reference_imports) / 1000, 1),
                "top_packages_self": top_packages(reference_imports),
            },
            "targets": {
                "design": f"planegate median ≤ {TARGET_RATIO}× the reference median",
                "issue_11": f"planegate median ≤ {TARGET_RATIO_ISSUE_11}× the reference median",
            },
            "meets_each": {"design": ratio <= TARGET_RATIO, "issue_11": ratio <= TARGET_RATIO_ISSUE_11},
            "meets_target": ratio <= TARGET_RATIO_ISSUE_11,
        }
    )


if __name__ == "__main__":
    main()
