"""Bytes of each tool reply (issue 11 §3: get_status(run) on the 5,000-task run ≤ 12 KB; no reply
carries more than 8 KB of text), against the SDK's default rendering measured in the same run.

Two workloads:

- ``get_status(run)`` on the 5,000-task bench run (``_workload.big_ledger``, 8 tasks in progress)
  from the real ``planegate serve`` over stdio: the whole response line, the result, its text;
- the whole demo run (``planegate demo``'s lifecycle: freeze, graph, command executors, checks with
  red→green, reviews, accept, release review, signed approval, ``accept_run``) through an in-memory
  client, every reply recorded.

The baseline is what the SDK's default conversion sends for the same structured content: the
result once as structured content and once more, pretty-printed with nulls, as the text block.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import anyio
from _common import StdioServer, emit, log, parser, scratch, serve_argv
from _workload import big_ledger, sizes_for
from mcp import Client

TARGET_STATUS_BYTES = 12 * 1024
TARGET_TEXT_BYTES = 8 * 1024
TIMEOUT_S = 120


def _compact(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def text_bytes(result: dict[str, Any]) -> int:
    return sum(len(block.get("text", "").encode()) for block in result.get("content", []))


def baseline_bytes(result: dict[str, Any]) -> int:
    """The SDK's default reply for the same structured content: it again as indented JSON text."""
    structured = result.get("structuredContent")
    if structured is None:
        return _compact(result)
    pretty = json.dumps(structured, indent=2, ensure_ascii=False)
    return _compact({"content": [{"type": "text", "text": pretty}], "structuredContent": structured})


def measure(result: dict[str, Any]) -> dict[str, int]:
    return {
        "result_bytes": _compact(result),
        "text_bytes": text_bytes(result),
        "baseline_bytes": baseline_bytes(result),
    }


def big_status(quick: bool, root: Path) -> dict[str, Any]:
    ledger = big_ledger(sizes_for(quick), root)
    with StdioServer(serve_argv(), env=dict(os.environ), stderr_path=root / "serve.stderr") as server:
        server.handshake(TIMEOUT_S)
        request_id, message = server.request_line(
            "tools/call", {"name": "get_status", "arguments": {"run": ledger.run}}
        )
        server.send(message)
        line = server.wait_response(request_id, TIMEOUT_S)
    result = json.loads(line)["result"]
    if result.get("isError"):
        raise RuntimeError(f"get_status failed: {result}")
    return {"tasks": ledger.tasks, "response_line_bytes": len(line), **measure(result)}


class Recording:
    """A client whose ``call_tool`` records the size of every reply (what the demo calls)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.replies: list[dict[str, Any]] = []

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        result = await self.client.call_tool(name, arguments)
        wire = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        self.replies.append({"tool": name, **measure(wire)})
        return result


async def demo_replies(home: Path, repo: Path, key: Path) -> list[dict[str, Any]]:
    from planegate.server.app import build_server
    from planegate.server.demo import Demo, _lifecycle
    from planegate.tools.config import Settings

    server = build_server(Settings(home=home, actor="agent:bench"), worker_delay_s=0)
    async with Client(server) as client:
        recording = Recording(client)
        with anyio.fail_after(600):
            await _lifecycle(Demo(recording, lambda *_: None), home, repo, key, lambda *_: None)  # type: ignore[arg-type]
    return recording.replies


def demo_run() -> list[dict[str, Any]]:
    from planegate.server.demo import make_scratch_repo

    folder = Path(tempfile.mkdtemp(prefix="planegate-bench-replies-demo-"))
    try:
        repo, key = make_scratch_repo(folder)
        return anyio.run(demo_replies, folder / "home", repo, key)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    args = parser(__doc__ or "", quick_help="a 500-task run").parse_args()
    with scratch("replies") as root:
        log("get_status(run) on the big run over stdio …")
        status = big_status(args.quick, root)
    log("the demo run, every reply recorded …")
    replies = demo_run()
    per_tool: dict[str, dict[str, int]] = {}
    for reply in replies:
        entry = per_tool.setdefault(reply["tool"], {"calls": 0, "max_result_bytes": 0, "max_text_bytes": 0})
        entry["calls"] += 1
        entry["max_result_bytes"] = max(entry["max_result_bytes"], reply["result_bytes"])
        entry["max_text_bytes"] = max(entry["max_text_bytes"], reply["text_bytes"])
    worst_text = max([status["text_bytes"], *(r["text_bytes"] for r in replies)])
    total = sum(r["result_bytes"] for r in replies)
    baseline = sum(r["baseline_bytes"] for r in replies)
    emit(
        {
            "benchmark": "reply_sizes",
            "quick": args.quick,
            "get_status_big_run": status,
            "get_status_vs_baseline": round(status["result_bytes"] / status["baseline_bytes"], 3),
            "demo_replies": len(replies),
            "demo_bytes": total,
            "demo_baseline_bytes": baseline,
            "demo_vs_baseline": round(total / baseline, 3),
            "per_tool": dict(sorted(per_tool.items())),
            "worst_text_bytes": worst_text,
            "target": f"get_status(run) result ≤ {TARGET_STATUS_BYTES} bytes; every reply's text ≤ {TARGET_TEXT_BYTES}",
            "meets_target": status["result_bytes"] <= TARGET_STATUS_BYTES and worst_text <= TARGET_TEXT_BYTES,
        }
    )


if __name__ == "__main__":
    main()
