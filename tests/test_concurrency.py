"""Parallel tool calls: one server answering many calls at once must keep every task's facts its
own. The git adapter from many threads, the whole task loop under 16 concurrent calls (over the
real stdio server and in memory), two accepts racing for one task, and the surface's refusal of
arguments it does not know."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from mcp import Client

from planegate.server.app import build_server
from planegate.store import Store, verify_ledger
from planegate.tools.config import Settings
from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.env import Env
from planegate.tools.errors import Conflict, InvalidInput, WrongState
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.gates import accept as accept_module
from planegate.tools.gates import facts as facts_module
from planegate.tools.gates.accept import accept_task
from planegate.tools.gitrepo import GitRepo
from planegate.tools.models import Module, Requirement, TaskSpec
from planegate.tools.review.review import request_review
from tests.execution import drain, open_env
from tests.helpers import call, commit_all, git, make_repo, refused
from tests.test_execution_mcp import serve_params
from tests.test_review import review_policy_tail

pytestmark = pytest.mark.anyio
CALL_S = 120  # no single call may take longer (run_checks itself returns after ~45 s)
# Parses every Python file of the change: a real check that passes, and writes nothing.
PARSE_CHECK = [
    sys.executable,
    "-c",
    "import ast, pathlib; [ast.parse(p.read_text()) for p in pathlib.Path('src').rglob('*.py')]",
]


# -- the git adapter from many threads ----------------------------------------------------------


def run_threads(work: Callable[[int], None], count: int, timeout: float = 60) -> None:
    """Run ``work(i)`` in ``count`` threads released together; re-raise the first failure. Daemon
    threads, so a thread stuck in git cannot keep the test process alive."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait(timeout)
            work(index)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    assert not stuck, f"{stuck} of {count} threads did not finish within {timeout} s; the others: {errors or 'ok'}"
    if errors:
        raise errors[0]


