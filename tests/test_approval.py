"""Human approval an agent cannot forge: signed approvals with real ssh-keygen and git, what the
approval shows, the honest limits of each mode, and `planegate init` choosing the mode.

Every test runs on a machine with no global git identity (HOME is an empty directory) and no
ssh-agent unless the test starts one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import ElicitResult

from planegate.server.app import build_server
from planegate.store import verify_ledger
from planegate.tools.config import Settings
from planegate.tools.control.runs import freeze_requirements
from planegate.tools.env import Env
from planegate.tools.errors import Conflict, InvalidInput, PolicyError, WrongState
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import cancel_task, dispatch_task
from planegate.tools.execution.procs import DEFAULT_ENV_ALLOW, scrubbed_env
from planegate.tools.gates import approval as approval_mod
from planegate.tools.gates import signing
from planegate.tools.gates.accept import accept_task
from planegate.tools.gates.approval import Statement, verify_signed_approvals
from planegate.tools.gates.gates import GatesUnmet
from planegate.tools.gates.release import approve, approve_signed, pending_approval
from planegate.tools.models import Requirement
from planegate.tools.policy import parse_policy
from planegate.tools.report.acceptance import accept_run
from planegate.tools.review.review import request_review
from tests.execution import MUL, MUL_TEST, calc_repo, drain, finish_calc, open_env, planned_run
from tests.helpers import commit_all, git, planegate_in_terminal, refused
from tests.test_review import FAKES, review_policy_tail

HUMAN = "human@example.invalid"
PASSPHRASE = "correct horse battery staple"


def make_key(path: Path, passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return path


def public(key: Path) -> str:
    return " ".join(Path(f"{key}.pub").read_text().split()[:2])


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "keys"
    folder.mkdir()
    return {
        "human": make_key(folder / "human"),
        "stranger": make_key(folder / "stranger"),
        "locked": make_key(folder / "locked", PASSPHRASE),
    }


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


def signed_repo(path: Path, signers: list[Path], mode: str = "signed") -> Path:
    """The calc repository with a command reviewer, and signed approval by ``signers`` at its base."""
    repo = calc_repo(path, require_review=True)
    policy = repo / ".planegate" / "policy.toml"
    policy.write_text(
        policy.read_text()
        + review_policy_tail()
        + f'\n[approval]\nmode = "{mode}"\nallowed_signers = ".planegate/allowed_signers"\n'
    )
    (repo / ".planegate" / "allowed_signers").write_text(
        "".join(f'{HUMAN if k.name != "stranger" else "x@y"} namespaces="git,planegate" {public(k)}\n' for k in signers)
    )
    commit_all(repo, "signed approval")
    return repo


def release_ready(env: Env, repo: Path) -> str:
    """A run on ``repo`` whose only open gate is the human's approval, with an amendment and cancellations."""
    run = planned_run(env, repo)
    finish_calc(env, run)
    request_review(env, run, "calc")
    drain(env)
    accept_task(env, run, "calc")
    cancel_task(env, run, "docs", "folded into calc")
    cancel_task(env, run, "text", "out of scope")
    freeze_requirements(
        env,
        run,
        [Requirement(id="R1", statement="mul multiplies", acceptance_criteria=["mul(2, 3) == 6"])],
        amend_reason="whisper moves to another run",
    )
    start_checks(env, run, None)
    drain(env)
    request_review(env, run, None, True)
    drain(env)
    with pytest.raises(GatesUnmet) as waiting:
        accept_run(env, run)
    assert [g.gate for g in waiting.value.unmet] == ["human_approval"]
    return run


def configure_git_signing(spec: str, email: str = HUMAN) -> None:
    """Global git config in the test's empty HOME, as a person who signs tags with SSH would have it."""
    for key, value in (("gpg.format", "ssh"), ("user.signingkey", spec), ("user.email", email)):
        subprocess.run(["git", "config", "--global", key, value], check=True, timeout=30)


def approvals(env: Env, run: str) -> list[dict[str, Any]]:
    return env.store.rows("SELECT * FROM approvals WHERE run_id = ? ORDER BY id", (run,))


