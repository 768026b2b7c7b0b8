"""The planegate data the benchmarks drive: frozen runs, a random task DAG, and a big ledger.

Everything goes through planegate's own domain functions (``start_run``, the freezes,
``register_graph``) and ``Store.write()`` + ``Writer.event``, so the hash chain and the state
tables stay consistent and ``ledger verify`` passes on what is built here.

The 1,000,000-event ledger takes a while to build, so it is cached under
``~/.cache/planegate-bench/`` (``$PLANEGATE_BENCH_CACHE``) keyed by a hash of the ledger code
and these generators; a cached file is copied into the scratch home and verified before use.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, CACHE_DIR, log, make_repo

from planegate.store import Store, now_iso, verify_ledger
from planegate.tools.config import Settings
from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, set_stage, start_run
from planegate.tools.env import Env
from planegate.tools.models import GraphResult, Module, Requirement, TaskSpec

SEED = 20240607
LEDGER_DATA_VERSION = "2"  # 2: active tasks have branches with real commits
ACTIVE_TASKS = 8


@dataclass(frozen=True)
class Sizes:
    tasks: int
    edges: int
    requirements: int
    modules: int
    events: int


FULL = Sizes(tasks=5_000, edges=10_000, requirements=50, modules=50, events=1_000_000)
QUICK = Sizes(tasks=500, edges=1_000, requirements=20, modules=20, events=50_000)


def sizes_for(quick: bool) -> Sizes:
    return QUICK if quick else FULL


def open_env(actor: str = "user:bench") -> Env:
    """An ``Env`` on ``$PLANEGATE_HOME`` (set by ``_common.scratch``)."""
    return Env.open(Settings.from_env(actor=actor))


def requirements(count: int) -> list[Requirement]:
    return [
        Requirement(
            id=f"R{i}",
            statement=f"Requirement {i}: the service handles case {i} correctly.",
            acceptance_criteria=[f"case {i} returns the documented answer", f"case {i} is covered by a test"],
        )
        for i in range(1, count + 1)
    ]


def modules(count: int) -> list[Module]:
    return [Module(name=f"m{i}", owns=[f"src/m{i}/**"]) for i in range(count)]


def dag_edges(tasks: int, edges: int, seed: int = SEED) -> set[tuple[int, int]]:
    """Exactly ``edges`` distinct (task, earlier task) pairs, uniform over all such pairs."""
    if edges > tasks * (tasks - 1) // 2:
        raise ValueError(f"{tasks} tasks cannot carry {edges} distinct edges")
    rng = random.Random(seed)
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < edges:
        a, b = rng.randrange(tasks), rng.randrange(tasks)
        if a != b:
            chosen.add((max(a, b), min(a, b)))
    return chosen


def task_id(index: int) -> str:
    return f"t{index:05d}"


def dag_tasks(sizes: Sizes, seed: int = SEED) -> list[TaskSpec]:
    """``sizes.tasks`` tasks, each scoped to one file of one module and serving one requirement."""
    deps: list[list[str]] = [[] for _ in range(sizes.tasks)]
    for task, dep in sorted(dag_edges(sizes.tasks, sizes.edges, seed)):
        deps[task].append(task_id(dep))
    return [
        TaskSpec(
            id=task_id(i),
            title=f"Task {i}",
            goal=f"Implement part {i} of module m{i % sizes.modules}.",
            depends_on=deps[i],
            scope=[f"src/m{i % sizes.modules}/part_{i}.py"],
            requirements=[f"R{i % sizes.requirements + 1}"],
            acceptance=[f"part {i} has a passing test"],
        )
        for i in range(sizes.tasks)
    ]


def frozen_run(env: Env, repo: Path, sizes: Sizes) -> str:
    """A run with frozen requirements and architecture, ready for ``register_graph``."""
    run = start_run(env, str(repo), "Benchmark the task graph").run
    freeze_requirements(env, run, requirements(sizes.requirements))
    freeze_architecture(env, run, modules(sizes.modules), [])
    return run


def planned_run(env: Env, repo: Path, sizes: Sizes) -> tuple[str, GraphResult]:
    run = frozen_run(env, repo, sizes)
    return run, register_graph(env, run, dag_tasks(sizes))


def start_tasks(env: Env, run: str, count: int) -> list[str]:
    """Put the first ``count`` ready tasks in progress with a lease, as a dispatch would, each with
    a branch holding one real commit (its scope file) on the run's base.

    The run moves to ``executing``; every change carries its event so ``ledger verify`` agrees.
    """
    started: list[str] = []
    run_row = env.run_row(run)
    repo = Path(run_row["repo"])
    with env.write() as w:
        set_stage(w, run_row, "executing", "bench.run_executing")
        rows = w.rows(
            "SELECT id, scope FROM tasks WHERE run_id = ? AND status = 'ready' ORDER BY seq LIMIT ?", (run, count)
        )
        for row in rows:
            task = row["id"]
            branch = f"planegate/{run}/{task}"
            path = json.loads(row["scope"])[0]
            commit_files(repo, branch, run_row["base_sha"], {path: task_file(task, 1)}, f"{task}: first part")
            changes = {
                "status": "in_progress",
                "branch": branch,
                "base_sha": run_row["base_sha"],
                "worktree": str(env.settings.worktrees / run / task),
                "lease_owner": "bench:1",
                "lease_expires": now_iso(10 * 365 * 86400),
                "dispatched_at": w.at,
                "updated_at": w.at,
            }
            if w.cas("tasks", {"run_id": run, "id": task}, {"status": "ready"}, changes):
                w.event("bench.task_started", run=run, task=task, **{"from": "ready", "to": "in_progress"})
                started.append(task)
    return started


def task_file(task: str, version: int) -> str:
    """The content of a task's scope file at its ``version``-th commit."""
    lines = [f'"""Part of {task}, version {version}."""', ""]
    for n in range(version * 5):
        lines += ["", f"def step_{n}(value):", f"    return value + {n}", ""]
    return "\n".join(lines)


