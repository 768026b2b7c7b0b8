"""Bytes a client receives for ``tools/list`` (≤ 20 KB with every tool, issue 12), plus resources and prompts.

Measured twice: in memory through ``mcp.Client(build_server(...))`` (handshake era, the result
re-serialised the way the server puts it on the wire: by alias, only the fields that were set),
and from the real ``planegate serve`` process over stdio (the ``result`` of the raw response
line, compact). The two should agree byte for byte. Per-tool sizes are listed largest first;
the size of the same listing on a 2026-era connection (which adds cache hints) is given too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from _common import StdioServer, emit, parser, scratch, serve_argv
from mcp import Client
from pydantic import BaseModel

from planegate.server.app import build_server
from planegate.tools.config import Settings

TARGET_BYTES = 20 * 1024
TIMEOUT_S = 60
PARTS = ("description", "inputSchema", "outputSchema")
LISTS = {
    "tools/list": "list_tools",
    "resources/list": "list_resources",
    "resources/templates/list": "list_resource_templates",
    "prompts/list": "list_prompts",
}


def compact(value: Any) -> bytes:
    """JSON the way pydantic writes it on the wire: no spaces, UTF-8 kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def wire_form(result: BaseModel) -> dict[str, Any]:
    return result.model_dump(by_alias=True, mode="json", exclude_unset=True)


async def in_memory(mode: str) -> dict[str, dict[str, Any]]:
    server = build_server(Settings.from_env(actor="agent:bench"))
    answers: dict[str, dict[str, Any]] = {}
    with anyio.fail_after(TIMEOUT_S):
        async with Client(server, mode=mode) as client:
            for method, name in LISTS.items():
                answers[method] = wire_form(await getattr(client, name)())
    server.env_holder.close()
    return answers


def over_stdio(root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """The results and the full response-line sizes from the real process."""
    results: dict[str, dict[str, Any]] = {}
    line_bytes: dict[str, int] = {}
    with StdioServer(serve_argv(), env=dict(os.environ), stderr_path=root / "serve.stderr") as server:
        server.handshake(TIMEOUT_S)
        for method in LISTS:
            request_id, message = server.request_line(method)
            server.send(message)
            line = server.wait_response(request_id, TIMEOUT_S)
            line_bytes[method] = len(line)
            results[method] = json.loads(line)["result"]
    return results, line_bytes


def tool_sizes(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A tool's bytes, whole and split into its description and schemas."""
    return {"tool": tool["name"], "bytes": len(compact(tool))} | {
        part: len(compact(tool[part])) if part in tool else 0 for part in PARTS
    }


def sizes(answers: Mapping[str, Any]) -> dict[str, int]:
    return {method: len(compact(result)) for method, result in answers.items()}


def main() -> None:
    parser(__doc__ or "").parse_args()
    with scratch("tools-list") as root:
        memory = anyio.run(in_memory, "legacy")
        modern = anyio.run(in_memory, "2026-07-28")
        stdio, line_bytes = over_stdio(root)
    memory_sizes, stdio_sizes = sizes(memory), sizes(stdio)
    per_tool = sorted(
        (tool_sizes(tool) for tool in stdio["tools/list"]["tools"]), key=lambda entry: -int(entry["bytes"])
    )
    parts = {part: sum(int(entry[part]) for entry in per_tool) for part in PARTS}
    tools_bytes = stdio_sizes["tools/list"]
    emit(
        {
            "benchmark": "tools_list",
            "tools": len(per_tool),
            "tools_list_bytes": tools_bytes,
            "result_bytes_stdio": stdio_sizes,
            "result_bytes_in_memory": memory_sizes,
            "response_line_bytes_stdio": line_bytes,
            "in_memory_equals_stdio": memory == stdio,
            "result_bytes_in_memory_2026_era": sizes(modern),
            "bytes_by_part": parts,
            "per_tool_bytes": per_tool,
            "headroom_bytes": TARGET_BYTES - tools_bytes,
            "target": f"tools/list result ≤ {TARGET_BYTES} bytes (20 KB)",
            "meets_target": max(memory_sizes["tools/list"], tools_bytes) <= TARGET_BYTES,
        }
    )


if __name__ == "__main__":
    main()
