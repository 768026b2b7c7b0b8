"""Running an executor or a check: no shell, a deadline, its own process group, a scrubbed env.

``run_process`` starts an argv list (never a shell string) in a new session, so the child and
everything it spawns share one process group that can be signalled as a whole. Output goes
straight to files, never into memory. The wait is sliced so callers can heartbeat; on timeout
(or when the caller's tick raises) the group gets SIGTERM, the main process gets ``grace_s`` to
exit, then the group gets SIGKILL.

Invariants: when ``run_process`` returns or raises, the main process has been reaped and every
other member of its process group has been sent SIGKILL (the group is signalled while the main
process is still an unreaped zombie, so its id cannot have been reused). A descendant that
starts its own session (``setsid``) leaves the group and is out of reach; containing those
needs a cgroup or a container. The child sees only allow-listed environment variables.

A process that outlives its caller is the other danger: when the planegate process running it
is killed, nothing waits for the child any more. On Linux the child is started with a
parent-death signal (``PR_SET_PDEATHSIG`` = SIGKILL, set between fork and exec), so it dies
with the thread that started it. ``run_process`` blocks that thread until the child is reaped,
so the thread outlives the child in every case but the death of the whole process, which is the
case the signal is for. The signal reaches only the child itself: its own children stay in the
group, which is why the caller may register a ``ProcessWatch`` (``watching``) that records each
group, and ``end_group`` ends a recorded group later, from another process, guarded by the
leader's start time against a reused process id.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Protocol

from ..errors import ExecutionError, InvalidInput

__all__ = [
    "DEFAULT_ENV_ALLOW",
    "GroupEnd",
    "ProcessResult",
    "ProcessWatch",
    "end_group",
    "host_key",
    "process_alive",
    "process_start",
    "resolve_argv0",
    "run_process",
    "scrubbed_env",
    "watching",
]

DEFAULT_ENV_ALLOW = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM")
# Never handed to an executor, check or reviewer, whatever the allow-list says: with the human's
# ssh-agent a child could sign as them, and a signed approval must be out of its reach.
NEVER_PASSED = frozenset({"SSH_AUTH_SOCK", "SSH_AGENT_PID"})

_FIX_ARGV = "install it or change the argv in .planegate/policy.toml"
_POLL_MAX_S = 0.05  # upper bound of the exit-poll interval: latency vs. wake-ups
_KILL_WAIT_S = 5.0  # how long a SIGKILLed process may take to die before we give up on it
_GROUP_GONE_WAIT_S = 2.0  # how long to wait for killed group members to actually exit


@dataclass(frozen=True)
class ProcessResult:
    """How a process ended. ``exit_code`` is negative (``-signal``) when a signal ended it."""

    argv: tuple[str, ...]
    exit_code: int
    duration_s: float
    timed_out: bool
    stdout_path: Path
    stderr_path: Path

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def tail(self, n_bytes: int = 4000) -> str:
        """The end of stdout and stderr (about ``n_bytes`` in all), labelled, for summaries."""
        streams = [("stdout", _size(self.stdout_path)), ("stderr", _size(self.stderr_path))]
        present = [(name, size) for name, size in streams if size > 0]
        if not present:
            return ""
        # Split the budget evenly, and give what one stream does not need to the other.
        share = n_bytes // len(present)
        spare = sum(max(0, share - size) for _, size in present)
        parts = []
        for name, size in present:
            budget = share + spare if size > share else share
            path = self.stdout_path if name == "stdout" else self.stderr_path
            text = _read_tail(path, budget)
            cut = "…" if size > budget else ""
            parts.append(f"[{name}]\n{cut}{text}")
        return "\n".join(parts)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_tail(path: Path, n_bytes: int) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, _size(path) - n_bytes))
        return handle.read(n_bytes).decode("utf-8", "replace")


# --- environment and executable --------------------------------------------------------------


def scrubbed_env(
    allow: Iterable[str] = DEFAULT_ENV_ALLOW,
    extra: Mapping[str, str] | None = None,
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The allow-listed variables of ``source`` (default ``os.environ``), then ``extra``.

    A name ending in ``*`` allows every variable with that prefix (``LC_*``). ``NEVER_PASSED``
    (the ssh-agent socket) is left out even when allowed.

    Raises:
        InvalidInput: a bare ``*`` in ``allow``, or an ``extra`` name that is empty or contains
            ``=`` or NUL, or a value containing NUL.
    """
    exact: set[str] = set()
    prefixes: list[str] = []
    for name in allow:
        if name.endswith("*"):
            if name == "*":
                raise InvalidInput(
                    "environment allow-list entry '*' would pass every variable (tokens included); "
                    "list the variables by name or by a prefix such as 'LC_*'"
                )
            prefixes.append(name[:-1])
        else:
            exact.add(name)
    env = {
        name: value
        for name, value in (os.environ if source is None else source).items()
        if (name in exact or any(name.startswith(prefix) for prefix in prefixes)) and name not in NEVER_PASSED
    }
    for name, value in (extra or {}).items():
        if not name or "=" in name or "\x00" in name or "\x00" in value or name in NEVER_PASSED:
            raise InvalidInput(f"environment variable {name!r} cannot be passed to a process; fix its name or value")
        env[name] = value
    return env


