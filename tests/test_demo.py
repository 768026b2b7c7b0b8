"""`planegate demo` runs the whole lifecycle on a scratch repository and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_demo_takes_a_change_from_start_to_an_accepted_run(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "planegate"), "demo"],
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for step in (
        "start_run",
        "freeze_requirements",
        "freeze_architecture",
        "register_graph",
        "dispatch_task line-count",
        "red_green: proven",
        "request_review line-count: approve",
        "accept_task avg-word-length: every gate holds",
        "release review: approve",
        "accept_run is refused: no human has said yes",
        "planegate approve",
        "the human approval, signed",
        'Good "git" signature for demo@planegate.invalid',
        "integration-head: ",
        "human_approval: signed by demo@planegate.invalid",
        "accept_run: the run is accepted",
        "1 signed approval(s) re-verified",
    ):
        assert step in out, f"missing {step!r} in the demo's output"
    assert "demo finished" in out
    assert list(scratch.iterdir()) == [], "the demo removes its scratch directory"
