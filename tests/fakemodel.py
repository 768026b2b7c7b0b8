"""Stand-ins for the model APIs on 127.0.0.1, so the real Claude Code and Codex CLIs run a whole turn
offline: every request is logged, and every answer is the same assistant message claiming to be done.

``MessagesAPI`` speaks Anthropic's Messages API (``POST /v1/messages``, streamed or not);
``ResponsesAPI`` speaks OpenAI's Responses API (``POST /v1/responses``, streamed). Each runs in a
daemon thread of the test process and stops with ``close()``.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DONE = "All tasks are done."


class _Handler(BaseHTTPRequestHandler):
    api: FakeAPI

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, b'{"models": [], "data": []}')

    def do_HEAD(self) -> None:
        self._send(200, b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        with self.api.lock:
            self.api.requests.append({"path": self.path, "body": body})
        self.api.answer(self, body)


class FakeAPI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"api": self, "protocol_version": "HTTP/1.1"})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, handler: _Handler, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


class MessagesAPI(FakeAPI):
    """Anthropic's Messages API: one text block, ``end_turn``."""

    def answer(self, handler: _Handler, body: dict[str, Any]) -> None:
        if "count_tokens" in handler.path:
            handler._send(200, b'{"input_tokens": 10}')
            return
        message = {
            "id": f"msg_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude"),
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }
        if not body.get("stream"):
            content = {**message, "content": [{"type": "text", "text": DONE}], "stop_reason": "end_turn"}
            handler._send(200, json.dumps(content).encode())
            return
        handler._send(
            200,
            _sse(
                [
                    (
                        "message_start",
                        {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}},
                    ),
                    (
                        "content_block_start",
                        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                    ),
                    (
                        "content_block_delta",
                        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": DONE}},
                    ),
                    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    (
                        "message_delta",
                        {
                            "type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": 5},
                        },
                    ),
                    ("message_stop", {"type": "message_stop"}),
                ]
            ),
            "text/event-stream",
        )

    def agent_turns(self) -> list[dict[str, Any]]:
        """The requests of the agent's own loop (they carry tools; title and other side requests do not)."""
        with self.lock:
            return [r["body"] for r in self.requests if r["body"].get("tools")]


class ResponsesAPI(FakeAPI):
    """OpenAI's Responses API: one assistant message, then ``response.completed``."""

    def answer(self, handler: _Handler, body: dict[str, Any]) -> None:
        rid = f"resp_{uuid.uuid4().hex[:12]}"
        item = {
            "type": "message",
            "role": "assistant",
            "id": f"msg_{rid}",
            "content": [{"type": "output_text", "text": DONE}],
        }
        usage = {
            "input_tokens": 1,
            "input_tokens_details": None,
            "output_tokens": 1,
            "output_tokens_details": None,
            "total_tokens": 2,
        }
        handler._send(
            200,
            _sse(
                [
                    ("response.created", {"type": "response.created", "response": {"id": rid}}),
                    ("response.output_item.done", {"type": "response.output_item.done", "item": item}),
                    ("response.completed", {"type": "response.completed", "response": {"id": rid, "usage": usage}}),
                ]
            ),
            "text/event-stream",
        )

    def agent_turns(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r["body"] for r in self.requests if r["path"].endswith("/responses")]
