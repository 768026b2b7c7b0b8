"""The control plane through an in-memory MCP client: start a run, freeze, plan, read status.

Every refusal is checked twice: its message names the bad value, and the ledger gained no event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from planegate.server.app import build_server
from planegate.tools.config import Settings
from tests.helpers import call, git, make_repo, refused

pytestmark = pytest.mark.anyio

REQS = [
    {"id": "R1", "statement": "Users can log in.", "acceptance_criteria": ["a valid password logs in"]},
    {"id": "R2", "statement": "Sessions expire.", "acceptance_criteria": ["a session older than 1h is refused"]},
]
MODULES = [
    {"name": "auth", "owns": ["src/auth/**"]},
    {"name": "session", "owns": ["src/session/**"], "depends_on": ["auth"]},
]
TASKS = [
    {"id": "login", "title": "Login", "goal": "Log users in", "scope": ["src/auth/**"], "requirements": ["R1"]},
    {
        "id": "expiry",
        "title": "Expiry",
        "goal": "Expire sessions",
        "depends_on": ["login"],
        "scope": ["src/session/store.py"],
        "requirements": ["R2"],
    },
]


@asynccontextmanager
async def connected(home: Path) -> AsyncIterator[Any]:
    server = build_server(Settings(home=home, actor="agent:test"))
    async with Client(server) as client:
        yield client
    server.env_holder.close()  # type: ignore[attr-defined]


def event_count(home: Path) -> int:
    from planegate.store import Store

    with Store(home / "ledger.db") as store:
        return store.event_count()


async def planned_run(client: Any, repo: Path) -> str:
    run = (await call(client, "start_run", repo=str(repo), goal="Add login"))["run"]
    await call(client, "freeze_requirements", run=run, requirements=REQS)
    await call(client, "freeze_architecture", run=run, modules=MODULES, decisions=[])
    await call(client, "register_graph", run=run, tasks=TASKS)
    return str(run)


async def test_a_run_goes_from_start_to_planned_and_status_names_the_next_action(
    repo: Path, fresh_machine: Path
) -> None:
    async with connected(fresh_machine) as client:
        started = await call(client, "start_run", repo=str(repo), goal="Add login and session expiry")
        run = started["run"]
        assert started["stage"] == "draft"
        assert git(repo, "rev-parse", started["integration_branch"]) == started["base_sha"]
        assert git(repo, "rev-parse", "HEAD") == started["base_sha"]

        frozen = await call(client, "freeze_requirements", run=run, requirements=REQS)
        assert (frozen["version"], frozen["stage"]) == (1, "requirements_frozen")
        arch = await call(
            client,
            "freeze_architecture",
            run=run,
            modules=MODULES,
            decisions=[{"title": "tokens", "decision": "opaque session tokens", "rationale": "revocable"}],
        )
        assert (arch["version"], arch["stage"]) == (1, "architecture_frozen")

        graph = await call(client, "register_graph", run=run, tasks=TASKS)
        assert graph["waves"] == [["login"], ["expiry"]]
        assert graph["coverage"] == {"R1": ["login"], "R2": ["expiry"]}
        assert graph["ready"] == ["login"]

        status = await call(client, "get_status", run=run)
        assert status["status"]["stage"] == "planned"
        assert status["status"]["counts"] == {"ready": 1, "blocked": 1}
        assert status["status"]["blocked"] == [{"task": "expiry", "reason": "waiting for login (ready)"}]
        assert status["next_action"] == f"dispatch_task(run={run!r}, task='login')"

        listing = await call(client, "get_status")
        assert [r["run"] for r in listing["runs"]] == [run]


async def test_freezing_the_same_requirements_again_changes_nothing(repo: Path, fresh_machine: Path) -> None:
    async with connected(fresh_machine) as client:
        run = (await call(client, "start_run", repo=str(repo), goal="x"))["run"]
        first = await call(client, "freeze_requirements", run=run, requirements=REQS)
        before = event_count(fresh_machine)
        again = await call(client, "freeze_requirements", run=run, requirements=list(reversed(REQS)))
        assert again["version"] == first["version"] == 1
        assert event_count(fresh_machine) == before


async def test_an_amendment_needs_a_reason_and_reports_what_changed(repo: Path, fresh_machine: Path) -> None:
    async with connected(fresh_machine) as client:
        run = await planned_run(client, repo)
        amended = [
            dict(REQS[0], statement="Users can log in with a password."),
            REQS[1],
            {"id": "R3", "statement": "Logout.", "acceptance_criteria": ["logout ends the session"]},
        ]
        before = event_count(fresh_machine)
        text = await refused(client, "freeze_requirements", run=run, requirements=amended)
        assert "amend_reason" in text and "version 1" in text
        assert event_count(fresh_machine) == before
        result = await call(client, "freeze_requirements", run=run, requirements=amended, amend_reason="clarified")
        assert (result["version"], result["added"], result["changed"], result["removed"]) == (2, ["R3"], ["R1"], [])


async def test_removing_a_requirement_a_task_serves_is_refused(repo: Path, fresh_machine: Path) -> None:
    async with connected(fresh_machine) as client:
        run = await planned_run(client, repo)
        text = await refused(client, "freeze_requirements", run=run, requirements=[REQS[0]], amend_reason="drop expiry")
        assert "'R2'" in text and "expiry" in text


@pytest.mark.parametrize(
    ("requirements", "named"),
    [
        ([], "requirements is empty"),
        ([REQS[0], REQS[0]], "'R1' appears twice"),
        ([{"id": "1bad", "statement": "x", "acceptance_criteria": ["y"]}], "'1bad'"),
        ([{"id": "R9", "statement": "x", "acceptance_criteria": []}], "'R9' has no acceptance criteria"),
        ([{"id": "R9", "statement": "x", "criteria": ["y"]}], "criteria"),
    ],
)
async def test_bad_requirements_are_refused_and_change_nothing(
    repo: Path, fresh_machine: Path, requirements: list[dict[str, Any]], named: str
) -> None:
    async with connected(fresh_machine) as client:
        run = (await call(client, "start_run", repo=str(repo), goal="x"))["run"]
        before = event_count(fresh_machine)
        text = await refused(client, "freeze_requirements", run=run, requirements=requirements)
        assert named in text
        assert event_count(fresh_machine) == before


async def test_start_run_refuses_what_is_not_a_repository_with_commits(tmp_path: Path, fresh_machine: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    async with connected(fresh_machine) as client:
        assert "is not a git repository" in await refused(client, "start_run", repo=str(plain), goal="x")
        assert "has no commits" in await refused(client, "start_run", repo=str(empty), goal="x")
        assert "does not exist" in await refused(client, "start_run", repo=str(tmp_path / "nope"), goal="x")
        repo = make_repo(tmp_path / "r")
        assert "'no-such-branch'" in await refused(
            client, "start_run", repo=str(repo), goal="x", base_ref="no-such-branch"
        )
        assert "may not start with '-'" in await refused(
            client, "start_run", repo=str(repo), goal="x", base_ref="--output=/tmp/x"
        )
        assert "empty" in await refused(client, "start_run", repo=str(repo), goal="   ")
        assert await call(client, "get_status") == {
            "runs": [],
            "runs_total": 0,
            "runs_hidden": None,
            "next_action": "start_run(repo=..., goal=...)",
            "status": None,
            "workers": None,
        }


@pytest.mark.parametrize(
    ("modules", "named"),
    [
        ([{"name": "a", "owns": ["src/**"]}, {"name": "b", "owns": ["src/b/*.py"]}], "both own"),
        ([{"name": "a", "owns": ["src/a/**"], "depends_on": ["ghost"]}], "'ghost'"),
        (
            [
                {"name": "a", "owns": ["a/**"], "depends_on": ["b"]},
                {"name": "b", "owns": ["b/**"], "depends_on": ["a"]},
            ],
            "a → b → a",
        ),
        ([{"name": "Bad Name", "owns": ["x/**"]}], "'Bad Name'"),
        ([{"name": "a", "owns": ["../outside/**"]}], "'../outside/**'"),
        ([], "modules is empty"),
    ],
)
async def test_bad_architecture_is_refused_and_changes_nothing(
    repo: Path, fresh_machine: Path, modules: list[dict[str, Any]], named: str
) -> None:
    async with connected(fresh_machine) as client:
        run = (await call(client, "start_run", repo=str(repo), goal="x"))["run"]
        await call(client, "freeze_requirements", run=run, requirements=REQS)
        before = event_count(fresh_machine)
        text = await refused(client, "freeze_architecture", run=run, modules=modules, decisions=[])
        assert named in text
        assert event_count(fresh_machine) == before


async def test_shared_modules_may_overlap(repo: Path, fresh_machine: Path) -> None:
    async with connected(fresh_machine) as client:
        run = (await call(client, "start_run", repo=str(repo), goal="x"))["run"]
        await call(client, "freeze_requirements", run=run, requirements=REQS)
        await call(
            client,
            "freeze_architecture",
            run=run,
            decisions=[],
            modules=[
                {"name": "core", "owns": ["src/**"]},
                {"name": "config", "owns": ["src/config.py"], "shared": True},
            ],
        )


async def test_architecture_needs_frozen_requirements(repo: Path, fresh_machine: Path) -> None:
    async with connected(fresh_machine) as client:
        run = (await call(client, "start_run", repo=str(repo), goal="x"))["run"]
        text = await refused(client, "freeze_architecture", run=run, modules=MODULES, decisions=[])
        assert "freeze_requirements" in text
        text = await refused(client, "register_graph", run=run, tasks=TASKS)
        assert "no frozen requirements" in text


def _task(**overrides: Any) -> dict[str, Any]:
    return {"id": "t", "title": "T", "goal": "g", "scope": ["src/auth/x.py"], "requirements": ["R1", "R2"], **overrides}


@pytest.mark.parametrize(
    ("tasks", "named"),
    [
        ([_task(id="-x")], "'-x'"),
        ([_task(id="../x")], "'../x'"),
        ([_task(id="Upper")], "'Upper'"),
        ([_task(), _task()], "'t' appears twice"),
        ([_task(depends_on=["ghost"])], "'ghost'"),
        (
            [_task(id="a", depends_on=["c"]), _task(id="b", depends_on=["a"]), _task(id="c", depends_on=["b"])],
            "a → c → b → a",
        ),
        ([_task(requirements=["R1", "R7"])], "'R7'"),
        ([_task(scope=["docs/**"])], "'docs/**', which no module owns"),
        ([_task(scope=["src/**"])], "'src/**', which no module owns"),
        ([_task(requirements=["R1"])], "R2 are served by no task"),
        ([], "tasks is empty"),
    ],
)
async def test_bad_graphs_are_refused_with_the_value_named_and_change_nothing(
    repo: Path, fresh_machine: Path, tasks: list[dict[str, Any]], named: str
) -> None:
    async with connected(fresh_machine) as client:
        run = (await call(client, "start_run", repo=str(repo), goal="x"))["run"]
        await call(client, "freeze_requirements", run=run, requirements=REQS)
        await call(client, "freeze_architecture", run=run, modules=MODULES, decisions=[])
        before = event_count(fresh_machine)
        text = await refused(client, "register_graph", run=run, tasks=tasks)
        assert named in text
        assert event_count(fresh_machine) == before
        status = await call(client, "get_status", run=run)
        assert status["status"]["stage"] == "architecture_frozen"


async def test_graph_needs_architecture_unless_the_policy_waives_it(tmp_path: Path, fresh_machine: Path) -> None:
    strict = make_repo(tmp_path / "strict")
    relaxed = make_repo(tmp_path / "relaxed", {".planegate/policy.toml": "require_architecture = false\n"})
    async with connected(fresh_machine) as client:
        run = (await call(client, "start_run", repo=str(strict), goal="x"))["run"]
        await call(client, "freeze_requirements", run=run, requirements=REQS)
        assert "freeze_architecture" in await refused(client, "register_graph", run=run, tasks=TASKS)
        run = (await call(client, "start_run", repo=str(relaxed), goal="x"))["run"]
        await call(client, "freeze_requirements", run=run, requirements=REQS)
        graph = await call(client, "register_graph", run=run, tasks=TASKS)
        assert graph["waves"] == [["login"], ["expiry"]]


async def test_a_malformed_policy_is_refused_with_file_line_and_key(tmp_path: Path, fresh_machine: Path) -> None:
    repo = make_repo(tmp_path / "r", {".planegate/policy.toml": 'max_files = 25\nmax_parallel = "two"\n'})
    async with connected(fresh_machine) as client:
        text = await refused(client, "start_run", repo=str(repo), goal="x")
    assert "policy.toml:2" in text and "'max_parallel'" in text
    assert event_count(fresh_machine) == 0


async def test_reregistering_replaces_the_graph_and_the_same_graph_is_a_no_op(repo: Path, fresh_machine: Path) -> None:
    async with connected(fresh_machine) as client:
        run = await planned_run(client, repo)
        before = event_count(fresh_machine)
        same = await call(client, "register_graph", run=run, tasks=TASKS)
        assert same["version"] == 1 and event_count(fresh_machine) == before
        merged = [_task(id="all", scope=["src/auth/**", "src/session/**"])]
        replaced = await call(client, "register_graph", run=run, tasks=merged)
        assert (replaced["version"], replaced["waves"]) == (2, [["all"]])
        status = await call(client, "get_status", run=run)
        assert status["status"]["counts"] == {"ready": 1}


async def test_tools_list_carries_output_schemas_and_honest_annotations(fresh_machine: Path) -> None:
    async with connected(fresh_machine) as client:
        listed = await client.list_tools()
    tools = {t.name: t for t in listed.tools}
    assert {"start_run", "freeze_requirements", "freeze_architecture", "register_graph", "get_status"} <= set(tools)
    for tool in tools.values():
        assert tool.output_schema and tool.output_schema.get("type") == "object", tool.name
        assert tool.annotations is not None, tool.name
        assert tool.description, tool.name
    # Hints equal to the spec's defaults (not read-only, destructive, not idempotent, open world) are
    # left out; a client reads a missing hint as its default.
    defaults = {"read_only_hint": False, "destructive_hint": True, "idempotent_hint": False, "open_world_hint": True}

    def hint(tool: str, name: str) -> bool:
        value = getattr(tools[tool].annotations, name)
        return defaults[name] if value is None else bool(value)

    assert hint("get_status", "read_only_hint") is True
    assert hint("start_run", "read_only_hint") is False and hint("start_run", "destructive_hint") is False
    assert hint("register_graph", "destructive_hint") is True
    # publish_run reaches a remote and a forge (git push, gh): the only tool in an open world
    assert {name for name in tools if hint(name, "open_world_hint")} == {"publish_run"}
    # measured as it travels: compact JSON, as the bench (bench/bench_tools_list.py) measures it
    wire = json.dumps(
        listed.model_dump(mode="json", by_alias=True, exclude_unset=True), separators=(",", ":"), ensure_ascii=False
    )
    size = len(wire.encode())
    assert size <= 20 * 1024, f"tools/list is {size} bytes"


async def test_resources_render_status_with_a_mermaid_graph(repo: Path, fresh_machine: Path) -> None:
    async with connected(fresh_machine) as client:
        run = await planned_run(client, repo)
        body = (await client.read_resource(f"planegate://runs/{run}")).contents[0].text
        assert "```mermaid" in body and "t_login --> t_expiry" in body
        runs = (await client.read_resource("planegate://runs")).contents[0].text
        assert run in runs
        events = (await client.read_resource(f"planegate://runs/{run}/events")).contents[0].text
        assert "graph.registered" in events
        prompt = await client.get_prompt("orchestrate", {"goal": "ship it"})
        assert "freeze_requirements" in prompt.messages[0].content.text


async def test_the_run_takes_the_committed_policy_and_ignores_uncommitted_edits(
    tmp_path: Path, fresh_machine: Path
) -> None:
    repo = make_repo(tmp_path / "r", {".planegate/policy.toml": "max_parallel = 3\n"})
    (repo / ".planegate" / "policy.toml").write_text("max_parallel = 3\nrequire_review = false\n")
    fresh = make_repo(tmp_path / "fresh")
    (fresh / ".planegate").mkdir()
    (fresh / ".planegate" / "policy.toml").write_text("require_review = false\n")
    async with connected(fresh_machine) as client:
        started = await call(client, "start_run", repo=str(repo), goal="x")
        assert "uncommitted edits to it are ignored" in started["policy"]
        unborn = await call(client, "start_run", repo=str(fresh), goal="y")
        assert unborn["policy"].startswith("defaults") and "commit it" in unborn["policy"]
    from planegate.tools.env import Env

    env = Env.open(Settings(home=fresh_machine, actor="t"))
    try:
        policy = env.policy(env.run_row(started["run"]))
        assert (policy.max_parallel, policy.require_review) == (3, True)
        assert env.policy(env.run_row(unborn["run"])).require_review is True
    finally:
        env.close()