def _git(repo: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], input=stdin, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def commit_files(repo: Path, branch: str, parent: str, files: dict[str, str], message: str) -> str:
    """One commit on ``parent`` holding ``files``, made without a checkout (a scratch index), and
    ``branch`` moved to it; its sha."""
    with tempfile.TemporaryDirectory(prefix="planegate-bench-index-") as scratch_dir:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch_dir) / "index")}
        _git(repo, "read-tree", parent, env=env)
        for path, text in files.items():
            blob = _git(repo, "hash-object", "-w", "--stdin", stdin=text)
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = _git(repo, "write-tree", env=env)
    sha = _git(repo, "commit-tree", tree, "-p", parent, "-m", message)
    _git(repo, "update-ref", f"refs/heads/{branch}", sha)
    return sha


def fill_events(store: Store, run: str, task_ids: list[str], total: int, batch: int = 50_000) -> None:
    """Append events (one transaction per ``batch``) until the ledger holds ``total``."""
    current = store.event_count()
    began = time.perf_counter()
    while current < total:
        count = min(batch, total - current)
        with store.write("agent:bench") as w:
            for n in range(current, current + count):
                w.event(
                    "bench.note",
                    run=run,
                    task=task_ids[n % len(task_ids)],
                    n=n,
                    head_sha=f"{n:040x}",
                    summary="checks passed: 128 passed, 0 failed in 2.41 s",
                )
        current += count
        rate = current / max(time.perf_counter() - began, 1e-9)
        log(f"  events: {current:,}/{total:,} ({rate:,.0f}/s)")


@dataclass
class Ledger:
    """A big ledger in the scratch home and how it got there."""

    path: Path
    run: str
    events: int
    tasks: int
    from_cache: bool
    build_s: float | None
    verify_s: float

    def describe(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "tasks": self.tasks,
            "from_cache": self.from_cache,
            "build_s": None if self.build_s is None else round(self.build_s, 1),
            "cache_verify_s": round(self.verify_s, 2),
        }


