"""``dispatch_task`` against a bare ``git worktree add`` on the same repository (DESIGN §8: ≤ 1.3×).

The repository holds a few thousand small Python files in nested directories (``src/m<i>/sub<j>/``),
committed, so checking a worktree out costs what it costs on a real project. One run is planned on
it with many independent tasks, each scoped to its own file, and a policy whose ``max_parallel``
leaves room for all of them. Each repetition, interleaved and in alternating order, times:

- bare: ``git worktree add -b <branch> <path> <base>`` as a subprocess;
- dispatch: the domain call ``dispatch_task(env, run, task)`` of the next ready task (so the
  running-task count grows by one each repetition).

Both kinds of worktree stay until the scratch directory is deleted at the end: on ext4, creating
files right after thousands were deleted is several times slower (inode allocation skips recently
freed inodes), so removing each bare worktree would slow whichever step came next. ``os.sync()``
runs (untimed) before every timed step, so no step pays for the previous one's writeback.

Where dispatch's extra time goes is read off a timeline of the ledger's own statements
(``sqlite3.Connection.set_trace_callback``): start → ``BEGIN IMMEDIATE`` (lookups), → ``COMMIT``
(the claim transaction), → the first statement after it (the worktree: one `git worktree add`),
→ return (envelope rendering and writing). ``render_envelope`` is also timed on its own, on tasks
that are never dispatched (so its glob caches are cold for their scopes), and a few extra
dispatches run under cProfile for the functions that take the time (cProfile inflates many small
calls, so its shares overstate Python-heavy functions).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import PROJECT_DIR, emit, log, make_repo, parser, quantile, scratch, summary_ms
from _workload import Sizes, frozen_run, open_env

from planegate.tools.control.graph import register_graph
from planegate.tools.env import Env
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.execution.envelope import render_envelope
from planegate.tools.models import TaskSpec

TARGET_RATIO = 1.3
MODULES = 20
SUBDIRS = 15
FILES_PER_SUBDIR = 10
REQUIREMENTS = 5
WARMUP = 2
PROFILED = 5
TIMEOUT_S = 120


def module_source(module: int, sub: int, index: int) -> str:
    """A small, plausible Python module (~700 bytes), different in every file."""
    name = f"m{module}_s{sub}_f{index}"
    return (
        f'"""Module {name}: part of the synthetic code base the dispatch benchmark checks out."""\n\n'
        "from __future__ import annotations\n\n"
        "import dataclasses\n\n\n"
        "@dataclasses.dataclass\n"
        f"class Record{index}:\n"
        "    key: str\n"
        "    value: int = 0\n\n"
        "    def bump(self, by: int = 1) -> int:\n"
        "        self.value += by\n"
        "        return self.value\n\n\n"
        f"def build_{index}(count: int) -> list[Record{index}]:\n"
        f'    return [Record{index}(key=f"{name}-{{n}}", value=n * {module + sub + index}) for n in range(count)]\n\n\n'
        f"def total_{index}(records: list[Record{index}]) -> int:\n"
        "    return sum(record.value for record in records)\n"
    )


def repo_files(tasks: int) -> dict[str, str]:
    files = {
        "README.md": "# synthetic project\n\nA code base for the dispatch benchmark.\n",
        ".planegate/policy.toml": f"max_parallel = {tasks + 10}\nrequire_review = false\n",
    }
    for module in range(MODULES):
        files[f"src/m{module}/__init__.py"] = ""
        for sub in range(SUBDIRS):
            files[f"src/m{module}/sub{sub}/__init__.py"] = ""
            for index in range(FILES_PER_SUBDIR):
                files[f"src/m{module}/sub{sub}/f{index}.py"] = module_source(module, sub, index)
    return files


def independent_tasks(count: int) -> list[TaskSpec]:
    """``count`` tasks without dependencies, each scoped to a file of its own (disjoint scopes)."""
    return [
        TaskSpec(
            id=f"t{i:03d}",
            title=f"Task {i}",
            goal=f"Add part {i} to module m{i % MODULES}.",
            scope=[f"src/m{i % MODULES}/part_{i}.py"],
            requirements=[f"R{i % REQUIREMENTS + 1}"],
            acceptance=[f"part {i} has a passing test"],
        )
        for i in range(count)
    ]


class Timeline:
    """Each SQL statement the ledger connection runs, with the ``perf_counter`` it started at."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, str]] = []

    def __call__(self, statement: str) -> None:
        self.marks.append((time.perf_counter(), statement))

    def phases(self, began: float, ended: float) -> dict[str, float]:
        """Seconds spent before, in, and after the claim transaction of one dispatch."""
        begin = next(i for i, (_, sql) in enumerate(self.marks) if sql.startswith("BEGIN"))
        commit = next(i for i, (_, sql) in enumerate(self.marks) if i > begin and sql == "COMMIT")
        after = self.marks[commit + 1][0] if commit + 1 < len(self.marks) else ended
        return {
            "lookups": self.marks[begin][0] - began,
            "ledger_transaction": self.marks[commit][0] - self.marks[begin][0],
            "worktree": after - self.marks[commit][0],
            "envelope_and_result": ended - after,
            "statements_in_transaction": commit - begin - 1,
        }


