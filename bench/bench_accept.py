"""``accept_task`` against a bare ``git merge --no-ff`` + ``git tag -a`` (issue 11 §4: ≤ 2×).

One repository (a few hundred small files) with a run of many independent tasks, each scoped to
its own new file; a policy with one quick check and no review, so the gates hold once the check
has run. Each repetition, untimed: dispatch the next task, commit its file, run its check (the
job in process, as a worker would). Then, interleaved in alternating order:

- accept: the domain call ``accept_task(env, run, task)`` — gates on the head, the merge into the
  integration branch, the annotated checkpoint tag, the ledger writes, the worktree's removal;
- bare: in a scratch clone of the same repository, ``git merge --no-ff -m <msg> <branch>`` of a
  branch holding the same kind of one-file commit, then ``git tag -a -m <msg> <name>``.

accept runs in two states: ``cold`` (nothing about the head is known in the process: the gates run
the diff and the merge check themselves) and ``precomputed`` (the head's git facts were computed
when its branch moved, as the server's worker does, so the gates find them in the process's caches).
Each state is interleaved with its own bare runs. The git processes each accept started are counted.

First of a process (issue 11 §2: the first ``accept_task`` ≤ 1.2× a later one): fresh Python
processes, each set up as ``planegate serve`` is (a job worker in a thread, which loads the secret
scanner in the background on its first pass), prepare two tasks through that worker (dispatch,
commit, checks) and accept them one after the other; the first accept against the second, per
process. Interleaved with fresh processes that run no worker (checks run in process), the
baseline: there the first accept loads the secret scanner itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    GIT_IDENTITY,
    PROJECT_DIR,
    emit,
    git,
    interleave,
    log,
    make_repo,
    parser,
    quantile,
    scratch,
    summary_ms,
)
from _workload import open_env

from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.env import Env
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.execution.jobs import DONE, Worker, claim, job_row, run_job
from planegate.tools.gates import facts
from planegate.tools.gates.accept import accept_task
from planegate.tools.models import Module, Requirement, TaskSpec

TARGET_RATIO = 2.0
TARGET_FIRST_RATIO = 1.2
JOB_TIMEOUT_S = 60.0
WARMUP = 2
FILES = 300
WORKER = "bench-worker"
POLICY = """require_review = false
require_red_green = false
max_parallel = 1000

