"""A ledger that goes bad under a running planegate: corrupt, read-only, on a full disk.

Everything here is a real process: `planegate serve` over stdio (its stderr kept to count what
the worker logs), and the `planegate` CLI. Each case checks the exact message, that the server
answers every call within a bounded time and stays up past the moment its worker first tries the
ledger, that nothing is half-written, and that fixing the file is enough: the same server
process works again without a restart.

A full disk needs a small tmpfs, and a read-only home as root needs a read-only mount; both need
`mount`, so those cases are skipped (with the reason) where mounting is not permitted.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from planegate.tools.control.runs import start_run
from tests.execution import open_env

CLI = [sys.executable, "-m", "planegate.server.cli"]
CALL_LIMIT_S = 10.0
RESTORE = (
    "stop every planegate process using it, move it aside and put your latest backup in its place "
    "(`planegate ledger backup PATH` makes one; README: Operations, When the ledger is broken), then run "
    "`planegate ledger verify`"
)


def planegate(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLANEGATE_HOME": str(home)}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def ledger_with_a_run(home: Path, repo: Path) -> str:
    env = open_env(home)
    try:
        return start_run(env, str(repo), "Survive a bad ledger").run
    finally:
        env.close()


def event_count(ledger: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(f"{ledger.as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def drop_wal(ledger: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{ledger}{suffix}").unlink(missing_ok=True)


class Served:
    """A real `planegate serve` over stdio; ``ask`` answers one call within ``CALL_LIMIT_S``."""

    def __init__(self, client: Client, errlog: Path) -> None:
        self.client = client
        self.errlog = errlog

    async def ask(self, tool: str, **arguments: Any) -> tuple[bool, str]:
        started = time.monotonic()
        with anyio.fail_after(CALL_LIMIT_S):
            result = await self.client.call_tool(tool, arguments)
        assert time.monotonic() - started < CALL_LIMIT_S
        text = " ".join(getattr(block, "text", "") for block in result.content)
        if result.is_error:
            assert result.structured_content is not None
            assert text.split("\n", 1)[0] == f"disposition: {result.structured_content['disposition']}"
        return bool(result.is_error), text

    def stderr(self) -> str:
        return self.errlog.read_text(errors="replace")


@contextlib.asynccontextmanager
async def served(home: Path, tmp_path: Path) -> AsyncIterator[Served]:
    errlog = tmp_path / f"serve-{time.monotonic_ns()}.err"
    params = StdioServerParameters(
        command=CLI[0], args=[*CLI[1:], "serve"], env={**os.environ, "PLANEGATE_HOME": str(home)}
    )
    with errlog.open("w") as err:
        async with Client(stdio_client(params, errlog=err)) as client:
            yield Served(client, errlog)


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text and "Error executing tool" not in text, text


# --- mounts ------------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs at ``path`` (skips the test when this process may not mount one)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        why = done.stderr.strip() or "mount refused"
        pytest.skip(f"cannot mount a tmpfs here ({why}); needs root or CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True, timeout=30)


# --- a corrupt file ----------------------------------------------------------------------------


def not_a_database(ledger: Path) -> str:
    ledger.write_bytes(b"this is not what planegate wrote\n" * 4000)
    drop_wal(ledger)
    return "file is not a database"


def malformed(ledger: Path) -> str:
    """A real SQLite file whose pages after the first are overwritten: the header still reads."""
    data = bytearray(ledger.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = bytes([0xA5]) * (len(data) - page)
    ledger.write_bytes(bytes(data))
    drop_wal(ledger)
    return "database disk image is malformed"


@pytest.mark.anyio
@pytest.mark.parametrize(("damage", "cause"), [(not_a_database, "not a database"), (malformed, "corrupt")])
async def test_a_corrupt_ledger_is_named_by_every_tool_and_the_cli_and_a_backup_brings_the_server_back(
    tmp_path: Path, fresh_machine: Path, repo: Path, damage: Any, cause: str
) -> None:
    home = fresh_machine
    run = ledger_with_a_run(home, repo)
    backup = tmp_path / "backup.db"
    made = planegate(home, "ledger", "backup", str(backup))
    assert made.returncode == 0 and "integrity ok" in made.stdout, made.stderr
    ledger = home / "ledger.db"
    detail = damage(ledger)
    if cause == "not a database":
        expected = f"the ledger at {ledger} is not a SQLite database ({detail}); planegate will not touch it. "
    else:
        expected = f"the ledger at {ledger} is corrupt ({detail}); planegate will not write to it. "
    expected += f"To recover: {RESTORE}"

    async with served(home, tmp_path) as server:
        for tool, arguments in (
            ("get_status", {}),
            ("start_run", {"repo": str(repo), "goal": "more"}),
            ("get_job", {"job": 1, "wait_seconds": 0}),
        ):
            failed, text = await server.ask(tool, **arguments)
            assert failed and text == f"disposition: infrastructure\n{expected}", tool
        await anyio.sleep(3.0)  # past the worker's first try at the ledger (1 s after start)
        failed, text = await server.ask("get_status")
        assert failed and text == f"disposition: infrastructure\n{expected}"
        log = server.stderr()
        assert log.count("job worker waiting for the ledger") == 1, log  # said once, not at every retry
        no_traceback(log)

        backup.replace(ledger)  # the documented recovery, while the server keeps running
        failed, text = await server.ask("get_status")
        assert not failed and run in text

    verify = planegate(home, "ledger", "verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ledger ok: "), verify.stderr

    damage(ledger)
    verify = planegate(home, "ledger", "verify")
    assert verify.returncode == 1 and verify.stderr == f"ledger BROKEN: {expected}\n" and verify.stdout == ""
    status = planegate(home, "status")
    assert status.returncode == 1 and status.stderr == f"planegate status: {expected}\n"
    no_traceback(verify.stderr, status.stderr)


# --- a read-only home ---------------------------------------------------------------------------


class ReadOnly:
    """Makes a home read-only: a read-only remount of its tmpfs as root (modes do not stop root), modes otherwise."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.on = False

    def __enter__(self) -> ReadOnly:
        if os.geteuid() == 0:
            remount(self.home, "ro")
        else:
            self.home.chmod(0o555)
        self.on = True
        return self

    def off(self) -> None:
        if self.on:
            remount(self.home, "rw") if os.geteuid() == 0 else self.home.chmod(0o755)
            self.on = False

    def __exit__(self, *exc: object) -> None:
        self.off()