def tag_verify(repo: Path, run: str, signers: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={signers}", "tag", "-v", f"planegate/{run}/approved"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def scripted(command: str, stdin: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """What an agent with a shell does: ``script`` fakes a terminal, the answers are piped in."""
    environment = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}
    environment.update(extra_env or {})
    return subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )


def planegate_command(*args: str) -> str:
    import shlex

    return shlex.join([sys.executable, "-m", "planegate.server.cli", *args])


def terminal_session(args: list[str], answers: list[tuple[bytes, str]], timeout: float = 90) -> tuple[int, str]:
    """Run ``planegate ARGS`` on a pseudo-terminal, typing each answer once its prompt appears."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "planegate.server.cli", *args])
    output = b""
    pending = list(answers)
    seen = 0
    deadline = time.monotonic() + timeout
    status = 0
    try:
        while True:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"planegate {args} did not finish: {output.decode(errors='replace')}")
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                output += chunk
                if pending and pending[0][0] in output[seen:]:
                    seen = output.index(pending[0][0], seen) + len(pending[0][0])
                    os.write(fd, pending.pop(0)[1].encode() + b"\n")
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


# -- signed approval, the whole way ------------------------------------------------------------


def test_a_signed_approval_from_the_cli_is_accepted_and_its_tag_verifies_with_git_tag_v(
    tmp_path: Path, env: Env, keys: dict[str, Path]
) -> None:
    repo = signed_repo(tmp_path / "calc", [keys["human"]])
    run = release_ready(env, repo)
    configure_git_signing(str(keys["human"]))
    # git's gpg.ssh.program (a password manager's signer, say) signs the statement and the tag alike
    signer_log = tmp_path / "signer.log"
    wrapper = tmp_path / "signer"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {signer_log}\nexec ssh-keygen "$@"\n')
    wrapper.chmod(0o755)
    subprocess.run(["git", "config", "--global", "gpg.ssh.program", str(wrapper)], check=True, timeout=30)
    code, out = planegate_in_terminal("approve", run, answer=run, timeout=120)
    assert code == 0, out
    calls = signer_log.read_text().splitlines()
    assert len(calls) == 2 and all(c.startswith("-Y sign -n ") for c in calls)
    assert {c.split()[3] for c in calls} == {"planegate", "git"}
    # what is being approved, before the question
    for shown in (
        "src/calc.py",
        "tests/test_mul.py",
        "cancelled  docs: Docs (reason: folded into calc)",
        "version 2",
        "reason: whisper moves to another run",
        "removed R2: whisper lowers",
        "task calc: approve by command:reviewer",
        "release: approve by command:reviewer",
        "OPEN human_approval",
        "Report (read it before you approve):",
        "Signed approval: your SSH key signs the statement",
        "A key without a passphrase in a file the agent can read stops nothing",
        "warning: this key file has no passphrase",
        f"run: {run}",
        "ledger-chain-head: ",
    ):
        assert shown in out, f"{shown!r} missing from:\n{out}"
    assert out.index("removed R2") < out.index("Type the run id")
    report = out.split("Report (read it before you approve): ", 1)[1].split()[0]
    assert Path(report).is_file() and "folded into calc" in Path(report).read_text()
    assert f"approved: signed by {HUMAN}" in out and "tag -v" in out

    [row] = approvals(env, run)
    assert (row["mode"], row["principal"], row["by"], row["via"]) == ("signed", HUMAN, HUMAN, "cli")
    statement = Statement.parse(row["statement"])
    head = git(repo, "rev-parse", f"planegate/{run}/integration")
    assert (statement.run, statement.integration_head, statement.requirements_version) == (run, head, 2)
    anchor = env.store.scalar("SELECT hash FROM events WHERE id = ?", (statement.chain_event,))
    assert anchor == statement.chain_hash == row["chain_hash"]
    assert row["signature"].startswith("-----BEGIN SSH SIGNATURE-----")

    accepted = accept_run(env, run)
    assert accepted.stage == "accepted"
    assert next(g.reason for g in accepted.gates if g.gate == "human_approval").startswith(f"signed by {HUMAN}")

    signers = repo / ".planegate" / "allowed_signers"
    checked = tag_verify(repo, run, signers)
    assert checked.returncode == 0, checked.stderr
    assert f'Good "git" signature for {HUMAN}' in checked.stderr
    assert row["statement"].strip() in checked.stdout
    assert git(repo, "rev-parse", f"planegate/{run}/approved^{{commit}}") == head

    assert verify_ledger(env.store).ok and verify_signed_approvals(env) == (1, [])
    done = cli("ledger", "verify")
    assert done.returncode == 0 and "1 signed approval(s) re-verified" in done.stdout