@pytest.fixture
def branchy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A repository with 8 branches, each one commit apart from the others."""
    repo = make_repo(tmp_path / "branchy")
    tips = {}
    for index in range(8):
        name = f"planegate/r/t{index}"
        git(repo, "checkout", "-q", "-b", name, "main")
        (repo / f"f{index}.txt").write_text(f"{index}\n")
        tips[name] = commit_all(repo, f"branch {index}")
    git(repo, "checkout", "-q", "main")
    return repo, tips


def test_threads_sharing_one_repository_each_read_their_own_branch(branchy: tuple[Path, dict[str, str]]) -> None:
    repo, tips = branchy
    shared = GitRepo(repo)
    names = sorted(tips)

    def read(index: int) -> None:
        name = names[index % len(names)]
        for _ in range(150):
            assert shared.branch_sha(name) == tips[name], f"branch {name} read as another branch's commit"
            assert shared.branch_sha("main") == git(repo, "rev-parse", "main")

    run_threads(read, 16)


def test_branch_tips_come_from_loose_refs_packed_refs_or_git(branchy: tuple[Path, dict[str, str]]) -> None:
    repo, tips = branchy
    adapter = GitRepo(repo)
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git/refs/heads/planegate/r/t0").exists()
    assert all(adapter.branch_sha(name) == sha for name, sha in tips.items())
    git(repo, "branch", "-f", "planegate/r/t0", "main")  # a loose ref now shadows the packed one
    assert adapter.branch_sha("planegate/r/t0") == git(repo, "rev-parse", "main")
    git(repo, "symbolic-ref", "refs/heads/alias", "refs/heads/planegate/r/t3")
    assert adapter.branch_sha("alias") == tips["planegate/r/t3"]
    git(repo, "branch", "-D", "planegate/r/t5")
    assert adapter.branch_sha("planegate/r/t5") is None
    assert adapter.branch_sha("planegate/r") is None  # a directory of refs, not a branch
    assert adapter.branch_sha("no-such-branch") is None
    worktree = GitRepo(adapter.root)  # a second handle reads the same files
    assert worktree.branch_sha("planegate/r/t7") == tips["planegate/r/t7"]


def test_worktree_administration_and_info_exclude_are_serialised(branchy: tuple[Path, dict[str, str]]) -> None:
    repo, tips = branchy
    adapter = GitRepo(repo)
    root = repo.parent / "worktrees"

    def add(index: int) -> None:
        adapter.exclude(f"pattern-{index % 4}")
        path = root / f"w{index}"
        adapter.add_worktree(path, f"new/{index}", tips[f"planegate/r/t{index % 8}"])
        assert GitRepo(path).rev("HEAD") == tips[f"planegate/r/t{index % 8}"]
        if index % 2:
            GitRepo(path).remove_worktree(path)
        adapter.prune_worktrees()

    run_threads(add, 12)
    listed = git(repo, "worktree", "list", "--porcelain").count("worktree ")
    assert listed == 1 + 6  # the repository and the 6 worktrees not removed
    lines = (repo / ".git/info/exclude").read_text().splitlines()
    assert sorted(line for line in lines if line.startswith("pattern-")) == [f"pattern-{i}" for i in range(4)]


def test_a_repository_is_opened_by_its_root_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "r", {"src/app.py": "A = 1\n"})
    git(tmp_path, "init", "-q", "--bare", "bare.git")
    (tmp_path / "plain").mkdir()
    cases = {
        tmp_path / "missing": "does not exist",
        repo / "src/app.py": "is a file, not a git repository",
        tmp_path / "bare.git": "is a bare repository",
        repo / "src": f"is inside the git repository {str(repo.resolve())!r}; pass its root",
        tmp_path / "plain": "is not a git repository; run `git init` there",
    }
    for path, message in cases.items():
        with pytest.raises(InvalidInput, match=re.escape(message)):
            GitRepo(path)
    other = make_repo(tmp_path / "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))  # as inside a git hook: must not redirect us
    adapter = GitRepo(repo)
    assert adapter.root == repo.resolve() and adapter.rev("HEAD") == git(
        repo, "--git-dir", str(repo / ".git"), "rev-parse", "HEAD"
    )
    assert adapter.branch_sha("main") == adapter.rev("HEAD") != GitRepo(other).rev("HEAD")


# -- the whole loop under 16 concurrent calls ---------------------------------------------------

WAVE = 2  # tasks dispatched together; four waves are in flight at once: 8 tasks, 16 calls
ROUNDS = 3  # each round is 8 tasks


def parallel_repo(path: Path) -> Path:
    policy = (
        "max_parallel = 8\nrequire_review = true\nrequire_red_green = false\nrequire_architecture = true\n\n"
        f"[checks]\nparse = {json.dumps(PARSE_CHECK)}\n" + review_policy_tail()  # a syntax check, not a test suite
    )
    return make_repo(path, {"README.md": "# parallel\n", "src/__init__.py": "", ".planegate/policy.toml": policy})


def parallel_run(home: Path, repo: Path, count: int) -> tuple[str, list[str]]:
    """A planned run of ``count`` independent tasks, each scoped to a file of its own."""
    env = open_env(home)
    try:
        run = start_run(env, str(repo), "Many tasks at once").run
        freeze_requirements(env, run, [Requirement(id="R1", statement="parts exist", acceptance_criteria=["each"])])
        freeze_architecture(env, run, [Module(name="src", owns=["src/**"])], [])
        ids = [f"t{i:02d}" for i in range(count)]
        specs = [
            TaskSpec(id=t, title=f"Part {t}", goal=f"Add src/{t}.py", scope=[f"src/{t}.py"], requirements=["R1"])
            for t in ids
        ]
        register_graph(env, run, specs)
        return run, ids
    finally:
        env.close()


class Pipeline:
    """Drives waves of tasks through dispatch → commit → checks → review → accept, four waves
    apart: every burst sends 16 calls at once (dispatch, run_checks, record_evidence,
    request_review, accept_task, get_status) over the 8 tasks in flight."""

    def __init__(self, client: Client, run: str) -> None:
        self.client = client
        self.run = run
        self.heads: dict[str, str] = {}
        self.worktrees: dict[str, Path] = {}
        self.reviews: dict[str, str] = {}
        self.merges: dict[str, str] = {}

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        with anyio.fail_after(CALL_S):
            return await call(self.client, tool, **arguments)

    async def dispatch(self, task: str) -> None:
        result = await self.call("dispatch_task", run=self.run, task=task)
        self.worktrees[task] = Path(result["worktree"])

    async def checks(self, task: str) -> None:
        result = await self.call("run_checks", run=self.run, task=task)
        while result["state"] in ("queued", "running"):
            result = await self.call("get_job", job=result["job"], wait_seconds=30)
        assert result["all_passed"] is True, result
        assert result["head_sha"] == self.heads[task], f"{task}'s checks ran on another commit"

    async def evidence(self, task: str) -> None:
        summary = f"parsed src/{task}.py"
        await self.call("record_evidence", run=self.run, task=task, kind="parse", label="local", summary=summary)

    async def review(self, task: str) -> None:
        result = await self.call("request_review", run=self.run, task=task)
        assert result["head_sha"] == self.heads[task], f"{task}'s review was asked for another commit"
        self.reviews[task] = result["review"]

    async def reviewed(self, task: str) -> None:
        result = await self.call("get_review", review=self.reviews[task], wait_seconds=40)
        assert (result["state"], result["verdict"]) == ("completed", "approve"), result

    async def accept(self, task: str) -> None:
        self.merges[task] = (await self.call("accept_task", run=self.run, task=task))["merge_sha"]

    async def status(self) -> None:
        status = await self.call("get_status", run=self.run)
        for active in status["status"]["active"]:
            head = self.heads.get(active["task"])
            if head is not None and active.get("head_sha") is not None:
                assert active["head_sha"] == head, f"status shows {active['task']} at another task's commit"

    def commit(self, task: str) -> None:
        worktree = self.worktrees[task]
        (worktree / "src" / f"{task}.py").write_text(f'"""Part {task}."""\n\nPART = {task!r}\n')
        self.heads[task] = commit_all(worktree, f"add part {task}")

    async def drive(self, tasks: list[str]) -> None:
        waves = [tasks[i : i + WAVE] for i in range(0, len(tasks), WAVE)]

        def wave(k: int) -> list[str]:
            return waves[k] if 0 <= k < len(waves) else []

        for k in range(len(waves) + 3):
            calls: list[Any] = [
                *(lambda t=t: self.dispatch(t) for t in wave(k)),
                *(lambda t=t: self.checks(t) for t in wave(k - 1)),
                *(lambda t=t: self.evidence(t) for t in wave(k - 1)),
                *(lambda t=t: self.review(t) for t in wave(k - 2)),
                *(lambda t=t: self.accept(t) for t in wave(k - 3)),
            ]
            calls += [self.status] * (16 - len(calls))
            async with anyio.create_task_group() as group:
                for one in calls:
                    group.start_soon(one)
            for task in wave(k):
                await anyio.to_thread.run_sync(self.commit, task)
            async with anyio.create_task_group() as group:
                for task in wave(k - 2):
                    group.start_soon(self.reviewed, task)


def check_outcome(home: Path, repo: Path, run: str, pipeline: Pipeline, tasks: list[str]) -> None:
    """Every row bound to its own task's head; each base the integration head of its dispatch;
    the integration branch made of exactly the accepted tasks' commits."""
    heads = pipeline.heads
    with Store(home / "ledger.db") as store:
        assert verify_ledger(store).ok
        statuses = {r["id"]: r["status"] for r in store.rows("SELECT id, status FROM tasks WHERE run_id = ?", (run,))}
        assert statuses == dict.fromkeys(tasks, "accepted")
        for row in store.rows("SELECT id, task_id, label, head_sha FROM evidence WHERE run_id = ?", (run,)):
            assert row["head_sha"] == heads[row["task_id"]], f"evidence {row} is bound to another commit"
        reviews = store.rows("SELECT id, task_id, head_sha, verdict FROM reviews WHERE run_id = ?", (run,))
        assert sorted(r["task_id"] for r in reviews) == sorted(tasks)
        for row in reviews:
            assert row["head_sha"] == heads[row["task_id"]], f"review {row} is bound to another commit"
        kinds = {
            r["task_id"]: r["n"]
            for r in store.rows(
                "SELECT task_id, COUNT(DISTINCT label) AS n FROM evidence WHERE run_id = ? GROUP BY task_id", (run,)
            )
        }
        assert kinds == dict.fromkeys(tasks, 2)  # direct (run_checks) and local (record_evidence)
        integration = store.one("SELECT base_sha, integration_branch FROM runs WHERE id = ?", (run,))
        assert integration is not None
        expected = integration["base_sha"]
        bases = {}
        for event in store.rows("SELECT kind, task_id, payload FROM events WHERE run_id = ? ORDER BY id", (run,)):
            payload = json.loads(event["payload"])
            if event["kind"] == "task.accepted":
                expected = payload["merge_sha"]
            elif event["kind"] == "task.dispatched":
                assert payload["base_sha"] == expected, f"{event['task_id']} started on {payload['base_sha'][:12]}"
                bases[event["task_id"]] = payload["base_sha"]
    assert sorted(bases) == sorted(tasks)
    for task in tasks:
        assert git(repo, "rev-parse", f"{heads[task]}^") == bases[task], f"{task}'s worktree started elsewhere"
    branch, base = integration["integration_branch"], integration["base_sha"]
    first_parents = git(repo, "rev-list", "--first-parent", branch).split()
    assert all(bases[t] in first_parents for t in tasks), "a worktree started on a commit not on the integration"
    commits = git(repo, "rev-list", "--no-merges", f"{base}..{branch}").split()
    assert sorted(commits) == sorted(heads[t] for t in tasks)
    merges = git(repo, "rev-list", "--merges", f"{base}..{branch}").split()
    assert sorted(merges) == sorted(pipeline.merges.values())
    files = set(git(repo, "diff", "--name-only", base, branch).split())
    assert files == {f"src/{t}.py" for t in tasks}


