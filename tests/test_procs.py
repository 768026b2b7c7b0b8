"""Running executors and checks: exit codes, output files, deadlines, process groups, env."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from planegate.tools.control.artifacts import file_artifact, sha256_file
from planegate.tools.errors import ExecutionError, InvalidInput, NotFound
from planegate.tools.execution.procs import (
    DEFAULT_ENV_ALLOW,
    ProcessResult,
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
