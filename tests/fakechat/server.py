"""FakeChat: a local HTTP server whose page imitates ChatGPT's DOM, for real-browser bridge tests.

The server owns the conversations; a reply's progress is a pure function of time since it was
sent (thinking pause, then one token per ``token_delay_s``), so a page that re-opens
``/c/<id>`` mid-reply sees it still streaming, exactly as after a crash. The page polls
``/api/conversation/<id>`` and renders what it gets; when it has shown a finished turn (copy
button visible) it reports the moment back, which is what the bench measures against.

Variants (``FakeChat.variant``, or ``?variant=`` on the page URL): ``normal``, ``logged_out``,
``cloudflare``, ``drift`` (send button renamed), ``retry_error`` (reply stops half-way with an
error and a Retry button), ``usage_cap`` (banner after sending), ``slow`` (thinking pause of
``slow_thinking_s``). Every prompt the server receives is recorded in ``prompts``.

``start()``/``stop()`` own one serving thread; ``stop()`` also closes open connections so no
handler thread outlives it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .render import render_markdown

Responder = Callable[[str, list[str], int], str]
STATIC = Path(__file__).parent
VARIANTS = ("normal", "logged_out", "cloudflare", "drift", "retry_error", "usage_cap", "slow")
PROJECTS = [
    {"id": "6a1b2c3d", "slug": "planegate", "name": "planegate"},
    {"id": "9f8e7d6c", "slug": "side-notes", "name": "Side notes"},
]
MODELS = [
    {"name": "GPT-5", "desc": "Flagship model"},
    {"name": "GPT-5 Thinking", "desc": "Thinks longer for better answers"},
    {"name": "GPT-4o", "desc": "Legacy model"},
]
USAGE_CAP_TEXT = "You've reached your usage limit for GPT-5. Responses will use another model until it resets."
ERROR_TEXT = "Something went wrong while generating the response. If this issue persists please contact us."
_TOKEN = re.compile(r"\s*\S+|\s+$")


def echo_responder(prompt: str, files: list[str], turn: int) -> str:
    return f"Received {len(prompt)} characters and {len(files)} file(s).\n\n```json\n{json.dumps({'turn': turn})}\n```"


@dataclass
class ReceivedPrompt:
    text: str
    file_names: list[str]
    files: dict[str, bytes]
    model: str
    project: str | None
    conversation_id: str
    turn_index: int
    variant: str
    at: float


@dataclass
class _Turn:
    prompt: ReceivedPrompt
    tokens: list[str]
    mode: str  # normal | retry_error | usage_cap
    started: float
    thinking_s: float
    token_delay_s: float
    stall_after: int = 0  # tokens shown before the stream stalls for stall_s (0: no stall)
    stall_s: float = 0.0
    rendered_at: float | None = None  # reported by the page when it showed the finished turn

    def progress(self, now: float) -> tuple[str, bool, bool]:
        """(markdown so far, done, failed)."""
        if self.mode == "usage_cap":
            return "", False, False
        n_total = len(self.tokens)
        cut = max(1, n_total // 2) if self.mode == "retry_error" else n_total
        elapsed = now - self.started - self.thinking_s
        n = self._shown(elapsed)
        if self.stall_after and n > self.stall_after:
            n = max(self.stall_after, self._shown(elapsed - self.stall_s))
        n = min(n, cut)
        failed = self.mode == "retry_error" and n >= cut
        return "".join(self.tokens[:n]), n >= n_total and not failed, failed

    def _shown(self, elapsed: float) -> int:
        if elapsed < 0:
            return 0
        return len(self.tokens) if self.token_delay_s <= 0 else int(elapsed / self.token_delay_s) + 1

    @property
    def finished_at(self) -> float:
        """When the server makes the last token available (the page shows it one poll later)."""
        streaming = max(len(self.tokens) - 1, 0) * max(self.token_delay_s, 0)
        return self.started + self.thinking_s + streaming + (self.stall_s if self.stall_after else 0.0)


@dataclass
class _Conversation:
    id: str
    project: str | None
    variant: str
    turns: list[_Turn] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, fake: FakeChat) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)


class FakeChat:
    """The fake ChatGPT site. Attributes may be changed between (or during) bridge calls."""

    def __init__(self, responder: Responder = echo_responder) -> None:
        self.responder = responder
        self.variant = "normal"
        self.thinking_s = 0.2
        self.token_delay_s = 0.01
        self.slow_thinking_s = 60.0
        self.stall_after = 0  # replies stall after this many tokens for stall_s (0: never)
        self.stall_s = 0.0
        self.upload_delay_s = 0.2
        self.poll_ms = 30
        self.lazy_file_input = False  # the file input exists only after the plus button is clicked
        self.prompts: list[ReceivedPrompt] = []
        self.conversations: dict[str, _Conversation] = {}
        self.lock = threading.Lock()
        self.prompt_received = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeChat:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakechat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.sockets_lock:
            for sock in list(server.open_sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        server.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join(timeout=5)
            assert not self._thread.is_alive(), "fakechat server thread did not stop"

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeChat is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    # -- what tests read ---------------------------------------------------------------------

    def turn(self, conversation_id: str, index: int = -1) -> _Turn:
        with self.lock:
            return self.conversations[conversation_id].turns[index]

    def conversation_id(self, url: str) -> str:
        return urlsplit(url).path.rstrip("/").rsplit("/c/", 1)[1]

    def wait_rendered(self, conversation_id: str, timeout: float = 5.0, index: int = -1) -> float:
        """The page-reported time the finished turn was shown (waits briefly for the report)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = self.turn(conversation_id, index).rendered_at
            if at is not None:
                return at
            time.sleep(0.01)
        raise TimeoutError(f"the page never reported rendering turn {index} of {conversation_id}")

    # -- request handling --------------------------------------------------------------------

    def _variant(self, query: str) -> str:
        wanted = parse_qs(query).get("variant", [self.variant])[0]
        assert wanted in VARIANTS, f"unknown fakechat variant {wanted!r}"
        return wanted

    def page_html(self, path: str, query: str) -> str:
        variant = self._variant(query)
        conv_match = re.search(r"/c/([\w-]+)$", path)
        proj_match = re.match(r"^/g/g-p-([0-9a-f]+)-([\w-]+)/", path)
        conversation = None
        if conv_match:
            with self.lock:
                conv = self.conversations.get(conv_match.group(1))
            if conv is not None:
                conversation, variant = conv.id, conv.variant
        if variant == "cloudflare":
            return (STATIC / "challenge.html").read_text()
        config = {
            "variant": variant,
            "conversation": conversation,
            "project": next((p for p in PROJECTS if proj_match and p["id"] == proj_match.group(1)), None),
            "projects": PROJECTS,
            "models": MODELS,
            "pollMs": self.poll_ms,
            "uploadDelayMs": int(self.upload_delay_s * 1000),
            "lazyFileInput": self.lazy_file_input,
        }
        template = (STATIC / "app.html").read_text()
        return template.replace("/*CONFIG*/null", json.dumps(config).replace("</", "<\\/"))

    def receive(self, body: dict[str, Any]) -> dict[str, Any]:
        files = {f["name"]: base64.b64decode(f["data"]) for f in body.get("files", [])}
        project = body.get("project")  # the page's project record, or None
        with self.lock:
            conv = self.conversations.get(body.get("conversation_id") or "")
            if conv is None:
                variant = body.get("variant", self.variant)
                conv = _Conversation(uuid.uuid4().hex[:12], project["name"] if project else None, variant)
                self.conversations[conv.id] = conv
            turn_index = len(conv.turns)
            prompt = ReceivedPrompt(
                text=body["prompt"],
                file_names=list(files),
                files=files,
                model=body.get("model", ""),
                project=conv.project,
                conversation_id=conv.id,
                turn_index=turn_index,
                variant=conv.variant,
                at=time.time(),
            )
            self.prompts.append(prompt)
            mode = conv.variant if conv.variant in ("retry_error", "usage_cap") else "normal"
            thinking = self.slow_thinking_s if conv.variant == "slow" else self.thinking_s
            reply = self.responder(prompt.text, prompt.file_names, turn_index) if mode != "usage_cap" else ""
            tokens = _TOKEN.findall(reply)
            turn = _Turn(
                prompt, tokens, mode, time.time(), thinking, self.token_delay_s, self.stall_after, self.stall_s
            )
            conv.turns.append(turn)
        self.prompt_received.set()
        prefix = f"/g/g-p-{project['id']}-{project['slug']}" if project else ""
        return {
            "conversation_id": conv.id,
            "path": f"{prefix}/c/{conv.id}",
            "turn_index": turn_index,
            "usage_cap": USAGE_CAP_TEXT if mode == "usage_cap" else None,
        }

    def conversation_json(self, conversation_id: str) -> dict[str, Any] | None:
        now = time.time()
        with self.lock:
            conv = self.conversations.get(conversation_id)
            if conv is None:
                return None
            turns = []
            for i, turn in enumerate(conv.turns):
                text, done, failed = turn.progress(now)
                turns.append(
                    {
                        "index": i,
                        "prompt": turn.prompt.text,
                        "files": turn.prompt.file_names,
                        "html": render_markdown(text),
                        "done": done,
                        "error": ERROR_TEXT if failed else None,
                        "usage_cap": USAGE_CAP_TEXT if turn.mode == "usage_cap" else None,
                    }
                )
            return {"id": conv.id, "variant": conv.variant, "turns": turns}

    def mark_rendered(self, body: dict[str, Any]) -> None:
        with self.lock:
            turn = self.conversations[body["conversation_id"]].turns[int(body["turn_index"])]
            if turn.rendered_at is None:
                turn.rendered_at = float(body["at"])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # an idle pre-connection never pins a thread for long

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def do_GET(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        path = parts.path
        if path.startswith("/static/"):
            name = path.removeprefix("/static/")
            target = STATIC / name
            if "/" in name or not target.is_file():
                return self._send(404, b"not found", "text/plain")
            kind = "text/javascript" if name.endswith(".js") else "text/css"
            return self._send(200, target.read_bytes(), kind)
        if "/challenge-platform/" in path:
            return self._send(200, b"/* challenge */", "text/javascript")
        if path.startswith("/api/conversation/"):
            data = fake.conversation_json(path.rsplit("/", 1)[1])
            return self._json(data or {"error": "not found"}, 200 if data else 404)
        if path == "/auth/login":
            return self._send(200, b"<!doctype html><title>Log in</title><h1>Log in</h1>", "text/html")
        if path == "/favicon.ico":
            return self._send(404, b"", "text/plain")
        return self._send(200, fake.page_html(path, parts.query).encode(), "text/html; charset=utf-8")

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        path = urlsplit(self.path).path
        if path == "/api/send":
            return self._json(fake.receive(body))
        if path == "/api/rendered":
            fake.mark_rendered(body)
            return self._json({"ok": True})
        return self._json({"error": "not found"}, 404)