def test_a_key_not_in_the_allowed_signers_at_the_base_cannot_approve(
    tmp_path: Path, env: Env, keys: dict[str, Path]
) -> None:
    repo = signed_repo(tmp_path / "calc", [keys["human"]])
    run = release_ready(env, repo)
    stranger = signing.key_from_spec(str(keys["stranger"]), "--key")
    with pytest.raises(InvalidInput, match="not in the allowed signers at the run's base"):
        approve_signed(env, run, stranger, "cli")
    assert approvals(env, run) == []
    assert git(repo, "tag", "--list", f"planegate/{run}/*approved") == ""

    # a row written around planegate, with a good statement signed by the stranger, does not count
    pending = pending_approval(env, run)
    text = pending.statement.text()
    signature = signing.sign(stranger, text.encode())
    insert_approval(env, run, pending.head, text, signature, principal="x@y")
    with pytest.raises(GatesUnmet, match="not in the allowed signers"):
        accept_run(env, run)
    assert verify_signed_approvals(env)[1]


def insert_approval(env: Env, run: str, head: str, statement: str, signature: str, principal: str) -> int:
    """An approval row as an agent editing the ledger (or replaying a signature) would add it."""
    with env.write() as w:
        approval_id = w.insert(
            "approvals",
            {
                "run_id": run,
                "by": principal,
                "via": "cli",
                "head_sha": head,
                "at": w.at,
                "mode": "signed",
                "statement": statement,
                "signature": signature,
                "principal": principal,
            },
        )
        w.event("run.approved", run=run, approval=approval_id)
    return approval_id


def test_allowed_signers_changed_after_the_base_are_never_used(tmp_path: Path, env: Env, keys: dict[str, Path]) -> None:
    repo = signed_repo(tmp_path / "calc", [keys["human"]])
    run = release_ready(env, repo)
    stranger = signing.key_from_spec(str(keys["stranger"]), "--key")
    signers = repo / ".planegate" / "allowed_signers"
    # the working tree gains the stranger (uncommitted) ...
    signers.write_text(signers.read_text() + f'x@y namespaces="git,planegate" {public(keys["stranger"])}\n')
    with pytest.raises(InvalidInput, match="not in the allowed signers"):
        approve_signed(env, run, stranger, "cli")
    # ... then the checked-out branch commits it ...
    commit_all(repo, "let the stranger approve")
    with pytest.raises(InvalidInput, match="not in the allowed signers"):
        approve_signed(env, run, stranger, "cli")
    # ... and the integration branch carries it too
    integration = f"planegate/{run}/integration"
    side = tmp_path / "side"
    git(repo, "worktree", "add", "-q", str(side), integration)
    (side / ".planegate" / "allowed_signers").write_text(signers.read_text())
    commit_all(side, "the stranger on the integration branch")
    git(repo, "worktree", "remove", "--force", str(side))
    with pytest.raises(InvalidInput, match="not in the allowed signers"):
        approve_signed(env, run, stranger, "cli")
    assert approvals(env, run) == []
    # the key the base lists still works, on the new head
    human = signing.key_from_spec(str(keys["human"]), "--key")
    result = approve_signed(env, run, human, "cli")
    assert result.principal == HUMAN and result.head_sha == git(repo, "rev-parse", integration)