@pytest.fixture
def mounted_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """PLANEGATE_HOME on its own tmpfs where mounting works (as root it must: modes do not stop root)."""
    if os.geteuid() != 0:
        home = tmp_path / "home-rw"
        home.mkdir()
        monkeypatch.setenv("PLANEGATE_HOME", str(home))
        yield home
        return
    with tmpfs(tmp_path / "home-mnt", "64m") as home:
        monkeypatch.setenv("PLANEGATE_HOME", str(home))
        yield home


@pytest.mark.anyio
async def test_a_read_only_home_is_named_by_every_tool_and_the_cli_and_the_server_recovers_when_writable(
    tmp_path: Path, mounted_home: Path, repo: Path
) -> None:
    home = mounted_home
    run = ledger_with_a_run(home, repo)
    ledger = home / "ledger.db"
    before = event_count(ledger)
    drop_wal(ledger)  # as after a clean shutdown (with them, SQLite could still read a read-only ledger)
    pattern = re.compile(
        re.escape(f"the ledger at {ledger} cannot be written: {home} is read-only (")
        + r"[^)]+"
        + re.escape(
            f"); nothing was written. Make {home} writable by this user or point PLANEGATE_HOME at a writable "
            "folder, then call again"
        )
    )
    with ReadOnly(home) as read_only:
        async with served(home, tmp_path) as server:
            for tool, arguments in (
                ("get_status", {"run": run}),
                ("start_run", {"repo": str(repo), "goal": "more"}),
                ("cancel_job", {"job": 1, "reason": "r"}),
            ):
                failed, text = await server.ask(tool, **arguments)
                head, _, message = text.partition("\n")
                assert failed and head == "disposition: infrastructure" and pattern.fullmatch(message), text
            await anyio.sleep(3.0)
            failed, text = await server.ask("get_status")
            assert failed and pattern.fullmatch(text.partition("\n")[2])
            assert server.stderr().count("job worker waiting for the ledger") == 1
            no_traceback(server.stderr())

            verify = planegate(home, "ledger", "verify")
            assert verify.returncode == 1 and verify.stdout == ""
            assert verify.stderr.startswith("ledger BROKEN: ") and pattern.fullmatch(verify.stderr[15:-1])
            status = planegate(home, "status")
            assert status.returncode == 1 and pattern.fullmatch(status.stderr.removeprefix("planegate status: ")[:-1])
            no_traceback(verify.stderr, status.stderr)
            made = planegate(home, "ledger", "backup", str(tmp_path / "copy.db"))  # reading it still works
            assert made.returncode == 0, made.stderr

            read_only.off()
            failed, text = await server.ask("get_status", run=run)  # the same process, no restart
            assert not failed and "Survive a bad ledger" in text
    assert event_count(ledger) == before


# --- a full disk --------------------------------------------------------------------------------


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    # Unbuffered: a buffered file would try again to write what did not fit when it is closed.
    with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
    return filler


