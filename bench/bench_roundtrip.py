"""Tool round trip over stdio against a real ``planegate serve`` (DESIGN §8: p50 ≤ 3 ms, p99 ≤ 10 ms).

One process is started and initialised once; a run is opened with ``start_run`` on a scratch
repository so ``get_status(run)`` has something to read. Then each case in ``CASES`` is called
~500 times as raw JSON-RPC ``tools/call`` lines, timing request-write → response-line-read
(encoding happens before the clock starts, parsing after it stops). After those, the run is
planned and one task dispatched through the same server (``freeze_requirements``,
``freeze_architecture``, ``register_graph``, ``dispatch_task``), and the cases in ``TASK_CASES``
(``record_evidence`` on that task: one ledger write per call) are timed the same way. Add a tool by
adding a ``Case`` to the list whose fixture it needs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import StdioServer, emit, encode, log, make_repo, parser, scratch, serve_argv, summary_ms, tool_result

TARGET_P50_MS = 3.0
TARGET_P99_MS = 10.0
TIMEOUT_S = 30.0
WARMUP = 20


@dataclass(frozen=True)
class Fixture:
    """What the cases can refer to: the run opened for the benchmark, its repository, and (for
    ``TASK_CASES``) the task dispatched in it."""

    run: str
    repo: Path
    task: str | None = None


@dataclass(frozen=True)
class Case:
    name: str
    tool: str
    arguments: Callable[[Fixture], Mapping[str, Any]]


CASES = [
    Case("get_status(run)", "get_status", lambda f: {"run": f.run}),
    Case("get_status()", "get_status", lambda f: {}),
]
TASK_CASES = [
    Case(
        "record_evidence(run, task)",
        "record_evidence",
        lambda f: {
            "run": f.run,
            "task": f.task,
            "kind": "note",
            "label": "local",
            "summary": "ran the unit tests locally: 12 passed in 0.4 s",
        },
    ),
]
TASK = "app"


def time_calls(server: StdioServer, case: Case, fixture: Fixture, calls: int) -> tuple[list[float], int, int]:
    """Round-trip times of ``calls`` timed calls (after a warm-up), the response size and the bytes
    of its text blocks (the compact reply: a summary, not a second copy of the result)."""
    arguments = dict(case.arguments(fixture))
    samples: list[float] = []
    size = text = 0
    for index in range(WARMUP + calls):
        request_id, message = server.request_line("tools/call", {"name": case.tool, "arguments": arguments})
        line = encode(message)
        began = time.perf_counter()
        server.send_raw(line)
        while True:
            answer = server.read_line(TIMEOUT_S)
            ended = time.perf_counter()
            parsed = json.loads(answer)
            if parsed.get("id") == request_id:
                break
        if "error" in parsed:
            raise RuntimeError(f"{case.name}: {parsed['error']}")
        tool_result(parsed["result"], case.tool)
        if index >= WARMUP:
            samples.append(ended - began)
            size = len(answer)
            text = sum(len(b.get("text", "").encode()) for b in parsed["result"].get("content", []))
    return samples, size, text


def call_tool(server: StdioServer, tool: str, arguments: Mapping[str, Any]) -> Any:
    return tool_result(
        server.request("tools/call", {"name": tool, "arguments": dict(arguments)}, timeout=TIMEOUT_S), tool
    )


def dispatch_fixture(server: StdioServer, fixture: Fixture) -> Fixture:
    """Plan the run (one requirement, one module, one task) and dispatch its task, all over stdio."""
    run = fixture.run
    requirement = {"id": "R1", "statement": "The app has a value.", "acceptance_criteria": ["VALUE is set"]}
    call_tool(server, "freeze_requirements", {"run": run, "requirements": [requirement]})
    call_tool(server, "freeze_architecture", {"run": run, "modules": [{"name": "app", "owns": ["src/**"]}]})
    task = {"id": TASK, "title": "Value", "goal": "Change VALUE", "scope": ["src/app.py"], "requirements": ["R1"]}
    call_tool(server, "register_graph", {"run": run, "tasks": [task]})
    call_tool(server, "dispatch_task", {"run": run, "task": TASK})
    return Fixture(run=run, repo=fixture.repo, task=TASK)


def measure(server: StdioServer, cases: list[Case], fixture: Fixture, calls: int, results: dict[str, Any]) -> None:
    for case in cases:
        samples, size, text = time_calls(server, case, fixture, calls)
        results[case.name] = {**summary_ms(samples), "response_bytes": size, "text_bytes": text}
        log(f"{case.name}: p50 {results[case.name]['p50_ms']} ms, p99 {results[case.name]['p99_ms']} ms")


def main() -> None:
    args = parser(__doc__ or "", quick_help="100 calls per tool").parse_args()
    calls = 100 if args.quick else 500
    results: dict[str, Any] = {}
    with scratch("roundtrip") as root:
        repo = make_repo(root / "repo", {"README.md": "# bench\n", "src/app.py": "VALUE = 1\n"})
        with StdioServer(serve_argv(), env=dict(os.environ), stderr_path=root / "serve.stderr") as server:
            server.handshake(TIMEOUT_S)
            listed = {tool["name"] for tool in server.request("tools/list", timeout=TIMEOUT_S)["tools"]}
            started = server.request(
                "tools/call",
                {"name": "start_run", "arguments": {"repo": str(repo), "goal": "Benchmark the round trip"}},
                timeout=TIMEOUT_S,
            )
            missing = sorted({case.tool for case in [*CASES, *TASK_CASES]} - listed)
            if missing:
                raise RuntimeError(f"the server does not list {', '.join(missing)}")
            fixture = Fixture(run=tool_result(started, "start_run")["run"], repo=repo)
            measure(server, CASES, fixture, calls, results)
            measure(server, TASK_CASES, dispatch_fixture(server, fixture), calls, results)
    worst_p50 = max(float(r["p50_ms"]) for r in results.values())
    worst_p99 = max(float(r["p99_ms"]) for r in results.values())
    emit(
        {
            "benchmark": "stdio_roundtrip",
            "quick": args.quick,
            "calls_per_tool": calls,
            "warmup_calls": WARMUP,
            "results": results,
            "target": f"p50 ≤ {TARGET_P50_MS} ms and p99 ≤ {TARGET_P99_MS} ms for every measured tool",
            "worst_p50_ms": worst_p50,
            "worst_p99_ms": worst_p99,
            "meets_target": worst_p50 <= TARGET_P50_MS and worst_p99 <= TARGET_P99_MS,
        }
    )


if __name__ == "__main__":
    main()
