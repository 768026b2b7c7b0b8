"""Reviews: the packet a second model reviews, the durable review job, and the outcome.

``request_review`` refuses to send unverified work: the task's required checks must pass as
``direct`` evidence on its head, and the diff must not be empty. It writes the packet (envelope,
the requirements served, the diff ``base..head``, the evidence summary, and a fresh nonce) as
artifacts and as one prompt, binds the review to ``(task, head sha, diff sha256)``, moves the task
to ``in_review`` and queues a ``review`` job (or, for a manual reviewer, waits for
``planegate review submit``). A release review (``release=True``) does the same for
``base..integration`` once every task is accepted or cancelled.

Test and harness changes get their own part of the packet (``tests.md``): the test files the
change adds, changes and deletes, the harness files it touches, what the task declared
(``removes_tests``, ``rewrites_tests``, ``changes_harness`` with their reasons), and the server's
red→green and test-integrity verdicts; the prompt asks the reviewer about them explicitly,
because a weakened test or a harness that turns failures into passes makes every other piece of
evidence worthless.

The job asks the reviewer, parses the reply (``review_parse``), sends one repair prompt when the
reply is unusable, and otherwise records the review ``incomplete``. A completed review moves the
task to ``approved`` or ``changes_requested`` — only if the task is still on the reviewed head.

A ChatGPT reply can take an hour (Pro, Deep Research). When the bridge's deadline passes after
the prompt was sent, the review is ``pending``, not failed: its conversation URL is kept, its
``progress`` shows the last liveness seen ("ChatGPT is thinking (pro thinking), 41 min in"), and
it is re-read ``PLANEGATE_REVIEW_REREAD_S`` (120 s) later, by any worker (``queue_due_rereads``,
called when a worker is idle) or by ``get_review`` (``pick_up_pending``); a re-read never sends
anything. A review pending for longer than its window (the policy's ``timeout_s``, at least an
hour) fails. A bridge failure stores the screenshot and DOM summary the bridge saved as
artifacts of the review.
"""

from __future__ import annotations

import contextvars
import json
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planegate.store import Writer, now_iso

from ..control.artifacts import store_artifact
from ..control.graph import declaration_lines, task_declarations
from ..control.runs import current_requirements, move_task, set_stage
from ..control.tasks import settle_status
from ..env import Env
from ..errors import Disposition, ExecutionError, InvalidInput, NotFound, ReviewError, WrongState
from ..execution.envelope import render_envelope
from ..execution.jobs import JobContext, JobLost, enqueue, job_disposition
from ..gates.early import refusal_lines, run_next_step, task_next_step, unmet_diff_gates
from ..gates.facts import evaluate_task, executor_identity, harness_changes, harness_patterns
from ..gates.identity import compare
from ..gates.release import evaluate_run
from ..models import ACTIVE_STATUSES, FindingLine, ReviewRequestResult, ReviewResult
from .review_parse import BEGIN, END, ReplyProblem, ReviewReply, parse_reply
from .reviewers import ChatGPTReviewer, make_reviewer, reviewer_identity
from .testsection import TESTS_HEADING, TESTS_QUESTION, tests_section

if TYPE_CHECKING:
    from planegate.bridge import BridgeReply, Progress, ReplyPending

SCHEMA_EXAMPLE = (
    '{"review_id": "%s", "verdict": "approve | request_changes | reject", "summary": "…", '
    '"findings": [{"severity": "critical|high|medium|low|info", "file": "path", "line": 0, "title": "…", '
    '"detail": "…", "suggestion": "…"}], "missing_tests": ["…"], '
    '"requirements": [{"id": "R1", "status": "met|partial|unmet", "note": "…"}]}'
)
PACKET_FILES = ("envelope.md", "requirements.md", "evidence.md", "tests.md", "diff.patch")
UNDER_WAY = ("queued", "running", "waiting", "pending")
MIN_PENDING_WINDOW_S = 3600.0
PROGRESS_EVERY_S = 30.0  # a review's progress is written at least this often while it is waited for


