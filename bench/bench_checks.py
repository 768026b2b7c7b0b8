"""What ``run_checks`` adds to the check command it runs (no target in DESIGN §8; reported in ms).

A small Python repository (a module and a dozen tests) is planned with one task, dispatched, and a
change committed in its worktree. Its policy has two checks: ``noop`` (``python -c "pass"``: near
zero work, so the overhead dominates) and ``pytest`` (``python -m pytest -q`` on the tests). For
each check, three paths are timed:

- command: the argv alone, ``subprocess.run`` in the worktree with the environment a check gets;
- domain: ``start_checks`` + ``claim`` + ``run_job`` + ``checks_result`` in this process (no MCP);
- mcp: the ``run_checks`` tool through ``mcp.Client(build_server(Settings(...), worker_delay_s=0))``
  in memory, from the call until its result returns, the server's own worker running the job.

command and domain are interleaved (alternating order) with no server running (its worker would
race this process for the domain path's jobs); then mcp is interleaved with command while the
server runs. Each path gets two untimed warm-up calls. A job's ledger timestamps (created,
started, finished; ms resolution) split domain and mcp into submit → pickup → run → return, and a
few more domain runs go under cProfile for the functions that take the time.
"""

from __future__ import annotations

import cProfile
import datetime as dt
import json
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from _common import PROJECT_DIR, emit, git, interleave, log, make_repo, parser, quantile, scratch, summary_ms
from _workload import open_env
from mcp import Client

from planegate.server.app import build_server
from planegate.tools.config import Settings
from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.env import Env
from planegate.tools.execution.checkrun import check_env
from planegate.tools.execution.checks import checks_result, start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.execution.jobs import claim, run_job
from planegate.tools.models import Module, Requirement, TaskSpec

WORKER = "bench-worker"
LEASE_S = 60.0
WARMUP = 2
TIMEOUT_S = 120.0
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
CHECKS = {"noop": [sys.executable, "-c", "pass"], "pytest": PYTEST}

CALC = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n"


def test_module(index: int) -> str:
    return (
        "from src.calc import add, mul\n\n\n"
        f"def test_add_{index}():\n    assert add({index}, 1) == {index + 1}\n\n\n"
        f"def test_mul_{index}():\n    assert mul({index}, 2) == {index * 2}\n"
    )


def repo_files() -> dict[str, str]:
    checks = "\n".join(f"{name} = {json.dumps(argv)}" for name, argv in CHECKS.items())
    files = {
        "README.md": "# calc\n",
        "src/__init__.py": "",
        "src/calc.py": CALC,
        "tests/__init__.py": "",
        ".planegate/policy.toml": f"require_review = false\nrequire_red_green = false\n\n[checks]\n{checks}\n",
    }
    files.update({f"tests/test_calc_{i}.py": test_module(i) for i in range(6)})
    return files


def planned_task(env: Env, repo: Path) -> tuple[str, str, Path]:
    """A run with one dispatched task whose worktree holds one committed change."""
    run = start_run(env, str(repo), "Benchmark run_checks").run
    freeze_requirements(env, run, [Requirement(id="R1", statement="calc adds", acceptance_criteria=["add works"])])
    freeze_architecture(env, run, [Module(name="calc", owns=["src/**", "tests/**"])], [])
    task = "calc"
    register_graph(
        env, run, [TaskSpec(id=task, title="Calc", goal="Grow calc", scope=["src/**", "tests/**"], requirements=["R1"])]
    )
    worktree = Path(dispatch_task(env, run, task).worktree)
    (worktree / "src" / "calc.py").write_text(CALC + "\n\ndef sub(a, b):\n    return a - b\n")
    git(worktree, "commit", "-q", "-am", "sub")
    return run, task, worktree


def epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def job_phases(env: Env, job: int, called: float, returned: float) -> dict[str, float]:
    """call → queued → started → finished → returned, from the job row (wall clock, ms resolution)."""
    row = env.store.one("SELECT created_at, started_at, finished_at FROM jobs WHERE id = ?", (job,))
    assert row is not None
    created, started, finished = (epoch(row[k]) for k in ("created_at", "started_at", "finished_at"))
    return {
        "submit": created - called,
        "pickup": started - created,
        "run": finished - started,
        "return": returned - finished,
    }


