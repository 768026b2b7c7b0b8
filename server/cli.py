"""The ``planegate`` command line.

Each command is a small function taking the parsed arguments and returning an exit code;
``main`` builds the parser (every command carries help text, a test checks) and reports
planegate's own errors as one readable line instead of a traceback.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from planegate.tools.policy import ReviewSettings

Command = Callable[[argparse.Namespace], int]


def _env(actor: str | None = None):  # type: ignore[no-untyped-def]
    from planegate.tools.config import Settings, os_user
    from planegate.tools.env import Env

    return Env.open(Settings.from_env(actor=actor or f"user:{os_user()}"))


def cmd_serve(args: argparse.Namespace) -> int:
    # Starting imports the MCP SDK: hundreds of modules whose objects live as long as the process.
    # The cycle collector would walk them again and again while they load (a tenth of the time to
    # the first answer), so it is off until they are loaded; then they are frozen out of its way
    # (gc.freeze), which also spares every later full collection the walk.
    gc.disable()
    try:
        from .app import build_server

        server = build_server()
    finally:
        gc.freeze()
        gc.enable()
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
        print_status(env, args.run, include_abandoned=args.all)
    finally:
        env.close()
    return 0


def cmd_abandon(args: argparse.Namespace) -> int:
    from planegate.tools.execution.course import abandon_run

    env = _env()
    try:
        result = abandon_run(env, args.run, args.reason)
    finally:
        env.close()
    print(f"run {result.run} abandoned")
    for task in result.cancelled_tasks:
        print(f"  task {task} cancelled")
    for job in result.cancelled_jobs:
        print(f"  job {job} cancelled")
    for path in result.removed_worktrees:
        print(f"  worktree removed (no uncommitted work; branch kept): {path}")
    for path in result.kept_worktrees:
        print(f"  worktree kept (uncommitted work; `planegate gc` parks it after retain_days): {path}")
    print("branches, evidence and the ledger are kept; `planegate status --all` still lists the run")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from planegate.tools.execution.gc import collect_garbage

    env = _env()
    try:
        report = collect_garbage(env, dry_run=args.dry_run)
    finally:
        env.close()
    lines = report.lines()
    for line in lines:
        print(line)
    if not lines:
        print("nothing to clean")
    if args.dry_run:
        print("dry run: nothing was changed")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from planegate.tools.report.publish import publish_run

    env = _env()
    try:
        result = publish_run(env, args.run)
    finally:
        env.close()
    state = "pushed" if result.pushed else "already on the remote"
    print(f"{result.branch} at {result.sha[:12]}: {state}")
    if result.pull_request:
        print(f"draft pull request: {result.pull_request}")
    else:
        print("open the draft pull request with:")
        for command in result.commands:
            print(f"  {command}")
    if result.truncated:
        print(f"the report was cut to fit a pull-request body ({result.body}); the full report stays an artifact")
    return 0


def cmd_policy_adopt(args: argparse.Namespace) -> int:
    from planegate.tools.config import os_user
    from planegate.tools.gates.adopt import adopt_policy, adopt_signed, describe_adoption, pending_adoption

    env = _env()
    try:
        pending = pending_adoption(env, args.run, args.at)
        key = None
        if pending.mode == "signed":
            key = _signing_key(args.key, Path(pending.run_row["repo"]))
        elif args.key:
            print(
                f"planegate policy adopt: run {args.run} approves interactively; --key is for signed mode",
                file=sys.stderr,
            )
            return 2
        print(describe_adoption(pending))
        if key is not None:
            print("\nYour key signs this statement:")
            print("".join(f"    {line}\n" for line in pending.statement.text().splitlines()), end="")
            print(f"signing key: {key.describe()}")
        print()
        try:
            if not confirm_on_terminal(f"Type the run id to adopt this policy for it ({args.run}): ", args.run):
                print("not adopted (the answer did not match the run id)", file=sys.stderr)
                return 1
        except NoTerminal:
            return _human_only("policy adopt")
        if key is None:
            row = adopt_policy(env, pending, os_user(), "cli")
        else:
            row = adopt_signed(env, pending, key, "cli", show_prompts=True)
    finally:
        env.close()
    how = f"signed by {row['principal']}" if row["mode"] == "signed" else f"by {row['by']}"
    print(f"policy adopted for run {args.run} {how}: sha256:{row['policy_sha256'][:16]}")
    print(f"the agent's next get_status({args.run!r}) evaluates the gates under it")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    import json

    from .console import print_stats

    env = _env()
    try:
        if not args.json:
            print_stats(env, args.run)
            return 0
        from planegate.tools.report.stats import all_run_stats, run_stats

        if args.run:
            data: Any = run_stats(env.store, args.run).as_json()
        else:
            data = {"runs": [s.as_json() for s in all_run_stats(env.store)]}
    finally:
        env.close()
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    from planegate.store import LedgerUnavailable, verify_ledger
    from planegate.tools.gates.accept import checkpoint_anchors
    from planegate.tools.gates.approval import verify_signed_approvals

    try:
        env = _env()
        try:
            anchors, notes = checkpoint_anchors(env)
            report = verify_ledger(env.store, anchors=anchors)
            signed_ok, approval_problems = verify_signed_approvals(env)
            approval_problems += _policy_problems(env)
        finally:
            env.close()
    except LedgerUnavailable as exc:
        print(f"ledger BROKEN: {exc}", file=sys.stderr)
        return 1
    path = env.settings.ledger_path
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if report.ok and not approval_problems:
        print(
            f"ledger ok: {report.events_verified} events verified, {report.rows_verified} rows match their events, "
            f"{report.anchors_verified} checkpoint tag(s) match the chain, "
            f"{report.artifacts_verified} artifacts re-hashed, {signed_ok} signed approval(s) re-verified ({path})"
        )
        return 0
    print(f"ledger BROKEN ({path}):", file=sys.stderr)
    if report.chain_break:
        b = report.chain_break
        print(f"  first broken event: {b.event_id} ({b.kind}): {b.what}", file=sys.stderr)
        print(f"  events before it verified: {report.events_verified}", file=sys.stderr)
        print("  (rows are not checked against a broken chain)", file=sys.stderr)
    for problem in [*report.problems, *approval_problems]:
        print(f"  {problem}", file=sys.stderr)
    print(
        "  planegate trusts no gate on rows it cannot vouch for: restore the ledger from a backup "
        "(or undo the edit) before accepting more work",
        file=sys.stderr,
    )
    return 1


def _policy_problems(env: Any) -> list[str]:
    """Runs whose policy no human adopted (see ``gates.adopt``)."""
    from planegate.tools.errors import PlanegateError
    from planegate.tools.gates.adopt import adoption_problems

    problems: list[str] = []
    for row in env.store.rows("SELECT * FROM runs ORDER BY created_at"):
        try:
            problems += adoption_problems(env, row)
        except PlanegateError as exc:
            problems.append(f"runs {row['id']}: its policy adoptions cannot be re-verified: {exc}")
    return problems


def cmd_ledger_backup(args: argparse.Namespace) -> int:
    from planegate.store import backup_ledger
    from planegate.tools.config import Settings

    ledger = Settings.from_env().ledger_path
    result = backup_ledger(ledger, Path(args.path), force=args.force)
    print(
        f"backed up {ledger} to {result.target}: {result.events} events (head event {result.head_event}, "
        f"{result.head_hash[:16]}), {result.bytes / 1_048_576:.1f} MB, integrity ok, in {result.seconds:.1f} s"
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import anyio

    from planegate.tools.execution.jobs import Worker, workers_note
    from planegate.tools.execution.reconcile import reconcile

    env = _env(actor="planegate:worker")
    try:
        for line in reconcile(env).lines():
            print(f"reconcile: {line}", flush=True)
        worker = Worker(env)
        print(f"planegate worker {worker.name}: waiting for jobs in {env.settings.ledger_path}", flush=True)
        note = workers_note(env.store)
        if note:
            print(f"planegate worker {worker.name}: {note}", flush=True)
        why = anyio.run(lambda: worker.run(stop_when_idle=args.exit_when_idle, stop_when_drained=True))
        print(f"planegate worker {worker.name}: stopped ({why})", flush=True)
    finally:
        env.close()
    return 0


def _approval_setup(repo: Path, signers_path: str, force: bool) -> tuple[str, list[str]]:
    """Signed mode with an allowed-signers entry when git has an SSH signing key; else interactive."""
    from planegate.tools.config import os_user
    from planegate.tools.errors import PlanegateError
    from planegate.tools.gates import signing

    why_not = "git has no SSH signing key (gpg.format = ssh and user.signingkey)"
    try:
        key = signing.key_from_git(repo)
        if key is not None:
            public = " ".join(signing.public_key(key).split()[:2])
            print_fp = signing.fingerprint(public)
    except PlanegateError as exc:
        key, why_not = None, f"git's signing key is not usable: {exc}"
    if key is None:
        return "interactive", [
            f"approval: interactive ({why_not}); see [approval] in the policy for signed approval",
        ]
    email = signing.git_config(repo, "user.email") or ""
    principal = email if email and not any(c.isspace() or c in '",*' for c in email) else os_user()
    target = repo / signers_path
    existing = target.read_text(encoding="utf-8") if target.is_file() else ""
    entry = f'{principal} namespaces="git,planegate" {public}'
    if public.split()[1] in existing and not force:
        note = f"{target} already lists this key"
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        kept = "" if force else existing
        target.write_text(kept + ("" if not kept or kept.endswith("\n") else "\n") + entry + "\n", encoding="utf-8")
        note = f"wrote {target}: {principal} may approve with {print_fp}"
    return "signed", [
        f"approval: signed with git's SSH signing key {key.describe()} ({print_fp})",
        note,
    ]


def _set_workers(mode: str, reason: str | None) -> tuple[bool, str | None]:
    from planegate.tools.config import os_user
    from planegate.tools.execution.jobs import set_worker_mode, workers_note

    env = _env(actor=f"user:{os_user()}")
    try:
        changed, _ = set_worker_mode(env, mode, reason)
        return changed, workers_note(env.store)
    finally:
        env.close()


def cmd_worker_pause(args: argparse.Namespace) -> int:
    changed, note = _set_workers("paused", args.reason)
    print(("workers paused" if changed else "workers were already paused") + f": {note}")
    return 0


def cmd_worker_resume(args: argparse.Namespace) -> int:
    changed, _ = _set_workers("running", None)
    print("workers resumed: they claim jobs again" if changed else "workers were already running")
    return 0


def cmd_worker_drain(args: argparse.Namespace) -> int:
    import time

    from planegate.tools.execution.jobs import job_counts

    changed, note = _set_workers("draining", args.reason)
    print(("workers draining" if changed else "workers were already draining") + f": {note}", flush=True)
    if args.wait <= 0:
        return 0
    env = _env()
    try:
        deadline = time.monotonic() + args.wait
        while (running := job_counts(env.store)["running"]) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        env.close()
    if running:
        print(f"still {running} job(s) running after {args.wait:g} s; run it again to keep waiting", file=sys.stderr)
        return 1
    print("drained: no job is running; `planegate worker` processes have stopped")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from planegate.tools.execution.projects import detect_project
    from planegate.tools.policy import POLICY_PATH, ApprovalSettings, command_text, parse_policy, policy_template

    repo = Path(args.repo).resolve()
    if not repo.is_dir():
        print(f"planegate init: {repo} is not a directory", file=sys.stderr)
        return 2
    target = repo / POLICY_PATH
    if target.exists() and not args.force:
        print(f"planegate init: {target} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    project = detect_project(repo)
    mode, notes = _approval_setup(repo, ApprovalSettings().allowed_signers, args.force)
    text = policy_template(
        None,
        "signed" if mode == "signed" else "interactive",
        checks=project.checks,
        worktree=project.worktree(),
        notes=project.notes,
    )
    parse_policy(text, str(target))  # the template must always be a valid policy
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    for note in project.notes:
        print(note)
    tests = project.checks.get("test")
    print(f"test check: {command_text(tests)}" if tests else "no test command detected: set [checks] test = [...]")
    if project.setup:
        print(f"worktree setup: {command_text(project.setup)}")
    for note in notes:
        print(note)
    print("commit .planegate/, then register planegate with your agent:")
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


def _signing_key(given: str | None, repo: Path):  # type: ignore[no-untyped-def]
    from planegate.tools.errors import InvalidInput
    from planegate.tools.gates import signing

    if given:
        return signing.key_from_spec(given, "--key", signing.git_config(repo, "gpg.ssh.program"))
    key = signing.key_from_git(repo)
    if key is None:
        raise InvalidInput(
            "this run needs a signed approval and git has no SSH signing key here; pass --key with your key's path, "
            "or configure git: `git config --global gpg.format ssh` and "
            "`git config --global user.signingkey ~/.ssh/id_ed25519.pub`"
        )
    return key


def cmd_approve(args: argparse.Namespace) -> int:
    from planegate.tools.config import os_user
    from planegate.tools.gates import signing
    from planegate.tools.gates.approval import tag_name
    from planegate.tools.gates.approval_view import describe
    from planegate.tools.gates.release import approve, approve_signed, pending_approval
    from planegate.tools.report.report import write_report

    env = _env()
    try:
        pending = pending_approval(env, args.run)
        run_row = pending.run_row
        key = None
        if pending.mode == "signed":
            key = _signing_key(args.key, Path(run_row["repo"]))
        elif args.key:
            print(
                f"planegate approve: run {args.run} uses interactive approval (its policy at base); "
                "--key is for signed mode. Run it without --key.",
                file=sys.stderr,
            )
            return 2
        files = write_report(env, args.run, run_gates=pending.gates)
        print(describe(env, run_row, pending.head, pending.gates, pending.mode, str(files.markdown)))
        if key is not None:
            print(f"\nYour key signs this statement (and git signs the same text as the tag {tag_name(args.run)}):")
            print("".join(f"    {line}\n" for line in pending.statement.text().splitlines()), end="")
            print(f"signing key: {key.describe()}")
            if signing.passphrase_free(key):
                print(
                    "warning: this key file has no passphrase; any process that can read it (a coding agent "
                    "included) can approve in your name. Use a passphrase or a FIDO2 -sk key."
                )
            elif key.path is None or signing.agent_reachable():
                print(
                    "note: a key loaded in ssh-agent signs for any process that reaches SSH_AUTH_SOCK, a coding "
                    "agent's shell included; `ssh-add -c` makes each use ask you."
                )
        print()
        try:
            if not confirm_on_terminal(f"Type the run id to approve it ({args.run}): ", args.run):
                print("not approved (the answer did not match the run id)", file=sys.stderr)
                return 1
        except NoTerminal:
            return _human_only("approve")
        if key is None:
            result = approve(env, args.run, os_user(), "cli", expected_head=pending.head)
        else:
            print("signing: ssh-keygen may ask for your passphrase or a touch twice (the statement, then the tag)")
            result = approve_signed(env, args.run, key, "cli", pending=pending, show_prompts=True)
    finally:
        env.close()
    if result.mode == "signed":
        signers = Path(run_row["repo"]) / env.policy(run_row).approval.allowed_signers
        print(f"approved: signed by {result.principal} at integration head {result.head_sha[:12]}")
        print(f"signed tag {result.tag}; anyone can check it (CI: with the allowed signers of your protected branch):")
        print(f"  git -C {run_row['repo']} -c gpg.ssh.allowedSignersFile={signers} tag -v {result.tag}")
    else:
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


def _review_policy(repo: str | None) -> tuple[ReviewSettings, Path | None]:
    """The ``[review]`` settings of ``repo``'s policy (else the nearest one above the current
    directory), and the file they came from (``None``: defaults). Raises ``PolicyError``."""
    from planegate.tools.policy import POLICY_PATH, ReviewSettings, parse_policy

    start = Path(repo).expanduser().resolve() if repo else Path.cwd().resolve()
    for folder in [start] if repo else [start, *start.parents]:
        path = folder / POLICY_PATH
        if path.is_file():
            return parse_policy(path.read_text(encoding="utf-8"), str(path)).review, path
    return ReviewSettings(), None


def cmd_browser_doctor(args: argparse.Namespace) -> int:
    from planegate.bridge import BridgeConfig, ChatGPTBridge, candidate_endpoints
    from planegate.tools.config import Settings
    from planegate.tools.errors import PolicyError

    settings = Settings.from_env()
    try:
        review, source = _review_policy(args.repo)
    except PolicyError as exc:
        print(f"planegate browser doctor: {exc}", file=sys.stderr)
        return 2
    override = settings.browser_dir / "selectors.json"
    # As a review would: PLANEGATE_CDP_URL, else --endpoint, else the policy's [review] cdp_urls.
    endpoints = candidate_endpoints(os.environ.get("PLANEGATE_CDP_URL"), args.endpoint or review.cdp_urls or None)
    config = BridgeConfig(
        endpoints=endpoints,
        base_url=args.base_url or review.base_url,
        project=review.project,
        model_hint=review.model_hint,
        require_model=review.require_model,
        selectors_override=override if override.is_file() else None,
    )
    where = f"[review] of {source}" if source else "no .planegate/policy.toml found; defaults"
    print(f"{'info':<5} {'policy':<28} {where}")
    report = ChatGPTBridge(config, settings.browser_dir / "leases").doctor()
    print(report.render())
    return 0 if report.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(keep=args.keep)


def cmd_hook_stop(args: argparse.Namespace) -> int:
    import io

    from .hook import run_stop_hook

    # bytes in, so a payload in UTF-8 reads the same under any locale
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    return run_stop_hook(stdin, sys.stdout, sys.stderr)


def cmd_hook_switch(args: argparse.Namespace) -> int:
    from planegate.tools.config import os_user

    from .hook import set_stop_hook

    enabled = args.hook_command == "on"
    env = _env()
    try:
        run_row = env.run_row(args.run)
        if not enabled:
            print(f"run {args.run}: {run_row['goal']} ({run_row['stage']})")
            try:
                question = f"Type the run id to let agents end their turns with it unfinished ({args.run}): "
                if not confirm_on_terminal(question, args.run):
                    print("the stop hook stays on (the answer did not match the run id)", file=sys.stderr)
                    return 1
            except NoTerminal:
                return _human_only("hook off")
        was_on = set_stop_hook(env, args.run, enabled, os_user())
    finally:
        env.close()
    state = "on" if enabled else "off"
    print(f"run {args.run}: the stop hook is {state}" + (" (it already was)" if was_on == enabled else ""))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import serve

    env = _env("user:dashboard")
    try:
        if args.run:
            env.run_row(args.run)  # an unknown run is an error now, not a 404 in the browser
        serve(env, args.run, args.port)
    finally:
        env.close()
    return 0


SERVE_HELP = "Run the MCP server (stdio by default, or streamable HTTP)."


def _serve_arguments(serve: argparse.ArgumentParser) -> argparse.ArgumentParser:
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="stdio (default) or http")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765)")
    serve.add_argument(
        "--allowed-host", action="append", metavar="HOST", help="another Host header to accept (repeatable)"
    )
    serve.set_defaults(fn=cmd_serve, command="serve")
    return serve


def serve_parser() -> argparse.ArgumentParser:
    """``planegate serve`` alone, as ``build_parser`` defines it: an MCP client starts the server
    for every session, and the whole command line takes longer to build than this one command."""
    return _serve_arguments(argparse.ArgumentParser(prog="planegate serve", description=SERVE_HELP))


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

    _serve_arguments(add(commands, "serve", SERVE_HELP, cmd_serve))

    status = add(commands, "status", "Show the runs, or one run's tasks, blockers and next action.", cmd_status)
    status.add_argument("run", nargs="?", help="run id (omit to list runs)")
    status.add_argument("--all", action="store_true", help="list abandoned runs too")

    abandon = add(
        commands,
        "abandon",
        "End a run that will not be accepted: its tasks and jobs are cancelled, branches and ledger kept.",
        cmd_abandon,
        "End a run that will not be accepted: open tasks are cancelled with the reason, their jobs stopped, "
        "worktrees without uncommitted work removed; branches, evidence and the ledger are kept. The run is "
        "hidden from `planegate status` (shown with --all).",
    )
    abandon.add_argument("run", help="run id")
    abandon.add_argument("--reason", required=True, help="why (recorded)")

    gc = add(
        commands,
        "gc",
        "Remove merged worktrees and branches, park and remove stale ones, prune git's worktree entries.",
        cmd_gc,
        "Clean up after runs. Rules: an accepted task's worktree is removed, and its branch once the run is "
        "accepted and the branch is merged; a worktree with uncommitted changes is first committed on its "
        "branch as 'planegate: parked'; cancelled tasks' and abandoned runs' worktrees are kept retain_days "
        "(policy, default 7) then removed, their branches kept; git's entries for worktrees deleted by hand "
        "are pruned. Tags and integration branches are never removed.",
    )
    gc.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")

    publish = add(
        commands,
        "publish",
        "Push an accepted run's integration branch and open a draft pull request (gh), or print the commands.",
        cmd_publish,
    )
    publish.add_argument("run", help="run id")

    adopt = add(
        group("policy", "A run's policy, changed only by a human."),
        "adopt",
        "Adopt the policy committed at a ref for a run (a human command, typed at your terminal).",
        cmd_policy_adopt,
        "Show what changes between a run's policy and the one committed at --at (default: the repository's "
        "HEAD), ask you to type the run id at your terminal (/dev/tty), and record who adopted it. When the run "
        "approves with signatures, the adoption is signed with your SSH key (git's user.signingkey, or --key) "
        "and checked against the allowed signers at the run's base. No agent tool can do this.",
    )
    adopt.add_argument("run", help="run id")
    adopt.add_argument("--at", metavar="REF", help="commit whose .planegate/policy.toml to adopt (default: HEAD)")
    adopt.add_argument("--key", metavar="PATH", help="SSH key to sign with (signed mode; default: git's)")

    stats = add(
        commands,
        "stats",
        "Run metrics from the ledger: time per phase per task, retries, gate refusals, review latency.",
        cmd_stats,
        "Run metrics computed from the ledger's events: per task the time spent waiting for dispatch, in the "
        "executor, in checks, in red→green base runs, waiting for review and waiting for acceptance; retries; gate "
        "refusals by gate; review latency. Without RUN: one line per run.",
    )
    stats.add_argument("run", nargs="?", help="run id (omit for every run)")
    stats.add_argument("--json", action="store_true", help="print JSON instead of tables")

    ledger = group("ledger", "Inspect and back up the ledger.")
    backup = add(
        ledger,
        "backup",
        "Copy the ledger to PATH with SQLite's online backup (safe while servers and workers run).",
        cmd_ledger_backup,
        "Copy the ledger to PATH with SQLite's online backup API: one consistent state, read without stopping "
        "servers or workers, checked (integrity_check) and renamed into place only when whole. Restore by putting "
        "the copy in place of ledger.db while no planegate process runs (README: Operations).",
    )
    backup.add_argument("path", help="the backup file to write (it must not exist unless --force)")
    backup.add_argument("--force", action="store_true", help="replace PATH if it exists")
    add(
        ledger,
        "verify",
        "Recompute the hash chain and check every row, artifact and checkpoint tag against it.",
        cmd_ledger_verify,
        "Recompute the event hash chain; check every row gates read against the event that vouched for it, "
        "every task status and run stage against the events, every artifact's sha256, and every run's "
        "checkpoint tags against the chain. Exits 1 and names each row, event or tag that differs when "
        "anything was edited outside planegate.",
    )

    worker = add(
        commands,
        "worker",
        "Run a job worker (executors, checks, reviews) without an MCP session; or pause, resume, drain all workers.",
        cmd_worker,
        "Without a subcommand: run a job worker (executors, checks, reviews) without an MCP session; it stops "
        "once workers are drained. The subcommands apply to every worker on this ledger, serve processes included.",
    )
    worker.add_argument(
        "--exit-when-idle", action="store_true", help="stop once no job is queued or running (or workers are paused)"
    )
    controls = worker.add_subparsers(dest="worker_command", metavar="COMMAND", required=False)
    pause = add(
        controls,
        "pause",
        "Stop every worker from claiming jobs; running jobs finish.",
        cmd_worker_pause,
        "Stop every worker on this ledger from claiming jobs until `planegate worker resume`; jobs already "
        "running finish. Recorded in the ledger and shown by get_status.",
    )
    pause.add_argument("--reason", help="why (recorded and shown)")
    add(controls, "resume", "Let every worker claim jobs again.", cmd_worker_resume)
    drain = add(
        controls,
        "drain",
        "Finish running jobs, claim no new ones; `planegate worker` processes stop once idle.",
        cmd_worker_drain,
        "Let running jobs finish and claim no new ones: every `planegate worker` stops once it runs nothing, serve "
        "processes keep serving without claiming. `planegate worker resume` undoes it.",
    )
    drain.add_argument("--reason", help="why (recorded and shown)")
    drain.add_argument(
        "--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for running jobs to finish"
    )

    init = add(
        commands,
        "init",
        "Write a commented .planegate/policy.toml (signed approval when git has an SSH signing key).",
        cmd_init,
        "Write a commented .planegate/policy.toml for a repository, detecting its test command. When git has an "
        "SSH signing key (gpg.format = ssh, user.signingkey) the policy asks for signed approval and "
        ".planegate/allowed_signers lists that key; otherwise approval is interactive.",
    )
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
        "Approve a run as a human at your terminal: shows what you approve; in signed mode signs it with your SSH key.",
        cmd_approve,
        "Approve a run as a human. Shows what is approved (diffstat, tasks, requirement amendments, cancelled "
        "tasks, reviews and open findings, risks, the report) and asks you to type the run id at your terminal "
        '(/dev/tty). In signed mode (the run\'s policy: [approval] mode = "signed") it signs a statement with '
        "your SSH signing key (git's user.signingkey, or --key) and tags the integration head "
        "planegate/<run>/approved with an SSH-signed tag.",
    )
    approve.add_argument("run", help="run id")
    approve.add_argument(
        "--key",
        metavar="PATH",
        help="SSH key to sign with (a private key, or a public key whose private half is in ssh-agent); "
        "default: git config user.signingkey",
    )

    report = add(
        commands, "report", "Write a run's report (markdown, HTML, graph picture) for a pull request.", cmd_report
    )
    report.add_argument("run", help="run id")
    report.add_argument("--out", help="directory to write to (default: PLANEGATE_HOME/artifacts/<run>/report)")

    dashboard = add(
        commands,
        "dashboard",
        "Serve a read-only, live view of a run on 127.0.0.1 (prints a URL with a token).",
        cmd_dashboard,
        "Serve the run view (task graph coloured by status, gates, evidence, reviews, approval, risks, next "
        "action) on 127.0.0.1 at a random port, read-only, following the ledger as it changes. Prints one URL "
        "with a random token; requests without it, or with another Host header, are refused.",
    )
    dashboard.add_argument("run", nargs="?", help="run id (default: the newest run)")
    dashboard.add_argument("--port", type=int, default=0, help="port (default: a free one)")

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
    doctor.add_argument("--endpoint", action="append", help="DevTools URL or profile folder to try (repeatable)")
    doctor.add_argument("--base-url", help="ChatGPT address (default: the policy's base_url, else chatgpt.com)")
    doctor.add_argument(
        "--repo",
        help="repository whose .planegate/policy.toml gives [review] base_url, cdp_urls, project and model_hint "
        "(default: the current directory, or the nearest parent with one)",
    )

    hook = group("hook", "The agent clients' Stop hook (installed by the plugin).")
    add(
        hook,
        "stop",
        "Answer a Stop hook: block the agent's turn end while its run has unfinished work.",
        cmd_hook_stop,
        "Read a Claude Code or Codex Stop hook payload on stdin; print a block decision naming what remains "
        "and the next call while the run in the payload's cwd has work left for the agent. Always exits 0.",
    )
    hook_off = add(
        hook,
        "off",
        "Stop blocking turn ends for one run (a human command, typed at your terminal).",
        cmd_hook_switch,
    )
    hook_off.add_argument("run", help="run id")
    hook_on = add(hook, "on", "Block turn ends for one run again (the default).", cmd_hook_switch)
    hook_on.add_argument("run", help="run id")

    demo = add(commands, "demo", "Run a whole change on a scratch repository and print what happened.", cmd_demo)
    demo.add_argument("--keep", action="store_true", help="keep the scratch repository and state afterwards")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser, given = (serve_parser(), words[1:]) if words[:1] == ["serve"] else (build_parser(), words)
    args = parser.parse_args(given)
    if args.fn is cmd_hook_stop:  # runs at every turn end of an agent, never raises
        return cmd_hook_stop(args)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _readable(exc):
            raise
        sub = getattr(args, f"{args.command}_command", None)
        print(f"planegate {args.command}{' ' + sub if sub else ''}: {exc}", file=sys.stderr)
        return 1


def _readable(exc: Exception) -> bool:
    """planegate's own errors (and the ledger's and the OS's), reported as one line. Imported only
    when one was raised, so commands such as ``serve`` do not pay for the ledger's modules before
    they need them."""
    from planegate.store import StoreError
    from planegate.tools.errors import PlanegateError

    return isinstance(exc, PlanegateError | StoreError | OSError)


if __name__ == "__main__":
    sys.exit(main())