def _instructions(subject: str, nonce: str, attached: bool) -> str:
    where = (
        "The review packet is attached as files: envelope.md (the task as it was given), requirements.md "
        "(the frozen requirements it must meet, with acceptance criteria), evidence.md (checks the server ran on "
        "this commit), tests.md (the test and harness changes, what the task declared about them, and the "
        "server's red→green and test-integrity verdicts) and diff.patch (the change)."
        if attached
        else "The review packet follows: the task as it was given, the frozen requirements it must meet with their "
        "acceptance criteria, the checks the server ran on this commit, the test and harness changes, and the "
        "change as a diff."
    )
    return (
        f"You are the second-model reviewer of {subject}. Review only this change, against its requirements and "
        f"acceptance criteria: correctness, missing or weak tests, security, and scope. {where}\n\n"
        f"{TESTS_QUESTION}\n\n"
        f"Answer with exactly one JSON block between the lines {BEGIN} and {END}, in this shape "
        f'(review_id must be exactly "{nonce}"):\n\n{BEGIN}\n```json\n{SCHEMA_EXAMPLE % nonce}\n```\n{END}\n\n'
        "verdict: approve only when every requirement is met and nothing serious is wrong; request_changes for "
        "fixable problems; reject when the approach is wrong. A finding of severity high or critical blocks "
        "acceptance. You may write your reasoning before the block.\n"
    )


def _requirements_text(env: Env, run: str, served: list[str] | None) -> str:
    requirements = current_requirements(env, run)
    lines = []
    for rid, req in sorted(requirements.items()):
        if served is not None and rid not in served:
            continue
        lines.append(f"- {rid}: {req['statement']}")
        lines += [f"  - {c}" for c in req["criteria"]]
    return "\n".join(lines) + "\n"


def _evidence_text(env: Env, run: str, task: str | None, head: str) -> str:
    rows = env.store.rows(
        "SELECT id, kind, label, exit_code, summary FROM evidence WHERE run_id = ? AND task_id IS ? AND head_sha = ?"
        " ORDER BY id",
        (run, task, head),
    )
    if not rows:
        return "(none)\n"
    return "".join(
        f"- [{r['label']}] {r['kind']}: exit {r['exit_code']} — {r['summary'].splitlines()[0]}\n" for r in rows
    )


