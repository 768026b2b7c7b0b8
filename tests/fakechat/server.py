"""FakeChat: a local HTTP server whose page imitates ChatGPT's DOM, for real-browser bridge tests.

The server owns the conversations; a reply's progress is a pure function of time since it was
sent (thinking pause, then one token per ``token_delay_s``), so a page that re-opens
``/c/<id>`` mid-reply sees it still streaming, exactly as after a crash. The page polls
``/api/conversation/<id>`` and renders what it gets; when it has shown a finished turn (copy
button visible) it reports the moment back, which is what the bench measures against.

Two DOM generations (``FakeChat.dom``, or ``?dom=`` on the page URL), because the live site
changes back and forth:
- ``2025``: code blocks ``<pre><code class="language-x">``; the model dropdown in the header;
  the turn's copy button writes through a hidden textarea and ``execCommand('copy')``; the
  conversation URL is durable at once; a reopened conversation renders at once.
- ``2026`` (default): Cloudflare's bot-management script on every healthy page; CodeMirror code
  blocks; the turn's actions in a "Response actions" group whose "Copy response" button calls
  ``navigator.clipboard.writeText``; a composer pill for the model that mounts ``pill_delay_s``
  after load; an image-only file input before the general one; a transient ``/c/WEB:<id>`` URL
  for ``transient_url_s`` after sending; a "Pro thinking" status with a shimmer while thinking
  and a past-tense "Thought for Ns" after; a reopened conversation that hydrates one turn per
  ``hydrate_turn_s`` and resets the composer when it is done.

Behaviour variants (``FakeChat.variant``, or ``?variant=``): ``normal``, ``logged_out`` (login
button, no composer), ``guest`` (a composer, but no account: no profile control and a session
without a user), ``welcome_back`` (the account picker; choosing an account logs in),
``cloudflare`` (the interstitial), ``modal`` ("what's new" dialog over the page at load, or when
the composer is first focused: ``modal_on``), ``drift`` (send button renamed),
``send_no_testid`` (2026: the send button has no data-testid, only its id, so a fallback
selector keeps working), ``swallow_send`` (the first send click is ignored), ``dead_send``
(sending never works), ``stale_draft`` (an unsent draft attachment is restored on load),
``false_finish`` (stop gone and the action bar shown for ``false_finish_s`` after a few tokens,
then the reply goes on), ``pill_unverifiable`` (the model pill never names the model and the
menu marks nothing checked), ``retry_error`` (the reply stops half-way with an error and a Retry
button), ``usage_cap`` (banner after sending), ``slow`` (thinking for ``slow_thinking_s``).
``insert_limit`` cuts longer composer inserts silently, ``shell_delay_s`` renders the app late
(hydration), ``copy_works = False`` makes the copy button copy nothing.
Every prompt the server receives is recorded in ``prompts``.

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
DOMS = ("2025", "2026")
VARIANTS = (
    "normal",
    "logged_out",
    "guest",
    "welcome_back",
    "cloudflare",
    "modal",
    "drift",
    "send_no_testid",
    "swallow_send",
    "dead_send",
    "stale_draft",
    "false_finish",
    "pill_unverifiable",
    "retry_error",
    "usage_cap",
    "slow",
)
PROJECTS = [
    {"id": "6a1b2c3d", "slug": "planegate", "name": "planegate"},
    {"id": "9f8e7d6c", "slug": "side-notes", "name": "Side notes"},
]
MODELS = [
    {"name": "GPT-5", "desc": "Flagship model", "pill": "GPT-5"},
    {"name": "GPT-5 Thinking", "desc": "Thinks longer for better answers", "pill": "Thinking"},
    {"name": "GPT-4o", "desc": "Legacy model", "pill": "GPT-4o"},
]
ACCOUNTS = ["alice@example.com", "bob@example.com"]
USAGE_CAP_TEXT = "You've reached your usage limit for GPT-5. Responses will use another model until it resets."
ERROR_TEXT = "Something went wrong while generating the response. If this issue persists please contact us."
BOT_SCRIPT = '<script src="/cdn-cgi/challenge-platform/scripts/jsd/main.js" defer></script>'
REASONING = "Weighing the diff hunk by hunk against requirement R1 before answering (reasoning text)"
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
    mode: str  # normal | retry_error | usage_cap | false_finish
    started: float
    thinking_s: float
    token_delay_s: float
    stall_after: int = 0  # tokens shown before the stream stalls for stall_s (0: no stall)
    stall_s: float = 0.0
    rendered_at: float | None = None  # reported by the page when it showed the finished turn
    flash_rendered: bool = False  # the page showed the false-finish action bar

    def progress(self, now: float) -> tuple[str, bool, bool, bool]:
        """(markdown so far, done, failed, false finish showing)."""
        if self.mode == "usage_cap":
            return "", False, False, False
        n_total = len(self.tokens)
        cut = max(1, n_total // 2) if self.mode == "retry_error" else n_total
        elapsed = now - self.started - self.thinking_s
        n = self._shown(elapsed)
        if self.stall_after and n > self.stall_after:
            n = max(self.stall_after, self._shown(elapsed - self.stall_s))
        n = min(n, cut)
        flash = self.mode == "false_finish" and self.stall_after > 0 and n == self.stall_after and n < n_total
        failed = self.mode == "retry_error" and n >= cut
        return "".join(self.tokens[:n]), n >= n_total and not failed, failed, flash

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
    dom: str
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
        self.dom = "2026"
        self.thinking_s = 0.2
        self.token_delay_s = 0.01
        self.slow_thinking_s = 60.0
        self.stall_after = 0  # replies stall after this many tokens for stall_s (0: never)
        self.stall_s = 0.0
        self.false_finish_after = 3  # tokens shown when the false finish flashes
        self.false_finish_s = 1.5
        self.upload_delay_s = 0.2
        self.poll_ms = 30
        self.lazy_file_input = False  # the file inputs exist only after the plus button is clicked
        self.pill_delay_s = 1.5  # 2026: the model pill mounts this long after load
        self.transient_url_s = 0.6  # 2026: /c/WEB:<id> shows this long after sending
        self.hydrate_turn_s = 0.15  # 2026: a reopened conversation renders one turn per this
        self.shell_delay_s = 0.0  # the app shell renders this long after load
        self.insert_limit = 0  # composer inserts longer than this are cut silently (0: never)
        self.copy_works = True  # False: the turn's copy button copies nothing
        self.modal_on = "load"  # variant modal: the dialog shows at "load" or on the composer's first "focus"
        self.account_chosen: str | None = None
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

    def _choice(self, query: str, key: str, default: str, allowed: tuple[str, ...]) -> str:
        wanted = parse_qs(query).get(key, [default])[0]
        assert wanted in allowed, f"unknown fakechat {key} {wanted!r}"
        return wanted

    def page_html(self, path: str, query: str) -> str:
        variant = self._choice(query, "variant", self.variant, VARIANTS)
        dom = self._choice(query, "dom", self.dom, DOMS)
        conv_match = re.search(r"/c/([\w-]+)$", path)
        proj_match = re.match(r"^/g/g-p-([0-9a-f]+)-([\w-]+)/", path)
        conversation = None
        if conv_match:
            with self.lock:
                conv = self.conversations.get(conv_match.group(1))
            if conv is not None:
                conversation, variant, dom = conv.id, conv.variant, conv.dom
        if variant == "cloudflare":
            return (STATIC / "challenge.html").read_text()
        if variant == "welcome_back" and self.account_chosen:
            variant = "normal"
        config = {
            "variant": variant,
            "dom": dom,
            "conversation": conversation,
            "project": next((p for p in PROJECTS if proj_match and p["id"] == proj_match.group(1)), None),
            "projects": PROJECTS,
            "models": MODELS,
            "accounts": ACCOUNTS,
            "pollMs": self.poll_ms,
            "uploadDelayMs": int(self.upload_delay_s * 1000),
            "lazyFileInput": self.lazy_file_input,
            "pillDelayMs": int(self.pill_delay_s * 1000),
            "transientUrlMs": int(self.transient_url_s * 1000),
            "hydrateTurnMs": int(self.hydrate_turn_s * 1000) if dom == "2026" else 0,
            "shellDelayMs": int(self.shell_delay_s * 1000),
            "insertLimit": self.insert_limit,
            "copyWorks": self.copy_works,
            "modalOn": self.modal_on,
            "reasoning": REASONING,
        }
        template = (STATIC / "app.html").read_text()
        template = template.replace("<!--BOT-->", BOT_SCRIPT if dom == "2026" else "")
        return template.replace("/*CONFIG*/null", json.dumps(config).replace("</", "<\\/"))

    def session_json(self, query: str) -> dict[str, Any]:
        variant = self.variant
        if variant in ("guest", "logged_out") or (variant == "welcome_back" and not self.account_chosen):
            return {}
        return {"user": {"id": "user-1", "name": "Test User"}, "expires": "2099-01-01T00:00:00Z"}

    def receive(self, body: dict[str, Any]) -> dict[str, Any]:
        files = {f["name"]: base64.b64decode(f["data"]) for f in body.get("files", [])}
        project = body.get("project")  # the page's project record, or None
        with self.lock:
            conv = self.conversations.get(body.get("conversation_id") or "")
            if conv is None:
                variant = body.get("variant", self.variant)
                conv = _Conversation(
                    uuid.uuid4().hex[:12], project["name"] if project else None, variant, body.get("dom", self.dom)
                )
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
            mode = conv.variant if conv.variant in ("retry_error", "usage_cap", "false_finish") else "normal"
            thinking = self.slow_thinking_s if conv.variant == "slow" else self.thinking_s
            reply = self.responder(prompt.text, prompt.file_names, turn_index) if mode != "usage_cap" else ""
            tokens = _TOKEN.findall(reply)
            stall_after, stall_s = self.stall_after, self.stall_s
            if mode == "false_finish":
                stall_after, stall_s = self.false_finish_after, self.false_finish_s
            turn = _Turn(prompt, tokens, mode, time.time(), thinking, self.token_delay_s, stall_after, stall_s)
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
                text, done, failed, flash = turn.progress(now)
                thinking = turn.mode != "usage_cap" and now < turn.started + turn.thinking_s
                turns.append(
                    {
                        "index": i,
                        "prompt": turn.prompt.text,
                        "files": turn.prompt.file_names,
                        "markdown": text,
                        "html": render_markdown(text, conv.dom),
                        "done": done,
                        "flash": flash,
                        "status": ("Pro thinking" if conv.dom == "2026" else "Thinking…") if thinking else None,
                        "thought_s": max(1, round(turn.thinking_s)),
                        "error": ERROR_TEXT if failed else None,
                        "usage_cap": USAGE_CAP_TEXT if turn.mode == "usage_cap" else None,
                    }
                )
            return {"id": conv.id, "variant": conv.variant, "dom": conv.dom, "turns": turns}

    def mark_rendered(self, body: dict[str, Any]) -> None:
        with self.lock:
            turn = self.conversations[body["conversation_id"]].turns[int(body["turn_index"])]
            if body.get("flash"):
                turn.flash_rendered = True
            elif turn.rendered_at is None:
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
            return self._send(200, b"/* bot management */", "text/javascript")
        if path.startswith("/api/conversation/"):
            data = fake.conversation_json(path.rsplit("/", 1)[1])
            return self._json(data or {"error": "not found"}, 200 if data else 404)
        if path == "/api/auth/session":
            return self._json(fake.session_json(parts.query))
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
        if path == "/api/choose-account":
            fake.account_chosen = str(body.get("email"))
            return self._json({"ok": True})
        return self._json({"error": "not found"}, 404)
