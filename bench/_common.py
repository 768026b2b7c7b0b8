"""What every benchmark script shares: output, a scratch PLANEGATE_HOME, git repos, stats, stdio.

Each script prints exactly one JSON object on stdout (``emit``); everything else goes to
stderr (``log``). Nothing here imports planegate, so the cold-start script measures only the
processes it spawns.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
PLANEGATE = VENV_BIN / "planegate"
CACHE_DIR = Path(os.environ.get("PLANEGATE_BENCH_CACHE", "~/.cache/planegate-bench")).expanduser()

GIT_IDENTITY = {"user.name": "planegate bench", "user.email": "bench@example.invalid"}
PROTOCOL_VERSION = "2025-06-18"
CLIENT_INFO = {"name": "planegate-bench", "version": "1"}


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def emit(result: Mapping[str, Any]) -> None:
    """The script's one JSON object on stdout."""
    sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def parser(description: str, *, quick_help: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with ``--quick`` (smaller sizes for a smoke test) when it applies."""
    result = argparse.ArgumentParser(description=description)
    if quick_help:
        result.add_argument("--quick", action="store_true", help=quick_help)
    return result


@contextmanager
def scratch(name: str) -> Iterator[Path]:
    """A temporary directory whose ``home`` is ``$PLANEGATE_HOME`` for the duration; deleted after."""
    root = Path(tempfile.mkdtemp(prefix=f"planegate-bench-{name}-"))
    previous = os.environ.get("PLANEGATE_HOME")
    os.environ["PLANEGATE_HOME"] = str(root / "home")
    try:
        yield root
    finally:
        if previous is None:
            os.environ.pop("PLANEGATE_HOME", None)
        else:
            os.environ["PLANEGATE_HOME"] = previous
        shutil.rmtree(root, ignore_errors=True)


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with the bench identity given explicitly; its stdout, stripped."""
    identity = [arg for key, value in GIT_IDENTITY.items() for arg in ("-c", f"{key}={value}")]
    done = subprocess.run(
        ["git", *identity, "-c", "commit.gpgsign=false", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def make_repo(path: Path, files: Mapping[str, str] | None = None) -> Path:
    """A git repository with one commit holding ``files``; its identity is in its own config."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for key, value in GIT_IDENTITY.items():
        git(path, "config", key, value)
    for name, text in (files or {"README.md": "# bench\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def interleave(
    first: Callable[[], float], second: Callable[[], float], repetitions: int, warmup: int
) -> tuple[list[float], list[float]]:
    """``warmup`` untimed calls of each, then ``repetitions`` timed pairs in alternating order."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(warmup):
        first()
        second()
    for rep in range(repetitions):
        if rep % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    return a, b


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (``q`` in 0..1) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float | int]:
    """n, min, p50, p90, p99, max and mean of durations given in seconds, in milliseconds."""

    def ms(value: float) -> float:
        return round(value * 1000, 3)

    return {
        "n": len(seconds),
        "min_ms": ms(min(seconds)),
        "p50_ms": ms(quantile(seconds, 0.5)),
        "p90_ms": ms(quantile(seconds, 0.9)),
        "p99_ms": ms(quantile(seconds, 0.99)),
        "max_ms": ms(max(seconds)),
        "mean_ms": ms(sum(seconds) / len(seconds)),
    }


class ServerGone(RuntimeError):
    """The server process exited or fell silent before answering."""


class StdioServer:
    """A server process spoken to in raw JSON-RPC lines, with every wait bounded.

    Reads go straight to the pipe's file descriptor (``select`` + ``os.read``), so the time from
    writing a request to reading its answer has no reader thread in it.
    """

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], stderr_path: Path) -> None:
        self.argv = list(argv)
        self._stderr = stderr_path.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=dict(env),
            bufsize=0,
            start_new_session=True,
        )
        self.stderr_path = stderr_path
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        self._buffer = bytearray()
        self._next_id = 0

    def __enter__(self) -> StdioServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill the process (and anything it started in its session) and reap it."""
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        finally:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()
            self._stderr.close()

    def stderr_tail(self, lines: int = 20) -> str:
        self._stderr.flush()
        text = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def send(self, message: Mapping[str, Any]) -> None:
        self.send_raw(encode(message))

    def send_raw(self, line: bytes) -> None:
        """Write one already-encoded line (see ``encode``)."""
        data = memoryview(line)
        while data:
            written = os.write(self._in, data)
            data = data[written:]

    def read_line(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerGone(f"no line from {self.argv[0]} within {timeout} s:\n{self.stderr_tail()}")
            ready, _, _ = select.select([self._out], [], [], left)
            if ready:
                chunk = os.read(self._out, 1 << 20)
                if not chunk:
                    raise ServerGone(f"{self.argv[0]} closed its stdout:\n{self.stderr_tail()}")
                self._buffer += chunk

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def request_line(self, method: str, params: Mapping[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        request_id = self.next_id()
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = dict(params)
        return request_id, message

    def wait_response(self, request_id: int, timeout: float) -> bytes:
        """The raw line answering ``request_id``; notifications and server requests are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(max(deadline - time.monotonic(), 0.0))
            message = json.loads(line)
            if message.get("id") == request_id and ("result" in message or "error" in message):
                return line

    def request(self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float = 30.0) -> Any:
        """Send one request and return its ``result``; a JSON-RPC error raises."""
        request_id, message = self.request_line(method, params)
        self.send(message)
        answer = json.loads(self.wait_response(request_id, timeout))
        if "error" in answer:
            raise RuntimeError(f"{method} failed: {answer['error']}")
        return answer["result"]

    def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = dict(params)
        self.send(message)

    def handshake(self, timeout: float = 60.0) -> Any:
        """``initialize`` then ``notifications/initialized``; the initialize result."""
        result = self.request("initialize", initialize_params(), timeout=timeout)
        self.notify("notifications/initialized")
        return result


def encode(message: Mapping[str, Any]) -> bytes:
    """One JSON-RPC message as the newline-terminated line stdio carries."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def initialize_params() -> dict[str, Any]:
    return {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": dict(CLIENT_INFO)}


def serve_argv() -> list[str]:
    """The installed console script, as a user's MCP client would start it."""
    return [str(PLANEGATE), "serve"]


def tool_result(result: Mapping[str, Any], tool: str) -> Any:
    """The structured content of a ``tools/call`` result that must have succeeded."""
    if result.get("isError"):
        text = " ".join(block.get("text", "") for block in result.get("content", []))
        raise RuntimeError(f"{tool} failed: {text}")
    return result.get("structuredContent")
