"""A run's policy changed only by a human: `planegate policy adopt` at a terminal, signed in signed
mode, shown to the approver, and refused by the gates when it was changed any other way."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from planegate.server.app import build_server
from planegate.store import verify_ledger
from planegate.tools.config import Settings
from planegate.tools.env import Env
from planegate.tools.errors import InvalidInput, WrongState
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.gates import signing
from planegate.tools.gates.accept import accept_task
from planegate.tools.gates.adopt import adopt_policy, adopt_signed, adoption_problems, pending_adoption
from planegate.tools.gates.approval_view import describe
from planegate.tools.gates.gates import GatesUnmet
from planegate.tools.gates.release import evaluate_run
from planegate.tools.report.report import build_report
from tests.execution import calc_repo, finish_calc, open_env, planned_run
from tests.helpers import commit_all, planegate_in_terminal
from tests.test_approval import HUMAN, keys, public  # noqa: F401 - keys is a fixture


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


def edit_policy(repo: Path, old: str, new: str, message: str) -> None:
    target = repo / ".planegate" / "policy.toml"
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new))
    commit_all(repo, message)


def adoptions(env: Env, run: str) -> list[dict[str, object]]:
    return env.store.rows("SELECT * FROM policy_adoptions WHERE run_id = ? ORDER BY id", (run,))


def test_a_human_adopts_a_corrected_policy_at_the_terminal_and_the_change_is_shown_everywhere(
    env: Env, tmp_path: Path
) -> None:
    repo = calc_repo(tmp_path / "calc")
    edit_policy(repo, "max_parallel = 2", "max_parallel = 2\nmax_changed_lines = 10", "a budget far too small")
    run = planned_run(env, repo)
    before = env.run_row(run)["policy_sha256"]
    edit_policy(repo, "max_changed_lines = 10\n", "", "the default budget again")
    code, out = planegate_in_terminal("policy", "adopt", run, answer=run, timeout=120)
    assert code == 0, out
    assert "max_changed_lines: 10 -> 1200" in out and out.index("max_changed_lines") < out.index("Type the run id")
    assert "policy adopted for run" in out
    [row] = adoptions(env, run)
    assert (row["mode"], row["via"], row["previous_sha256"]) == ("interactive", "cli", before)
    assert env.policy(env.run_row(run)).max_changed_lines == 1200
    assert json.loads(str(row["changes"])) == ["max_changed_lines: 10 -> 1200"]
    assert adoption_problems(env, env.run_row(run)) == [] and verify_ledger(env.store).ok
    _, gates = evaluate_run(env, run)
    shown = describe(env, env.run_row(run), "0" * 40, gates, "interactive", None)
    assert "Policy adopted after the run started:" in shown and "max_changed_lines: 10 -> 1200" in shown
    markdown, _, _ = build_report(env, run)
    assert "Policy adopted" in markdown and "max_changed_lines: 10 -> 1200" in markdown


def test_adoption_is_refused_without_the_run_id_without_a_terminal_and_when_nothing_changes(
    env: Env, tmp_path: Path, fresh_machine: Path
) -> None:
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    with pytest.raises(WrongState, match="already holds the policy committed at HEAD"):
        pending_adoption(env, run)
    edit_policy(repo, "max_parallel = 2", "max_parallel = 3", "more at once")
    code, out = planegate_in_terminal("policy", "adopt", run, answer="yes", timeout=120)
    assert code == 1 and "not adopted" in out
    piped = subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", "policy", "adopt", run],
        input=run,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # no controlling terminal, as an agent's pipe has none
    )
    assert piped.returncode == 2 and "needs you at a terminal" in piped.stderr
    assert adoptions(env, run) == [] and env.policy(env.run_row(run)).max_parallel == 2


@pytest.mark.anyio
async def test_no_tool_adopts_or_loosens_a_policy(fresh_machine: Path) -> None:
    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=60)
    async with Client(server) as client:
        names = [t.name for t in (await client.list_tools()).tools]
    assert not [n for n in names if "policy" in n or "adopt" in n], names


def signed_calc(path: Path, signer: Path) -> Path:
    repo = calc_repo(path)
    target = repo / ".planegate" / "policy.toml"
    target.write_text(target.read_text() + '\n[approval]\nmode = "signed"\n')
    (repo / ".planegate" / "allowed_signers").write_text(f'{HUMAN} namespaces="git,planegate" {public(signer)}\n')
    commit_all(repo, "signed approval")
    return repo


def test_in_signed_mode_an_adoption_needs_an_allowed_signers_signature(
    env: Env,
    tmp_path: Path,
    keys: dict[str, Path],  # noqa: F811 - the fixture
) -> None:
    repo = signed_calc(tmp_path / "calc", keys["human"])
    run = planned_run(env, repo)
    edit_policy(repo, "max_parallel = 2", "max_parallel = 3", "more at once")
    pending = pending_adoption(env, run)
    assert pending.mode == "signed"
    with pytest.raises(WrongState, match="adopting a policy needs one too"):
        adopt_policy(env, pending, "agent", "python")
    stranger = signing.key_from_spec(str(keys["stranger"]), "--key")
    with pytest.raises(InvalidInput, match="not in the allowed signers"):
        adopt_signed(env, pending, stranger, "python")
    assert adoptions(env, run) == []
    code, out = planegate_in_terminal("policy", "adopt", run, "--key", str(keys["human"]), answer=run, timeout=120)
    assert code == 0, out
    assert "Your key signs this statement" in out and "planegate policy adoption v1" in out
    [row] = adoptions(env, run)
    assert (row["mode"], row["principal"]) == ("signed", HUMAN)
    assert str(row["signature"]).startswith("-----BEGIN SSH SIGNATURE-----")
    assert env.policy(env.run_row(run)).max_parallel == 3
    assert adoption_problems(env, env.run_row(run)) == []


def test_a_policy_changed_without_a_human_makes_the_gates_refuse(env: Env, tmp_path: Path) -> None:
    """An agent that writes through planegate's own code (rows vouched, events chained) still cannot
    loosen its gates: the policy no human adopted is named by the ledger gate."""
    repo = calc_repo(tmp_path / "calc")
    run = planned_run(env, repo)
    finish_calc(env, run)
    row = env.run_row(run)
    loose = env.policy(row).model_copy(update={"max_files": 500}).canonical()
    import hashlib

    with env.write() as w:
        w.execute(
            "UPDATE runs SET policy = ?, policy_sha256 = ? WHERE id = ?",
            (loose, hashlib.sha256(loose.encode()).hexdigest(), run),
        )
        w.event("run.updated", run=run)
    assert verify_ledger(env.store).ok, "the write went through planegate's own connection"
    [problem] = adoption_problems(env, env.run_row(run))
    assert "was not adopted by a human" in problem
    with pytest.raises(GatesUnmet, match=r"ledger: .*was not adopted by a human"):
        accept_task(env, run, "calc")
    cli = subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", "ledger", "verify"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 1 and "was not adopted by a human" in cli.stderr


def test_a_signed_runs_adoption_forged_without_the_key_is_refused_by_the_gates(
    env: Env,
    tmp_path: Path,
    keys: dict[str, Path],  # noqa: F811 - the fixture
) -> None:
    repo = signed_calc(tmp_path / "calc", keys["human"])
    run = planned_run(env, repo)
    dispatch_task(env, run, "calc")
    edit_policy(repo, "max_parallel = 2", "max_parallel = 3", "more at once")
    pending = pending_adoption(env, run)
    # what an agent could write with planegate's code but without the human's key: an unsigned adoption row
    forged = dataclasses.replace(pending, mode="interactive")
    adopt_policy(env, forged, "agent", "python")
    [problem] = adoption_problems(env, env.run_row(run))
    assert "asked for a signed adoption and it is not signed" in problem
    with pytest.raises(GatesUnmet, match=r"ledger: .*not signed"):
        accept_task(env, run, "calc")
