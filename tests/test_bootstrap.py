"""The worktree bootstrap at the domain level: setup at dispatch (and its failure leaving nothing),
copies, links and their lockfile rule, setup again when an input changes, scratch worktrees at the
base bootstrapped and reused across tasks, and checks of several steps."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from planegate.store import verify_ledger
from planegate.tools.control.artifacts import sha256_file
from planegate.tools.env import Env
from planegate.tools.errors import ExecutionError
from planegate.tools.execution.checks import checks_result, start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.models import TaskSpec
from tests.execution import CALC, MUL, PYTEST, drain, open_env, planned_run, write
from tests.helpers import commit_all, git, make_repo

PY = sys.executable
# Writes the gitignored module the tests import, and counts its runs in a file outside the repository.
WRITE_VERSION = """\
import os, sys
from pathlib import Path
Path("src/_version.py").write_text("VERSION = '1.0'\\n")
with open(os.environ["BOOTSTRAP_COUNT"], "a") as out:
    out.write(os.getcwd() + "\\n")
"""
VERSIONED_TEST = (
    "from src._version import VERSION\nfrom src.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
)
MUL_TEST = (
    "from src._version import VERSION\nfrom src.calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"
)
TEXT = "def shout(s):\n    return s.upper()\n"
WHISPER = TEXT + "\n\ndef whisper(s):\n    return s.lower()\n"
WHISPER_TEST = "from src.text import whisper\n\n\ndef test_whisper():\n    assert whisper('A') == 'a'\n"


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


@pytest.fixture
def counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "bootstraps.txt"
    path.write_text("")
    monkeypatch.setenv("BOOTSTRAP_COUNT", str(path))
    return path


def policy_text(worktree: str = "", test: Any = None, **top: Any) -> str:
    values = {"require_review": False, **top}
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    lines += ["", "[checks]", f"test = {json.dumps(test or PYTEST)}", "", "[executor]"]
    lines += ['env_allow = ["BOOTSTRAP_COUNT"]', ""]
    return "\n".join(lines) + ("\n[worktree]\n" + worktree if worktree else "")


def versioned_repo(path: Path, worktree: str, files: dict[str, str] | None = None, **top: Any) -> Path:
    """A repository whose tests import a gitignored module a build script generates."""
    return make_repo(
        path,
        {
            ".gitignore": "src/_version.py\n__pycache__/\n",
            "src/__init__.py": "",
            "src/calc.py": CALC,
            "src/text.py": TEXT,
            "scripts/write_version.py": WRITE_VERSION,
            "tests/__init__.py": "",
            "tests/test_calc.py": VERSIONED_TEST,
            ".planegate/policy.toml": policy_text(worktree, **top),
            **(files or {}),
        },
    )


SETUP = f'setup = [["{PY}", "scripts/write_version.py"]]\n'


def events(env: Env, kind: str) -> list[dict[str, Any]]:
    rows = env.store.rows("SELECT task_id, payload FROM events WHERE kind = ? ORDER BY id", (kind,))
    return [{"task": r["task_id"], **json.loads(r["payload"])} for r in rows]


def check_lines(env: Env, job: int) -> dict[str, Any]:
    return {line.check: line for line in checks_result(env, job).results}


def deps_run(env: Env, repo: Path, scope: list[str]) -> str:
    """A run with one task allowed to change ``scope`` (a module owns the lockfile too)."""
    from planegate.tools.control.graph import register_graph
    from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
    from planegate.tools.models import Module, Requirement

    run = start_run(env, str(repo), "Bump the dependencies").run
    freeze_requirements(env, run, [Requirement(id="R1", statement="deps bumped", acceptance_criteria=["value 2"])])
    freeze_architecture(env, run, [Module(name="app", owns=["src/**", "deps.lock", "requirements.txt"])], [])
    register_graph(env, run, [TaskSpec(id="calc", title="Bump", goal="Bump deps", scope=scope, requirements=["R1"])])
    return run


def test_dispatch_runs_the_setup_and_the_checks_then_pass_where_a_bare_worktree_cannot_import(
    tmp_path: Path, env: Env, counter: Path
) -> None:
    bare = versioned_repo(tmp_path / "bare", "")
    run = planned_run(env, bare)
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    commit_all(worktree, "mul")
    job = start_checks(env, run, "calc")
    drain(env)
    assert "No module named 'src._version'" in check_lines(env, job)["test"].summary

    repo = versioned_repo(tmp_path / "calc", SETUP + 'copy = []\nenv = { GREETING = "hello" }\n')
    run = planned_run(env, repo)
    dispatched = dispatch_task(env, run, "calc")
    worktree = Path(dispatched.worktree)
    assert (worktree / "src/_version.py").read_text() == "VERSION = '1.0'\n"
    assert dispatched.bootstrap and "1 setup step(s)" in dispatched.bootstrap
    assert git(worktree, "status", "--porcelain") == ""
    [made] = events(env, "worktree.bootstrapped")
    assert made["where"] == "dispatch" and made["task"] == "calc"
    [(name, sha)] = made["artifacts"].items()
    artifact = env.store.one("SELECT * FROM artifacts WHERE name = ? AND sha256 = ?", (name, sha))
    assert artifact is not None and sha256_file(Path(artifact["path"])) == sha
    assert "$ " in Path(artifact["path"]).read_text() and "write_version.py" in Path(artifact["path"]).read_text()

    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    commit_all(worktree, "mul")
    job = start_checks(env, run, "calc")
    drain(env)
    lines = check_lines(env, job)
    assert all(line.exit_code == 0 for line in lines.values()), {k: v.summary for k, v in lines.items()}
    # the base runs happened in bootstrapped scratch worktrees: the base's own test passed there
    assert "all 1 test(s) passing on the base still pass" in lines["test_integrity"].summary
    assert "proven" in lines["red_green"].summary
    wheres = sorted(e["where"] for e in events(env, "worktree.bootstrapped"))
    assert wheres == ["dispatch", "scratch-base", "scratch-base-full"]
    assert verify_ledger(env.store).ok


def test_a_failing_setup_step_fails_dispatch_naming_the_step_and_leaves_nothing_behind(
    tmp_path: Path, env: Env, counter: Path
) -> None:
    fail = "print('npm ERR! no such package'); raise SystemExit(3)"
    failing = f'setup = [["{PY}", "scripts/write_version.py"], ["{PY}", "-c", {json.dumps(fail)}]]\n'
    repo = versioned_repo(tmp_path / "calc", failing)
    run = planned_run(env, repo)
    branches_before = git(repo, "branch", "--list", "planegate/*")
    with pytest.raises(ExecutionError) as refused:
        dispatch_task(env, run, "calc")
    text = str(refused.value)
    assert "setup step 2 of 2" in text and "exit 3" in text and "npm ERR! no such package" in text
    assert "the claim is undone and the new worktree and branch are removed" in text
    row = env.task_row(run, "calc")
    assert (row["status"], row["worktree"], row["lease_owner"], row["dispatched_at"]) == ("ready", None, None, None)
    assert env.run_row(run)["stage"] == "planned"
    assert not (env.settings.worktrees / run / "calc").exists()
    assert git(repo, "branch", "--list", "planegate/*") == branches_before
    assert "planegate/" not in git(repo, "worktree", "list")
    [failed] = events(env, "worktree.bootstrap_failed")
    assert failed["step"].startswith("setup step 2 of 2") and failed["artifacts"]
    [dispatch_failed] = events(env, "task.dispatch_failed")
    assert dispatch_failed["step"].startswith("setup step 2 of 2")
    assert verify_ledger(env.store).ok


def test_a_setup_step_that_rewrites_a_tracked_file_fails_dispatch(tmp_path: Path, env: Env, counter: Path) -> None:
    rewrite = f"setup = [[\"{PY}\", \"-c\", \"open('src/calc.py', 'a').write('# touched\\\\n')\"]]\n"
    repo = versioned_repo(tmp_path / "calc", rewrite)
    run = planned_run(env, repo)
    with pytest.raises(ExecutionError, match=r"changed files git tracks: src/calc.py"):
        dispatch_task(env, run, "calc")
    assert env.task_row(run, "calc")["status"] == "ready"


def test_copy_brings_untracked_and_ignored_files_and_never_a_tracked_one(tmp_path: Path, env: Env) -> None:
    repo = versioned_repo(tmp_path / "calc", 'copy = [".env", "src/_version.py", "src/calc.py", "locale/*/*.mo"]\n')
    (repo / ".env").write_text("TOKEN=local\n")
    (repo / "src/_version.py").write_text("VERSION = 'from the checkout'\n")
    (repo / "src/calc.py").write_text("# an uncommitted edit in the checkout\n")
    (repo / "locale/de").mkdir(parents=True)
    (repo / "locale/de/messages.mo").write_bytes(b"\x00mo")
    run = planned_run(env, repo)
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    assert (worktree / ".env").read_text() == "TOKEN=local\n"
    assert (worktree / "src/_version.py").read_text() == "VERSION = 'from the checkout'\n"
    assert (worktree / "locale/de/messages.mo").read_bytes() == b"\x00mo"
    assert (worktree / "src/calc.py").read_text() == CALC  # tracked: the commit's version, not the checkout's
    assert git(worktree, "status", "--porcelain") == ""  # .env and the .mo are excluded, not committed
    exclude = (repo / ".git/info/exclude").read_text()
    assert "/.env" in exclude and "/locale/" in exclude


DEPS_TEST = "from pathlib import Path\n\n\ndef test_deps():\n    assert Path('deps/value.txt').read_text().strip()\n"


def lock_repo(path: Path, fallback: bool) -> Path:
    """Tests that read a dependency folder (``deps/``, like node_modules) installed from ``deps.lock``."""
    install = (
        'import pathlib; pathlib.Path("deps").mkdir(); '
        'pathlib.Path("deps/value.txt").write_text(pathlib.Path("deps.lock").read_text())'
    )
    link = (
        '{ path = "deps", lockfiles = ["deps.lock"]'
        + (f', fallback = [["{PY}", "-c", {json.dumps(install)}]]' if fallback else "")
        + " }"
    )
    repo = make_repo(
        path,
        {
            ".gitignore": "deps/\n",
            "deps.lock": "1\n",
            "src/__init__.py": "",
            "src/calc.py": CALC,
            "tests/__init__.py": "",
            "tests/test_deps.py": DEPS_TEST,
            ".planegate/policy.toml": policy_text(f"link = [{link}]\n", require_red_green=False),
        },
    )
    (repo / "deps").mkdir()
    (repo / "deps/value.txt").write_text("1\n")
    return repo


def test_a_link_is_made_while_the_lockfile_is_unchanged_and_replaced_by_its_fallback_when_the_task_changes_it(
    tmp_path: Path, env: Env
) -> None:
    repo = lock_repo(tmp_path / "calc", fallback=True)
    run = deps_run(env, repo, ["src/calc.py", "deps.lock"])
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    assert (worktree / "deps").is_symlink() and (worktree / "deps").resolve() == (repo / "deps").resolve()
    assert git(worktree, "status", "--porcelain") == ""

    write(worktree, {"deps.lock": "2\n"})
    commit_all(worktree, "bump the lockfile")
    job = start_checks(env, run, "calc")
    drain(env)
    assert checks_result(env, job).all_passed, checks_result(env, job)
    assert not (worktree / "deps").is_symlink() and (worktree / "deps/value.txt").read_text() == "2\n"
    assert (repo / "deps/value.txt").read_text() == "1\n"  # the checkout's folder was never written through
    [again] = [e for e in events(env, "worktree.bootstrapped") if e["where"] == "before-checks"]
    assert any("fallback" in d for d in again["done"])


def test_a_link_that_is_no_longer_safe_without_a_fallback_fails_the_checks_naming_the_lockfile(
    tmp_path: Path, env: Env
) -> None:
    repo = lock_repo(tmp_path / "calc", fallback=False)
    run = deps_run(env, repo, ["src/calc.py", "deps.lock"])
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"deps.lock": "2\n"})
    commit_all(worktree, "bump the lockfile")
    job = start_checks(env, run, "calc")
    drain(env)
    result = checks_result(env, job)
    assert result.state == "failed" and "deps.lock differs between the worktree and the checkout" in (
        result.error or ""
    )
    assert not (worktree / "deps").exists()  # the stale link is gone; nothing was deleted through it
    assert (repo / "deps/value.txt").read_text() == "1\n"
    git(repo, "worktree", "remove", "--force", str(worktree))
    assert (repo / "deps/value.txt").read_text() == "1\n"


def test_an_input_changed_by_the_task_runs_the_setup_again_before_its_checks(
    tmp_path: Path, env: Env, counter: Path
) -> None:
    repo = versioned_repo(
        tmp_path / "calc",
        SETUP + 'inputs = ["requirements.txt"]\n',
        files={"requirements.txt": "a\n"},
        require_red_green=False,
    )
    run = deps_run(env, repo, ["src/calc.py", "requirements.txt"])
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL})
    commit_all(worktree, "mul")
    start_checks(env, run, "calc")
    drain(env)
    runs_in_worktree = lambda: counter.read_text().splitlines().count(str(worktree))  # noqa: E731
    assert runs_in_worktree() == 1  # nothing the setup reads changed: it did not run again
    write(worktree, {"requirements.txt": "a\nb\n"})
    commit_all(worktree, "another dependency")
    start_checks(env, run, "calc")
    drain(env)
    assert runs_in_worktree() == 2


def two_task_run(env: Env, repo: Path) -> str:
    tasks = [
        TaskSpec(id="calc", title="Multiply", goal="mul", scope=["src/calc.py"], requirements=["R1"]),
        TaskSpec(id="text", title="Whisper", goal="whisper", scope=["src/text.py"], requirements=["R2"]),
    ]
    return planned_run(env, repo, tasks)


@pytest.mark.parametrize("reuse", [True, False])
def test_the_base_scratch_bootstrap_is_reused_across_tasks_of_one_base(
    tmp_path: Path, env: Env, counter: Path, reuse: bool
) -> None:
    repo = versioned_repo(tmp_path / "calc", SETUP + f"reuse_scratch = {json.dumps(reuse)}\n")
    run = two_task_run(env, repo)
    calc = Path(dispatch_task(env, run, "calc").worktree)
    text = Path(dispatch_task(env, run, "text").worktree)
    write(calc, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    commit_all(calc, "mul")
    write(text, {"src/text.py": WHISPER, "tests/test_whisper.py": WHISPER_TEST})
    commit_all(text, "whisper")
    first = start_checks(env, run, "calc")
    drain(env)
    second = start_checks(env, run, "text")
    drain(env)
    for job in (first, second):
        lines = check_lines(env, job)
        assert all(line.exit_code == 0 for line in lines.values()), {k: v.summary for k, v in lines.items()}
    scratch = [e["where"] for e in events(env, "worktree.bootstrapped") if e["where"].startswith("scratch")]
    # calc: the full base run and its red run, at once, in two scratch worktrees. text: the base's
    # report is cached by tree; its red run reuses a slot (restored: calc's overlaid test is gone).
    assert sorted(scratch) == (
        ["scratch-base", "scratch-base-full"] if reuse else ["scratch-base", "scratch-base", "scratch-base-full"]
    )
    cache = env.settings.home / "scratch-cache"
    slots = [p for p in cache.glob("*/*") if p.is_dir()] if cache.exists() else []
    assert len(slots) == (2 if reuse else 0)
    for slot in slots:
        assert not (slot / "tests/test_mul.py").exists() or not (slot / "tests/test_whisper.py").exists()
        assert (slot / "src/_version.py").is_file()


def test_a_reused_scratch_worktree_is_restored_to_its_commit_and_its_bootstrap(
    tmp_path: Path, env: Env, counter: Path
) -> None:
    from planegate.tools.execution.jobs import JobContext, claim
    from planegate.tools.execution.scratch import close_scratch, open_scratch
    from planegate.tools.gitrepo import GitRepo

    repo = versioned_repo(tmp_path / "calc", SETUP)
    run = planned_run(env, repo)
    start_checks(env, run, None)
    job = claim(env, "test-worker", 30)
    assert job is not None
    ctx = JobContext(env, job, "test-worker", 30)
    policy, git_repo = env.policy(env.run_row(run)), GitRepo(repo)
    sha = git(repo, "rev-parse", "HEAD")
    first = open_scratch(ctx, policy, git_repo, sha, "probe")
    (first.path / "src/calc.py").write_text("broken(\n")
    (first.path / "tests/test_leftover.py").write_text("def test_x():\n    pass\n")
    (first.path / ".pytest_cache").mkdir()
    busy = open_scratch(ctx, policy, git_repo, sha, "probe")  # the first is held: a second slot
    assert busy.path != first.path
    close_scratch(git_repo, busy)
    close_scratch(git_repo, first)
    again = open_scratch(ctx, policy, git_repo, sha, "probe")
    assert again.path == first.path and again.reused
    assert (again.path / "src/calc.py").read_text() == CALC
    assert not (again.path / "tests/test_leftover.py").exists() and not (again.path / ".pytest_cache").exists()
    assert (again.path / "src/_version.py").is_file()
    close_scratch(git_repo, again)
    assert len(counter.read_text().splitlines()) == 2  # two slots bootstrapped, the reuse ran nothing


def test_a_check_of_several_steps_stops_at_the_first_failure_and_names_it(tmp_path: Path, env: Env) -> None:
    build = [PY, "-c", "import sys; print('compiling'); sys.exit(2)"]
    repo = versioned_repo(tmp_path / "calc", "", test=[build, PYTEST], require_red_green=False)
    run = planned_run(env, repo)
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL})
    commit_all(worktree, "mul")
    job = start_checks(env, run, "calc")
    drain(env)
    lines = check_lines(env, job)
    assert lines["test"].exit_code == 2
    assert "failed at step 1 of 2" in lines["test"].summary and "compiling" in lines["test"].summary
    row = env.store.one("SELECT command FROM evidence WHERE id = ?", (lines["test"].evidence,))
    assert row is not None and " && " in row["command"]
    assert "before the tests ran" in lines["test_integrity"].summary


def test_a_build_then_test_check_reads_the_report_of_its_last_step(tmp_path: Path, env: Env, counter: Path) -> None:
    build = [PY, "scripts/write_version.py"]
    repo = versioned_repo(tmp_path / "calc", "", test=[build, PYTEST])
    run = planned_run(env, repo)
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    commit_all(worktree, "mul")
    job = start_checks(env, run, "calc")
    drain(env)
    lines = check_lines(env, job)
    assert all(line.exit_code == 0 for line in lines.values()), {k: v.summary for k, v in lines.items()}
    assert "proven" in lines["red_green"].summary and "tests/test_mul.py::test_mul" in lines["red_green"].summary


def test_setup_steps_get_the_policy_s_env_and_never_the_server_s_virtualenv(
    tmp_path: Path, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
    script = (
        "import os, pathlib; "
        "pathlib.Path('seen.txt').write_text(os.environ['GREETING'] + ' ' + os.environ.get('VIRTUAL_ENV', '-'))"
    )
    repo = versioned_repo(
        tmp_path / "calc", f'setup = [["{PY}", "-c", {json.dumps(script)}]]\nenv = {{ GREETING = "hello" }}\n'
    )
    run = planned_run(env, repo)
    worktree = Path(dispatch_task(env, run, "calc").worktree)
    assert (worktree / "seen.txt").read_text() == "hello -"
    assert git(worktree, "status", "--porcelain") == ""


def test_a_setup_over_its_time_budget_fails_dispatch(tmp_path: Path, env: Env) -> None:
    repo = versioned_repo(
        tmp_path / "calc", f'setup = [["{PY}", "-c", "import time; time.sleep(30)"]]\ntimeout_s = 1\n'
    )
    run = planned_run(env, repo)
    with pytest.raises(ExecutionError, match=r"setup step 1 of 1 .* timed out \(\[worktree\] timeout_s\)"):
        dispatch_task(env, run, "calc")
    assert env.task_row(run, "calc")["status"] == "ready"


def test_a_virtualenv_with_an_editable_install_of_the_checkout_is_never_linked(tmp_path: Path, env: Env) -> None:
    repo = versioned_repo(tmp_path / "calc", 'link = [".venv"]\n', files={".gitignore": ".venv/\n"})
    site = repo / ".venv/lib/python3.11/site-packages"
    (site / "calc-1.0.dist-info").mkdir(parents=True)
    (repo / ".venv/bin").mkdir()
    (repo / ".venv/pyvenv.cfg").write_text("home = /usr/bin\n")
    (site / "calc-1.0.dist-info/direct_url.json").write_text(
        json.dumps({"url": repo.as_uri(), "dir_info": {"editable": True}})
    )
    run = planned_run(env, repo)
    with pytest.raises(ExecutionError, match=r"\.venv holds an editable install of the checkout"):
        dispatch_task(env, run, "calc")


def test_a_takeover_keeps_the_bootstrapped_worktree_and_runs_a_crashed_one_again(
    tmp_path: Path, fresh_machine: Path, env: Env, counter: Path
) -> None:
    import time

    from planegate.tools.gitrepo import GitRepo

    repo = versioned_repo(tmp_path / "calc", SETUP, lease_minutes=0.005)
    run = planned_run(env, repo)
    first = dispatch_task(env, run, "calc")
    for attempt in range(2):
        deadline = time.monotonic() + 10
        while env.task_row(run, "calc")["lease_expires"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()):
            assert time.monotonic() < deadline, "the lease did not expire"
            time.sleep(0.1)
        if attempt == 1:  # as if the server died halfway through the bootstrap: no marker
            (GitRepo(first.worktree).git_dir / "planegate-bootstrap.json").unlink()
        other = open_env(fresh_machine, actor=f"agent:other{attempt}")
        try:
            again = dispatch_task(other, run, "calc")
        finally:
            other.close()
        assert again.taken_over and again.worktree == first.worktree
        if attempt == 0:
            assert again.bootstrap == "worktree bootstrap: already done for this key"
    assert len(counter.read_text().splitlines()) == 2  # the first dispatch, and the takeover after the crash