async def test_sixteen_concurrent_calls_through_the_real_stdio_server(tmp_path: Path, fresh_machine: Path) -> None:
    repo = parallel_repo(tmp_path / "parallel")
    run, tasks = parallel_run(fresh_machine, repo, 8 * ROUNDS)
    with anyio.fail_after(600):
        async with Client(serve_params(fresh_machine)) as client:
            pipeline = Pipeline(client, run)
            await pipeline.drive(tasks)
    check_outcome(fresh_machine, repo, run, pipeline, tasks)


async def test_sixteen_concurrent_calls_through_the_in_memory_client(tmp_path: Path, fresh_machine: Path) -> None:
    repo = parallel_repo(tmp_path / "parallel")
    run, tasks = parallel_run(fresh_machine, repo, 8 * ROUNDS)
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=0)
    with anyio.fail_after(600):
        async with Client(server) as client:
            pipeline = Pipeline(client, run)
            await pipeline.drive(tasks)
    check_outcome(fresh_machine, repo, run, pipeline, tasks)


# -- two accepts of one task ------------------------------------------------------------------


@pytest.fixture
def ready_to_accept(tmp_path: Path, fresh_machine: Path) -> Iterator[tuple[Env, str, Path]]:
    """A run whose task t00 has passing checks and an approving review on its head."""
    repo = parallel_repo(tmp_path / "parallel")
    run, _ = parallel_run(fresh_machine, repo, 2)
    env = open_env(fresh_machine)
    worktree = Path(dispatch_task(env, run, "t00").worktree)
    (worktree / "src" / "t00.py").write_text("PART = 't00'\n")
    commit_all(worktree, "part t00")
    start_checks(env, run, "t00")
    drain(env)
    request_review(env, run, "t00")
    drain(env)
    yield env, run, worktree
    env.close()