def bare_worktree(repo: Path, root: Path, index: int, base: str) -> float:
    """Seconds for one ``git worktree add -b``; the worktree stays until the scratch directory goes."""
    branch = f"bench/bare-{index}"
    path = root / "bare" / f"w{index}"
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = ["git", "-C", str(repo), "worktree", "add", "-b", branch, str(path), base]
    began = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, timeout=TIMEOUT_S)
    return time.perf_counter() - began


def timed_dispatch(env: Env, run: str, task: str) -> tuple[float, dict[str, float]]:
    timeline = Timeline()
    env.store.conn.set_trace_callback(timeline)
    try:
        began = time.perf_counter()
        dispatch_task(env, run, task)
        ended = time.perf_counter()
    finally:
        env.store.conn.set_trace_callback(None)
    return ended - began, timeline.phases(began, ended)


def where(code: tuple[str, int, str]) -> str:
    """``file:line(function)`` with the file shortened to its package-relative path."""
    filename, line, name = code
    filename = re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", filename.removeprefix(f"{PROJECT_DIR}/"))
    return f"{filename}:{line}({name})" if line else name


def is_project(filename: str) -> bool:
    return filename.startswith(f"{PROJECT_DIR}/") and "/.venv/" not in filename


def profile_summary(profile: cProfile.Profile, calls: int, total_s: float, top: int = 15) -> dict[str, Any]:
    """The functions taking the most time, per dispatch, as ms and as a share of dispatch's time:
    planegate's own by cumulative time (what they call included), and any by self time."""
    stats: dict[Any, Any] = pstats.Stats(profile).stats

    def entry(code: Any, seconds: float, ncalls: int) -> dict[str, Any]:
        return {
            "function": where(code),
            "ms_per_dispatch": round(seconds / calls * 1000, 3),
            "share": round(seconds / total_s, 3),
            "calls_per_dispatch": round(ncalls / calls, 1),
        }

    rows = [(code, tt, ct, nc) for code, (_, nc, tt, ct, _) in stats.items()]
    own = [r for r in rows if is_project(r[0][0]) and r[0][2] != "dispatch_task"]
    by_cum = sorted(own, key=lambda r: -r[2])
    by_self = sorted(rows, key=lambda r: -r[1])
    return {
        "dispatches": calls,
        "profiled_ms_per_dispatch": round(total_s / calls * 1000, 3),
        "top_cumulative_planegate": [entry(code, ct, nc) for code, _, ct, nc in by_cum[:top]],
        "top_self": [entry(code, tt, nc) for code, tt, _, nc in by_self[:top]],
    }


