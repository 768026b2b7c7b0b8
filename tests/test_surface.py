"""The real `planegate serve` process (stdio and HTTP) and the CLI's help texts."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from planegate.server import __version__
from planegate.server.cli import build_parser, serve_parser
from tests.helpers import call, refused


def stdio_params(home: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "planegate.server.cli", "serve"],
        env={**os.environ, "PLANEGATE_HOME": str(home)},
    )


@pytest.mark.anyio
async def test_the_real_server_process_answers_over_stdio(repo: Path, fresh_machine: Path) -> None:
    with anyio.fail_after(60):
        async with Client(stdio_params(fresh_machine)) as client:
            assert client.server_info is not None and client.server_info.name == "planegate"
            assert "gated pipeline" in (client.instructions or "")
            started = await call(client, "start_run", repo=str(repo), goal="Over stdio")
            status = await call(client, "get_status", run=started["run"])
            assert status["status"]["stage"] == "draft"
            text = await refused(client, "get_status", run="no-such-run")
            assert "'no-such-run' not found" in text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def http_server(home: Path, *extra: str, token: str | None = None) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "PLANEGATE_HOME": str(home)}
    env.pop("PLANEGATE_TOKEN", None)
    if token:
        env["PLANEGATE_TOKEN"] = token
    proc = subprocess.Popen(
        [sys.executable, "-m", "planegate.server.cli", "serve", "--transport", "http", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def post(port: int, headers: dict[str, str]) -> int:
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
        b'"capabilities":{},"clientInfo":{"name":"t","version":"1"}}}'
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/mcp",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_http_refuses_a_wrong_host_header_and_accepts_the_bound_one(fresh_machine: Path) -> None:
    with http_server(fresh_machine) as port:
        assert post(port, {"Host": "evil.example:80"}) == 421
        assert post(port, {"Host": f"127.0.0.1:{port}", "Origin": "http://evil.example"}) == 403
        assert post(port, {"Host": f"127.0.0.1:{port}"}) == 200


def test_http_with_a_token_refuses_requests_without_it(fresh_machine: Path) -> None:
    with http_server(fresh_machine, token="s3cret-token") as port:
        assert post(port, {"Host": f"127.0.0.1:{port}"}) == 401
        assert post(port, {"Host": f"127.0.0.1:{port}", "Authorization": "Bearer wrong"}) == 401
        assert post(port, {"Host": f"127.0.0.1:{port}", "Authorization": "Bearer s3cret-token"}) == 200


@pytest.mark.anyio
async def test_an_mcp_client_works_over_http_with_the_token(repo: Path, fresh_machine: Path) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    with http_server(fresh_machine, token="tok") as port:
        with anyio.fail_after(30):
            async with httpx2.AsyncClient(headers={"Authorization": "Bearer tok"}) as http:
                transport = streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
                async with Client(transport) as client:
                    started = await call(client, "start_run", repo=str(repo), goal="Over HTTP")
                    assert started["stage"] == "draft"


def test_http_on_a_public_address_without_a_token_refuses_to_start(fresh_machine: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", "serve", "--transport", "http", "--host", "0.0.0.0"],
        env={**{k: v for k, v in os.environ.items() if k != "PLANEGATE_TOKEN"}, "PLANEGATE_HOME": str(fresh_machine)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "PLANEGATE_TOKEN" in done.stderr and "'0.0.0.0'" in done.stderr


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"command '{prefix}{name}' has no help text"
                yield f"{prefix}{name}", sub
                yield from _commands(sub, f"{prefix}{name} ")


def test_every_command_has_help_text() -> None:
    commands = dict(_commands(build_parser()))
    assert {"serve", "status", "ledger verify", "demo"} <= set(commands)
    for name, sub in commands.items():
        assert sub.description, f"command '{name}' has no description"
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"option {action.option_strings} of '{name}' has no help text"
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"argument {action.dest} of '{name}' has no help text"


def test_planegate_serve_is_parsed_by_its_own_parser_exactly_as_the_whole_command_line_would() -> None:
    """``main`` builds only the serve command for ``planegate serve``; it must be the same command."""
    whole = dict(_commands(build_parser()))["serve"]
    alone = serve_parser()
    assert alone.format_help() == whole.format_help()
    for argv in ([], ["--transport", "http", "--port", "9000", "--allowed-host", "a", "--allowed-host", "b"]):
        assert vars(alone.parse_args(argv)) == vars(build_parser().parse_args(["serve", *argv]))


def test_version_matches_the_installed_package() -> None:
    from importlib.metadata import version

    script = Path(sys.executable).parent / "planegate"  # the installed console entry point
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == f"planegate {__version__}" == f"planegate {version('planegate')}"


def test_serve_loads_with_the_cycle_collector_off_then_runs_with_it_on_and_the_start_up_frozen() -> None:
    """``planegate serve`` turns the cycle collector off while it imports the SDK and builds the
    server (it would otherwise walk those objects over and over: a tenth of the start-up), then
    on again, with what start-up made frozen out of its way. Observed in a child process: the
    collections made while loading, and the collector's state when the server starts to run."""
    code = (
        "import gc, json, sys, anyio\n"
        "loading = []  # collections started once the SDK began to load\n"
        "def seen(phase, info):\n"
        "    if phase == 'start' and 'mcp' in sys.modules:\n"
        "        loading.append(info['generation'])\n"
        "gc.callbacks.append(seen)\n"
        "def run(*args, **kwargs):\n"
        "    state = {'collections_while_loading': len(loading), 'enabled': gc.isenabled()}\n"
        "    state.update(frozen=gc.get_freeze_count(), sdk_loaded='mcp.server.mcpserver' in sys.modules)\n"
        "    print(json.dumps(state))\n"
        "anyio.run = run\n"
        "from planegate.server.cli import main\n"
        "sys.exit(main(['serve']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    seen = json.loads(done.stdout)
    assert seen["sdk_loaded"] and seen["enabled"], seen
    assert seen["collections_while_loading"] == 0, seen  # over 150 without it
    assert seen["frozen"] > 100_000, seen