def _write_packet(folder: Path, parts: dict[str, str]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in parts.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        paths[name] = path
    return paths


REQUIREMENTS_HEADING = "## Requirements to meet"


def _demote(markdown: str) -> str:
    """Headings one level down, so an embedded document nests under the packet's own sections."""
    return "\n".join("#" + line if line.startswith("#") else line for line in markdown.splitlines()) + "\n"


def _full_prompt(instructions: str, parts: dict[str, str]) -> str:
    return (
        f"{instructions}\n## The task as it was given\n\n{_demote(parts['envelope.md'])}\n"
        f"{REQUIREMENTS_HEADING}\n\n{parts['requirements.md']}\n"
        f"## Evidence from the server's checks\n\n{parts['evidence.md']}\n"
        f"{TESTS_HEADING}\n\n{parts['tests.md']}\n"
        f"## The change\n\n```diff\n{parts['diff.patch']}```\n"
    )


def request_review(env: Env, run: str, task: str | None = None, release: bool = False) -> ReviewRequestResult:
    """Build the review packet and queue the review; returns at once with the review id.

    Raises:
        InvalidInput: neither a task nor release given; the reviewer is the task's executor.
        WrongState: the task is not dispatched; required checks lack passing direct evidence on
            the head; the diff is empty; for a release, tasks are still open.
    """
    run_row = env.run_row(run)
    policy = env.policy(run_row)
    repo = env.repo(run_row["repo"])
    reviewer = reviewer_identity(policy, Path(run_row["repo"]))
    identity = reviewer.name
    recorded: dict[str, Any] = {"reviewer": reviewer.to_json()}
    if release:
        task = None
        facts_run, run_gates = evaluate_run(env, run)
        for gate in run_gates:
            if gate.gate in ("tasks", "checks") and not gate.ok:
                raise WrongState(f"not ready for the release review: {gate.reason} Next: {gate.next_step}")
        base, head = run_row["base_sha"], facts_run.integration_head
        assert head is not None
        subject = f"the whole change of run {run!r} ({run_row['goal']})"
        envelope = f"# Release of run {run}\n\nGoal: {run_row['goal']}\n"
        served = None
        declarations = {
            f"task {t['id']}": declaration_lines(task_declarations(t))
            for t in env.store.rows("SELECT * FROM tasks WHERE run_id = ? AND status = 'accepted' ORDER BY seq", (run,))
        }
        harness = None
    elif task is None:
        raise InvalidInput("give the task to review, or release=True for the whole run")
    else:
        row = settle_status(env, run, task)
        if row["status"] not in ACTIVE_STATUSES:
            raise WrongState(f"task {task!r} is {row['status']}; only a dispatched task can be reviewed")
        executor = executor_identity(row, policy, run_row["repo"])
        check = compare(reviewer, executor)
        if check.same:
            raise InvalidInput(f"{check.reason(reviewer, executor)}. Next: {check.next_step()}")
        recorded |= {"executor": executor.to_json(), **check.to_json()}
        facts, gates = evaluate_task(env, run_row, row, live=False)
        checks = next(g for g in gates if g.gate == "checks")
        if not checks.ok:
            raise WrongState(f"not sending unverified work to a reviewer: {checks.reason} Next: {checks.next_step}")
        unmet = unmet_diff_gates(gates)
        if unmet:
            # No review is spent on a change that cannot be accepted whatever the reviewer says.
            raise WrongState(
                f"not sending task {task!r} to a reviewer: {len(unmet)} gate(s) a review cannot fix are unmet on "
                f"head {str(facts.head_sha)[:12]}: {refusal_lines(unmet)}"
            )
        base, head = row["base_sha"], facts.head_sha
        assert head is not None
        subject = f"task {task!r} of run {run!r}"
        envelope = render_envelope(env, run, task)
        served = json.loads(row["requirements"])
        declarations = {f"task {task}": declaration_lines(task_declarations(row))}
        harness = facts.harness
    diff = repo.diff(base, head)
    if not diff.files:
        raise WrongState(f"the change {base[:12]}..{head[:12]} is empty; there is nothing to review")
    existing = env.store.one(
        "SELECT id FROM reviews WHERE run_id = ? AND task_id IS ? AND head_sha = ? AND diff_sha256 = ?"
        " AND status IN ('queued', 'running', 'waiting', 'pending')",
        (run, task, head, diff.sha256),
    )
    if existing:
        return review_request_result(env, existing["id"], note="a review of this commit is already under way; ")
    review_id = f"rv-{secrets.token_hex(5)}"
    nonce = secrets.token_hex(12)
    parts = {
        "envelope.md": envelope,
        "requirements.md": _requirements_text(env, run, served),
        "evidence.md": _evidence_text(env, run, task, head),
        "tests.md": tests_section(
            env,
            run,
            task,
            policy,
            repo,
            diff,
            harness_changes(repo, base, head, diff.files, harness_patterns(policy)) if harness is None else harness,
            {owner: lines for owner, lines in declarations.items() if lines},
        ),
        "diff.patch": diff.text,
    }
    folder = env.settings.artifacts / run / (task or "_run") / review_id
    parts["prompt.md"] = _full_prompt(_instructions(subject, nonce, attached=False), parts)
    parts["prompt-attached.md"] = _instructions(subject, nonce, attached=True)
    files = _write_packet(folder, parts)
    manual = policy.review.reviewer == "manual"
    with env.write() as w:
        w.insert(
            "reviews",
            {
                "id": review_id,
                "run_id": run,
                "task_id": task,
                "nonce": nonce,
                "reviewer": identity,
                "status": "waiting" if manual else "queued",
                "base_sha": base,
                "head_sha": head,
                "diff_sha256": diff.sha256,
                "requirements_version": run_row["requirements_version"],
                "executor": None if task is None else recorded["executor"]["name"],
                "identity": json.dumps(recorded, sort_keys=True),
                "created_at": w.at,
            },
        )
        artifacts = [
            store_artifact(w, env, run=run, task=task, owner=f"review:{review_id}", source=p) for p in files.values()
        ]
        job = (
            None
            if manual
            else enqueue(w, run=run, task=task, kind="review", payload={"review": review_id}, max_attempts=2)
        )
        if job is not None:
            w.execute("UPDATE reviews SET job_id = ? WHERE id = ?", (job, review_id))
        w.event(
            "review.requested",
            run=run,
            task=task,
            review=review_id,
            reviewer=identity,
            identity=recorded,
            head_sha=head,
            diff_sha256=diff.sha256,
            job=job,
            packet={a.name: a.sha256 for a in artifacts},
        )
        if task is not None:
            current = env.task_row(run, task)
            if current["status"] != "in_review":
                move_task(w, run, task, current["status"], "in_review", "task.in_review", review=review_id)
        elif run_row["stage"] == "executing":
            set_stage(w, run_row, "release_review", "run.release_review", review=review_id)
    return review_request_result(env, review_id)


def review_row(env: Env, review: str) -> dict[str, Any]:
    row = env.store.one("SELECT * FROM reviews WHERE id = ?", (review,))
    if row is None:
        raise NotFound(f"review {review!r} not found; request_review returns review ids")
    return row


def _packet_path(env: Env, row: dict[str, Any], name: str) -> Path:
    return env.settings.artifacts / row["run_id"] / (row["task_id"] or "_run") / row["id"] / name


def repair_prompt(problem: str, nonce: str) -> str:
    return (
        f"Your reply could not be used: {problem}. Reply again with only the review as one JSON block between the "
        f'lines {BEGIN} and {END}, following the schema given, with "review_id": "{nonce}".'
    )


def _progress_text(p: Progress) -> str:
    """Liveness only: what the page shows, never what the model reasons."""
    minutes = int(p.elapsed_s // 60)
    took = f"{minutes} min" if minutes else f"{int(p.elapsed_s)} s"
    if p.stage == "thinking":
        what = f"ChatGPT is thinking ({p.status})" if p.status else "ChatGPT is thinking"
    elif p.stage == "writing":
        what = f"ChatGPT is writing the reply ({p.text_len} characters so far)"
    else:
        what = "ChatGPT's reply looks finished; confirming it"
    return f"{what}, {took} into this wait"


class _Live:
    """Progress the bridge reports (from its thread), published by the job thread."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.written: str | None = None
        self.written_at = 0.0

    def update(self, progress: Progress) -> None:
        self.text = _progress_text(progress)


def _with_heartbeat(ctx: JobContext, progress: str, call: Any, live: _Live | None = None) -> Any:
    """Run a long blocking call in a thread while this job keeps its lease; publish the
    bridge's liveness on the job and (when it changes, and every half minute) on the review."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the job thread below
            result["error"] = exc

    # The copied context carries the job's process watch into the thread (``procs.watching``).
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target,), name=f"review-{ctx.job['id']}", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(timeout=1.0)
        text = (live.text if live is not None else None) or progress
        ctx.heartbeat(text)
        if (
            live is not None
            and live.text
            and (live.text != live.written or time.monotonic() - live.written_at >= PROGRESS_EVERY_S)
        ):
            _set_progress(ctx.env, ctx.payload["review"], live.text, f"worker:{ctx.worker}")
            live.written, live.written_at = live.text, time.monotonic()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _set_progress(env: Env, review: str, text: str, actor: str) -> None:
    with env.write(actor=actor) as w:
        w.execute("UPDATE reviews SET progress = ?, progress_at = ? WHERE id = ?", (text, w.at, review))


def _repair_sent(env: Env, row: dict[str, Any]) -> bool:
    return bool(
        env.store.scalar(
            "SELECT COUNT(*) FROM events WHERE run_id = ? AND kind = 'review.repair_sent'"
            " AND json_extract(payload, '$.review') = ?",
            (row["run_id"], row["id"]),
        )
    )


def _bridge_record(reviewer: Any) -> dict[str, Any] | None:
    """The bridge's account of the latest reply, for the review record."""
    reply: BridgeReply | None = getattr(reviewer, "last", None) if isinstance(reviewer, ChatGPTReviewer) else None
    if reply is None:
        return None
    notes = list(reply.notes)
    if reply.model_verified is False:
        notes.insert(0, f"the model could not be verified on the page (it showed {reply.model!r})")
    notes += [f"selector fallback in use: {fb.render()}" for fb in reply.fallbacks]
    return {
        "conversation_url": reply.conversation_url,
        "delivery": reply.delivery,
        "read_via": reply.read_via,
        "proof": reply.proof,
        "model": reply.model,
        "model_verified": reply.model_verified,
        "fallbacks": [{"name": fb.name, "primary": fb.primary, "used": fb.used} for fb in reply.fallbacks],
        "notes": notes,
    }


def _seconds_since(iso: str | None) -> float:
    if not iso:
        return 0.0
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return (datetime.now(UTC) - then).total_seconds()


def run_review_job(ctx: JobContext) -> dict[str, Any]:
    """The ``review`` job: ask (or re-read), parse, repair once, record; or keep it pending."""
    from planegate.bridge import BridgeError, ReplyPending, SelectorDrift

    env = ctx.env
    row = review_row(env, ctx.payload["review"])
    if row["status"] in ("completed", "incomplete", "failed"):
        return {"review": row["id"], "status": row["status"]}
    actor = f"worker:{ctx.worker}"
    policy = env.policy(env.run_row(row["run_id"]))
    folder = _packet_path(env, row, "")
    live = _Live()
    reviewer = make_reviewer(policy, env.settings, folder, on_tick=lambda _: ctx.heartbeat(), on_progress=live.update)
    with env.write(actor=actor) as w:
        w.execute("UPDATE reviews SET status = 'running' WHERE id = ? AND status = 'queued'", (row["id"],))
    conversation = row["conversation_url"]

    def sent(url: str) -> None:
        nonlocal conversation
        conversation = url
        with env.write(actor=actor) as w:
            w.execute("UPDATE reviews SET conversation_url = ? WHERE id = ?", (url, row["id"]))
            w.event("review.sent", run=row["run_id"], task=row["task_id"], review=row["id"], conversation=url)

    full_prompt = (folder / "prompt.md").read_text(encoding="utf-8")
    try:
        if conversation:
            reply = _with_heartbeat(
                ctx, "re-reading the review conversation", lambda: reviewer.recover(conversation), live
            )
        elif policy.review.reviewer == "chatgpt":
            files = [folder / name for name in PACKET_FILES]
            prompt = (folder / "prompt-attached.md").read_text(encoding="utf-8")
            reply = _with_heartbeat(
                ctx, "waiting for the reviewer", lambda: reviewer.ask(prompt, files, sent, full_prompt), live
            )
        else:
            reply = reviewer.ask(full_prompt, [], sent)
        try:
            parsed = parse_reply(reply, row["nonce"])
            replies = [reply]
        except ReplyProblem as problem:
            if _repair_sent(env, row):
                # A re-read of the repaired answer: the one repair was spent.
                record_outcome(env, row, [reply], None, str(problem), actor=actor, bridge=_bridge_record(reviewer))
                return {"review": row["id"], "status": "incomplete"}
            repair = repair_prompt(str(problem), row["nonce"])
            with env.write(actor=actor) as w:
                w.event("review.repair_sent", run=row["run_id"], task=row["task_id"], review=row["id"])
            second = _with_heartbeat(
                ctx,
                "waiting for the reviewer's repaired answer",
                lambda: reviewer.repair(full_prompt, reply, repair, conversation),
                live,
            )
            replies = [reply, second]
            try:
                parsed = parse_reply(second, row["nonce"])
            except ReplyProblem as again:
                record_outcome(env, row, replies, None, str(again), actor=actor, bridge=_bridge_record(reviewer))
                return {"review": row["id"], "status": "incomplete"}
    except JobLost:
        raise
    except ReplyPending as exc:
        return _pending(env, row, policy.review.timeout_s, exc, live.text, actor)
    except SelectorDrift as exc:
        _incident(env, row, "bridge drift", exc.report)
        _fail(env, row, f"ChatGPT's page no longer matches the selector profile: {exc}", exc.diagnostics)
        raise ReviewError(f"review {row['id']}: {exc}\n{exc.report}") from exc
    except BridgeError as exc:
        _fail(env, row, str(exc), exc.diagnostics)
        raise ReviewError(f"review {row['id']} failed: {exc}") from exc
    except (ReviewError, ExecutionError) as exc:
        _fail(env, row, str(exc))
        raise ReviewError(f"review {row['id']} failed: {exc}") from exc
    record_outcome(env, row, replies, parsed, None, actor=actor, bridge=_bridge_record(reviewer))
    return {"review": row["id"], "status": "completed", "verdict": parsed.verdict}


def _pending(
    env: Env, row: dict[str, Any], timeout_s: float, exc: ReplyPending, progress: str | None, actor: str
) -> dict[str, Any]:
    """Keep the review for a later re-read; fail it once it has been pending past its window."""
    current = review_row(env, row["id"])
    window = max(timeout_s, MIN_PENDING_WINDOW_S)
    if current["pending_since"] and _seconds_since(current["pending_since"]) >= window:
        error = (
            f"the reply at {exc.conversation_url} was still {exc.status} {window / 60:.0f} min after the review "
            "became pending; read it in the browser, or request_review again"
        )
        _fail(env, current, error)
        raise ReviewError(f"review {row['id']} failed: {error}")
    text = progress or f"ChatGPT is still {exc.status}"
    with env.write(actor=actor) as w:
        after = now_iso(env.settings.review_reread_s)
        w.execute(
            "UPDATE reviews SET status = 'pending', conversation_url = ?, progress = ?, progress_at = ?,"
            " pending_since = COALESCE(pending_since, ?), reread_after = ? WHERE id = ?",
            (exc.conversation_url, text, w.at, w.at, after, row["id"]),
        )
        w.event(
            "review.pending",
            run=row["run_id"],
            task=row["task_id"],
            review=row["id"],
            conversation=exc.conversation_url,
            status=exc.status,
            waited_s=round(exc.waited_s),
            reread_after=after,
        )
    return {"review": row["id"], "status": "pending", "conversation": exc.conversation_url, "reread_after": after}


def queue_due_rereads(env: Env, review: str | None = None) -> int:
    """Queue a re-read job for every pending review (or just ``review``) whose time has come and
    that has none under way; returns how many were queued. Cheap when nothing is due."""
    sql = "SELECT id FROM reviews WHERE status = 'pending' AND reread_after IS NOT NULL AND reread_after <= ?"
    args: tuple[Any, ...] = (now_iso(),)
    if review is not None:
        sql += " AND id = ?"
        args += (review,)
    if not env.store.rows(sql, args):
        return 0
    queued = 0
    with env.write(actor="planegate:reread") as w:
        for due in w.rows(sql.replace("SELECT id", "SELECT *"), (w.at, *args[1:])):
            job = w.one("SELECT status FROM jobs WHERE id = ?", (due["job_id"],)) if due["job_id"] else None
            if job is not None and job["status"] in ("queued", "running"):
                continue
            job_id = enqueue(w, run=due["run_id"], task=due["task_id"], kind="review", payload={"review": due["id"]})
            w.execute("UPDATE reviews SET job_id = ?, reread_after = NULL WHERE id = ?", (job_id, due["id"]))
            w.event("review.reread_queued", run=due["run_id"], task=due["task_id"], review=due["id"], job=job_id)
            queued += 1
    return queued


def pick_up_pending(env: Env, review: str) -> dict[str, Any]:
    """``get_review``'s first step: a pending review whose re-read is due gets it queued now."""
    row = review_row(env, review)
    if row["status"] == "pending":
        queue_due_rereads(env, review)
        row = review_row(env, review)
    return row


def _incident(env: Env, row: dict[str, Any], kind: str, report: str) -> None:
    with env.write() as w:
        event = w.event(
            "bridge.incident", run=row["run_id"], task=row["task_id"], review=row["id"], kind=kind, report=report[:4000]
        )
        w.insert(
            "risks",
            {
                "run_id": row["run_id"],
                "task_id": row["task_id"],
                "kind": "incident",
                "detail": f"{kind} during review {row['id']}: {report.splitlines()[0] if report else ''}",
                "event_id": event,
                "created_at": w.at,
            },
        )


def review_job_ended(env: Env, job: dict[str, Any], reason: str) -> None:
    """The review's job was cancelled or gave up: the review fails with that reason (the job queue calls this)."""
    row = env.store.one(
        "SELECT * FROM reviews WHERE job_id = ? AND status IN ('queued', 'running', 'pending')", (job["id"],)
    )
    if row is not None:
        _fail(env, row, f"its job {job['id']} ended without a reply: {reason}")


def _fail(env: Env, row: dict[str, Any], error: str, diagnostics: Sequence[Path] = ()) -> None:
    """Record the failure; the bridge's screenshot and DOM summary become artifacts of the review."""
    with env.write() as w:
        artifacts = [
            store_artifact(w, env, run=row["run_id"], task=row["task_id"], owner=f"review:{row['id']}", source=p)
            for p in diagnostics
            if p.is_file()
        ]
        w.execute(
            "UPDATE reviews SET status = 'failed', error = ?, completed_at = ?, reread_after = NULL WHERE id = ?",
            (error[:4000], w.at, row["id"]),
        )
        w.event(
            "review.failed",
            run=row["run_id"],
            task=row["task_id"],
            review=row["id"],
            error=error[:1000],
            diagnostics={a.name: a.sha256 for a in artifacts},
        )
        _return_task(w, env, row, "in_progress")


def _return_task(w: Writer, env: Env, row: dict[str, Any], status: str) -> None:
    """Move the reviewed task out of in_review: to ``status`` while it still sits on the reviewed
    head, back to in_progress when it has moved on since."""
    if row["task_id"] is None:
        return
    task = w.one("SELECT status, branch FROM tasks WHERE run_id = ? AND id = ?", (row["run_id"], row["task_id"]))
    if task is None or task["status"] != "in_review":
        return
    head = env.repo(env.run_row(row["run_id"])["repo"]).branch_sha(task["branch"])
    if head != row["head_sha"]:
        status = "in_progress"
    move_task(w, row["run_id"], row["task_id"], "in_review", status, "task.reviewed", review=row["id"], head_sha=head)


def record_outcome(
    env: Env,
    row: dict[str, Any],
    replies: list[str],
    parsed: ReviewReply | None,
    problem: str | None,
    actor: str,
    bridge: dict[str, Any] | None = None,
) -> None:
    """``bridge``: the ChatGPT bridge's account of the reply (``bridge.json``, its notes on the review)."""
    folder = _packet_path(env, row, "")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reply.md").write_text("\n\n---\n\n".join(replies), encoding="utf-8")
    sources = [folder / "reply.md"]
    if parsed is not None:
        (folder / "review.json").write_text(parsed.model_dump_json(indent=2), encoding="utf-8")
        sources.append(folder / "review.json")
    notes = json.dumps(bridge["notes"]) if bridge and bridge["notes"] else None
    if bridge is not None:
        (folder / "bridge.json").write_text(json.dumps(bridge, indent=2), encoding="utf-8")
        sources.append(folder / "bridge.json")
    with env.write(actor=actor) as w:
        artifacts = [
            store_artifact(w, env, run=row["run_id"], task=row["task_id"], owner=f"review:{row['id']}", source=p)
            for p in sources
        ]
        w.execute("UPDATE reviews SET notes = ?, reread_after = NULL WHERE id = ?", (notes, row["id"]))
        if parsed is None:
            w.execute(
                "UPDATE reviews SET status = 'incomplete', error = ?, reply = ?, completed_at = ? WHERE id = ?",
                (problem, replies[-1][:20_000], w.at, row["id"]),
            )
            w.event(
                "review.incomplete",
                run=row["run_id"],
                task=row["task_id"],
                review=row["id"],
                problem=problem,
                artifacts={a.name: a.sha256 for a in artifacts},
            )
            _return_task(w, env, row, "in_progress")
            return
        w.execute(
            "UPDATE reviews SET status = 'completed', verdict = ?, summary = ?, reply = ?, completed_at = ?"
            " WHERE id = ?",
            (parsed.verdict, parsed.summary[:4000], parsed.model_dump_json(), w.at, row["id"]),
        )
        w.conn.executemany(
            "INSERT INTO findings (review_id, idx, severity, file, line, title, detail, suggestion)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (row["id"], i, f.severity, f.file, f.line, f.title[:500], f.detail[:4000], f.suggestion[:4000])
                for i, f in enumerate(parsed.findings)
            ],
        )
        w.event(
            "review.completed",
            run=row["run_id"],
            task=row["task_id"],
            review=row["id"],
            verdict=parsed.verdict,
            findings=len(parsed.findings),
            head_sha=row["head_sha"],
            artifacts={a.name: a.sha256 for a in artifacts},
            **({"notes": bridge["notes"]} if bridge and bridge["notes"] else {}),
        )
        _return_task(w, env, row, "approved" if parsed.verdict == "approve" else "changes_requested")