class Paths:
    """The three ways of running one check, each returning its seconds."""

    def __init__(self, env: Env, run: str, task: str, worktree: Path, name: str) -> None:
        self.env, self.run, self.task, self.worktree, self.name = env, run, task, worktree, name
        self.argv = CHECKS[name]
        self.check_env = check_env(env.policy(env.run_row(run)), run, task)
        self.domain_steps: list[dict[str, float]] = []
        self.domain_phases: list[dict[str, float]] = []
        self.mcp_phases: list[dict[str, float]] = []

    def command(self) -> float:
        began = time.perf_counter()
        done = subprocess.run(
            self.argv, cwd=self.worktree, env=self.check_env, capture_output=True, timeout=TIMEOUT_S, check=False
        )
        elapsed = time.perf_counter() - began
        if done.returncode != 0:
            raise RuntimeError(f"{self.name} failed on its own: {done.stdout[-500:]!r} {done.stderr[-500:]!r}")
        return elapsed

    def domain(self) -> float:
        wall = time.time()
        t0 = time.perf_counter()
        job = start_checks(self.env, self.run, self.task, [self.name])
        t1 = time.perf_counter()
        row = claim(self.env, WORKER, LEASE_S)
        t2 = time.perf_counter()
        if row is None or row["id"] != job:
            raise RuntimeError(f"claim took {row and row['id']} instead of job {job}")
        status = run_job(self.env, row, WORKER, LEASE_S)
        t3 = time.perf_counter()
        result = checks_result(self.env, job)
        t4 = time.perf_counter()
        if status != "succeeded" or result.all_passed is not True:
            raise RuntimeError(f"{self.name} job {job}: {status}, {result.model_dump()}")
        self.domain_steps.append(
            {"start_checks": t1 - t0, "claim": t2 - t1, "run_job": t3 - t2, "checks_result": t4 - t3}
        )
        self.domain_phases.append(job_phases(self.env, job, wall, wall + (t3 - t0)))
        return t4 - t0

    async def mcp(self, client: Client) -> float:
        wall = time.time()
        began = time.perf_counter()
        result = await client.call_tool("run_checks", {"run": self.run, "task": self.task, "checks": [self.name]})
        elapsed = time.perf_counter() - began
        content = dict(result.structured_content or {})
        if result.is_error or content.get("state") != "succeeded" or content.get("all_passed") is not True:
            text = " ".join(getattr(block, "text", "") for block in result.content)
            raise RuntimeError(f"run_checks({self.name}) did not pass: {content or text}")
        self.mcp_phases.append(job_phases(self.env, int(content["job"]), wall, wall + elapsed))
        return elapsed


async def mcp_phase(paths: Paths, repetitions: int) -> tuple[list[float], list[float]]:
    server = build_server(Settings(home=paths.env.settings.home, actor="agent:bench"), worker_delay_s=0)
    command_s: list[float] = []
    mcp_s: list[float] = []
    try:
        with anyio.fail_after(TIMEOUT_S * (repetitions + WARMUP) * 2):
            async with Client(server) as client:
                for _ in range(WARMUP):
                    await paths.mcp(client)
                    await anyio.to_thread.run_sync(paths.command)
                for rep in range(repetitions):
                    if rep % 2 == 0:
                        mcp_s.append(await paths.mcp(client))
                        command_s.append(await anyio.to_thread.run_sync(paths.command))
                    else:
                        command_s.append(await anyio.to_thread.run_sync(paths.command))
                        mcp_s.append(await paths.mcp(client))
    finally:
        server.env_holder.close()
    del paths.mcp_phases[:WARMUP]
    return command_s, mcp_s


def p50_ms(values: list[float]) -> float:
    return round(quantile(values, 0.5) * 1000, 3)


def phase_p50_ms(rows: list[dict[str, float]]) -> dict[str, float]:
    return {f"{key}_p50_ms": p50_ms([r[key] for r in rows]) for key in rows[0]} if rows else {}


def is_project(filename: str) -> bool:
    return filename.startswith(str(PROJECT_DIR)) and "/.venv/" not in filename