def test_a_signed_statement_for_another_run_head_requirements_or_ledger_is_refused(
    tmp_path: Path, env: Env, keys: dict[str, Path]
) -> None:
    repo = signed_repo(tmp_path / "calc", [keys["human"]])
    run = release_ready(env, repo)
    human = signing.key_from_spec(str(keys["human"]), "--key")
    pending = pending_approval(env, run)
    right = pending.statement
    wrong = {
        "another run": (Statement(**{**right.__dict__, "run": "other-run-123abc"}), "is for run 'other-run-123abc'"),
        "another head": (Statement(**{**right.__dict__, "integration_head": right.base}), "not the recorded"),
        "older requirements": (Statement(**{**right.__dict__, "requirements_version": 1}), "requirements version 1"),
        "a rewritten ledger": (Statement(**{**right.__dict__, "chain_hash": "f" * 64}), "ledger anchor"),
    }
    for name, (statement, reason) in wrong.items():
        signature = signing.sign(human, statement.text().encode())
        with pytest.raises(InvalidInput, match=reason):
            approve(env, run, "", "cli", statement=statement, signature=signature)
        assert approvals(env, run) == [], name
        approval_id = insert_approval(env, run, pending.head, statement.text(), signature, HUMAN)
        with pytest.raises(GatesUnmet) as refusal:
            accept_run(env, run)
        [gate] = refusal.value.unmet
        assert gate.gate == "human_approval" and f"approval {approval_id}" in gate.reason, name
        with env.write() as w:
            w.execute("DELETE FROM approvals WHERE id = ?", (approval_id,))

    # an unsigned approval does not count in signed mode, whoever records it
    with pytest.raises(WrongState, match="needs a signed approval"):
        approve(env, run, "someone", "elicitation")
    # a good approval stops counting once the requirements are amended
    approve_signed(env, run, human, "cli")
    freeze_requirements(
        env,
        run,
        [Requirement(id="R1", statement="mul multiplies integers", acceptance_criteria=["mul(2, 3) == 6"])],
        amend_reason="narrowed to integers",
    )
    with pytest.raises(GatesUnmet, match="amended since"):
        accept_run(env, run)


def test_a_tampered_signature_in_the_ledger_is_refused_by_accept_run_and_ledger_verify(
    tmp_path: Path, env: Env, keys: dict[str, Path]
) -> None:
    repo = signed_repo(tmp_path / "calc", [keys["human"]])
    run = release_ready(env, repo)
    human = signing.key_from_spec(str(keys["human"]), "--key")
    result = approve_signed(env, run, human, "cli")
    [row] = approvals(env, run)
    other = signing.sign(human, b"planegate approval v1\nsomething else\n")
    for tampered in (other, row["signature"].replace("A", "B", 3)):
        with env.write() as w:
            w.execute("UPDATE approvals SET signature = ? WHERE id = ?", (tampered, row["id"]))
        with pytest.raises(GatesUnmet, match=f"approval {row['id']} of the integration head does not count"):
            accept_run(env, run)
        verified, problems = verify_signed_approvals(env)
        assert verified == 0 and problems and problems[0].startswith(f"approvals {row['id']} (run {run}")
        done = cli("ledger", "verify")
        assert done.returncode == 1 and f"approvals {row['id']}" in done.stderr
    assert result.tag == f"planegate/{run}/approved"


def test_a_signed_approval_waits_for_the_head_the_human_saw(tmp_path: Path, env: Env, keys: dict[str, Path]) -> None:
    repo = signed_repo(tmp_path / "calc", [keys["human"]])
    run = release_ready(env, repo)
    seen = pending_approval(env, run)
    side = tmp_path / "side"
    git(repo, "worktree", "add", "-q", str(side), f"planegate/{run}/integration")
    (side / "NOTES.md").write_text("slipped in after the human looked\n")
    commit_all(side, "late change")
    git(repo, "worktree", "remove", "--force", str(side))
    human = signing.key_from_spec(str(keys["human"]), "--key")
    with pytest.raises(Conflict, match="moved"):
        approve_signed(env, run, human, "cli", pending=seen)
    assert approvals(env, run) == []
    assert git(repo, "tag", "--list", f"planegate/{run}/approved") == ""


# -- what each mode stops, shown ---------------------------------------------------------------