def submit_review(env: Env, review: str, text: str) -> ReviewResult:
    """A human's answer to a manual review, validated like any reviewer's reply.

    Raises:
        WrongState: the review is not waiting for a manual answer.
        InvalidInput: the answer is unusable (the review keeps waiting for a corrected one).
    """
    row = review_row(env, review)
    if row["status"] != "waiting":
        raise WrongState(f"review {review!r} is {row['status']}; only a manual review that is waiting takes an answer")
    try:
        parsed = parse_reply(text, row["nonce"])
    except ReplyProblem as problem:
        raise InvalidInput(f"answer refused, the review still waits: {problem}") from problem
    record_outcome(env, row, [text], parsed, None, actor=env.settings.actor)
    return review_result(env, review)


def review_result(env: Env, review: str) -> ReviewResult:
    row = review_row(env, review)
    run, task = row["run_id"], row["task_id"]
    run_row = env.run_row(run)
    branch = run_row["integration_branch"] if task is None else env.task_row(run, task)["branch"]
    current_head = env.repo(run_row["repo"]).branch_sha(branch) if branch else None
    findings = [
        FindingLine(severity=f["severity"], title=f["title"], file=f["file"], line=f["line"], detail=f["detail"] or "")
        for f in env.store.rows("SELECT * FROM findings WHERE review_id = ? ORDER BY idx", (review,))
    ]
    parsed = json.loads(row["reply"]) if row["status"] == "completed" and row["reply"] else {}
    subject = f"run={run!r}, task={task!r}" if task else f"run={run!r}"
    state = row["status"]
    if state in ("queued", "running"):
        next_step = f"the review is {state}; call get_review({review!r}) again"
    elif state == "pending":
        when = f"after {row['reread_after']}" if row["reread_after"] else "now"
        next_step = (
            f"the reply is still coming ({row['progress'] or 'no liveness seen yet'}, as of {row['progress_at']}); "
            f"planegate re-reads {row['conversation_url']} {when} without sending again; "
            f"call get_review({review!r}) again in a few minutes"
        )
    elif state == "waiting":
        next_step = f"a human answers with `planegate review submit {review} --file answer.json`"
    elif state == "completed" and row["verdict"] == "approve":
        next_step = _after_approval(env, run, task, current_head == row["head_sha"])
    elif state == "completed":
        next_step = f"address the findings, commit, then run_checks({subject})"
    else:
        next_step = f"the review is {state}: {row['error']}; fix the cause, then request_review({subject}) again"
    return ReviewResult(
        review=review,
        run=run,
        task=task,
        state=state,
        reviewer=row["reviewer"],
        verdict=row["verdict"],
        summary=row["summary"],
        head_sha=row["head_sha"],
        stale=current_head is not None and current_head != row["head_sha"],
        findings=findings,
        missing_tests=parsed.get("missing_tests", []),
        requirements={r["id"]: r["status"] for r in parsed.get("requirements", [])},
        conversation_url=row["conversation_url"],
        error=row["error"],
        progress=row["progress"] if state in ("running", "pending") else None,
        notes=json.loads(row["notes"]) if row["notes"] else [],
        disposition=review_disposition(env, row),
        next_step=next_step,
    )