[checks]
noop = ["python3", "-c", "pass"]
"""


def repo_files() -> dict[str, str]:
    files = {"README.md": "# accept bench\n", ".planegate/policy.toml": POLICY}
    for index in range(FILES):
        text = f"VALUE_{index} = {index}\n\n\ndef get_{index}():\n    return VALUE_{index}\n"
        files[f"lib/m{index % 12}/f{index}.py"] = text
    return files


def new_module(index: int) -> str:
    return f'"""Task {index}."""\n\n\ndef part_{index}(x):\n    return x * {index}\n'


class Accepts:
    """Ready-to-accept tasks of one run, made one at a time."""

    def __init__(self, env: Env, repo: Path, count: int) -> None:
        self.env = env
        self.run = start_run(env, str(repo), "Benchmark accept_task").run
        freeze_requirements(env, self.run, [Requirement(id="R1", statement="parts", acceptance_criteria=["parts"])])
        freeze_architecture(env, self.run, [Module(name="parts", owns=["src/**"])], [])
        register_graph(
            env,
            self.run,
            [
                TaskSpec(
                    id=f"t{i:03d}", title=f"Part {i}", goal=f"Add part {i}", scope=[f"src/p{i}.py"], requirements=["R1"]
                )
                for i in range(count)
            ],
        )
        self.next = 0
        self.git_processes: list[int] = []

    def ready(self, worker: bool = False) -> tuple[str, str]:
        """Dispatch the next task, commit its file and run its check (here, or by the ``worker``
        running in this process): (task, head)."""
        index = self.next
        self.next += 1
        task = f"t{index:03d}"
        worktree = Path(dispatch_task(self.env, self.run, task).worktree)
        (worktree / "src").mkdir(exist_ok=True)
        (worktree / "src" / f"p{index}.py").write_text(new_module(index))
        git(worktree, "add", "-A")
        git(worktree, "commit", "-q", "-m", f"part {index}")
        head = git(worktree, "rev-parse", "HEAD")
        job = start_checks(self.env, self.run, task)
        if worker:
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while (status := job_row(self.env, job)["status"]) not in DONE and time.monotonic() < deadline:
                time.sleep(0.01)
            if status != "succeeded":
                raise RuntimeError(f"the check of {task} ended {status} (or did not end in {JOB_TIMEOUT_S} s)")
            return task, head
        row = claim(self.env, WORKER, 60)
        if row is None or row["id"] != job or run_job(self.env, row, WORKER, 60) != "succeeded":
            raise RuntimeError(f"the check of {task} did not pass")
        return task, head

    def accept(self, precompute: bool) -> float:
        task, head = self.ready()
        if precompute:
            facts.refresh_task(self.env, self.env.run_row(self.run), self.env.task_row(self.run, task))
        else:
            facts.forget_cached()
        os.sync()
        counter = GitCounter()
        began = time.perf_counter()
        result = accept_task(self.env, self.run, task)
        elapsed = time.perf_counter() - began
        self.git_processes.append(counter.stop())
        if git(Path(self.env.run_row(self.run)["repo"]), "rev-parse", f"{result.merge_sha}^2") != head:
            raise RuntimeError(f"{task}: the merge does not have the head as its second parent")
        return elapsed


class GitCounter:
    """Counts the git processes this process starts until ``stop``."""

    def __init__(self) -> None:
        self.count = 0
        self._original = subprocess.Popen.__init__
        original = self._original
        outer = self

        def counted(popen: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
            if isinstance(args, list) and args[:1] == ["git"]:
                outer.count += 1
            original(popen, args, *rest, **kwargs)

        subprocess.Popen.__init__ = counted  # type: ignore[method-assign]

    def stop(self) -> int:
        subprocess.Popen.__init__ = self._original  # type: ignore[method-assign]
        return self.count


class Bare:
    """``git merge --no-ff`` + ``git tag -a`` in a clone, of one-file branches like the tasks'."""

    def __init__(self, repo: Path, clone: Path) -> None:
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, timeout=120)
        for key, value in GIT_IDENTITY.items():
            git(clone, "config", key, value)
        self.clone = clone
        self.next = 0

    def merge(self) -> float:
        index = self.next
        self.next += 1
        branch = f"feature-{index}"
        git(self.clone, "checkout", "-q", "-b", branch)
        (self.clone / "src").mkdir(exist_ok=True)
        (self.clone / "src" / f"b{index}.py").write_text(new_module(index))
        git(self.clone, "add", "-A")
        git(self.clone, "commit", "-q", "-m", f"part {index}")
        git(self.clone, "checkout", "-q", "main")
        os.sync()
        environ = {**os.environ, "GIT_EDITOR": "true"}
        began = time.perf_counter()
        for argv in (
            ["git", "merge", "--no-ff", "-q", "-m", f"merge {branch}", branch],
            ["git", "tag", "-a", "-m", f"checkpoint {index}", f"cp-{index}"],
        ):
            subprocess.run(argv, cwd=self.clone, env=environ, check=True, capture_output=True, timeout=120)
        return time.perf_counter() - began


def first_of_process(repo: Path, with_worker: bool) -> dict[str, float]:
    """One fresh process (``--first-of-process``): two tasks prepared, then accepted in turn."""
    mode = "worker" if with_worker else "none"
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / "bench_accept.py"), "--first-of-process", str(repo), mode],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=PROJECT_DIR,
        env=dict(os.environ),
    )
    return json.loads(done.stdout)


def first_of_process_child(repo: Path, mode: str) -> None:
    import anyio.from_thread

    env = open_env()
    try:
        accepts = Accepts(env, repo, 2)
        with anyio.from_thread.start_blocking_portal() as portal:
            future = None
            if mode == "worker":  # as planegate serve runs its worker, once initialize is answered
                future = portal.start_task_soon(Worker(env.as_actor("planegate:worker")).run)
            try:
                tasks = [accepts.ready(worker=mode == "worker") for _ in range(2)]
                times = []
                for task, _ in tasks:
                    began = time.perf_counter()
                    accept_task(env, accepts.run, task)
                    times.append(time.perf_counter() - began)
            finally:
                if future is not None:
                    future.cancel()
    finally:
        env.close()
    print(json.dumps({"first_s": times[0], "later_s": times[1]}))


