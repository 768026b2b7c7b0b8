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
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import GIT_IDENTITY, emit, git, log, make_repo, parser, quantile, scratch, summary_ms
from _workload import open_env

from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.env import Env
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.execution.jobs import claim, run_job
from planegate.tools.gates import facts
from planegate.tools.gates.accept import accept_task
from planegate.tools.models import Module, Requirement, TaskSpec

TARGET_RATIO = 2.0
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

    def ready(self) -> tuple[str, str]:
        """Dispatch the next task, commit its file and run its check: (task, head)."""
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


def interleave(first: Callable[[], float], second: Callable[[], float], repetitions: int) -> tuple[list[float], ...]:
    a: list[float] = []
    b: list[float] = []
    for _ in range(WARMUP):
        first()
        second()
    for rep in range(repetitions):
        if rep % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    return a, b


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


def main() -> None:
    args = parser(__doc__ or "", quick_help="5 repetitions per state instead of 20").parse_args()
    repetitions = 5 if args.quick else 20
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
                timed, bares = interleave(lambda p=precompute: accepts.accept(p), bare.merge, repetitions)
                results[state] = ratios(timed, bares)
                processes[state] = accepts.git_processes[WARMUP:]
                log(f"  {state}: {results[state]['ratio_of_medians']}×")
        finally:
            env.close()
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
            "target": f"accept_task median ≤ {TARGET_RATIO}× bare git merge --no-ff + git tag -a (both states)",
            "meets_target": worst <= TARGET_RATIO,
        }
    )


if __name__ == "__main__":
    main()