def main() -> None:
    args = parser(__doc__ or "", quick_help="5 repetitions, 2 profiled dispatches").parse_args()
    repetitions = 5 if args.quick else 20
    profiled = 2 if args.quick else PROFILED
    tasks = WARMUP + 2 * repetitions + profiled + 2
    with scratch("dispatch") as root:
        began = time.perf_counter()
        files = repo_files(tasks)
        log(f"building a repository of {len(files):,} files …")
        repo = make_repo(root / "repo", files)
        build_repo_s = time.perf_counter() - began
        env = open_env()
        try:
            run = frozen_run(env, repo, Sizes(tasks, 0, REQUIREMENTS, MODULES, 0))
            register_graph(env, run, independent_tasks(tasks))
            base = env.run_row(run)["base_sha"]
            order = [f"t{i:03d}" for i in range(tasks)]
            render_only = [order.pop() for _ in range(repetitions)]
            os.sync()
            cold_s, _ = timed_dispatch(env, run, order.pop(0))
            for index in range(WARMUP - 1):
                timed_dispatch(env, run, order.pop(0))
                bare_worktree(repo, root, 1000 + index, base)
            bare_s: list[float] = []
            dispatch_s: list[float] = []
            phases: list[dict[str, float]] = []
            envelope_s: list[float] = []
            for rep in range(repetitions):
                task = order.pop(0)
                steps = ["bare", "dispatch"] if rep % 2 == 0 else ["dispatch", "bare"]
                for step in steps:
                    os.sync()
                    if step == "bare":
                        bare_s.append(bare_worktree(repo, root, rep, base))
                    else:
                        elapsed, phase = timed_dispatch(env, run, task)
                        dispatch_s.append(elapsed)
                        phases.append(phase)
                t0 = time.perf_counter()
                render_envelope(env, run, render_only.pop())
                envelope_s.append(time.perf_counter() - t0)
                log(f"rep {rep + 1}/{repetitions}: bare {bare_s[-1]:.3f} s, dispatch {dispatch_s[-1]:.3f} s")
            profile = cProfile.Profile()
            profiled_total = 0.0
            for _ in range(profiled):
                task = order.pop(0)
                os.sync()
                t0 = time.perf_counter()
                profile.runcall(dispatch_task, env, run, task)
                profiled_total += time.perf_counter() - t0
            running = int(
                env.store.scalar("SELECT COUNT(*) FROM tasks WHERE run_id = ? AND status = 'in_progress'", (run,))
            )
        finally:
            env.close()
    bare_p50 = quantile(bare_s, 0.5)
    dispatch_p50 = quantile(dispatch_s, 0.5)
    ratio = dispatch_p50 / bare_p50
    breakdown: dict[str, Any] = {}
    for name in ("lookups", "ledger_transaction", "worktree", "envelope_and_result"):
        values = [p[name] for p in phases]
        breakdown[f"{name}_p50_ms"] = round(quantile(values, 0.5) * 1000, 3)
    breakdown["statements_in_transaction_p50"] = quantile([p["statements_in_transaction"] for p in phases], 0.5)
    breakdown["worktree_minus_bare_p50_ms"] = round((breakdown["worktree_p50_ms"] / 1000 - bare_p50) * 1000, 3)
    breakdown["extra_over_bare_p50_ms"] = round((dispatch_p50 - bare_p50) * 1000, 3)
    breakdown["render_envelope_alone"] = summary_ms(envelope_s)
    emit(
        {
            "benchmark": "dispatch_vs_worktree_add",
            "quick": args.quick,
            "repository": {
                "files": len(files),
                "bytes": sum(len(text) for text in files.values()),
                "build_s": round(build_repo_s, 2),
            },
            "repetitions": repetitions,
            "tasks_running_after": running,
            "git": subprocess.run(["git", "--version"], capture_output=True, text=True, check=True).stdout.strip(),
            "python": sys.version.split()[0],
            "bare_git_worktree_add": summary_ms(bare_s),
            "dispatch_task": summary_ms(dispatch_s),
            "first_dispatch_ms": round(cold_s * 1000, 3),
            "ratio_of_medians": round(ratio, 3),
            "paired_ratio_p50": round(quantile([d / b for d, b in zip(dispatch_s, bare_s, strict=True)], 0.5), 3),
            "dispatch_breakdown": breakdown,
            "profile": profile_summary(profile, profiled, profiled_total),
            "target": f"median dispatch_task ≤ {TARGET_RATIO} × median bare git worktree add",
            "meets_target": ratio <= TARGET_RATIO,
        }
    )


if __name__ == "__main__":
    main()
