"""What a change may not commit, through the gates: secrets in binary files and lock files, and
symlinks that lead out of the repository. Real git repositories, real runs, accept_task and
get_status."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.env import Env
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.gates.accept import accept_task
from planegate.tools.gates.gates import GateResult, GatesUnmet
from planegate.tools.gates.links import MAX_HOPS, escaping_links
from planegate.tools.gates.secrets import BLOB_SCAN_LIMIT, SecretFinding, scan_added_lines, scan_blob
from planegate.tools.models import Module, Requirement, TaskSpec
from planegate.tools.report.status import get_status
from tests.execution import calc_repo, drain, open_env
from tests.helpers import commit_all, git

# Made-up credentials in the shapes the detectors know; none of them is real.
FAKE_KEY_ID = "AKIA" + "Q3EGRZ7XWJ5TK4MB"
FAKE_GITHUB = "ghp_" + "Z9yXw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0Ed9Cb8"
FAKE_SLACK = "xoxb-" + "1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUv"
PRIVATE_KEY_HEADER = "-----BEGIN OPENSSH " + "PRIVATE KEY-----"

CLEAN_LOCK = {
    "name": "app",
    "lockfileVersion": 3,
    "packages": {
        "node_modules/left-pad": {
            "version": "1.3.0",
            "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
            "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQEbXSBbzC9ARv5nADBm9GqTW7olRi7dz4o5yMx"
            "BydGl8sOg==",
        }
    },
}


def binary(*parts: bytes) -> bytes:
    """Bytes git treats as binary (a NUL early on), with ``parts`` inside."""
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + b"\x00\xff\x10".join(parts) + b"\x00" * 64


# --- the scanners on their own ---------------------------------------------------------------


def test_a_key_in_binary_bytes_is_found_by_offset_and_never_shown() -> None:
    data = binary(b"junk", FAKE_KEY_ID.encode(), b"more", ("token=" + FAKE_GITHUB).encode("utf-16-le"))
    found = scan_blob("assets/logo.png", data)
    assert [(f.kind, f.line) for f in found] == [("AWS Access Key", 0), ("GitHub Token", 0)]
    assert found[0].where == f"byte {data.index(FAKE_KEY_ID.encode())}"
    assert found[0].location() == f"assets/logo.png ({found[0].where})"
    assert FAKE_KEY_ID not in repr(found) and FAKE_GITHUB not in repr(found)


def test_a_binary_keeps_only_the_secrets_its_base_version_did_not_have() -> None:
    before = binary(b"v1", FAKE_KEY_ID.encode())
    after = binary(b"v2 with more bytes", FAKE_KEY_ID.encode(), PRIVATE_KEY_HEADER.encode())
    assert [f.kind for f in scan_blob("firmware.bin", after, before)] == ["Private Key"]


def test_random_bytes_and_hashes_trip_no_high_confidence_detector() -> None:
    noise = bytes((i * 7919 + 13) % 256 for i in range(300_000))
    assert scan_blob("noise.bin", binary(noise)) == []
    lock_lines = [(i + 1, line) for i, line in enumerate(json.dumps(CLEAN_LOCK, indent=2).splitlines())]
    assert scan_added_lines({"package-lock.json": lock_lines}) == []


@pytest.mark.parametrize(
    "name", ["package-lock.json", "yarn.lock", "poetry.lock", "Cargo.lock", "uv.lock", "pnpm-lock.yaml", "go.sum"]
)
def test_lock_files_are_scanned_with_the_high_confidence_detectors(name: str) -> None:
    lines = [(3, f'  resolved "https://npm.example.com/pkg.tgz?token={FAKE_GITHUB}"'), (9, f"slack = {FAKE_SLACK}")]
    found = scan_added_lines({name: lines})
    assert [(f.line, f.kind) for f in found] == [(3, "GitHub Token"), (9, "Slack Token")]


def test_names_the_defaults_skip_still_get_the_high_confidence_scan() -> None:
    files = {"docs/diagram.svg": [(4, f"<!-- {FAKE_KEY_ID} -->")], "api/swagger_client.py": [(2, f"k='{FAKE_KEY_ID}'")]}
    assert scan_added_lines(files) == [
        SecretFinding("api/swagger_client.py", 2, "AWS Access Key"),
        SecretFinding("docs/diagram.svg", 4, "AWS Access Key"),
    ]


def test_links_that_leave_the_tree_are_found_through_other_links() -> None:
    links = {
        "etc": "/etc/passwd",
        "a/b/out": "../../../outside",
        "a/b/in": "../../README.md",
        "vendor": "..",
        "a/through": "../vendor/x",
        "loop1": "loop2",
        "loop2": "loop1",
        "a/sibling": "b/in",
    }
    found = {e.path: e.why for e in escaping_links(links, links)}
    assert found["etc"] == "absolute target"
    assert found["a/b/out"] == "climbs out of the repository"
    assert found["a/through"] == "climbs out of the repository through vendor"
    assert found["vendor"] == "climbs out of the repository"
    assert found["loop1"] == f"more than {MAX_HOPS} links deep"
    assert "a/b/in" not in found and "a/sibling" not in found
    assert escaping_links(["a/b/in"], links) == []


# --- through the gates -----------------------------------------------------------------------


@pytest.fixture
def env(fresh_machine: Path) -> Iterator[Env]:
    opened = open_env(fresh_machine)
    yield opened
    opened.close()


def assets_run(env: Env, repo: Path) -> str:
    """A run with one task `assets` whose scope covers assets, lock files and links."""
    run = start_run(env, str(repo), "Ship the assets").run
    freeze_requirements(env, run, [Requirement(id="R1", statement="assets ship", acceptance_criteria=["they do"])])
    scope = ["assets/**", "links/**", "package-lock.json", "yarn.lock"]
    freeze_architecture(env, run, [Module(name="assets", owns=scope)], [])
    register_graph(
        env, run, [TaskSpec(id="assets", title="Assets", goal="add assets", scope=scope, requirements=["R1"])]
    )
    return run


def commit_and_check(env: Env, run: str, worktree: Path, message: str) -> None:
    commit_all(worktree, message)
    start_checks(env, run, "assets")
    drain(env)


def unmet_gates(env: Env, run: str) -> dict[str, GateResult]:
    with pytest.raises(GatesUnmet) as refused:
        accept_task(env, run, "assets")
    return {g.gate: g for g in refused.value.unmet}


def shown_gates(env: Env, run: str) -> dict[str, tuple[bool, str]]:
    status = get_status(env, run).status
    assert status is not None
    shown = {g.gate: (g.ok, g.reason) for t in status.active if t.task == "assets" for g in t.gates}
    # A gate that holds is named in `met`; what it still says (a partial scan) is in `notes`.
    for task in status.active:
        if task.task == "assets":
            notes = {note.split(": ", 1)[0]: note.split(": ", 1)[1] for note in task.notes}
            shown |= {gate: (True, notes.get(gate, "")) for gate in task.met}
    return shown


def test_a_key_in_a_binary_and_a_token_in_a_lock_file_are_refused(tmp_path: Path, env: Env) -> None:
    repo = calc_repo(tmp_path / "calc")
    (repo / "assets").mkdir()
    (repo / "assets" / "firmware.bin").write_bytes(binary(b"v1", FAKE_KEY_ID.encode()))
    commit_all(repo, "firmware with an old key")
    run = assets_run(env, repo)
    worktree = Path(dispatch_task(env, run, "assets").worktree)
    (worktree / "assets" / "logo.png").write_bytes(binary(b"logo", FAKE_KEY_ID.encode()))
    (worktree / "assets" / "firmware.bin").write_bytes(binary(b"v2", FAKE_KEY_ID.encode(), b"unchanged key"))
    lock = json.dumps(CLEAN_LOCK, indent=2).replace("registry.npmjs.org", f"x:{FAKE_GITHUB}@npm.example.com")
    (worktree / "package-lock.json").write_text(lock + "\n")
    commit_and_check(env, run, worktree, "assets")
    assert "Binary files" in git(worktree, "diff", "HEAD~1", "HEAD", "--", "assets/logo.png")

    before = env.store.event_count()
    gates = unmet_gates(env, run)
    assert list(gates) == ["secrets"]
    reason = gates["secrets"].reason
    offset = binary(b"logo", FAKE_KEY_ID.encode()).index(FAKE_KEY_ID.encode())
    assert f"AWS Access Key at assets/logo.png (byte {offset})" in reason
    assert "GitHub Token at package-lock.json:" in reason
    assert "firmware.bin" not in reason  # its key was already on the base
    assert FAKE_KEY_ID not in reason and FAKE_GITHUB not in reason
    assert "rotate" in gates["secrets"].next_step
    assert env.store.event_count() == before and env.task_row(run, "assets")["status"] == "in_progress"
    assert shown_gates(env, run)["secrets"] == (False, reason)

    git(worktree, "rm", "-q", "assets/logo.png")
    (worktree / "package-lock.json").write_text(json.dumps(CLEAN_LOCK, indent=2) + "\n")
    commit_and_check(env, run, worktree, "drop the secrets")
    assert shown_gates(env, run)["secrets"][0]
    assert accept_task(env, run, "assets").merge_sha


def test_a_binary_longer_than_the_scan_limit_says_so(tmp_path: Path, env: Env) -> None:
    run = assets_run(env, calc_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "assets").worktree)
    big = bytearray(os.urandom(BLOB_SCAN_LIMIT + 1024 * 1024))
    big[:1] = b"\x00"
    tail = BLOB_SCAN_LIMIT + 512 * 1024
    big[tail : tail + 20] = FAKE_KEY_ID.encode()
    (worktree / "assets").mkdir()
    (worktree / "assets" / "model.bin").write_bytes(bytes(big))
    commit_and_check(env, run, worktree, "a large model")
    ok, reason = shown_gates(env, run)["secrets"]
    assert ok
    assert f"assets/model.bin was scanned only in its first 8 MiB ({len(big)} bytes in all)" in reason
    assert accept_task(env, run, "assets").merge_sha


@pytest.mark.parametrize(
    ("target", "why"),
    [("/etc/passwd", "absolute target"), ("../../outside", "climbs out of the repository")],
)
def test_a_committed_symlink_out_of_the_repository_is_refused(tmp_path: Path, env: Env, target: str, why: str) -> None:
    run = assets_run(env, calc_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "assets").worktree)
    (worktree / "links").mkdir()
    (worktree / "links" / "readme").symlink_to("../README.md")
    (worktree / "links" / "escape").symlink_to(target)
    commit_and_check(env, run, worktree, "links")
    assert git(worktree, "ls-tree", "HEAD", "links/escape").startswith("120000 ")

    gates = unmet_gates(env, run)
    assert list(gates) == ["scope"]
    assert (
        gates["scope"].reason == f"commits symlinks that point outside the repository: links/escape → {target} ({why})."
    )
    assert "git rm the link" in gates["scope"].next_step
    assert shown_gates(env, run)["scope"] == (False, gates["scope"].reason)

    git(worktree, "rm", "-q", "links/escape")
    commit_and_check(env, run, worktree, "drop the link")
    assert accept_task(env, run, "assets").merge_sha  # the link inside the repository stays


def test_a_link_whose_target_file_is_missing_on_disk_is_judged_by_git_alone(tmp_path: Path, env: Env) -> None:
    """The worktree's files are not consulted: a link retargeted in a later commit is judged at the head."""
    run = assets_run(env, calc_repo(tmp_path / "calc"))
    worktree = Path(dispatch_task(env, run, "assets").worktree)
    (worktree / "links").mkdir()
    (worktree / "links" / "cfg").symlink_to("../assets/not-yet-there.json")
    commit_and_check(env, run, worktree, "an in-repository link to a file that does not exist")
    assert shown_gates(env, run)["scope"][0]
    (worktree / "links" / "cfg").unlink()
    (worktree / "links" / "cfg").symlink_to("../../../home/user/.ssh/id_ed25519")
    commit_and_check(env, run, worktree, "retarget it")
    assert "links/cfg → ../../../home/user/.ssh/id_ed25519" in unmet_gates(env, run)["scope"].reason
