"""Every input gets a readable answer: a property-based walk over every tool's input schema.

The tools and their schemas come from the live ``tools/list``, so a tool added later is fuzzed
without touching this file. Arguments are drawn from each schema (with the seeded run's real ids
mixed in, so calls reach past "not found"), then often spoiled: a value beyond 64 bits, a NUL, a
lone surrogate, 70,000 characters, a wrong type, a missing or an unknown argument. Each answer
must be a result or a readable tool error: a ``disposition:`` line, no bare "Error executing
tool", no traceback, no pydantic dump, no incident (an incident is a bug found). After every
error the ledger must be unchanged: the same number of rows in every table, and no new event but
``gate.refused`` (a refused acceptance is recorded on purpose, for the metrics).

The server runs in memory with its job worker never started and workers paused, so nothing
changes the ledger between two calls and a queued job is answered at once instead of waited for.
A last test sends the inputs the issue reported through the real `planegate serve` over stdio.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters

from planegate.server.app import build_server
from planegate.tools.config import Settings
from planegate.tools.errors import DISPOSITIONS
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.execution.jobs import set_worker_mode
from tests.execution import calc_repo, open_env, planned_run

FORBIDDEN = ("Error executing tool", "Traceback", "validation error for", "errors.pydantic.dev")
EXAMPLES = int(os.environ.get("PLANEGATE_FUZZ_EXAMPLES", "300"))


@dataclass
class Lab:
    portal: anyio.from_thread.BlockingPortal
    client: Client
    ledger: Path
    tools: dict[str, dict[str, Any]]
    names: dict[str, list[Any]]  # real values by argument name: the run, its tasks, the repository, a job


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as mp, ExitStack() as stack:
        (root / "user-home").mkdir()
        mp.setenv("HOME", str(root / "user-home"))
        mp.setenv("GIT_CONFIG_GLOBAL", str(root / "user-home" / ".gitconfig"))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        mp.setenv("PLANEGATE_HOME", str(root / "home"))
        env = open_env(root / "home")
        repo = calc_repo(root / "calc")
        run = planned_run(env, repo)
        dispatch_task(env, run, "calc")
        set_worker_mode(env, "paused", "fuzzing: nothing may change the ledger between two calls")
        job = start_checks(env, run, "calc")
        env.close()
        server = build_server(Settings(home=root / "home", actor="agent:fuzz"), worker_delay_s=3600)
        portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
        client = stack.enter_context(portal.wrap_async_context_manager(Client(server)))
        listed = portal.call(client.list_tools)
        tools = {t.name: t.input_schema for t in listed.tools}
        names: dict[str, list[Any]] = {
            "run": [run],
            "task": ["calc", "text", "docs"],
            "repo": [str(repo)],
            "job": [job],
            "": [run, "calc", "text", str(repo), "R1"],
        }
        yield Lab(portal, client, root / "home" / "ledger.db", tools, names)


# --- values ------------------------------------------------------------------------------------

BIG_INTS: list[Any] = [2**63, -(2**63) - 1, 2**64, 10**30]
BAD_STRINGS: list[Any] = [
    "\x00",
    "calc\x00",
    "\ud800",
    "x" * 70_000,
    "/" + "d/" * 3000,
    "-rf",
    "--help",
    "../../../etc/passwd",
    "/",
    "",
    " ",
    "☃" * 300,
]
HOSTILE: list[Any] = [
    *BIG_INTS,
    *BAD_STRINGS,
    float("nan"),
    float("inf"),
    -1e308,
    True,
    None,
    [],
    {},
    [1, "a", None],
    {"nested": {"deeper": [2**64]}},
]


def scalars(names: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(names[""]),
        st.text(max_size=20),
        st.integers(-3, 12),
        st.sampled_from(HOSTILE),
    )


def from_schema(
    node: Any, root: dict[str, Any], names: dict[str, list[Any]], hint: str = "", depth: int = 0
) -> st.SearchStrategy[Any]:
    """Values the schema describes; a property named like one of the lab's ids (``hint``) mostly gets a real one."""
    while isinstance(node, dict) and "$ref" in node:
        node = root.get("$defs", {}).get(str(node["$ref"]).rsplit("/", 1)[-1], {})
    if not isinstance(node, dict) or depth > 4:
        return scalars(names)
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "anyOf" in node:
        return st.one_of([from_schema(b, root, names, hint, depth + 1) for b in node["anyOf"]])
    kind = node.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**node, "type": k}, root, names, hint, depth + 1) for k in kind])
    # Mostly what a caller would send (the lab's ids, small numbers), so calls get past "not found".
    if kind == "string":
        real = st.sampled_from([v for v in names.get(hint, names[""]) if isinstance(v, str)] or names[""])
        return st.one_of(real, real, real, st.text(max_size=24), st.sampled_from(BAD_STRINGS))
    if kind == "integer":
        real_ints = [v for v in names.get(hint, []) if isinstance(v, int)] or [0, 1, 2]
        small = st.one_of(st.sampled_from(real_ints), st.integers(min_value=0, max_value=6))
        return st.one_of(small, small, small, st.integers(min_value=-2, max_value=50), st.sampled_from(BIG_INTS))
    if kind == "number":
        low, high = node.get("minimum", -5), node.get("maximum", 60)
        return st.one_of(st.just(0.0), st.floats(min_value=low, max_value=high, allow_nan=False))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(node.get("items", {}), root, names, hint, depth + 1), max_size=3)
    if kind == "object":
        properties = node.get("properties", {})
        wanted = node.get("required", [])
        required = {k: from_schema(v, root, names, k, depth + 1) for k, v in properties.items() if k in wanted}
        optional = {k: from_schema(v, root, names, k, depth + 1) for k, v in properties.items() if k not in wanted}
        return st.fixed_dictionaries(required, optional=optional)
    return scalars(names)