def ratios(accepts: list[float], bares: list[float]) -> dict[str, Any]:
    per_rep = sorted(a / b for a, b in zip(accepts, bares, strict=True))
    return {
        "accept": summary_ms(accepts),
        "bare_merge_and_tag": summary_ms(bares),
        "ratio_of_medians": round(quantile(accepts, 0.5) / quantile(bares, 0.5), 3),
        "per_repetition_ratio": {
            "min": round(per_rep[0], 3),
            "median": round(quantile(per_rep, 0.5), 3),
            "max": round(per_rep[-1], 3),
        },
    }


def first_summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    firsts = [r["first_s"] for r in runs]
    laters = [r["later_s"] for r in runs]
    per_process = sorted(r["first_s"] / r["later_s"] for r in runs)
    return {
        "first_accept": summary_ms(firsts),
        "later_accept": summary_ms(laters),
        "ratio_of_medians": round(quantile(firsts, 0.5) / quantile(laters, 0.5), 3),
        "per_process_ratio": {
            "min": round(per_process[0], 3),
            "median": round(quantile(per_process, 0.5), 3),
            "max": round(per_process[-1], 3),
        },
    }


def main() -> None:
    if sys.argv[1:2] == ["--first-of-process"]:
        first_of_process_child(Path(sys.argv[2]), sys.argv[3])
        return
    args = parser(__doc__ or "", quick_help="5 repetitions per state and 4 processes per side").parse_args()
    repetitions = 5 if args.quick else 20
    processes_per_side = 4 if args.quick else 10
    with scratch("accept") as root:
        repo = make_repo(root / "repo", repo_files())
        env = open_env()
        try:
            accepts = Accepts(env, repo, 2 * (repetitions + WARMUP))
            bare = Bare(repo, root / "clone")
            results: dict[str, Any] = {}
            processes: dict[str, list[int]] = {}
            for state, precompute in (("cold", False), ("precomputed", True)):
                log(f"{state}: {repetitions} interleaved repetitions …")
                accepts.git_processes = []
                timed, bares = interleave(lambda p=precompute: accepts.accept(p), bare.merge, repetitions, WARMUP)
                results[state] = ratios(timed, bares)
                processes[state] = accepts.git_processes[WARMUP:]
                log(f"  {state}: {results[state]['ratio_of_medians']}×")
        finally:
            env.close()
        log(f"first accept of a process: {processes_per_side} processes per side, interleaved …")
        fresh: dict[str, list[dict[str, float]]] = {"worker": [], "none": []}
        for index in range(2 * processes_per_side):
            with_worker = index % 2 == 0
            fresh["worker" if with_worker else "none"].append(first_of_process(repo, with_worker))
    first = first_summary(fresh["worker"])
    worst = max(results[state]["ratio_of_medians"] for state in results)
    emit(
        {
            "benchmark": "accept_task",
            "quick": args.quick,
            "repetitions": repetitions,
            "repository_files": FILES + 2,
            **results,
            "git_processes_per_accept": {
                state: {"min": min(counts), "max": max(counts)} for state, counts in processes.items()
            },
            "first_of_process": first,
            "first_of_process_baseline_no_worker": first_summary(fresh["none"]),
            "targets": {
                "merge": f"accept_task median ≤ {TARGET_RATIO}× bare git merge --no-ff + git tag -a (both states)",
                "first": f"first accept_task of a process (median) ≤ {TARGET_FIRST_RATIO}× a later one",
            },
            "meets_each": {"merge": worst <= TARGET_RATIO, "first": first["ratio_of_medians"] <= TARGET_FIRST_RATIO},
            "meets_target": worst <= TARGET_RATIO and first["ratio_of_medians"] <= TARGET_FIRST_RATIO,
        }
    )


if __name__ == "__main__":
    main()