def profile_domain(paths: Paths, jobs: int) -> dict[str, Any]:
    """cProfile over ``jobs`` domain-path runs: planegate's functions by cumulative time, and git."""
    profile = cProfile.Profile()
    began = time.perf_counter()
    for _ in range(jobs):
        profile.runcall(paths.domain)
    total = time.perf_counter() - began
    stats: dict[Any, Any] = pstats.Stats(profile).stats
    own = [
        (code, nc, tt, ct) for code, (_, nc, tt, ct, _) in stats.items() if is_project(code[0]) and code[2] != "domain"
    ]
    own.sort(key=lambda r: -r[3])

    def entry(code: Any, ncalls: int, seconds: float) -> dict[str, Any]:
        name = f"{Path(code[0]).relative_to(PROJECT_DIR)}:{code[1]}({code[2]})"
        return {
            "function": name,
            "ms_per_job": round(seconds / jobs * 1000, 3),
            "share": round(seconds / total, 3),
            "calls_per_job": round(ncalls / jobs, 1),
        }

    def named(suffix: str, function: str) -> tuple[int, float]:
        for code, (_, nc, _, ct, _) in stats.items():
            if code[0].endswith(suffix) and code[2] == function:
                return nc, ct
        return 0, 0.0

    git_calls, git_s = named("tools/gitrepo.py", "_run_bytes")
    sleep_calls = sum(
        nc
        for code, (_, nc, _, _, callers) in stats.items()
        if code[2] == "<built-in method time.sleep>"
        for caller in callers
        if caller[2] == "_wait_exited"
    )
    scan_calls, scan_s = named("tools/procs.py", "_group_running")
    _, wait_s = named("tools/procs.py", "_wait_sliced")
    return {
        "jobs": jobs,
        "profiled_ms_per_job": round(total / jobs * 1000, 3),
        "git_subprocesses_per_job": round(git_calls / jobs, 1),
        "git_ms_per_job": round(git_s / jobs * 1000, 3),
        "proc_scans_per_job": round(scan_calls / jobs, 1),
        "proc_scan_ms_per_job": round(scan_s / jobs * 1000, 3),
        "exit_poll_sleeps_per_job": round(sleep_calls / jobs, 1),
        "exit_wait_ms_per_job": round(wait_s / jobs * 1000, 3),
        "top_cumulative": [entry(code, nc, ct) for code, nc, _, ct in own[:20]],
    }


def measure(paths: Paths, repetitions: int, profiled: int) -> dict[str, Any]:
    name = paths.name
    log(f"{name}: command vs domain …")
    command_s, domain_s = interleave(paths.command, paths.domain, repetitions, WARMUP)
    del paths.domain_steps[:WARMUP]
    del paths.domain_phases[:WARMUP]
    steps = {f"{key}_p50_ms": p50_ms([s[key] for s in paths.domain_steps]) for key in paths.domain_steps[0]}
    log(f"{name}: command {p50_ms(command_s)} ms, domain {p50_ms(domain_s)} ms; mcp …")
    command2_s, mcp_s = anyio.run(mcp_phase, paths, repetitions)
    log(f"{name}: command {p50_ms(command2_s)} ms, mcp {p50_ms(mcp_s)} ms; profiling …")
    profile = profile_domain(paths, profiled)
    profile["exit_wait_minus_command_p50_ms"] = round(profile.pop("exit_wait_ms_per_job") - p50_ms(command_s), 3)
    return {
        "argv": [Path(a).name if a == sys.executable else a for a in paths.argv],
        "command": summary_ms(command_s),
        "domain": summary_ms(domain_s),
        "command_during_mcp": summary_ms(command2_s),
        "mcp": summary_ms(mcp_s),
        "domain_overhead_p50_ms": round(p50_ms(domain_s) - p50_ms(command_s), 3),
        "mcp_overhead_p50_ms": round(p50_ms(mcp_s) - p50_ms(command2_s), 3),
        "mcp_minus_domain_p50_ms": round(p50_ms(mcp_s) - p50_ms(domain_s), 3),
        "domain_steps": steps,
        "domain_job_phases": phase_p50_ms(paths.domain_phases),
        "mcp_job_phases": phase_p50_ms(paths.mcp_phases),
        "profile_domain": profile,
    }


def main() -> None:
    args = parser(__doc__ or "", quick_help="5 repetitions per path, 2 profiled jobs").parse_args()
    repetitions = 5 if args.quick else 20
    profiled = 2 if args.quick else 5
    results: dict[str, Any] = {}
    with scratch("checks") as root:
        repo = make_repo(root / "repo", repo_files())
        env = open_env("agent:bench")
        try:
            run, task, worktree = planned_task(env, repo)
            for name in CHECKS:
                results[name] = measure(Paths(env, run, task, worktree, name), repetitions, profiled)
            jobs = env.store.rows("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        finally:
            env.close()
    emit(
        {
            "benchmark": "run_checks_overhead",
            "quick": args.quick,
            "repetitions": repetitions,
            "python": sys.version.split()[0],
            "checks": results,
            "jobs_by_status": {row["status"]: row["n"] for row in jobs},
            "target": "none in DESIGN §8; reported: overhead of the domain and MCP paths over the command, in ms",
            "meets_target": None,
        }
    )


if __name__ == "__main__":
    main()