def resolve_argv0(argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> str:
    """The executable ``argv[0]`` names: looked up on ``env``'s PATH, or taken as a path.

    A name containing ``/`` is a path, relative to ``cwd`` (default: the current directory).

    Raises:
        InvalidInput: an empty argv or empty ``argv[0]``.
        ExecutionError: no executable of that name on PATH, or the path is not an executable
            file.
    """
    if not argv or not argv[0]:
        raise InvalidInput(f"argv {list(argv)!r} has no command; give the command as the first element")
    name = argv[0]
    if "/" in name:
        path = Path(name) if cwd is None or Path(name).is_absolute() else cwd / name
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ExecutionError(f"command {name!r} is not an executable file; {_FIX_ARGV}", disposition="bad_config")
        return str(path)
    search = env.get("PATH", os.defpath)
    found = shutil.which(name, path=search)
    if found is None:
        raise ExecutionError(
            f"command {name!r} was not found on PATH ({search}); {_FIX_ARGV}", disposition="bad_config"
        )
    return found


# --- running ---------------------------------------------------------------------------------


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout_s: float,
    env: Mapping[str, str],
    stdout_path: Path,
    stderr_path: Path,
    stdin_text: str | None = None,
    grace_s: float = 5.0,
    on_tick: Callable[[float], None] | None = None,
    tick_s: float = 1.0,
) -> ProcessResult:
    """Run ``argv`` in ``cwd`` with exactly ``env``, output to the two files, within ``timeout_s``.

    ``on_tick(elapsed_s)`` is called every ``tick_s`` while the process runs. If it raises, the
    process group is stopped (SIGTERM, ``grace_s``, SIGKILL) and the exception propagates.
    A timeout is an outcome, not an error: the result has ``timed_out=True``. The watch
    registered with ``watching`` (if any) hears of the start and of the end; an error it raises
    stops the group the same way and propagates.

    Raises:
        InvalidInput: a str argv, an empty argv, a non-str element, a non-positive
            ``timeout_s`` or ``tick_s``, or a negative ``grace_s``.
        ExecutionError: the command is not found or cannot be started, ``cwd`` is not a
            directory, or the process survives SIGKILL.
    """
    if isinstance(argv, str | bytes):
        raise InvalidInput(f"argv {argv!r} is a string; pass a list such as ['pytest', '-q'] (no shell is used)")
    argv = tuple(argv)
    if not argv or not all(isinstance(arg, str) for arg in argv):
        raise InvalidInput(f"argv {list(argv)!r} must be a non-empty list of strings")
    if timeout_s <= 0 or tick_s <= 0 or grace_s < 0:
        raise InvalidInput(
            f"timeout_s={timeout_s}, tick_s={tick_s}, grace_s={grace_s}: "
            "timeout and tick must be positive and grace not negative"
        )
    if not cwd.is_dir():
        raise ExecutionError(f"working directory {str(cwd)!r} does not exist; create it or pass another cwd")
    executable = resolve_argv0(argv, env, cwd)
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    stderr_path.parent.mkdir(parents=True, exist_ok=True)

    watch = _watch.get()
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err, _stdin_source(stdin_text) as stdin:
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                executable=executable,
                cwd=cwd,
                env=dict(env),
                stdin=stdin,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as exc:
            raise ExecutionError(
                f"command {argv[0]!r} could not be started ({exc.strerror}); {_FIX_ARGV}", disposition="bad_config"
            ) from exc

    try:
        if watch is not None:
            # Read while the child is at worst an unreaped zombie: its stat (and start time) still exists.
            watch.started(proc.pid, process_start(proc.pid), argv)
        timed_out = _wait_sliced(proc.pid, started + timeout_s, tick_s, on_tick, started)
    except BaseException:
        # The watch or the tick raised (or this thread was interrupted): nothing may outlive the call.
        _stop_group(proc.pid, grace_s)
        proc.wait()
        if watch is not None:
            with suppress(Exception):  # the first error is the one to report
                watch.ended(proc.pid)
        raise
    if timed_out:
        _stop_group(proc.pid, grace_s)
    else:
        _kill_group(proc.pid)
    exit_code = proc.wait()  # a zombie by now: reaping does not block
    if watch is not None:
        watch.ended(proc.pid)
    return ProcessResult(
        argv=argv,
        exit_code=exit_code,
        duration_s=time.monotonic() - started,
        timed_out=timed_out,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )


