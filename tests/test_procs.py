"""Running executors and checks: exit codes, output files, deadlines, process groups, env."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from planegate.tools.control.artifacts import file_artifact, sha256_file
from planegate.tools.errors import ExecutionError, InvalidInput, NotFound
from planegate.tools.execution.procs import (
    DEFAULT_ENV_ALLOW,
    ProcessResult,
    end_group,
    host_key,
    process_alive,
    process_start,
    resolve_argv0,
    run_process,
    scrubbed_env,
)


def script(directory: Path, name: str, body: str) -> Path:
    """An executable Python script with a shebang."""
    path = directory / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def running(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Pids a test started indirectly; any left alive is killed so no test leaks processes."""
    started: list[int] = []
    yield started
    for pid in started:
        if running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def run(tmp_path: Path, argv: list[str], **kwargs: object) -> ProcessResult:
    options: dict = {
        "cwd": tmp_path,
        "timeout_s": 20.0,
        "env": scrubbed_env(),
        "stdout_path": tmp_path / "out" / "stdout.txt",
        "stderr_path": tmp_path / "out" / "stderr.txt",
    }
    options.update(kwargs)
    return run_process(argv, **options)


GRANDCHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"

STUBBORN_PARENT = f"""\
import signal, subprocess, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", {GRANDCHILD!r}])
Path("pids.txt").write_text(f"{{__import__('os').getpid()}} {{child.pid}}")
time.sleep(60)
"""


def read_pids(path: Path) -> list[int]:
    return [int(pid) for pid in path.read_text().split()]


def test_exit_code_is_captured_and_output_goes_to_files(tmp_path: Path) -> None:
    tool = script(
        tmp_path, "tool.py", "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nsys.exit(3)\n"
    )
    result = run(tmp_path, [str(tool), "--flag"])
    assert result.exit_code == 3
    assert not result.ok and not result.timed_out
    assert result.argv == (str(tool), "--flag")
    assert result.stdout_path.read_text() == "to stdout\n"
    assert result.stderr_path.read_text() == "to stderr\n"
    assert result.tail() == "[stdout]\nto stdout\n\n[stderr]\nto stderr\n"


def test_tail_keeps_the_end_and_shares_the_budget(tmp_path: Path) -> None:
    tool = script(tmp_path, "tool.py", "import sys\nprint('x' * 5000 + 'END')\nprint('boom', file=sys.stderr)\n")
    tail = run(tmp_path, [str(tool)]).tail(200)
    assert tail.startswith("[stdout]\n…")
    assert "xEND\n" in tail
    assert tail.endswith("[stderr]\nboom\n")
    assert len(tail) < 260


def test_timeout_terminates_a_sleep_within_the_grace_period(tmp_path: Path) -> None:
    result = run(tmp_path, ["sleep", "30"], timeout_s=0.3, grace_s=3.0)
    assert result.timed_out
    assert result.exit_code == -signal.SIGTERM
    assert result.duration_s < 0.3 + 1.0


def test_timeout_kills_a_stubborn_child_and_its_grandchild(tmp_path: Path, pids: list[int]) -> None:
    parent = script(tmp_path, "stubborn.py", STUBBORN_PARENT)
    result = run(tmp_path, [str(parent)], timeout_s=1.0, grace_s=0.5)
    pids += read_pids(tmp_path / "pids.txt")
    assert result.timed_out
    assert result.exit_code == -signal.SIGKILL
    assert result.duration_s < 1.0 + 0.5 + 1.0
    assert [pid for pid in pids if running(pid)] == []


def test_nothing_in_the_group_outlives_a_normal_exit(tmp_path: Path, pids: list[int]) -> None:
    parent = script(
        tmp_path,
        "leaves_a_child.py",
        f"""\
        import subprocess, sys
        from pathlib import Path
        child = subprocess.Popen([sys.executable, "-c", {GRANDCHILD!r}])
        Path("pids.txt").write_text(str(child.pid))
        """,
    )
    result = run(tmp_path, [str(parent)], timeout_s=10.0)
    pids += read_pids(tmp_path / "pids.txt")
    assert result.exit_code == 0 and not result.timed_out
    assert result.duration_s < 5.0
    assert not running(pids[0])


