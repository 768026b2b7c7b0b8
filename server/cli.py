"""The ``planegate`` command line.

Each command is a small function taking the parsed arguments and returning an exit code;
``main`` builds the parser (every command carries help text, a test checks) and reports
planegate's own errors as one readable line instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__

Command = Callable[[argparse.Namespace], int]


def _env(actor: str | None = None):  # type: ignore[no-untyped-def]
    from planegate.tools.config import Settings, os_user
    from planegate.tools.env import Env

    return Env.open(Settings.from_env(actor=actor or f"user:{os_user()}"))


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import build_server

    server = build_server()
    if args.transport == "stdio":
        server.run("stdio")
        return 0
    from .http import TransportRefused, serve_http

    token = os.environ.get("PLANEGATE_TOKEN") or None
    try:
        serve_http(server, args.host, args.port, token, args.allowed_host or [])
    except TransportRefused as exc:
        print(f"planegate serve: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .console import print_status

    env = _env()
    try:
        print_status(env, args.run)
    finally:
        env.close()
    return 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    from planegate.store import verify_ledger

    env = _env()
    try:
        report = verify_ledger(env.store)
    finally:
        env.close()
    path = env.settings.ledger_path
    if report.ok:
        print(
            f"ledger ok: {report.events_verified} events verified, "
            f"{report.artifacts_verified} artifacts re-hashed ({path})"
        )
        return 0
    print(f"ledger BROKEN ({path}):", file=sys.stderr)
    if report.chain_break:
        b = report.chain_break
        print(f"  first broken event: {b.event_id} ({b.kind}): {b.what}", file=sys.stderr)
        print(f"  events before it verified: {report.events_verified}", file=sys.stderr)
    for problem in [*report.artifact_problems, *report.state_problems]:
        print(f"  {problem}", file=sys.stderr)
    return 1


def cmd_worker(args: argparse.Namespace) -> int:
    import anyio

    from planegate.tools.jobs import Worker
    from planegate.tools.reconcile import reconcile

    env = _env(actor="planegate:worker")
    try:
        for line in reconcile(env).lines():
            print(f"reconcile: {line}", flush=True)
        worker = Worker(env)
        print(f"planegate worker {worker.name}: waiting for jobs in {env.settings.ledger_path}", flush=True)
        anyio.run(lambda: worker.run(stop_when_idle=args.exit_when_idle))
    finally:
        env.close()
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from planegate.tools.policy import POLICY_PATH, detect_test_command, parse_policy, policy_template

    repo = Path(args.repo).resolve()
    if not repo.is_dir():
        print(f"planegate init: {repo} is not a directory", file=sys.stderr)
        return 2
    target = repo / POLICY_PATH
    if target.exists() and not args.force:
        print(f"planegate init: {target} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    command = detect_test_command(repo)
    text = policy_template(command)
    parse_policy(text, str(target))  # the template must always be a valid policy
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    print(f"test check: {' '.join(command)}" if command else "no test command detected: set [checks] test = [...]")
    print("commit it, then register planegate with your agent:")
    print("  codex mcp add planegate -- planegate serve")
    print("  claude mcp add planegate -- planegate serve")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from planegate.tools.accept import rollback

    env = _env()
    try:
        result = rollback(env, args.run, args.to)
    finally:
        env.close()
    print(f"run {result.run}: integration branch reset to {result.checkpoint} ({result.integration_sha[:12]})")
    for task in result.reverted:
        print(f"  acceptance of {task} reverted; it is {result.statuses[task]} again (branch and evidence kept)")
    if not result.reverted:
        print("  no task was accepted after that checkpoint")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planegate",
        description="An MCP server that takes a software change through frozen requirements, a task graph, "
        "isolated worktrees, server-run checks, review and human approval.",
    )
    parser.add_argument("--version", action="version", version=f"planegate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, helptext: str, fn: Command) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=helptext, description=helptext)
        sub.set_defaults(fn=fn)
        return sub

    serve = add("serve", "Run the MCP server (stdio by default, or streamable HTTP).", cmd_serve)
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="stdio (default) or http")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765)")
    serve.add_argument(
        "--allowed-host", action="append", metavar="HOST", help="another Host header to accept (repeatable)"
    )

    status = add("status", "Show the runs, or one run's tasks, blockers and next action.", cmd_status)
    status.add_argument("run", nargs="?", help="run id (omit to list runs)")

    ledger = commands.add_parser("ledger", help="Inspect the ledger.", description="Inspect the ledger.")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", metavar="COMMAND", required=True)
    verify = ledger_commands.add_parser(
        "verify",
        help="Recompute the event hash chain, re-hash artifacts, and check state against the events.",
        description="Recompute the event hash chain, re-hash artifacts, and check state against the events. "
        "Exits 1 and names the first broken event when anything was edited outside planegate.",
    )
    verify.set_defaults(fn=cmd_ledger_verify)

    worker = add("worker", "Run a job worker (executors, checks, reviews) without an MCP session.", cmd_worker)
    worker.add_argument("--exit-when-idle", action="store_true", help="stop once no job is queued or running")

    init = add("init", "Write a commented .planegate/policy.toml for a repository.", cmd_init)
    init.add_argument("repo", nargs="?", default=".", help="the repository (default: the current directory)")
    init.add_argument("--force", action="store_true", help="overwrite an existing policy file")

    back = add("rollback", "Reset a run's integration branch to a checkpoint (a human command).", cmd_rollback)
    back.add_argument("run", help="run id")
    back.add_argument("--to", required=True, metavar="cp-N", help="the checkpoint to return to, e.g. cp-2")

    demo = add("demo", "Run a whole change on a scratch repository and print what happened.", cmd_demo)
    demo.add_argument("--keep", action="store_true", help="keep the scratch repository and state afterwards")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from planegate.store import StoreBusy
    from planegate.tools.errors import PlanegateError

    try:
        return int(args.fn(args))
    except (PlanegateError, StoreBusy) as exc:
        print(f"planegate {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