@st.composite
def calls(draw: st.DrawFn, lab: Lab) -> tuple[str, dict[str, Any]]:
    tool = draw(st.sampled_from(sorted(lab.tools)))
    schema = lab.tools[tool]
    arguments = dict(draw(from_schema(schema, schema, lab.names)))
    spoil = draw(st.sampled_from(["none", "none", "none", "none", "value", "value", "drop", "unknown"]))
    if spoil == "value":
        name = draw(st.sampled_from(sorted(schema.get("properties", {})) or ["extra"]))
        arguments[name] = draw(st.one_of(st.sampled_from(HOSTILE), scalars(lab.names)))
    elif spoil == "drop" and arguments:
        del arguments[draw(st.sampled_from(sorted(arguments)))]
    elif spoil == "unknown":
        arguments[draw(st.sampled_from(["run_id", "taskk", "x", "\x00"]))] = draw(scalars(lab.names))
    return tool, arguments


# --- the ledger --------------------------------------------------------------------------------


# Derived tables the server's worker fills in the background whenever it looks (each head's git
# facts, each run's disk use): a row appearing there during a call says nothing about the call.
BACKGROUND_TABLES = {"git_facts", "disk_usage"}


def snapshot(ledger: Path) -> tuple[dict[str, int], int]:
    """Rows per table (but the worker's derived ones), and the last event id."""
    conn = sqlite3.connect(f"{ledger.as_uri()}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if r[0] not in BACKGROUND_TABLES
        ]
        counts = {t: int(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]) for t in tables}
        return counts, int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
    finally:
        conn.close()


def events_after(ledger: Path, event_id: int) -> list[str]:
    conn = sqlite3.connect(f"{ledger.as_uri()}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT kind FROM events WHERE id > ? ORDER BY id", (event_id,))]
    finally:
        conn.close()


def readable(tool: str, arguments: dict[str, Any], result: Any) -> str:
    text = " ".join(getattr(block, "text", "") for block in result.content)
    for bare in FORBIDDEN:
        assert bare not in text, f"{tool}({arguments!r:.300}) answered {text[:600]!r}"
    if result.is_error:
        head = text.split("\n", 1)[0]
        assert head.startswith("disposition: ") and head.removeprefix("disposition: ") in DISPOSITIONS, text[:300]
        structured = result.structured_content or {}
        assert structured.get("disposition") in DISPOSITIONS and structured.get("error"), structured
        assert structured.get("incident") is None, f"{tool}({arguments!r:.300}) met a bug: {text[:800]}"
        assert len(text.split("\n", 1)[1].strip()) > 20, text
    return text


# --- the property ------------------------------------------------------------------------------


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_every_tool_answers_every_input_readably_and_an_error_changes_nothing(lab: Lab, data: st.DataObject) -> None:
    tool, arguments = data.draw(calls(lab))
    before, last_event = snapshot(lab.ledger)
    result = lab.portal.call(lambda: _call(lab.client, tool, arguments))
    readable(tool, arguments, result)
    disposition = (result.structured_content or {}).get("disposition") if result.is_error else "result"
    event(f"{tool}: {disposition}")
    if result.is_error:
        after, _ = snapshot(lab.ledger)
        new_events = events_after(lab.ledger, last_event)
        assert set(new_events) <= {"gate.refused"}, f"{tool} refused but wrote {new_events}"
        before["events"] = after["events"] = 0
        assert after == before, f"{tool}({arguments!r:.300}) refused but changed rows"


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> Any:
    with anyio.fail_after(30):
        return await client.call_tool(tool, arguments)


def test_the_fuzz_covers_every_listed_tool(lab: Lab) -> None:
    assert len(lab.tools) >= 14 and {"start_run", "get_job", "accept_run", "cancel_job"} <= set(lab.tools)


# --- the inputs the issue reported, through the real server ----------------------------------


@pytest.mark.anyio
async def test_the_reported_inputs_get_readable_answers_from_the_real_server(fresh_machine: Path, repo: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "planegate.server.cli", "serve"],
        env={**os.environ, "PLANEGATE_HOME": str(fresh_machine)},
    )
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("get_job", {"job": 2**63}, "get_job: argument job is 9223372036854775808, beyond the 64-bit range"),
        ("start_run", {"repo": "\x00", "goal": "g"}, "start_run: argument repo contains a NUL character"),
        ("start_run", {"repo": "r" * 70_000, "goal": "g"}, "start_run: argument repo is 70000 characters long"),
        ("start_run", {"repo": "/" + "d/" * 3000, "goal": "g"}, "too long"),
        ("accept_run", {"run": 5}, "accept_run refused its arguments: argument run: Input should be a valid string"),
        ("get_job", {"job": "seven"}, "argument job: Input should be a valid integer"),
        ("get_job", {}, "argument job is missing; it takes an integer"),
        ("dispatch_task", {"run": "r", "task": "t", "executor": "bash"}, "one of 'agent', 'command', 'codex'"),
        ("get_status", {"run_id": "x"}, "unknown argument 'run_id'"),
    ]
    with anyio.fail_after(90):
        async with Client(params) as client:
            for tool, arguments, expected in cases:
                result = await client.call_tool(tool, arguments)
                text = readable(tool, arguments, result)
                assert result.is_error and "disposition: bad_input\n" in text and expected in text, text
            started = await client.call_tool("start_run", {"repo": str(repo), "goal": "still serving"})
            assert not started.is_error