@contextmanager
def _stdin_source(text: str | None) -> Iterator[int | IO[bytes]]:
    """``/dev/null``, or an unlinked temporary file holding ``text``.

    A file rather than a pipe: writing a large text into a pipe the child never reads would
    block this thread past every deadline.
    """
    if text is None:
        yield subprocess.DEVNULL
        return
    with tempfile.TemporaryFile() as handle:
        handle.write(text.encode("utf-8"))
        handle.seek(0)
        yield handle


def _wait_sliced(
    pid: int, deadline: float, tick_s: float, on_tick: Callable[[float], None] | None, started: float
) -> bool:
    """Wait for ``pid`` to exit in slices of ``tick_s``; True when ``deadline`` passed first."""
    while True:
        if _wait_exited(pid, min(tick_s, deadline - time.monotonic())):
            return False
        now = time.monotonic()
        if now >= deadline:
            return True
        if on_tick is not None:
            on_tick(now - started)


def _wait_exited(pid: int, timeout_s: float) -> bool:
    """Whether ``pid`` has exited within ``timeout_s``, leaving it unreaped (a zombie).

    Not reaping keeps the pid (and so the process-group id) reserved until we have signalled
    the group.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    delay = 0.001
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, _POLL_MAX_S)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # the group is already empty
        os.killpg(pgid, sig)


def _kill_group(pgid: int) -> None:
    """SIGKILL every member of the group, then wait (bounded) until none is left running."""
    _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + _GROUP_GONE_WAIT_S
    while _group_running(pgid) and time.monotonic() < deadline:
        time.sleep(0.005)


def _stop_group(pid: int, grace_s: float) -> None:
    """SIGTERM the group, give the main process ``grace_s`` to exit, then SIGKILL the group."""
    _signal_group(pid, signal.SIGTERM)
    _wait_exited(pid, grace_s)
    _signal_group(pid, signal.SIGKILL)
    if not _wait_exited(pid, _KILL_WAIT_S):
        raise ExecutionError(f"process {pid} did not exit after SIGKILL; it may be stuck in the kernel, check 'ps'")
    _kill_group(pid)


def _group_running(pgid: int) -> bool:
    """Whether a non-zombie process is still in group ``pgid``.

    Zombies count as gone: they run nothing, and orphans reparented to an init that does not
    reap would otherwise look alive forever. Without /proc, any member counts.

    ``planegate.bridge.browser`` keeps a copy of this check for the browser it launches: the
    bridge may not import tools, and that browser is meant to outlive planegate (README, Code map).
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


# --- identity: which process, which host ---------------------------------------------------


@dataclass(frozen=True)
class _Stat:
    state: str
    pgrp: int
    start: int  # clock ticks after boot: with the pid, names one process for the life of the boot


def _stat(pid: int | str) -> _Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # "pid (comm) state ppid pgrp … starttime(22) …": comm may hold spaces and parentheses.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return _Stat(state=fields[0], pgrp=int(fields[2]), start=int(fields[19]))
    except (IndexError, ValueError):
        return None


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks after boot), or None without /proc or such a process."""
    stat = _stat(pid)
    return None if stat is None else stat.start


def process_alive(pid: int, start: int | None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, when ``start`` is given, is the process that started then."""
    stat = _stat(pid)
    if stat is None:
        return False
    return stat.state not in ("Z", "X") and (start is None or stat.start == start)