def accept_both(
    env: Env, run: str, monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], None] = lambda: None
) -> list[Any]:
    """Two threads accept t00; both finish checking the gates before either merges."""
    barrier = threading.Barrier(2)
    evaluate = accept_module.evaluate_task

    def evaluate_then_wait(*args: Any, **kwargs: Any) -> Any:
        found = evaluate(*args, **kwargs)
        if barrier.wait(30) == 0:
            meanwhile()
        barrier.wait(30)  # neither goes on before ``meanwhile`` is done
        return found

    monkeypatch.setattr(accept_module, "evaluate_task", evaluate_then_wait)
    outcomes: list[Any] = [None, None]

    def one(index: int) -> None:
        try:
            outcomes[index] = accept_task(env, run, "t00")
        except (WrongState, Conflict) as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    return outcomes


def test_the_loser_of_an_accept_race_is_told_it_was_accepted_and_what_next(
    ready_to_accept: tuple[Env, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, run, _ = ready_to_accept
    outcomes = accept_both(env, run, monkeypatch)
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    losers = [o for o in outcomes if isinstance(o, Exception)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    won, text = winners[0], str(losers[0])
    assert isinstance(losers[0], WrongState)
    assert "'t00' is accepted (another call accepted it while this call was checking its gates)" in text
    assert f"merge {won.merge_sha[:12]}" in text and f"checkpoint {won.checkpoint}" in text
    assert f"get_status({run!r})" in text and "accept_task again" not in text
    assert env.store.scalar("SELECT COUNT(*) FROM checkpoints WHERE run_id = ?", (run,)) == 1


def test_an_accept_whose_worktree_the_winner_removed_is_told_it_was_accepted(
    ready_to_accept: tuple[Env, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loser reads the task (in progress, worktree there); the winner then merges and removes
    # the worktree before the loser's cleanliness check runs git in it. A CI run saw this.
    env, run, worktree = ready_to_accept
    check_clean = facts_module.dirty_paths
    won: list[Any] = []

    def winner_first(path: Any) -> list[str]:
        if not won:
            won.append(None)
            winner = threading.Thread(target=lambda: won.append(accept_task(env, run, "t00")), daemon=True)
            winner.start()
            winner.join(60)
            assert not worktree.exists()
        return check_clean(path)

    monkeypatch.setattr(facts_module, "dirty_paths", winner_first)
    with pytest.raises(WrongState) as lost:
        accept_task(env, run, "t00")
    merge = won[1].merge_sha
    text = str(lost.value)
    assert "'t00' is accepted (another call accepted it while this call was checking its gates)" in text
    assert f"merge {merge[:12]}" in text and "accept_task again" not in text


def test_an_accept_whose_head_moved_meanwhile_says_to_check_the_new_head(
    ready_to_accept: tuple[Env, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, run, worktree = ready_to_accept
    before = git(worktree, "rev-parse", "HEAD")
    moved: list[str] = []

    def new_commit() -> None:
        (worktree / "src" / "t00.py").write_text("PART = 't00, again'\n")
        moved.append(commit_all(worktree, "part t00, again"))

    outcomes = accept_both(env, run, monkeypatch, new_commit)
    assert all(isinstance(o, Conflict) for o in outcomes), outcomes
    text = str(outcomes[0])
    assert f"branch moved from {before[:12]} to {moved[0][:12]}" in text
    assert f"run_checks(run={run!r}, task='t00')" in text and "accept_task again" not in text
    assert env.store.scalar("SELECT COUNT(*) FROM checkpoints WHERE run_id = ?", (run,)) == 0


async def test_two_concurrent_accept_calls_give_one_merge_and_one_clear_answer(
    ready_to_accept: tuple[Env, str, Path], fresh_machine: Path
) -> None:
    _, run, _ = ready_to_accept
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=60)
    answers: list[Any] = []

    async def accept(client: Client) -> None:
        answers.append(await client.call_tool("accept_task", {"run": run, "task": "t00"}))

    with anyio.fail_after(60):
        async with Client(server) as client, anyio.create_task_group() as group:
            group.start_soon(accept, client)
            group.start_soon(accept, client)
    assert sorted(a.is_error for a in answers) == [False, True]
    merge = next(a for a in answers if not a.is_error).structured_content["merge_sha"]
    text = next(a for a in answers if a.is_error).content[0].text
    assert "'t00' is accepted" in text and f"merge {merge[:12]}" in text and "accept_task again" not in text


# -- arguments the tools do not know ------------------------------------------------------------


async def test_unknown_arguments_are_refused_by_every_tool_naming_the_accepted_ones(
    tmp_path: Path, fresh_machine: Path
) -> None:
    repo = parallel_repo(tmp_path / "parallel")
    run, _ = parallel_run(fresh_machine, repo, 2)
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=60)
    with Store(fresh_machine / "ledger.db") as store:
        events_before = store.event_count()
    with anyio.fail_after(60):
        async with Client(server) as client:
            text = await refused(client, "get_status", run_id=run)
            assert "unknown argument 'run_id' (did you mean 'run'?); get_status accepts run, include_abandoned." in text
            text = await refused(client, "dispatch_task", run=run, task="t00", executer="codex")
            assert "unknown argument 'executer' (did you mean 'executor'?)" in text
            assert "dispatch_task accepts run, task, executor." in text
            text = await refused(client, "accept_task", run=run, task="t00", force=True, skip_gates=True)
            assert "unknown arguments 'force', 'skip_gates'; accept_task accepts run, task." in text
            text = await refused(client, "start_run", repo=str(repo), goal="another", base="main")
            assert "unknown argument 'base' (did you mean 'base_ref'?); start_run accepts repo, goal, base_ref." in text
            text = await refused(client, "get_job", job=1, timeout=5)
            assert "get_job accepts job, wait_seconds" in text
            listed = {t.name: t.input_schema for t in (await client.list_tools()).tools}
            assert all(schema.get("additionalProperties") is False for schema in listed.values())
            status = await call(client, "get_status", run=run)
            assert status["status"]["counts"] == {"ready": 2}
    with Store(fresh_machine / "ledger.db") as store:
        assert store.event_count() == events_before  # nothing was done
        assert store.scalar("SELECT COUNT(*) FROM runs") == 1


async def test_record_evidence_with_label_direct_gets_the_reason_direct_is_reserved(
    ready_to_accept: tuple[Env, str, Path], fresh_machine: Path
) -> None:
    env, run, _ = ready_to_accept
    before = env.store.scalar("SELECT COUNT(*) FROM evidence")
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=60)
    with anyio.fail_after(60):
        async with Client(server) as client:
            text = await refused(
                client, "record_evidence", run=run, task="t00", kind="test", label="direct", summary="all green"
            )
            assert "label 'direct' is reserved for the server's own runs; call run_checks instead" in text
            assert "validation error" not in text.lower()
            text = await refused(client, "record_evidence", run=run, task="t00", kind="test", label="lo", summary="s")
            assert "label 'lo' is unknown; use local (you ran it), proxy (indirect) or blocked" in text
            tools = {t.name: t for t in (await client.list_tools()).tools}
            label = tools["record_evidence"].input_schema["properties"]["label"]
            assert label["enum"] == ["local", "proxy", "blocked"]
    assert env.store.scalar("SELECT COUNT(*) FROM evidence") == before
