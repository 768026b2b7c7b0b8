"""Finding, launching and leasing the browser the bridge drives.

The bridge never owns the user's browser: it attaches over the Chrome DevTools Protocol (CDP) to
a Chromium/Chrome that is already running, found by probing a list of candidate endpoints, or it
starts one detached (``planegate browser launch``) with a persistent profile the user logs into
once (the recommended way). A launched browser outlives the process that started it.

A candidate is an ``http(s)://`` or ``ws(s)://`` URL, a bare port, or a browser profile folder
(or its ``DevToolsActivePort`` file). The folder form is how a running everyday Chrome is
reached: Chrome 136+ ignores ``--remote-debugging-port`` on its default profile, but after the
user turns on remote debugging at ``chrome://inspect/#remote-debugging`` it writes the port and
the browser's websocket path to ``DevToolsActivePort`` and serves only that websocket (no
``/json/version``), asking the user to allow the connection.

One review drives one browser session at a time: ``BrowserLease`` is an ``flock`` on a file named
from the endpoint, so the kernel releases it when the holder dies and no stale lock survives a
crash. Probing uses stdlib HTTP with a bounded timeout and ignores proxy settings (the endpoints
are local).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .errors import BridgeError, BrowserBusy, BrowserNotFound, EndpointUnreachable

if TYPE_CHECKING:
    import urllib.request

DEFAULT_ENDPOINTS = ("http://127.0.0.1:9222", "http://127.0.0.1:9223")
# Without these a fresh profile on a closed network spends its time on refused background fetches.
QUIET_FLAGS = (
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--disable-quic",
    # The profile's page texts are English, and a background tab must keep polling at speed.
    "--lang=en-US",
    "--disable-background-timer-throttling",
    "--disable-features=Translate,AutomationControlled",
)
EXECUTABLE_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


@cache
def _opener() -> urllib.request.OpenerDirector:
    # Endpoints are local: proxy settings from the environment must not apply. Imported lazily
    # because urllib.request pulls in http.client, ssl and email, which a mere import should not.
    import urllib.request

    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class EndpointInfo:
    """A DevTools endpoint that answered ``/json/version``, or a websocket-only one found through
    ``DevToolsActivePort`` (``websocket_only``: the browser's version is known after attaching)."""

    url: str  # the candidate as configured
    cdp_url: str  # what to hand to ``connect_over_cdp``
    browser: str
    protocol_version: str
    user_agent: str
    websocket_url: str
    websocket_only: bool = False
    via: str = ""  # the DevToolsActivePort file it was read from, if any

    def describe(self) -> str:
        if self.websocket_only:
            return f"websocket-only {self.cdp_url} (from {self.via or self.url}; Chrome may ask to allow it)"
        return f"{self.browser} at {self.cdp_url}" + (f" (from {self.via})" if self.via else "")


def _is_path(candidate: str) -> bool:
    return candidate.startswith(("/", "~", "file:", "./", "../"))


def _normalise(candidate: str) -> str:
    value = candidate.strip()
    if _is_path(value):
        value = value.removeprefix("file://").removeprefix("file:")
        return str(Path(value).expanduser())
    value = value.rstrip("/")
    if value.isdigit():
        return f"http://127.0.0.1:{value}"
    if "://" not in value:
        return f"http://{value}"
    return value


def candidate_endpoints(env_value: str | None, configured: Sequence[str] | None) -> list[str]:
    """CDP endpoints to try, in order: ``PLANEGATE_CDP_URL`` (comma-separated), else the configured
    list, else the defaults. Bare ports and ``host:port`` become ``http://`` URLs, profile folders
    (``/…``, ``~/…``, ``file:…``) absolute paths; duplicates go."""
    if env_value and env_value.strip():
        raw: Iterable[str] = env_value.split(",")
    elif configured:
        raw = configured
    else:
        raw = DEFAULT_ENDPOINTS
    out: list[str] = []
    for item in raw:
        if item.strip() and (url := _normalise(item)) not in out:
            out.append(url)
    return out


def _http_base(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


def _port_open(host: str, port: int, timeout: float) -> str | None:
    """``None`` when something accepts TCP connections there, else why not."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {timeout:.1f} s"
    except OSError as exc:
        return str(exc)


def active_port_file(path: Path) -> Path | None:
    """The ``DevToolsActivePort`` file a profile folder (or the file itself) points at, if any."""
    if path.is_file():
        return path
    for candidate in (path / "DevToolsActivePort", path / "Default" / "DevToolsActivePort"):
        if candidate.is_file():
            return candidate
    return None


def _probe_active_port(candidate: str, timeout: float) -> EndpointInfo | str:
    """Attach metadata Chrome wrote for its remote-debugging toggle: line 1 the port, line 2 the
    browser's websocket path. A classic endpoint on that port is preferred when it answers."""
    path = Path(candidate)
    found = active_port_file(path)
    if found is None:
        return (
            f"no DevToolsActivePort in {path}: turn on remote debugging at chrome://inspect/#remote-debugging in "
            "that Chrome (or start it with `planegate browser launch`)"
        )
    try:
        lines = found.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"cannot read {found} ({exc})"
    port_text = lines[0].strip() if lines else ""
    ws_path = lines[1].strip() if len(lines) > 1 else ""
    if not port_text.isdigit() or not 0 < int(port_text) < 65536 or not ws_path.startswith("/devtools/browser/"):
        return f"{found} does not hold a port and a /devtools/browser/ path; restart remote debugging in that Chrome"
    port = int(port_text)
    classic = _probe(f"http://127.0.0.1:{port}", timeout)
    if isinstance(classic, EndpointInfo):
        return EndpointInfo(**{**classic.__dict__, "url": candidate, "via": str(found)})
    why = _port_open("127.0.0.1", port, timeout)
    if why is not None:
        return f"{found} names port {port}, but {why} there (is that Chrome still running with remote debugging on?)"
    ws_url = f"ws://127.0.0.1:{port}{ws_path}"
    return EndpointInfo(candidate, ws_url, "", "", "", ws_url, websocket_only=True, via=str(found))


def _probe(url: str, timeout: float) -> EndpointInfo | str:
    """The endpoint's info, or a short reason it did not answer."""
    import urllib.error

    if _is_path(url):
        return _probe_active_port(url, timeout)
    base = _http_base(url)
    if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc:
        return f"not an http(s)/ws(s) URL: {url!r}"
    try:
        with _opener().open(f"{base}/json/version", timeout=timeout) as resp:
            data = json.loads(resp.read(65536).decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        return _websocket_only(url, f"HTTP {exc.code} from {base}/json/version", timeout)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused"
        if isinstance(reason, TimeoutError):
            return f"no answer within {timeout:.1f} s"
        return _websocket_only(url, str(reason), timeout)
    except TimeoutError:
        return f"no answer within {timeout:.1f} s"
    except (OSError, ValueError) as exc:
        return _websocket_only(url, f"unreadable answer ({exc})", timeout)
    if not isinstance(data, dict) or not data.get("webSocketDebuggerUrl"):
        return _websocket_only(url, "answered, but not a DevTools endpoint (no webSocketDebuggerUrl)", timeout)
    scheme = urlsplit(url).scheme
    return EndpointInfo(
        url=url,
        cdp_url=url if scheme in ("ws", "wss") else base,
        browser=str(data.get("Browser", "")),
        protocol_version=str(data.get("Protocol-Version", "")),
        user_agent=str(data.get("User-Agent", "")),
        websocket_url=str(data["webSocketDebuggerUrl"]),
    )


def _websocket_only(url: str, why: str, timeout: float) -> EndpointInfo | str:
    """A ``ws://…/devtools/browser/…`` candidate may be served without ``/json/version`` (Chrome's
    remote-debugging toggle): accept it when its port takes connections."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.path.startswith("/devtools/browser/"):
        return why
    if _port_open(parts.hostname or "127.0.0.1", parts.port or 80, timeout) is not None:
        return why
    return EndpointInfo(url, url, "", "", "", url, websocket_only=True)


def probe_endpoint(url: str, timeout: float = 2.0) -> EndpointInfo | None:
    """GET ``<url>/json/version``; ``None`` when nothing (or not a browser) answers in time."""
    found = _probe(url, timeout)
    return found if isinstance(found, EndpointInfo) else None


def find_endpoint(candidates: Sequence[str], timeout: float = 2.0) -> EndpointInfo:
    """The first candidate that answers. Raises ``EndpointUnreachable`` listing each one and why."""
    attempts: list[tuple[str, str]] = []
    for url in candidates:
        found = _probe(url, timeout)
        if isinstance(found, EndpointInfo):
            return found
        attempts.append((url, found))
    raise EndpointUnreachable(attempts)


def probe_all(candidates: Sequence[str], timeout: float = 2.0) -> list[tuple[str, EndpointInfo | str]]:
    """Every candidate with its info or the reason it failed (for ``doctor``)."""
    return [(url, _probe(url, timeout)) for url in candidates]


def find_browser_executable(configured: str | None = None) -> str:
    """The browser binary: ``configured``, else ``PLANEGATE_BROWSER``, else Debian's Chromium, else
    the first of chromium/google-chrome/chrome on PATH. Raises ``BrowserNotFound``."""
    tried: list[str] = []
    for explicit in (configured, os.environ.get("PLANEGATE_BROWSER")):
        if explicit:
            path = shutil.which(explicit) or (explicit if os.access(explicit, os.X_OK) else None)
            if path:
                return path
            tried.append(explicit)
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    tried.append("/usr/bin/chromium")
    for name in EXECUTABLE_NAMES:
        if found := shutil.which(name):
            return found
        tried.append(name)
    raise BrowserNotFound(tried)


@dataclass
class LaunchedBrowser:
    """A browser started detached by ``launch_browser``; ``stop`` ends its whole process group."""

    pid: int
    endpoint: EndpointInfo
    profile_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the browser and its helpers (SIGTERM, then SIGKILL after ``timeout``)."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            if self.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(wait)
            if _group_gone(self.pid, wait):
                return


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs. Zombies do not count: the helpers end up
    children of init, which reaps them on its own schedule, long after they stopped."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _tail(path: Path, limit: int = 800) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""


def launch_browser(
    profile_dir: Path,
    *,
    executable: str | None,
    port: int,
    headless: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 15.0,
    env: Mapping[str, str] | None = None,
) -> LaunchedBrowser:
    """Start Chromium/Chrome detached on ``profile_dir`` with DevTools on 127.0.0.1:``port``.

    ``port=0`` lets the browser choose (read back from ``DevToolsActivePort``). The process gets
    its own session, so it survives the caller; its output goes to ``<profile_dir>.log``.
    ``env`` replaces the inherited environment (tests keep the browser's HOME in a temp dir).
    Raises ``BrowserNotFound``, or ``BridgeError`` when the port is taken or the browser does not
    answer within ``timeout`` seconds (the log tail is quoted).
    """
    exe = find_browser_executable(executable)
    if port and (running := probe_endpoint(f"http://127.0.0.1:{port}", timeout=1.0)):
        raise BridgeError(
            f"port {port} already serves a browser ({running.browser}); attach to http://127.0.0.1:{port} "
            "or launch on another port"
        )
    profile_dir = profile_dir.resolve()
    profile_dir.mkdir(parents=True, exist_ok=True)
    active_port_file = profile_dir / "DevToolsActivePort"
    active_port_file.unlink(missing_ok=True)
    log_path = profile_dir.parent / f"{profile_dir.name}.log"
    argv = [
        exe,
        f"--user-data-dir={profile_dir}",
        "--remote-debugging-address=127.0.0.1",
        f"--remote-debugging-port={port}",
        *QUIET_FLAGS,
    ]
    if os.geteuid() == 0:
        argv.append("--no-sandbox")  # Chromium refuses to start as root without it
    if headless:
        argv.append("--headless=new")
    argv += [*extra_args, "about:blank"]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env)
    launched = LaunchedBrowser(proc.pid, _pending_endpoint(port), profile_dir, log_path, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BridgeError(
                f"{exe} exited with code {proc.returncode} right after starting (is another browser using "
                f"{profile_dir}?); log {log_path}: {_tail(log_path)}"
            )
        actual = port or _read_active_port(active_port_file)
        if actual and (info := probe_endpoint(f"http://127.0.0.1:{actual}", timeout=1.0)):
            launched.endpoint = info
            return launched
        time.sleep(0.1)
    launched.stop()
    raise BridgeError(
        f"{exe} did not open DevTools on port {port or '(auto)'} within {timeout:.0f} s and was stopped; "
        f"log {log_path}: {_tail(log_path)}"
    )


def _pending_endpoint(port: int) -> EndpointInfo:
    url = f"http://127.0.0.1:{port}"
    return EndpointInfo(url, url, "", "", "", "")


def _read_active_port(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() and int(first) > 0 else None


class BrowserLease:
    """Exclusive use of one browser session across processes (``flock``; freed if the holder dies).

    The lock file, named from a hash of the endpoint, holds the holder's pid and start time so a
    refused caller can say who has it. ``with lease.acquire(timeout):`` waits up to ``timeout``;
    a bare ``with lease:`` tries once.
    """

    def __init__(self, lock_dir: Path, endpoint: str) -> None:
        self.endpoint = endpoint
        digest = hashlib.sha256(endpoint.encode()).hexdigest()[:16]
        self.path = lock_dir / f"browser-{digest}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float) -> BrowserLease:
        """Take the lease within ``timeout`` seconds, else raise ``BrowserBusy`` naming the holder."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start >= timeout:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise BrowserBusy(self.endpoint, holder, time.monotonic() - start) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        except OSError:
            text = ""
        return text or "holder unknown"

    def __enter__(self) -> BrowserLease:
        return self.acquire(timeout=0)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