@pytest.mark.anyio
async def test_a_full_disk_refuses_writes_with_the_reason_keeps_reads_and_half_writes_nothing(
    tmp_path: Path, mounted_home: Path, repo: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a small tmpfs, and mounting one needs root")
    home = mounted_home
    run = ledger_with_a_run(home, repo)
    remount(home, "size=3m")
    ledger = home / "ledger.db"
    expected = (
        f"the ledger at {ledger} cannot be written: the disk holding {home} is full (database or disk is full); the "
        f"change was rolled back, nothing was half-written. Free space on that disk (`df -h {home}`), then call again"
    )
    async with served(home, tmp_path) as server:
        failed, _ = await server.ask("get_status")
        assert not failed
        filler = fill(home)
        before = event_count(ledger)
        for _ in range(2):
            failed, text = await server.ask("start_run", repo=str(repo), goal="g" * 4000)
            assert failed and text == f"disposition: infrastructure\n{expected}"
        failed, text = await server.ask("get_status")  # reading needs no space
        assert not failed and "Survive a bad ledger" in text
        await anyio.sleep(2.0)
        assert event_count(ledger) == before

        pause = planegate(home, "worker", "pause", "--reason", "disk")
        assert pause.returncode == 1 and pause.stderr == f"planegate worker pause: {expected}\n"
        status = planegate(home, "status")
        assert status.returncode == 0 and run in status.stdout
        no_traceback(server.stderr(), pause.stderr)

        filler.unlink()
        failed, text = await server.ask("start_run", repo=str(repo), goal="after the disk was freed")
        assert not failed, text
    verify = planegate(home, "ledger", "verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ledger ok: "), verify.stderr
    assert event_count(ledger) == before + 1


# --- backup and the recovery path ---------------------------------------------------------------


def test_a_backup_taken_while_another_process_writes_is_whole_and_verifies(
    tmp_path: Path, fresh_machine: Path, repo: Path
) -> None:
    ledger_with_a_run(fresh_machine, repo)
    writer = subprocess.Popen(  # another process writing runs as fast as it can
        [
            sys.executable,
            "-c",
            "import sys\nfrom tests.execution import open_env\nfrom planegate.tools.control.runs import start_run\n"
            "env = open_env(__import__('pathlib').Path(sys.argv[1]))\n"
            "for i in range(10_000):\n    start_run(env, sys.argv[2], f'busy {i}')\n",
            str(fresh_machine),
            str(repo),
        ],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        copies = []
        for n in range(3):
            target = tmp_path / f"copy-{n}" / "ledger.db"
            made = planegate(fresh_machine, "ledger", "backup", str(target))
            assert made.returncode == 0 and "integrity ok" in made.stdout, made.stderr
            copies.append((target, int(made.stdout.split(": ")[1].split(" events")[0])))
        assert writer.poll() is None, "the writer kept running while the backups were made"
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert copies[0][1] < copies[-1][1]  # taken while the ledger grew
    for target, events in copies:
        assert not list(target.parent.glob(".*partial*"))
        verify = planegate(target.parent, "ledger", "verify")
        assert verify.returncode == 0 and f"ledger ok: {events} events verified" in verify.stdout, verify.stderr


def test_a_backup_never_overwrites_or_copies_a_broken_ledger(tmp_path: Path, fresh_machine: Path, repo: Path) -> None:
    ledger_with_a_run(fresh_machine, repo)
    target = tmp_path / "backup.db"
    target.write_text("an older backup")
    refused = planegate(fresh_machine, "ledger", "backup", str(target))
    assert refused.returncode == 1 and f"{target} exists; name a new file, or pass --force" in refused.stderr
    assert target.read_text() == "an older backup"
    assert planegate(fresh_machine, "ledger", "backup", str(target), "--force").returncode == 0
    malformed(fresh_machine / "ledger.db")
    broken = planegate(fresh_machine, "ledger", "backup", str(tmp_path / "from-broken.db"))
    assert broken.returncode == 1 and "is corrupt" in broken.stderr and "Traceback" not in broken.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if "broken" in p.name) == []


def test_restoring_an_older_backup_names_the_later_checkpoint_tags_until_they_are_undone(
    tmp_path: Path, fresh_machine: Path
) -> None:
    from planegate.tools.gates.accept import accept_task
    from tests.execution import calc_repo, finish_calc, planned_run
    from tests.helpers import git

    repo = calc_repo(tmp_path / "calc")
    env = open_env(fresh_machine)
    run = planned_run(env, repo)
    backup = tmp_path / "before-acceptance.db"
    assert planegate(fresh_machine, "ledger", "backup", str(backup)).returncode == 0
    finish_calc(env, run)
    accept_task(env, run, "calc")  # tags planegate/<run>/cp-1 with the chain head
    integration = env.run_row(run)["integration_branch"]
    base = env.run_row(run)["base_sha"]
    env.close()

    ledger = fresh_machine / "ledger.db"
    for stale in fresh_machine.glob("ledger.db*"):
        stale.rename(tmp_path / stale.name)
    backup.replace(ledger)
    verify = planegate(fresh_machine, "ledger", "verify")
    assert verify.returncode == 1 and f"tag planegate/{run}/cp-1 in {repo}" in verify.stderr
    assert "which the ledger does not have" in verify.stderr
    git(repo, "update-ref", f"refs/heads/{integration}", base)
    git(repo, "tag", "-d", f"planegate/{run}/cp-1")
    verify = planegate(fresh_machine, "ledger", "verify")
    assert verify.returncode == 0, verify.stderr