def test_the_piped_script_trick_does_not_approve_a_signed_run(tmp_path: Path, env: Env, keys: dict[str, Path]) -> None:
    repo = signed_repo(tmp_path / "calc", [keys["human"], keys["locked"]])
    run = release_ready(env, repo)
    # no key configured, no ssh-agent: nothing to sign with
    done = scripted(planegate_command("approve", run), f"{run}\n")
    assert done.returncode != 0 and "no SSH signing key" in done.stdout + done.stderr
    # its own fresh key: not an allowed signer at the base
    done = scripted(planegate_command("approve", run, "--key", str(keys["stranger"])), f"{run}\n")
    assert done.returncode != 0 and "may not approve" in done.stdout + done.stderr
    # the human's key with a passphrase it does not know
    done = scripted(planegate_command("approve", run, "--key", str(keys["locked"])), f"{run}\nnot the passphrase\n")
    assert done.returncode != 0 and "could not sign" in done.stdout + done.stderr
    assert approvals(env, run) == []
    assert git(repo, "tag", "--list", f"planegate/{run}/approved") == ""
    with pytest.raises(GatesUnmet):
        accept_run(env, run)

    # The honest limit: a key file without a passphrase signs for whoever can read it.
    done = scripted(planegate_command("approve", run, "--key", str(keys["human"])), f"{run}\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: this key file has no passphrase" in done.stdout
    assert [r["mode"] for r in approvals(env, run)] == ["signed"]


def test_a_passphrase_key_approves_when_the_human_types_the_passphrase(
    tmp_path: Path, env: Env, keys: dict[str, Path]
) -> None:
    repo = signed_repo(tmp_path / "calc", [keys["locked"]])
    run = release_ready(env, repo)
    code, out = terminal_session(
        ["approve", run, "--key", str(keys["locked"])],
        [(b"Type the run id", run), (b"Enter passphrase", PASSPHRASE), (b"Enter passphrase", PASSPHRASE)],
    )
    assert code == 0, out
    assert "warning" not in out and f"approved: signed by {HUMAN}" in out
    assert tag_verify(repo, run, repo / ".planegate" / "allowed_signers").returncode == 0
    assert accept_run(env, run).stage == "accepted"


@contextlib.contextmanager
def ssh_agent(tmp_path: Path, name: str, key: Path, *, confirm: bool = False) -> Iterator[str]:
    """An ssh-agent holding ``key`` (``ssh-add -c`` when ``confirm``: each use must be allowed, and
    the agent's askpass here always says no); its socket. Stopped by pid afterwards."""
    socket = tmp_path / f"{name}.sock"
    deny = tmp_path / f"{name}-deny"
    deny.write_text("#!/bin/sh\nexit 1\n")
    deny.chmod(0o755)
    agent_env = {**os.environ, "SSH_ASKPASS": str(deny), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    started = subprocess.run(
        ["ssh-agent", "-s", "-a", str(socket)], capture_output=True, text=True, timeout=30, check=True, env=agent_env
    )
    agent_pid = int(started.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        added = subprocess.run(
            ["ssh-add", *(["-c"] if confirm else []), str(key)],
            env={
                **os.environ,
                "SSH_AUTH_SOCK": str(socket),
                "SSH_ASKPASS": str(askpass(tmp_path)),
                "SSH_ASKPASS_REQUIRE": "force",
                "DISPLAY": ":0",
            },
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert added.returncode == 0, added.stderr
        yield str(socket)
    finally:
        os.kill(agent_pid, signal.SIGTERM)


def test_a_key_in_ssh_agent_given_as_git_does_signs_for_any_process_that_reaches_the_agent(
    tmp_path: Path, env: Env, keys: dict[str, Path]
) -> None:
    repo = signed_repo(tmp_path / "calc", [keys["locked"]])
    run = release_ready(env, repo)
    # git's literal form: the public key, its private half held by the agent
    configure_git_signing(f"key::{public(keys['locked'])}")
    with ssh_agent(tmp_path, "confirming", keys["locked"], confirm=True) as socket:
        done = scripted(planegate_command("approve", run), f"{run}\n", {"SSH_AUTH_SOCK": socket})
        assert done.returncode != 0 and "could not sign" in done.stdout + done.stderr  # ssh-add -c: refused use
    assert approvals(env, run) == []
    with ssh_agent(tmp_path, "plain", keys["locked"]) as socket:
        done = scripted(planegate_command("approve", run), f"{run}\n", {"SSH_AUTH_SOCK": socket})
        assert done.returncode == 0, done.stdout + done.stderr
        assert "a key loaded in ssh-agent signs for any process that reaches SSH_AUTH_SOCK" in done.stdout
        # a path to the public key, its private half in the agent, as git also accepts
        pub = f"{keys['locked']}.pub"
        done = scripted(planegate_command("approve", run, "--key", pub), f"{run}\n", {"SSH_AUTH_SOCK": socket})
        assert done.returncode == 0, done.stdout + done.stderr
    assert [r["mode"] for r in approvals(env, run)] == ["signed", "signed"]
    assert tag_verify(repo, run, repo / ".planegate" / "allowed_signers").returncode == 0
    assert accept_run(env, run).stage == "accepted"


def askpass(tmp_path: Path) -> Path:
    script = tmp_path / "askpass"
    script.write_text(f"#!/bin/sh\necho '{PASSPHRASE}'\n")
    script.chmod(0o755)
    return script


def test_interactive_mode_is_answered_by_a_faked_terminal_as_the_docs_say(tmp_path: Path, env: Env) -> None:
    repo = signed_repo(tmp_path / "calc", [], mode="interactive")
    run = release_ready(env, repo)
    done = scripted(planegate_command("approve", run), f"{run}\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "an agent with an unsandboxed shell could fake a terminal" in done.stdout
    [row] = approvals(env, run)
    assert (row["mode"], row["signature"], row["via"]) == ("interactive", None, "cli")
    assert Statement.parse(row["statement"]).integration_head == row["head_sha"]
    assert accept_run(env, run).stage == "accepted"
    # no signed tag: a CI job that requires one catches a run approved this way
    assert git(repo, "tag", "--list", f"planegate/{run}/approved") == ""


def test_executors_checks_and_reviewers_never_receive_the_ssh_agent(
    tmp_path: Path, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = {"PATH": "/usr/bin", "SSH_AUTH_SOCK": "/tmp/agent.sock", "SSH_AGENT_PID": "42", "SSH_OTHER": "x"}
    assert scrubbed_env(allow=[*DEFAULT_ENV_ALLOW, "SSH_*"], source=source) == {"PATH": "/usr/bin", "SSH_OTHER": "x"}
    with pytest.raises(InvalidInput, match="SSH_AUTH_SOCK"):
        scrubbed_env(extra={"SSH_AUTH_SOCK": "/tmp/agent.sock"})
    for section in ("executor", "review"):
        with pytest.raises(PolicyError, match=r"env_allow may not list 'SSH_AUTH_SOCK'"):
            parse_policy(f'[{section}]\nenv_allow = ["SSH_AUTH_SOCK"]\n')

    # a real command executor, check and reviewer, started by a planegate whose own environment has an agent
    seen = tmp_path / "seen"
    seen.mkdir()
    dump = tmp_path / "dump_env.py"
    dump.write_text(
        "import json, os, sys\n"
        f"folder = {str(seen)!r}\n"
        "with open(os.path.join(folder, sys.argv[1]), 'w') as out:\n"
        "    json.dump(sorted(os.environ), out)\n"
        "if sys.argv[1] == 'executor':\n"
        f"    open('src/calc.py', 'w').write({MUL!r})\n"
        f"    open('tests/test_mul.py', 'w').write({MUL_TEST!r})\n"
        "if sys.argv[1] == 'reviewer':\n"
        f"    os.execv(sys.executable, [sys.executable, {str(FAKES / 'reviewer')!r}])\n"
    )
    argv = {}
    for who in ("check", "executor", "reviewer"):  # one program each: a reviewer may not be the executor
        copy = tmp_path / f"{who}_dump_env.py"
        copy.write_text(f"# the {who}'s own program\n" + dump.read_text())
        argv[who] = json.dumps([sys.executable, str(copy), who])
    repo = calc_repo(tmp_path / "calc", require_red_green=False)
    policy = repo / ".planegate" / "policy.toml"
    text = policy.read_text().replace("[checks]\n", f"[checks]\nenv = {argv['check']}\n")
    policy.write_text(
        text
        + f'\n[executor]\ncommand = {argv["executor"]}\nenv_allow = ["SSH_*"]\n'
        + f'\n[review]\nreviewer = "command"\ncommand = {argv["reviewer"]}\nenv_allow = ["SSH_*"]\n'
    )
    commit_all(repo, "dump the environment")
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    monkeypatch.setenv("SSH_AGENT_PID", "4242")
    run = planned_run(env, repo)
    dispatch_task(env, run, "calc", executor="command")
    drain(env)
    start_checks(env, run, "calc")
    drain(env)
    request_review(env, run, "calc")
    drain(env)
    assert sorted(p.name for p in seen.iterdir()) == ["check", "executor", "reviewer"]
    for who in seen.iterdir():
        names = json.loads(who.read_text())
        assert "PATH" in names and "SSH_AUTH_SOCK" not in names and "SSH_AGENT_PID" not in names, who.name


# -- the client: elicitation ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("content", ["as_asked", "accept_true"])
async def test_in_signed_mode_an_accepted_elicitation_does_not_approve(
    tmp_path: Path, fresh_machine: Path, keys: dict[str, Path], content: str
) -> None:
    env = open_env(fresh_machine)
    run = release_ready(env, signed_repo(tmp_path / "calc", [keys["human"]]))
    env.close()
    asked: list[str] = []

    async def elicit(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        fields = params.requested_schema.get("properties", {})
        answer = {name: True for name in fields} if content == "as_asked" else {"accept": True}
        return ElicitResult(action="accept", content=answer)

    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=60)
    with anyio.fail_after(60):
        async with Client(server, elicitation_callback=elicit) as client:
            text = await refused(client, "accept_run", run=run)
    assert "needs a signed human approval" in text and f"`planegate approve {run}`" in text
    assert len(asked) == 1
    assert "answering here cannot approve it" in asked[0] and f"planegate approve {run}" in asked[0]
    assert "removed R2: whisper lowers" in asked[0] and "Signed approval" in asked[0]
    env = open_env(fresh_machine)
    assert approvals(env, run) == [] and env.run_row(run)["stage"] == "release_review"
    env.close()


@pytest.mark.anyio
async def test_in_interactive_mode_the_elicitation_shows_what_is_approved_and_approves(
    tmp_path: Path, fresh_machine: Path
) -> None:
    env = open_env(fresh_machine)
    run = release_ready(env, signed_repo(tmp_path / "calc", [], mode="interactive"))
    env.close()
    asked: list[str] = []

    async def elicit(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"accept": True})

    server = build_server(Settings(home=fresh_machine, actor="agent:test"), worker_delay_s=60)
    with anyio.fail_after(60):
        async with Client(server, elicitation_callback=elicit) as client:
            result = await client.call_tool("accept_run", {"run": run})
    assert not result.is_error
    [question] = asked
    for shown in (
        f"Accept run {run} at",
        "src/calc.py",
        "cancelled  text: Whisper (reason: out of scope)",
        "reason: whisper moves to another run",
        "removed R2: whisper lowers",
        "release: approve by command:reviewer",
        "Risks:",
        "Report (read it before you approve):",
        "stops a sandboxed agent",
        "write its own MCP client",
    ):
        assert shown in question, f"{shown!r} missing from the elicitation"
    env = open_env(fresh_machine)
    [row] = approvals(env, run)
    assert (row["mode"], row["via"]) == ("interactive", "elicitation")
    env.close()


# -- init, policy, migration ----------------------------------------------------------------------


def test_init_asks_for_signed_approval_when_git_has_an_ssh_signing_key(tmp_path: Path, keys: dict[str, Path]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    done = cli("init", str(plain))
    assert done.returncode == 0 and "approval: interactive" in done.stdout
    assert parse_policy((plain / ".planegate" / "policy.toml").read_text()).approval.mode == "interactive"
    assert not (plain / ".planegate" / "allowed_signers").exists()

    for spec in (f"{keys['human']}.pub", str(keys["human"]), f"key::{public(keys['human'])}"):
        configure_git_signing(spec)
        target = tmp_path / f"repo-{len(spec)}"
        target.mkdir()
        done = cli("init", str(target))
        assert done.returncode == 0, done.stderr
        assert "approval: signed" in done.stdout
        text = (target / ".planegate" / "policy.toml").read_text()
        policy = parse_policy(text)
        assert (policy.approval.mode, policy.approval.allowed_signers) == ("signed", ".planegate/allowed_signers")
        assert 'mode = "signed"' in text and "interactive" in text and "FIDO2 -sk" in text
        entry = (target / ".planegate" / "allowed_signers").read_text()
        assert entry == f'{HUMAN} namespaces="git,planegate" {public(keys["human"])}\n'


def test_the_approval_section_of_the_policy_is_checked(tmp_path: Path) -> None:
    assert parse_policy("").approval.mode == "interactive"
    with pytest.raises(PolicyError, match=r":3: key 'approval.mode'"):
        parse_policy('max_files = 3\n[approval]\nmode = "trust-me"\n')
    for bad in ("/etc/allowed", "../outside", ".planegate/../x", "-flag"):
        with pytest.raises(PolicyError, match="must be a path inside the repository"):
            parse_policy(f'[approval]\nallowed_signers = "{bad}"\n')


def test_signed_mode_without_an_allowed_signers_file_at_the_base_says_how_to_fix_it(
    tmp_path: Path, env: Env, keys: dict[str, Path]
) -> None:
    repo = signed_repo(tmp_path / "calc", [keys["human"]])
    git(repo, "rm", "-q", ".planegate/allowed_signers")
    commit_all(repo, "no signers")
    run = release_ready(env, repo)
    human = signing.key_from_spec(str(keys["human"]), "--key")
    with pytest.raises(InvalidInput, match=r"is not in the run's base commit .*planegate init"):
        approve_signed(env, run, human, "cli")


def test_approvals_recorded_before_signed_approval_existed_are_kept_as_interactive(tmp_path: Path) -> None:
    from sqlite_utils import Database

    from planegate.store import Store
    from planegate.store.schema import migrate

    path = tmp_path / "ledger.db"
    db = Database(path)
    migrate(db, stop_before="m005_signed_approvals")
    db.execute("INSERT INTO approvals (run_id, by, via, head_sha, at) VALUES ('old', 'ann', 'cli', 'abc', 't')")
    db.conn.commit()
    db.close()
    with Store(path) as store:
        row = store.one("SELECT * FROM approvals")
    assert row is not None and (row["by"], row["mode"], row["signature"]) == ("ann", "interactive", None)


def test_the_statement_reads_back_exactly_and_refuses_anything_else() -> None:
    statement = Statement(
        run="r-1",
        base="a" * 40,
        integration_branch="planegate/r-1/integration",
        integration_head="b" * 40,
        requirements_version=3,
        chain_event=12,
        chain_hash="c" * 64,
        approved_at="2026-01-02T03:04:05.678Z",
    )
    assert Statement.parse(statement.text()) == statement
    for broken in (
        statement.text().replace("planegate approval v1", "planegate approval v2"),
        statement.text().replace("run: r-1", "run: r-1\nextra: x"),
        statement.text().replace("b" * 40, "not-a-sha"),
        statement.text() + "trailing\n",
    ):
        with pytest.raises(InvalidInput):
            Statement.parse(broken)
    assert approval_mod.tag_name("r-1") == "planegate/r-1/approved"


def test_an_agent_that_adds_its_key_before_the_run_starts_is_caught_only_by_a_protected_copy(
    tmp_path: Path, env: Env, keys: dict[str, Path]
) -> None:
    repo = signed_repo(tmp_path / "calc", [keys["human"]])
    protected = tmp_path / "allowed_signers.protected"  # e.g. the file on a branch the agent cannot push to
    protected.write_text((repo / ".planegate" / "allowed_signers").read_text())
    signers = repo / ".planegate" / "allowed_signers"
    signers.write_text(signers.read_text() + f'agent@x namespaces="git,planegate" {public(keys["stranger"])}\n')
    commit_all(repo, "let me approve too")
    run = release_ready(env, repo)
    pending = pending_approval(env, run)
    from planegate.tools.gates.approval_view import describe

    shown = describe(env, pending.run_row, pending.head, pending.gates, "signed", None)
    assert "agent@x" in shown and "let me approve too" in shown
    own = signing.key_from_spec(str(keys["stranger"]), "--key")
    assert approve_signed(env, run, own, "cli").principal == "agent@x"  # the base decided: the limit
    assert accept_run(env, run).stage == "accepted"
    assert tag_verify(repo, run, repo / ".planegate" / "allowed_signers").returncode == 0
    caught = tag_verify(repo, run, protected)
    assert caught.returncode != 0 and "No principal matched" in caught.stderr
