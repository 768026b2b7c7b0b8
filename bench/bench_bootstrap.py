"""The worktree bootstrap: what ``dispatch_task`` adds to a setup step, and what reusing a scratch
worktree's bootstrap saves across the tasks of one base.

1. **dispatch with setup vs by hand.** A small Python repository whose policy has ``[worktree]
   setup = [["python3", "-m", "venv", ".venv"], [".venv/bin/python", "-m", "pip", "install",
   "--no-index", "--find-links", <wheels>, "pytest"]]`` (a real virtualenv and a real offline install
   from a local wheelhouse of pytest and its dependencies). Interleaved, alternating order:
   ``dispatch_task(env, run, task)`` (claim, worktree, bootstrap with its log kept as an artifact,
   envelope) against the same by hand: ``git worktree add -b`` then the two steps as subprocesses.
   Target: median ≤ 1.1 × by hand.
2. **scratch reuse.** Two repositories with that policy and three tasks each (one module each,
   a function and its test, so red→green runs the new test on the base): one with
   ``reuse_scratch = true``, one with ``false``. Each repetition commits a new base to both, plans
   a run, dispatches the three tasks and runs their checks in process one after another; the first
   task's checks bootstrap the base (the full base run and the red run, at once); the second and
   third tasks' checks are timed: with reuse their red run takes a bootstrapped worktree of the base
   (restored), without it each bootstraps a new one. Wall-clock min/median/max, ratio of medians,
   and the scratch bootstraps counted from the ledger.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import PROJECT_DIR, emit, git, log, make_repo, parser, scratch, summary_ms

from planegate.tools.config import Settings
from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.env import Env
from planegate.tools.execution.checks import checks_result, start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.execution.jobs import claim, run_job
from planegate.tools.execution.toolchain import process_env
from planegate.tools.models import Module, Requirement, TaskSpec
from planegate.tools.policy import parse_policy

sys.path.insert(0, str(PROJECT_DIR))
from tests.offline import wheelhouse

TARGET_RATIO = 1.1
MODULES = ("alpha", "beta", "gamma")


def policy(wheels: Path, reuse: bool, tasks: int) -> str:
    setup = [
        ["python3", "-m", "venv", ".venv"],
        [".venv/bin/python", "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels), "pytest"],
    ]
    return (
        f"require_review = false\nmax_parallel = {tasks + 5}\n\n[checks]\n"
        'test = ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider"]\n\n'
        f"[worktree]\nsetup = {json.dumps(setup)}\nreuse_scratch = {json.dumps(reuse)}\n"
    )


def repo_files(wheels: Path, reuse: bool, tasks: int) -> dict[str, str]:
    files = {
        ".gitignore": ".venv/\n__pycache__/\n",
        "README.md": "# bootstrap bench\n",
        ".planegate/policy.toml": policy(wheels, reuse, tasks),
        "src/__init__.py": "",
        "tests/__init__.py": "",
    }
    for name in MODULES:
        files[f"src/{name}.py"] = f"def {name}_one():\n    return 1\n"
        files[f"tests/test_{name}.py"] = (
            f"from src.{name} import {name}_one\n\n\ndef test_{name}_one():\n    assert {name}_one() == 1\n"
        )
    return files


def plan(env: Env, repo: Path, tasks: list[TaskSpec], modules: list[Module]) -> str:
    run = start_run(env, str(repo), "bootstrap bench").run
    freeze_requirements(env, run, [Requirement(id="R1", statement="grow", acceptance_criteria=["tests pass"])])
    freeze_architecture(env, run, modules, [])
    register_graph(env, run, tasks)
    return run


def drain(env: Env) -> None:
    while (job := claim(env, "bench-worker", 60)) is not None:
        run_job(env, job, "bench-worker", 60)


def by_hand(repo: Path, root: Path, index: int, base: str, steps: list[list[str]], environ: dict[str, str]) -> float:
    path = root / "by-hand" / f"w{index}"
    path.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "-q", "-b", f"bench/hand-{index}", str(path), base],
        check=True,
        capture_output=True,
        timeout=300,
    )
    for step in steps:
        subprocess.run(step, cwd=path, env=environ, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - began


def dispatch_vs_hand(root: Path, wheels: Path, repetitions: int) -> dict[str, Any]:
    tasks = [
        TaskSpec(id=f"t{i:02d}", title=f"t{i}", goal="grow", scope=[f"src/part_{i}.py"], requirements=["R1"])
        for i in range(repetitions + 1)
    ]
    repo = make_repo(root / "dispatch-repo", repo_files(wheels, True, len(tasks)))
    env = Env.open(Settings.from_env(actor="user:bench"))
    try:
        run = plan(env, repo, tasks, [Module(name="src", owns=["src/**", "tests/**"])])
        base = env.run_row(run)["base_sha"]
        steps = parse_policy((repo / ".planegate/policy.toml").read_text()).worktree.setup
        environ = process_env(env.policy(env.run_row(run)), run, None, None, None, check=False)
        log("dispatch vs by hand: warm-up")
        dispatch_task(env, run, tasks[0].id)
        by_hand(repo, root, 0, base, steps, environ)
        dispatched: list[float] = []
        hand: list[float] = []
        for rep in range(repetitions):
            order = ["dispatch", "hand"] if rep % 2 == 0 else ["hand", "dispatch"]
            for side in order:
                os.sync()
                if side == "dispatch":
                    began = time.perf_counter()
                    result = dispatch_task(env, run, tasks[rep + 1].id)
                    dispatched.append(time.perf_counter() - began)
                    assert result.bootstrap and "2 setup step(s)" in result.bootstrap, result.bootstrap
                else:
                    hand.append(by_hand(repo, root, rep + 1, base, steps, environ))
            log(f"  {rep + 1}/{repetitions}: dispatch {dispatched[-1]:.2f} s, by hand {hand[-1]:.2f} s")
    finally:
        env.close()
    ratio = statistics.median(dispatched) / statistics.median(hand)
    return {
        "setup": steps,
        "repetitions": repetitions,
        "dispatch_task": summary_ms(dispatched),
        "by_hand": summary_ms(hand),
        "ratio_of_medians": round(ratio, 3),
        "per_repetition_ratios": [round(d / h, 3) for d, h in zip(dispatched, hand, strict=True)],
        "overhead_ms_median": round((statistics.median(dispatched) - statistics.median(hand)) * 1000, 1),
        "target": f"median ≤ {TARGET_RATIO} × by hand",
        "meets_target": ratio <= TARGET_RATIO,
    }


def checks_s(env: Env, run: str, task: str) -> float:
    began = time.perf_counter()
    job = start_checks(env, run, task)
    drain(env)
    elapsed = time.perf_counter() - began
    result = checks_result(env, job)
    assert result.all_passed, [(line.check, line.summary) for line in result.results]
    return elapsed


def scratch_events(env: Env, run: str) -> int:
    rows = env.store.rows("SELECT payload FROM events WHERE run_id = ? AND kind = 'worktree.bootstrapped'", (run,))
    return sum(1 for r in rows if json.loads(r["payload"])["where"].startswith("scratch"))


def one_reuse_round(env: Env, repo: Path, rep: int) -> tuple[float, int]:
    """A new base, three tasks, their checks in turn; seconds for the second and third tasks' checks."""
    (repo / "README.md").write_text(f"# bootstrap bench, round {rep}\n")
    git(repo, "commit", "-q", "-am", f"round {rep}")
    tasks = [
        TaskSpec(id=name, title=name, goal=f"grow {name}", scope=[f"src/{name}.py"], requirements=["R1"])
        for name in MODULES
    ]
    modules = [Module(name=name, owns=[f"src/{name}.py"]) for name in MODULES]
    run = plan(env, repo, tasks, modules)
    for name in MODULES:
        worktree = Path(dispatch_task(env, run, name).worktree)
        (worktree / f"src/{name}.py").write_text(
            f"def {name}_one():\n    return 1\n\n\ndef {name}_two():\n    return 2\n"
        )
        (worktree / f"tests/test_{name}_two.py").write_text(
            f"from src.{name} import {name}_two\n\n\ndef test_{name}_two():\n    assert {name}_two() == 2\n"
        )
        git(worktree, "add", "-A")
        git(worktree, "commit", "-q", "-m", f"{name}_two")
    checks_s(env, run, MODULES[0])
    later = checks_s(env, run, MODULES[1]) + checks_s(env, run, MODULES[2])
    return later, scratch_events(env, run)


