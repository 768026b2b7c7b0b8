"""Shared set-up for execution-plane tests: a small Python repository with a policy, a planned
run on it, and a way to run queued jobs in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from planegate.tools.config import Settings
from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.env import Env
from planegate.tools.execution.jobs import claim, run_job
from planegate.tools.models import Module, Requirement, TaskSpec
from tests.helpers import make_repo

# The check the fixture repositories run: this environment's pytest without the plugins the suite
# itself installs (hypothesis, xdist, anyio, timeout), which the repositories' tests never use and
# which would cost each check run over a second of CPU to import.
PYTEST = [
    sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
    *("-p", "no:hypothesispytest", "-p", "no:xdist", "-p", "no:xdist.looponfail", "-p", "no:anyio", "-p", "no:timeout"),
]  # fmt: skip

CALC = "def add(a, b):\n    return a + b\n"
CALC_TEST = "from src.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


def policy_toml(**overrides: Any) -> str:
    values: dict[str, Any] = {"require_review": False, "require_architecture": True, "max_parallel": 2}
    values.update(overrides)
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + f"\n\n[checks]\ntest = {json.dumps(PYTEST)}\n"


def calc_repo(path: Path, **policy: Any) -> Path:
    return make_repo(
        path,
        {
            "src/__init__.py": "",
            "src/calc.py": CALC,
            "src/text.py": "def shout(s):\n    return s.upper()\n",
            "tests/__init__.py": "",
            "tests/test_calc.py": CALC_TEST,
            "secrets/README.md": "nothing here\n",
            ".planegate/policy.toml": policy_toml(**policy),
        },
    )


TASKS = [
    TaskSpec(
        id="calc", title="Multiply", goal="Add mul(a, b) to src/calc.py", scope=["src/calc.py"], requirements=["R1"]
    ),
    TaskSpec(
        id="text", title="Whisper", goal="Add whisper(s) to src/text.py", scope=["src/text.py"], requirements=["R2"]
    ),
    TaskSpec(
        id="docs", title="Docs", goal="Document mul", depends_on=["calc"], scope=["src/calc.py"], requirements=["R1"]
    ),
]


def planned_run(env: Env, repo: Path, tasks: list[TaskSpec] | None = None) -> str:
    run = start_run(env, str(repo), "Grow the library").run
    freeze_requirements(
        env,
        run,
        [
            Requirement(id="R1", statement="mul multiplies", acceptance_criteria=["mul(2, 3) == 6"]),
            Requirement(id="R2", statement="whisper lowers", acceptance_criteria=["whisper('A') == 'a'"]),
        ],
    )
    freeze_architecture(
        env,
        run,
        [
            Module(name="calc", owns=["src/calc.py"]),
            Module(name="text", owns=["src/text.py"]),
            Module(name="secrets", owns=["secrets/**"]),
        ],
        [],
    )
    register_graph(env, run, tasks or TASKS)
    return run


def open_env(home: Path, actor: str = "agent:test", **settings: Any) -> Env:
    return Env.open(Settings(home=home, actor=actor, job_lease_s=30, **settings))


def drain(env: Env) -> list[str]:
    """Run every queued job in this process; their final statuses."""
    outcomes = []
    while (job := claim(env, "test-worker", 30)) is not None:
        outcomes.append(run_job(env, job, "test-worker", 30))
    return outcomes


def write(worktree: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        target = worktree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


MUL = CALC + "\n\ndef mul(a, b):\n    return a * b\n"
MUL_TEST = "from src.calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"


def finish_calc(env: Env, run: str, files: dict[str, str] | None = None) -> Path:
    """Dispatch `calc`, write mul and its test (or ``files``), commit, and run its checks."""
    from planegate.tools.execution.checks import start_checks
    from planegate.tools.execution.dispatch import dispatch_task
    from tests.helpers import commit_all

    worktree = Path(dispatch_task(env, run, "calc").worktree)
    write(worktree, files or {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
    commit_all(worktree, "mul")
    start_checks(env, run, "calc")
    drain(env)
    return worktree
