"""Wall time of ``planegate hook stop``, the Stop hook the plugin runs at every turn end of the agent.

Each case spawns ``planegate hook stop`` with a payload on stdin and times it to its exit, the way
Claude Code and Codex run it; cases alternate, 20 rounds after one untimed round. Baselines in the
same run: ``python -c pass`` (the interpreter alone) and ``planegate --version`` (the CLI's own
start). Cases:

- ``no_ledger``: a PLANEGATE_HOME without a ledger;
- ``no_run_here``: a ledger with ``--runs`` executing runs, none of them under the payload's cwd
  (the common case: what every turn end in an unrelated directory pays);
- ``blocks``: the cwd is the repository of a run with a dispatched task, first stop of a turn
  (loads the domain and ``get_status``; prints the block);
- ``let_go``: the stop after that block, with the run unmoved (decided before the domain loads).

Target: ``no_run_here`` median ≤ 1.5 × ``planegate --version`` median.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import PLANEGATE, emit, log, make_repo, parser, quantile, scratch

TARGET_RATIO = 1.5
ROUNDS = 20
TIMEOUT_S = 60


def payload(cwd: Path, *, after_block: bool) -> str:
    return json.dumps(
        {
            "session_id": "bench-session",
            "transcript_path": None,
            "cwd": str(cwd),
            "hook_event_name": "Stop",
            "stop_hook_active": after_block,
            "last_assistant_message": "All tasks are done.",
        }
    )


def timed(argv: list[str], stdin: str, env: dict[str, str]) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0 or done.stderr:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.strip()}")
    return elapsed, done.stdout


def build(root: Path, runs: int) -> tuple[Path, Path]:
    """``runs`` executing runs (one dispatched task each) in their own repositories; returns the
    first repository and an unrelated directory."""
    from planegate.tools.config import Settings
    from planegate.tools.control.graph import register_graph
    from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
    from planegate.tools.env import Env
    from planegate.tools.execution.dispatch import dispatch_task
    from planegate.tools.models import Module, Requirement, TaskSpec

    env = Env.open(Settings.from_env(actor="user:bench"))
    repos = []
    try:
        for i in range(runs):
            repo = make_repo(root / f"repo-{i}", {"src/app.py": "VALUE = 1\n", "README.md": "# bench\n"})
            run = start_run(env, str(repo), f"bench change {i}").run
            freeze_requirements(env, run, [Requirement(id="R1", statement="it works", acceptance_criteria=["yes"])])
            freeze_architecture(env, run, [Module(name="app", owns=["src/**"])], [])
            tasks = [
                TaskSpec(id=t, title=t, goal=t, scope=[f"src/{t}.py"], requirements=["R1"]) for t in ("one", "two")
            ]
            register_graph(env, run, tasks)
            dispatch_task(env, run, "one")
            repos.append(repo)
    finally:
        env.close()
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return repos[0], elsewhere


def main() -> None:
    args = parser(__doc__ or "", quick_help="5 rounds, 3 runs").parse_args()
    rounds = 5 if args.quick else ROUNDS
    runs = 3 if args.quick else 30
    hook = [str(PLANEGATE), "hook", "stop"]
    with scratch("hook") as root:
        empty_home = root / "empty-home"
        base_env = {**os.environ}
        repo, elsewhere = build(root, runs)
        cases = {
            "python_startup": ([sys.executable, "-c", "pass"], "", base_env),
            "planegate_version": ([str(PLANEGATE), "--version"], "", base_env),
            "no_ledger": (hook, payload(elsewhere, after_block=False), {**base_env, "PLANEGATE_HOME": str(empty_home)}),
            "no_run_here": (hook, payload(elsewhere, after_block=False), base_env),
            "blocks": (hook, payload(repo, after_block=False), base_env),
            "let_go": (hook, payload(repo, after_block=True), base_env),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        outputs: dict[str, str] = {}
        for round_ in range(rounds + 1):
            for name, (argv, stdin, env) in cases.items():
                elapsed, out = timed(argv, stdin, env)
                if round_:
                    samples[name].append(elapsed)
                outputs[name] = out
            log(f"round {round_}/{rounds}")
    assert '"decision": "block"' in outputs["blocks"], outputs["blocks"]
    assert "systemMessage" in outputs["let_go"] and not outputs["no_run_here"] and not outputs["no_ledger"]
    medians = {name: quantile(values, 0.5) * 1000 for name, values in samples.items()}
    ratio = medians["no_run_here"] / medians["planegate_version"]
    emit(
        {
            "benchmark": "hook_stop",
            "quick": args.quick,
            "rounds": rounds,
            "runs_in_ledger": runs,
            "median_ms": {name: round(value, 1) for name, value in medians.items()},
            "p90_ms": {name: round(quantile(values, 0.9) * 1000, 1) for name, values in samples.items()},
            "ratios_to_planegate_version": {
                name: round(value / medians["planegate_version"], 2) for name, value in medians.items()
            },
            "target": f"no_run_here median <= {TARGET_RATIO} x planegate --version median",
            "ratio": round(ratio, 3),
            "meets_target": ratio <= TARGET_RATIO,
        }
    )


if __name__ == "__main__":
    main()