def _after_approval(env: Env, run: str, task: str | None, current: bool) -> str:
    """What follows an approving review: what the gates still ask for, else the acceptance."""
    subject = f"run={run!r}, task={task!r}" if task else f"run={run!r}"
    if not current:
        return f"the head moved since this review; run_checks({subject}), then " + (
            f"request_review({subject})" if task else f"request_review({subject}, release=True)"
        )
    if task is None:
        return run_next_step(env, run)
    row = env.task_row(run, task)
    if row["status"] not in ACTIVE_STATUSES:
        return f"get_status({run!r})"
    _, gates = evaluate_task(env, env.run_row(run), row, live=False)
    return task_next_step(run, task, gates)


def review_disposition(env: Env, row: dict[str, Any]) -> Disposition | None:
    """Why a review has no verdict: its job's disposition (a logged-out browser needs a human, a
    usage cap is retryable); an unusable reply can be asked for again."""
    if row["status"] == "incomplete":
        return "retryable"
    if row["status"] != "failed":
        return None
    job = (
        env.store.one("SELECT status, disposition FROM jobs WHERE id = ?", (row["job_id"],)) if row["job_id"] else None
    )
    return (job_disposition(job) if job is not None else None) or "retryable"


def review_request_result(env: Env, review: str, note: str = "") -> ReviewRequestResult:
    row = review_row(env, review)
    folder = _packet_path(env, row, "")
    return ReviewRequestResult(
        review=review,
        run=row["run_id"],
        task=row["task_id"],
        state=row["status"],
        reviewer=row["reviewer"],
        head_sha=row["head_sha"],
        job=row["job_id"],
        packet=str(folder),
        next_step=note
        + (
            f"a human answers with `planegate review submit {review} --file answer.json`"
            if row["status"] == "waiting"
            else f"get_review({review!r})"
        ),
    )
