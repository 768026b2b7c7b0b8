"""``planegate dashboard``: the run view in a browser, served read-only on 127.0.0.1.

It listens on a random port of 127.0.0.1 and prints one URL carrying a random token; a request
without that token, or whose ``Host`` header is not this address (what a DNS-rebinding page
would send), is refused with 403 and nothing read. Only GET is served: nothing here changes the
ledger, and approving stays in the human's own terminal (``planegate approve``).

The page polls ``/api/version`` (the ledger's newest event id: one indexed read) every second
and fetches ``/api/runs/<run>`` when it moved, so it follows the run as it changes.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from planegate.tools.env import Env


class Dashboard:
    """The state one dashboard serves: the ledger, the token, the run it opened on."""

    def __init__(self, env: Env, run: str | None, token: str | None = None) -> None:
        self.env = env
        self.run = run
        self.token = token or secrets.token_urlsafe(24)
        self.lock = threading.Lock()  # one ledger connection: reads take turns
        self.server: ThreadingHTTPServer | None = None

    def bind(self, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
        dashboard = self

        class Handler(_Handler):
            state = dashboard

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def url(self) -> str:
        path = f"/runs/{self.run}" if self.run else "/"
        return f"http://127.0.0.1:{self.port}{path}?token={self.token}"

    def allowed_hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}


class _Handler(BaseHTTPRequestHandler):
    state: Dashboard
    server_version = "planegate-dashboard"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a page polling every second would fill the terminal

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _refuse(self, status: int, why: str) -> None:
        self._send(status, (why + "\n").encode(), "text/plain; charset=utf-8")

    def _json(self, value: Any) -> None:
        self._send(HTTPStatus.OK, json.dumps(value, separators=(",", ":")).encode(), "application/json")

    def _allowed(self) -> bool:
        host = self.headers.get("Host", "")
        if host not in self.state.allowed_hosts():
            self._refuse(HTTPStatus.FORBIDDEN, f"refused: Host {host!r} is not this dashboard's address")
            return False
        token = parse_qs(urlsplit(self.path).query).get("token", [""])[0]
        if not hmac.compare_digest(token.encode(), self.state.token.encode()):
            self._refuse(HTTPStatus.FORBIDDEN, "refused: open the URL `planegate dashboard` printed (it has the token)")
            return False
        return True

    def do_GET(self) -> None:
        if not self._allowed():
            return
        from planegate.tools.errors import PlanegateError
        from planegate.tools.report.view import ledger_version, newest_run, run_view, view_page

        path = unquote(urlsplit(self.path).path)
        state = self.state
        try:
            with state.lock:
                if path == "/api/version":
                    self._json({"version": ledger_version(state.env)})
                elif path.startswith("/api/runs/"):
                    self._json(run_view(state.env, path.removeprefix("/api/runs/")))
                elif path == "/" or path.startswith("/runs/"):
                    run = path.removeprefix("/runs/") if path.startswith("/runs/") else newest_run(state.env)
                    nonce = secrets.token_urlsafe(12)
                    page = view_page(run_view(state.env, run) if run else None, mode="dashboard", nonce=nonce)
                    self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
                else:
                    self._refuse(HTTPStatus.NOT_FOUND, f"no page at {path!r}")
        except PlanegateError as exc:
            self._refuse(HTTPStatus.NOT_FOUND, str(exc))

    def do_HEAD(self) -> None:
        self.do_GET()

    def _read_only(self) -> None:
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, "the dashboard is read-only; approve with `planegate approve`")

    do_POST = do_PUT = do_PATCH = do_DELETE = _read_only


def serve(env: Env, run: str | None, port: int = 0) -> None:
    """Serve until interrupted, printing the URL first."""
    dashboard = Dashboard(env, run)
    server = dashboard.bind(port=port)
    print(f"planegate dashboard: {dashboard.url()}", flush=True)
    print("read-only; Ctrl-C stops it", flush=True)
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