@cache
def _host_key_for(pid: int) -> str | None:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = str(Path("/proc/self/ns/pid").readlink())
    except OSError:
        return None
    return f"{socket.gethostname()}/{boot}/{namespace}"


def host_key() -> str | None:
    """What must match for a recorded pid to mean a process here: host name, boot and pid namespace.

    None without /proc: then no recorded process can be checked, and none is signalled.
    """
    return _host_key_for(os.getpid())


# --- the parent-death signal ----------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()  # looked up here, not in the forked child, where it could need a lock


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """The child-side set-up (run between fork and exec): SIGKILL when the starting thread dies.

    If the parent already died before the signal was armed, the child was re-parented and kills
    itself rather than run unwatched.
    """
    prctl = _PRCTL
    if prctl is None:
        return None

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


# --- watching the processes of a job ---------------------------------------------------------


class ProcessWatch(Protocol):
    """Told of each process ``run_process`` starts in this context; either call may raise to stop it."""

    def started(self, pid: int, start: int | None, argv: tuple[str, ...]) -> None: ...

    def ended(self, pid: int) -> None: ...


_watch: ContextVar[ProcessWatch | None] = ContextVar("planegate_process_watch", default=None)


@contextmanager
def watching(watch: ProcessWatch) -> Iterator[None]:
    """Report every process started by ``run_process`` in this context (a thread started
    inside it sees the watch only when run through ``contextvars.copy_context().run``)."""
    token = _watch.set(watch)
    try:
        yield
    finally:
        _watch.reset(token)


# --- ending a recorded group from elsewhere --------------------------------------------------


@dataclass(frozen=True)
class GroupEnd:
    """How a recorded group was ended.

    ``outcome``: ``gone`` (none of its processes was running), ``terminated`` (all exited after
    SIGTERM), ``killed`` (SIGKILL was needed), ``survived`` (still running after SIGKILL: stuck
    in the kernel), ``unknown`` (no /proc here: nothing could be checked, nothing was signalled).
    """

    pgid: int
    outcome: str
    pids: list[int] = field(default_factory=list)

    @property
    def gone(self) -> bool:
        return self.outcome in ("gone", "terminated", "killed")


def _members(pgid: int, leader_start: int | None) -> tuple[list[int], bool]:
    """The running processes of group ``pgid`` that belong to the recorded group, and whether
    they are the whole group.

    The kernel keeps a pid reserved while any process uses it as its group id, so while one of
    our processes lives, no other process can have the id ``pgid`` nor lead a group of that id.
    Hence: a live leader with another start time means our group is gone; otherwise our
    processes are the members that started no earlier than the recorded leader.
    """
    leader = _stat(pgid)
    if leader is not None and leader_start is not None and leader.start != leader_start:
        return [], False
    ours: list[int] = []
    others = False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _stat(entry.name)
        if stat is None or stat.pgrp != pgid or stat.state in ("Z", "X"):
            continue
        if leader_start is None or stat.start >= leader_start:
            ours.append(int(entry.name))
        else:
            others = True
    return ours, not others


def _signal_members(pgid: int, pids: list[int], whole: bool, sig: signal.Signals) -> None:
    if whole:
        _signal_group(pgid, sig)  # one call: also reaches a member forked after the scan
        return
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


def end_group(pgid: int, leader_start: int | None, grace_s: float) -> GroupEnd:
    """End what is left of a group recorded earlier (perhaps by a process that has since died):
    SIGTERM, up to ``grace_s`` for it to exit, then SIGKILL; returns once none of it runs.

    ``leader_start`` is the leader's start time as recorded (``process_start``); a group whose
    id now belongs to another process is left alone.
    """
    if not Path("/proc").is_dir():
        return GroupEnd(pgid, "unknown")
    pids, whole = _members(pgid, leader_start)
    if not pids:
        return GroupEnd(pgid, "gone")
    first = sorted(pids)
    _signal_members(pgid, pids, whole, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    delay = 0.005
    while pids and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, _POLL_MAX_S)
        pids, whole = _members(pgid, leader_start)
    if not pids:
        return GroupEnd(pgid, "terminated", first)
    deadline = time.monotonic() + _KILL_WAIT_S
    while pids and time.monotonic() < deadline:
        _signal_members(pgid, pids, whole, signal.SIGKILL)
        time.sleep(0.01)
        pids, whole = _members(pgid, leader_start)
    return GroupEnd(pgid, "survived" if pids else "killed", first)