def scratch_reuse(root: Path, wheels: Path, repetitions: int) -> dict[str, Any]:
    repos = {reuse: make_repo(root / f"reuse-{reuse}", repo_files(wheels, reuse, 3)) for reuse in (True, False)}
    env = Env.open(Settings.from_env(actor="user:bench"))
    times: dict[bool, list[float]] = {True: [], False: []}
    bootstraps: dict[bool, list[int]] = {True: [], False: []}
    try:
        for rep in range(repetitions):
            for reuse in (True, False) if rep % 2 == 0 else (False, True):
                seconds, count = one_reuse_round(env, repos[reuse], rep)
                times[reuse].append(seconds)
                bootstraps[reuse].append(count)
            log(
                f"  {rep + 1}/{repetitions}: tasks 2+3 checks {times[True][-1]:.1f} s with reuse, "
                f"{times[False][-1]:.1f} s without"
            )
    finally:
        env.close()
    return {
        "repetitions": repetitions,
        "tasks_2_and_3_checks_with_reuse": summary_ms(times[True]),
        "tasks_2_and_3_checks_without_reuse": summary_ms(times[False]),
        "ratio_of_medians_without_over_with": round(
            statistics.median(times[False]) / statistics.median(times[True]), 3
        ),
        "scratch_bootstraps_per_run_with_reuse": bootstraps[True],
        "scratch_bootstraps_per_run_without_reuse": bootstraps[False],
    }


def main() -> None:
    args = parser(__doc__ or "", quick_help="3 repetitions of the dispatch comparison, 1 reuse round").parse_args()
    repetitions = 3 if args.quick else 10
    rounds = 1 if args.quick else 5
    with scratch("bootstrap") as root:
        wheels = wheelhouse(root / "wheels", ["pytest"])
        log(f"dispatch with setup vs by hand, {repetitions} interleaved repetitions …")
        first = dispatch_vs_hand(root, wheels, repetitions)
        log(f"scratch reuse across tasks of one base, {rounds} rounds …")
        second = scratch_reuse(root, wheels, rounds)
    emit(
        {
            "dispatch_with_setup_vs_by_hand": first,
            "scratch_reuse_across_tasks_of_one_base": second,
            "target": first["target"],
            "meets_target": first["meets_target"],
        }
    )


if __name__ == "__main__":
    main()