def test_an_error_from_on_tick_stops_the_process_and_propagates(tmp_path: Path, pids: list[int]) -> None:
    parent = script(tmp_path, "stubborn.py", STUBBORN_PARENT)
    ticks: list[float] = []

    def tick(elapsed: float) -> None:
        ticks.append(elapsed)
        if (tmp_path / "pids.txt").exists() and elapsed > 0.3:
            raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError, match="lease lost"):
        run(tmp_path, [str(parent)], timeout_s=20.0, grace_s=0.2, on_tick=tick, tick_s=0.05)
    pids += read_pids(tmp_path / "pids.txt")
    assert len(ticks) >= 3
    assert ticks == sorted(ticks)
    assert [pid for pid in pids if running(pid)] == []


def test_on_tick_is_called_while_the_process_runs(tmp_path: Path) -> None:
    ticks: list[float] = []
    result = run(tmp_path, ["sleep", "0.5"], on_tick=ticks.append, tick_s=0.1)
    assert result.ok
    assert 2 <= len(ticks) <= 6
    assert all(0 < t < 1.0 for t in ticks)


def test_the_child_sees_only_allow_listed_variables_and_extras(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dump = script(tmp_path, "dump.py", "import json, os\nprint(json.dumps(dict(os.environ)))\n")
    source = {
        "PATH": os.environ["PATH"],
        "HOME": "/home/someone",
        "PLANEGATE_TOKEN": "not-for-children",
        "LC_NUMERIC": "C",
    }
    env = scrubbed_env(allow=(*DEFAULT_ENV_ALLOW, "LC_*"), extra={"PLANEGATE_TASK": "api"}, source=source)
    seen = json.loads(run(tmp_path, [str(dump)], env=env).stdout_path.read_text())
    assert "PLANEGATE_TOKEN" not in seen
    assert seen["PLANEGATE_TASK"] == "api"
    assert seen["LC_NUMERIC"] == "C"
    assert seen["HOME"] == "/home/someone"

    monkeypatch.setenv("PLANEGATE_TOKEN", "secret-token")
    monkeypatch.setenv("SOME_OTHER", "x")
    default = scrubbed_env()
    assert "PLANEGATE_TOKEN" not in default and "SOME_OTHER" not in default
    assert default["PATH"] == os.environ["PATH"]


def test_scrubbed_env_refuses_to_allow_everything() -> None:
    with pytest.raises(InvalidInput, match="'\\*'"):
        scrubbed_env(allow=["PATH", "*"])
    with pytest.raises(InvalidInput, match="A=B"):
        scrubbed_env(extra={"A=B": "x"})


def test_stdin_text_reaches_the_child_and_otherwise_stdin_is_empty(tmp_path: Path) -> None:
    echo = script(tmp_path, "echo.py", "import sys\ndata = sys.stdin.read()\nprint(data.upper() if data else 'EOF')\n")
    assert run(tmp_path, [str(echo)], stdin_text="review this\n").stdout_path.read_text() == "REVIEW THIS\n\n"
    assert run(tmp_path, [str(echo)]).stdout_path.read_text() == "EOF\n"
    big = "y" * 300_000  # more than a pipe buffer: must not block the caller
    assert len(run(tmp_path, [str(echo)], stdin_text=big).stdout_path.read_text()) == 300_001


def test_a_missing_executable_names_the_command_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ExecutionError) as info:
        run(tmp_path, ["planegate-no-such-tool", "--version"])
    assert "'planegate-no-such-tool'" in str(info.value)
    assert ".planegate/policy.toml" in str(info.value)


def test_a_file_that_is_not_executable_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.py"
    plain.write_text("print('hi')\n")
    with pytest.raises(ExecutionError, match="not an executable file"):
        run(tmp_path, ["./plain.py"])


def test_relative_commands_are_resolved_against_cwd(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    script(work, "tool.py", "print('ran')\n")
    assert run(tmp_path, ["./tool.py"], cwd=work).stdout_path.read_text() == "ran\n"
    assert resolve_argv0(["sleep"], {"PATH": os.environ["PATH"]}).endswith("/sleep")
    with pytest.raises(ExecutionError, match="not found on PATH"):
        resolve_argv0(["sleep"], {"PATH": str(tmp_path)})


def test_shell_strings_and_bad_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is a string"):
        run(tmp_path, "echo hi")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="non-empty"):
        run(tmp_path, [])
    with pytest.raises(InvalidInput, match="positive"):
        run(tmp_path, ["true"], timeout_s=0)
    with pytest.raises(ExecutionError, match="does not exist"):
        run(tmp_path, ["true"], cwd=tmp_path / "missing")


