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
from pathlib import Path
from typing import Any

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
    from planegate.tools.gates.accept import checkpoint_anchors

    env = _env()
    try:
        anchors, notes = checkpoint_anchors(env)
        report = verify_ledger(env.store, anchors=anchors)
    finally:
        env.close()
    path = env.settings.ledger_path
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if report.ok:
        print(
            f"ledger ok: {report.events_verified} events verified, {report.rows_verified} rows match their events, "
            f"{report.anchors_verified} checkpoint tag(s) match the chain, "
            f"{report.artifacts_verified} artifacts re-hashed ({path})"
        )
        return 0
    print(f"ledger BROKEN ({path}):", file=sys.stderr)
    if report.chain_break:
        b = report.chain_break
        print(f"  first broken event: {b.event_id} ({b.kind}): {b.what}", file=sys.stderr)
        print(f"  events before it verified: {report.events_verified}", file=sys.stderr)
        print("  (rows are not checked against a broken chain)", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    print(
        "  planegate trusts no gate on rows it cannot vouch for: restore the ledger from a backup "
        "(or undo the edit) before accepting more work",
        file=sys.stderr,
    )
    return 1


def cmd_worker(args: argparse.Namespace) -> int:
    import anyio

    from planegate.tools.execution.jobs import Worker
    from planegate.tools.execution.reconcile import reconcile

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
    from planegate.tools.gates.accept import rollback

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


class NoTerminal(Exception):
    """The command needs a person at a terminal."""


def confirm_on_terminal(question: str, expected: str) -> bool:
    """Ask on the controlling terminal (not stdin, so piped input cannot answer for a person)."""
    try:
        terminal = Path("/dev/tty").open("r+b", buffering=0)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise NoTerminal(str(exc)) from exc
    with terminal:
        terminal.write(question.encode())
        return terminal.readline().decode(errors="replace").strip() == expected


def _human_only(command: str) -> int:
    print(
        f"planegate {command}: this needs you at a terminal (it reads your answer from /dev/tty); "
        "an agent cannot run it on your behalf. Run it yourself in a terminal.",
        file=sys.stderr,
    )
    return 2


def cmd_approve(args: argparse.Namespace) -> int:
    from planegate.tools.config import os_user
    from planegate.tools.gates.release import approve, evaluate_run

    env = _env()
    try:
        run_row = env.run_row(args.run)
        facts, gates = evaluate_run(env, args.run)
        print(f"run {args.run}: {run_row['goal']}")
        print(f"integration branch {run_row['integration_branch']} at {str(facts.integration_head)[:12]}")
        for gate in gates:
            print(f"  {'ok  ' if gate.ok else 'OPEN'} {gate.gate}: {gate.reason}")
        try:
            if not confirm_on_terminal(f"Type the run id to approve it ({args.run}): ", args.run):
                print("not approved (the answer did not match the run id)", file=sys.stderr)
                return 1
        except NoTerminal:
            return _human_only("approve")
        result = approve(env, args.run, os_user(), "cli")
    finally:
        env.close()
    print(f"approved by {result.by} at integration head {result.head_sha[:12]}")
    if result.open_tasks:
        print(f"note: tasks still open ({', '.join(result.open_tasks)}); a later merge needs a new approval")
    print(f"the agent can now call accept_run(run={args.run!r})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from planegate.tools.gates.release import evaluate_run
    from planegate.tools.report.report import write_report

    env = _env()
    try:
        _, gates = evaluate_run(env, args.run)
        files = write_report(env, args.run, Path(args.out) if args.out else None, run_gates=gates)
    finally:
        env.close()
    print(f"wrote {files.markdown}\nwrote {files.html}\nwrote {files.svg}")
    return 0


def cmd_review_submit(args: argparse.Namespace) -> int:
    from planegate.tools.config import os_user
    from planegate.tools.review.review import submit_review

    text = Path(args.file).read_text(encoding="utf-8")
    try:
        if not confirm_on_terminal(
            f"Type the review id to submit {args.file} as its answer ({args.review}): ", args.review
        ):
            print("not submitted (the answer did not match the review id)", file=sys.stderr)
            return 1
    except NoTerminal:
        return _human_only("review submit")
    env = _env(actor=f"user:{os_user()}")
    try:
        result = submit_review(env, args.review, text)
    finally:
        env.close()
    print(f"review {result.review}: {result.state}, verdict {result.verdict}; next: {result.next_step}")
    return 0


def cmd_browser_launch(args: argparse.Namespace) -> int:
    from planegate.bridge import BridgeError, launch_browser
    from planegate.tools.config import Settings

    profile = Settings.from_env().browser_dir / "profile"
    try:
        launched = launch_browser(
            profile,
            executable=args.executable,
            port=args.port,
            headless=args.headless,
        )
    except BridgeError as exc:
        print(f"planegate browser launch: {exc}", file=sys.stderr)
        return 1
    print(f"browser started (pid {launched.pid}) with profile {profile}")
    print(f"DevTools endpoint: {launched.endpoint}")
    print("log in to ChatGPT once in that window; planegate attaches to it for reviews.")
    print(f"if you use another port: export PLANEGATE_CDP_URL={launched.endpoint}")
    print("check it with: planegate browser doctor")
    return 0


def cmd_browser_doctor(args: argparse.Namespace) -> int:
    from planegate.bridge import BridgeConfig, ChatGPTBridge, candidate_endpoints
    from planegate.tools.config import Settings

    settings = Settings.from_env()
    override = settings.browser_dir / "selectors.json"
    endpoints = candidate_endpoints(os.environ.get("PLANEGATE_CDP_URL"), args.endpoint or None)
    config = BridgeConfig(
        endpoints=endpoints, base_url=args.base_url, selectors_override=override if override.is_file() else None
    )
    report = ChatGPTBridge(config, settings.browser_dir / "leases").doctor()
    print(report.render())
    return 0 if report.ok else 1


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

    def add(
        under: Any, name: str, helptext: str, fn: Command, description: str | None = None
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = under.add_parser(name, help=helptext, description=description or helptext)
        sub.set_defaults(fn=fn)
        return sub

    def group(name: str, helptext: str) -> Any:
        parent = commands.add_parser(name, help=helptext, description=helptext)
        return parent.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)

    serve = add(commands, "serve", "Run the MCP server (stdio by default, or streamable HTTP).", cmd_serve)
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="stdio (default) or http")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765)")
    serve.add_argument(
        "--allowed-host", action="append", metavar="HOST", help="another Host header to accept (repeatable)"
    )

    status = add(commands, "status", "Show the runs, or one run's tasks, blockers and next action.", cmd_status)
    status.add_argument("run", nargs="?", help="run id (omit to list runs)")

    add(
        group("ledger", "Inspect the ledger."),
        "verify",
        "Recompute the hash chain and check every row, artifact and checkpoint tag against it.",
        cmd_ledger_verify,
        "Recompute the event hash chain; check every row gates read against the event that vouched for it, "
        "every task status and run stage against the events, every artifact's sha256, and every run's "
        "checkpoint tags against the chain. Exits 1 and names each row, event or tag that differs when "
        "anything was edited outside planegate.",
    )

    worker = add(
        commands, "worker", "Run a job worker (executors, checks, reviews) without an MCP session.", cmd_worker
    )
    worker.add_argument("--exit-when-idle", action="store_true", help="stop once no job is queued or running")

    init = add(commands, "init", "Write a commented .planegate/policy.toml for a repository.", cmd_init)
    init.add_argument("repo", nargs="?", default=".", help="the repository (default: the current directory)")
    init.add_argument("--force", action="store_true", help="overwrite an existing policy file")

    back = add(
        commands, "rollback", "Reset a run's integration branch to a checkpoint (a human command).", cmd_rollback
    )
    back.add_argument("run", help="run id")
    back.add_argument("--to", required=True, metavar="cp-N", help="the checkpoint to return to, e.g. cp-2")

    approve = add(
        commands,
        "approve",
        "Approve a run as a human, typed at your terminal (records your OS user and the time).",
        cmd_approve,
    )
    approve.add_argument("run", help="run id")

    report = add(
        commands, "report", "Write a run's report (markdown, HTML, graph picture) for a pull request.", cmd_report
    )
    report.add_argument("run", help="run id")
    report.add_argument("--out", help="directory to write to (default: PLANEGATE_HOME/artifacts/<run>/report)")

    submit = add(
        group("review", "Answer manual reviews."),
        "submit",
        "Submit the answer to a manual review (validated like any reviewer's reply).",
        cmd_review_submit,
        "Submit the answer to a manual review; it must contain the JSON block the review prompt asks "
        "for (see the review_task prompt), with the review's nonce as review_id.",
    )
    submit.add_argument("review", help="review id (rv-…)")
    submit.add_argument("--file", required=True, help="the answer file")

    browser = group("browser", "The browser used for ChatGPT reviews.")
    launch = add(
        browser,
        "launch",
        "Start Chromium/Chrome with a persistent profile and remote debugging on 127.0.0.1.",
        cmd_browser_launch,
        "Start Chromium/Chrome (headful) with a profile under PLANEGATE_HOME/browser and DevTools on "
        "127.0.0.1, so you log in to ChatGPT once and planegate can attach for reviews.",
    )
    launch.add_argument("--port", type=int, default=9222, help="DevTools port (default 9222)")
    launch.add_argument("--executable", help="browser binary (default: PLANEGATE_BROWSER, chromium, chrome)")
    launch.add_argument("--headless", action="store_true", help="no window (only useful for testing)")
    doctor = add(
        browser,
        "doctor",
        "Check the browser: endpoint, version, login, challenge, banners, selector drift.",
        cmd_browser_doctor,
        "Attach to the browser and report: endpoint reachable, browser version, logged in or not, "
        "Cloudflare challenge, usage-cap banner, and each named selector matched or missing. Sends nothing.",
    )
    doctor.add_argument("--endpoint", action="append", help="DevTools URL to try (repeatable)")
    doctor.add_argument("--base-url", help="ChatGPT address (default https://chatgpt.com/)")

    demo = add(commands, "demo", "Run a whole change on a scratch repository and print what happened.", cmd_demo)
    demo.add_argument("--keep", action="store_true", help="keep the scratch repository and state afterwards")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from planegate.store import StoreBusy
    from planegate.tools.errors import PlanegateError

    try:
        return int(args.fn(args))
    except (PlanegateError, StoreBusy, OSError) as exc:
        print(f"planegate {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