def cache_key(sizes: Sizes) -> str:
    """Changes whenever the ledger code, the graph code or these generators change."""
    import planegate.store as store_pkg
    import planegate.tools as tools_pkg

    digest = hashlib.sha256(LEDGER_DATA_VERSION.encode())
    digest.update(repr(asdict(sizes)).encode())
    sources = [
        *sorted(Path(store_pkg.__file__).parent.glob("*.py")),
        *(Path(tools_pkg.__file__).parent / name for name in ("control/graph.py", "control/runs.py", "models.py")),
        BENCH_DIR / "_workload.py",
    ]
    for source in sources:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _build(sizes: Sizes, repo_path: Path) -> tuple[str, float]:
    began = time.perf_counter()
    if repo_path.exists():
        shutil.rmtree(repo_path)
    repo = make_repo(repo_path)
    env = open_env()
    try:
        log(f"building a {sizes.tasks}-task run …")
        run, _ = planned_run(env, repo, sizes)
        start_tasks(env, run, ACTIVE_TASKS)
        ids = [r["id"] for r in env.store.rows("SELECT id FROM tasks WHERE run_id = ? ORDER BY seq", (run,))]
        log(f"appending events up to {sizes.events:,} …")
        fill_events(env.store, run, ids, sizes.events)
        env.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        env.close()
    return run, time.perf_counter() - began


def _check(path: Path, sizes: Sizes) -> tuple[str | None, float, str]:
    """(run id or None, verify seconds, problem) for the ledger at ``path``."""
    began = time.perf_counter()
    with Store(path, actor="user:bench") as store:
        report = verify_ledger(store)
        runs = [r["id"] for r in store.rows("SELECT id FROM runs")]
        tasks = int(store.scalar("SELECT COUNT(*) FROM tasks"))
    elapsed = time.perf_counter() - began
    if not report.ok:
        return None, elapsed, f"verify failed: {report}"
    if report.events_verified != sizes.events or len(runs) != 1 or tasks != sizes.tasks:
        return None, elapsed, f"wrong shape: {report.events_verified} events, {len(runs)} runs, {tasks} tasks"
    return runs[0], elapsed, ""


def big_ledger(sizes: Sizes, root: Path) -> Ledger:
    """A verified ledger of ``sizes`` at ``$PLANEGATE_HOME/ledger.db``, from the cache when possible."""
    home = Path(os.environ["PLANEGATE_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    target = home / "ledger.db"
    cached = CACHE_DIR / f"ledger-{sizes.events}-{cache_key(sizes)}.db"
    # The run's repository lives beside the cached ledger: the gates read it (get_status), so it
    # must outlive the scratch directory the ledger was built in.
    repo = cached.with_suffix(".repo")
    if cached.is_file() and repo.is_dir():
        log(f"copying the cached ledger {cached} …")
        shutil.copyfile(cached, target)
        run, verify_s, problem = _check(target, sizes)
        if run is not None:
            return Ledger(target, run, sizes.events, sizes.tasks, True, None, verify_s)
        log(f"cached ledger refused ({problem}); rebuilding")
        cached.unlink()
        for leftover in home.glob("ledger.db*"):
            leftover.unlink()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    _, build_s = _build(sizes, repo)
    run, verify_s, problem = _check(target, sizes)
    if run is None:
        raise RuntimeError(f"the freshly built ledger does not verify: {problem}")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for stale in CACHE_DIR.glob(f"ledger-{sizes.events}-*.db*"):
        stale.unlink()  # an older build of the same size, made by older code
    for stale in CACHE_DIR.glob(f"ledger-{sizes.events}-*.repo"):
        if stale != repo:
            shutil.rmtree(stale, ignore_errors=True)
    conn = sqlite3.connect(target)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    partial = cached.with_suffix(".partial")
    shutil.copyfile(target, partial)
    partial.replace(cached)
    log(f"cached the ledger at {cached}")
    return Ledger(target, run, sizes.events, sizes.tasks, False, build_s, verify_s)


def private_repo(env: Env, run: str, root: Path) -> Path:
    """Point ``run`` at a copy of its repository under ``root``, so a bench may commit to its task
    branches without changing the cached repository other benches read. The run row is rewritten
    through ``Store.write()``, so its new value is vouched for like any other write."""
    source = Path(env.run_row(run)["repo"])
    target = root / "repo"
    shutil.copytree(source, target, symlinks=True)
    with env.write("user:bench") as w:
        w.execute("UPDATE runs SET repo = ? WHERE id = ?", (str(target), run))
    return target