def test_file_hashes_are_streamed(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(data)
    assert file_artifact(blob) == (hashlib.sha256(data).hexdigest(), len(data))
    assert sha256_file(blob) == hashlib.sha256(data).hexdigest()
    with pytest.raises(NotFound, match=r"missing\.bin"):
        sha256_file(tmp_path / "missing.bin")
    with pytest.raises(InvalidInput, match="directory"):
        file_artifact(tmp_path)


# --- ending a group from elsewhere, the parent-death signal ----------------------------------

LEAVES_A_GRANDCHILD = f"""\
import subprocess, sys
from pathlib import Path
child = subprocess.Popen([sys.executable, "-c", {GRANDCHILD!r}])
Path("pids.txt").write_text(str(child.pid))
"""


def group_with_orphan(tmp_path: Path, pids: list[int]) -> tuple[int, int, int]:
    """A process group whose leader has exited (and been reaped) while its child, which ignores
    SIGTERM, still runs: (group id, the leader's start time, the orphan's pid)."""
    parent = script(tmp_path, "leader.py", LEAVES_A_GRANDCHILD)
    proc = subprocess.Popen([str(parent)], cwd=tmp_path, start_new_session=True)
    start = process_start(proc.pid)
    assert start is not None
    proc.wait(timeout=30)
    orphan = read_pids(tmp_path / "pids.txt")[0]
    pids.append(orphan)
    assert running(orphan) and os.getpgid(orphan) == proc.pid
    deadline = time.monotonic() + 30
    while not ignores_sigterm(orphan):  # its interpreter may still be starting
        assert time.monotonic() < deadline, "the orphan never set SIGTERM to be ignored"
        time.sleep(0.02)
    return proc.pid, start, orphan


def ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    return bool(ignored & (1 << (signal.SIGTERM - 1)))


def test_end_group_ends_what_is_left_of_a_leaderless_group(tmp_path: Path, pids: list[int]) -> None:
    pgid, start, orphan = group_with_orphan(tmp_path, pids)
    ended = end_group(pgid, start, grace_s=0.3)
    assert (ended.outcome, ended.pids) == ("killed", [orphan])  # it ignores SIGTERM
    assert not running(orphan)
    assert end_group(pgid, start, grace_s=0.3).outcome == "gone"


def test_end_group_leaves_a_group_whose_leader_started_at_another_time_alone(tmp_path: Path, pids: list[int]) -> None:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    pids.append(proc.pid)
    try:
        start = process_start(proc.pid)
        assert start is not None
        assert end_group(proc.pid, start - 1, grace_s=0.3).outcome == "gone"  # the id was reused
        assert running(proc.pid)
        ended = end_group(proc.pid, start, grace_s=3.0)
        assert (ended.outcome, ended.pids) == ("terminated", [proc.pid])
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_process_identity_tells_a_live_process_from_a_dead_or_reused_one(tmp_path: Path) -> None:
    me = os.getpid()
    assert process_alive(me, process_start(me)) and process_alive(me, None)
    assert not process_alive(me, (process_start(me) or 0) + 1)
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=10)
    assert not process_alive(proc.pid, None)
    key = host_key()
    assert key is not None and key.count("/") >= 2


CHILD_OF_A_THREAD = """\
import sys, threading, time
from pathlib import Path
from planegate.tools.execution.procs import run_process, scrubbed_env
out = Path(sys.argv[1])
def work():
    run_process([sys.executable, "-c", "import time; time.sleep(60)", sys.argv[2]], cwd=out, timeout_s=120,
                env=scrubbed_env(), stdout_path=out / "o.txt", stderr_path=out / "e.txt")
threading.Thread(target=work).start()
time.sleep(120)
"""


def test_a_child_started_from_a_thread_dies_with_its_process(tmp_path: Path, pids: list[int]) -> None:
    """The parent-death signal follows the thread that forked: run_process blocks that thread until
    the child is reaped, so only the death of the whole process can fire it, and then it does."""
    token = f"pdeathsig-{os.getpid()}-{id(tmp_path)}"
    host = subprocess.Popen([sys.executable, "-c", CHILD_OF_A_THREAD, str(tmp_path), token])
    try:

        def child() -> int | None:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and entry.name != str(host.pid):
                    with contextlib.suppress(OSError):
                        if token.encode() in (entry / "cmdline").read_bytes() and running(int(entry.name)):
                            return int(entry.name)
            return None

        deadline = time.monotonic() + 30
        while (pid := child()) is None:
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        pids.append(pid)
        time.sleep(0.5)
        assert running(pid), "the child must live while the thread that started it waits"
        host.kill()
        host.wait(timeout=10)
        deadline = time.monotonic() + 5
        while running(pid):
            assert time.monotonic() < deadline, "the child outlived its process"
            time.sleep(0.02)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(timeout=10)
