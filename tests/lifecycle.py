"""Shared set-up for the lifecycle tests: a run taken all the way to acceptance, quickly.

The calc repository with a scripted command reviewer for the release review, no task review, no
red→green proof and no human approval, so a run is accepted with one task and a few checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from planegate.tools.env import Env
from planegate.tools.execution.checks import start_checks
from planegate.tools.gates.accept import accept_task
from planegate.tools.models import TaskSpec
from planegate.tools.report.acceptance import accept_run
from planegate.tools.review.review import request_review
from tests.execution import calc_repo, drain, finish_calc, planned_run
from tests.helpers import commit_all
from tests.test_review import review_policy_tail

ONE_TASK = [
    TaskSpec(id="calc", title="Multiply", goal="Add mul(a, b)", scope=["src/calc.py"], requirements=["R1", "R2"])
]


def quick_repo(path: Path, extra_policy: str = "", **policy: Any) -> Path:
    values: dict[str, Any] = {"require_red_green": False, "require_human_approval": False}
    values.update(policy)
    repo = calc_repo(path, **values)
    target = repo / ".planegate" / "policy.toml"
    target.write_text(target.read_text() + review_policy_tail() + extra_policy)
    commit_all(repo, "release reviewer")
    return repo


def accepted_run(env: Env, repo: Path) -> str:
    """A run on ``repo`` with its one task accepted and the run accepted."""
    run = planned_run(env, repo, ONE_TASK)
    finish_calc(env, run)
    accept_task(env, run, "calc")
    start_checks(env, run, None)
    drain(env)
    request_review(env, run, None, True)
    drain(env)
    accept_run(env, run)
    return run


def planegate(*args: str, home: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """``planegate ARGS`` as a separate process on ``home``'s ledger."""
    env = {**os.environ, "PLANEGATE_HOME": str(home)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
