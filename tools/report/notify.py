"""Notifications: telling a human, once, that planegate waits for them.

What needs a person, read from the ledger's events after ``notify_cursor``:

- ``approval_waiting``: an ``accept_run`` refused with the human approval as the only unmet gate
  (a ``gate.refused`` event), or asked in the client (``raise_notice`` from the server); keyed
  by run and integration head, so a new head asks again and the same one never twice;
- ``job_attention``: a job planegate stopped retrying (``job.attention``);
- ``job_needs_human``: a job that failed with the ``needs_human`` disposition, such as a review
  whose browser is logged out, shows a challenge or no longer matches its selectors;
- ``review_waiting``: a manual review waiting for a person's answer.

Each becomes a ``notifications`` row whose key makes it once (``INSERT OR IGNORE``); the cursor
moves by compare-and-set in the same transaction, so two processes scanning at once add each
notice once. Rows are then delivered by whichever process claims them (``pending`` → ``sending``
by compare-and-set): to the run's policy ``[notify] command`` with the JSON payload on stdin (no
shell, a scrubbed environment, ``timeout_s``, its process group killed past it), else through
``notify-send`` when it is installed and ``desktop`` is on, else recorded as ``skipped``. A
failure is logged and recorded on the row, never retried and never fatal. All of it is
bookkeeping: no event is written, nothing is vouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from typing import Any

from planegate.store import StoreError, canonical_json

from ..env import Env
from ..errors import PlanegateError
from ..execution.jobview import attention_step
from ..execution.procs import DEFAULT_ENV_ALLOW, scrubbed_env
from ..gates.release import PendingApproval, awaiting_human
from ..policy import NotifySettings

log = logging.getLogger("planegate.notify")

WATCHED = ("job.attention", "job.failed", "review.requested", "gate.refused")
SCAN_LIMIT = 500  # events looked at per pass; the next poll takes the rest
DELIVER_LIMIT = 20
DESKTOP_ENV = ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR")
_ERROR_CHARS = 1000


@dataclass(frozen=True)
class Notice:
    key: str
    kind: str
    run: str | None
    task: str | None
    title: str
    message: str
    next_step: str
    event: int | None = None
    extra: dict[str, Any] | None = None

    def payload(self, env: Env, at: str) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "title": self.title,
            "message": self.message,
            "next_step": self.next_step,
            "run": self.run,
            "task": self.task,
            "event": self.event,
            "at": at,
            "host": socket.gethostname(),
            "ledger": str(env.settings.ledger_path),
            **(self.extra or {}),
        }


def notify_due(env: Env) -> None:
    """Find what is new since the last pass and send what is pending (the worker calls this at every poll)."""
    scan(env)
    deliver(env)


# --- finding what needs a person ---------------------------------------------------------------


def scan(env: Env) -> int:
    """Turn the events since the cursor into pending notifications; how many were added."""
    cursor = int(env.store.scalar("SELECT event_id FROM notify_cursor WHERE id = 1") or 0)
    head = env.store.event_count()
    if head <= cursor:
        return 0
    placeholders = ", ".join("?" for _ in WATCHED)
    events = env.store.rows(
        "SELECT id, run_id, task_id, kind, at, payload FROM events"
        f" WHERE id > ? AND id <= ? AND kind IN ({placeholders}) ORDER BY id LIMIT ?",
        (cursor, head, *WATCHED, SCAN_LIMIT),
    )
    upto = events[-1]["id"] if len(events) == SCAN_LIMIT else head
    notices = [notice for event in events if (notice := _notice_for(env, event)) is not None]
    added = 0
    with env.write(actor="planegate:notify") as w:
        if not w.cas("notify_cursor", {"id": 1}, {"event_id": cursor}, {"event_id": upto}):
            return 0  # another process took this stretch
        for notice in notices:
            added += _insert(w, env, notice)
    return added


def raise_notice(env: Env, notice: Notice) -> bool:
    """Queue one notice now (the server's approval question); False when it was already raised."""
    with env.write(actor="planegate:notify") as w:
        return bool(_insert(w, env, notice))


def _insert(w: Any, env: Env, notice: Notice) -> int:
    cursor = w.execute(
        "INSERT OR IGNORE INTO notifications (key, kind, run_id, task_id, event_id, payload, status, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
        (
            notice.key,
            notice.kind,
            notice.run,
            notice.task,
            notice.event,
            canonical_json(notice.payload(env, w.at)),
            w.at,
        ),
    )
    return int(cursor.rowcount)


def _notice_for(env: Env, event: dict[str, Any]) -> Notice | None:
    payload = json.loads(event["payload"])
    kind, run, task = event["kind"], event["run_id"], event["task_id"]
    try:
        if kind == "job.attention":
            job = env.store.one("SELECT * FROM jobs WHERE id = ?", (payload.get("job"),))
            if job is None:
                return None
            return Notice(
                key=f"job-attention:{job['id']}",
                kind="job_attention",
                run=run,
                task=task,
                title=f"planegate: job {job['id']} ({job['kind']}{' of ' + task if task else ''}) needs attention",
                message=str(job["error"] or payload.get("reason") or ""),
                next_step=attention_step(job),
                event=event["id"],
                extra={"job": job["id"]},
            )
        if kind == "job.failed" and payload.get("disposition") == "needs_human":
            return _needs_human(env, event, payload)
        if kind == "review.requested":
            review = env.store.one("SELECT id, status FROM reviews WHERE id = ?", (payload.get("review"),))
            if review is None or review["status"] != "waiting":
                return None
            return Notice(
                key=f"review-waiting:{review['id']}",
                kind="review_waiting",
                run=run,
                task=task,
                title=f"planegate: review {review['id']} waits for your answer",
                message=f"the manual review {review['id']} of {task or 'the whole run'} waits for a person's answer",
                next_step=f"read the review_task prompt of {review['id']}, then "
                f"`planegate review submit {review['id']} --file answer.json`",
                event=event["id"],
                extra={"review": review["id"]},
            )
        if (
            kind == "gate.refused"
            and payload.get("tool") == "accept_run"
            and payload.get("gates") == ["human_approval"]
        ):
            return approval_notice(env, run, event["id"])
    except (PlanegateError, StoreError) as exc:  # one unreadable cue must not stop the others
        log.warning("no notification for event %s (%s): %s", event["id"], kind, exc)
    return None


def _needs_human(env: Env, event: dict[str, Any], payload: dict[str, Any]) -> Notice:
    job = int(payload["job"])
    run, task = event["run_id"], event["task_id"]
    review = env.store.one("SELECT id FROM reviews WHERE job_id = ?", (job,))
    error = str(payload.get("error") or "")
    subject = f"run={run!r}, task={task!r}" if task else f"run={run!r}, release=True"
    if review is not None:
        return Notice(
            key=f"job-failed:{job}",
            kind="job_needs_human",
            run=run,
            task=task,
            title=f"planegate: review {review['id']} needs you (the reviewer's browser)",
            message=error,
            next_step="fix what the message names (log in, pass the challenge, update the selectors), check with "
            f"`planegate browser doctor`, then request_review({subject}) again",
            event=event["id"],
            extra={"job": job, "review": review["id"]},
        )
    return Notice(
        key=f"job-failed:{job}",
        kind="job_needs_human",
        run=run,
        task=task,
        title=f"planegate: job {job} needs you",
        message=error,
        next_step=f"read get_job({job}), fix what it names, then run it again",
        event=event["id"],
        extra={"job": job},
    )


def approval_notice(env: Env, run: str | None, event: int | None = None) -> Notice | None:
    """The approval notice for ``run`` while the human's yes is its only missing gate; else None."""
    pending = awaiting_human(env, run) if run is not None else None
    return None if pending is None else approval_notice_for(pending, event)


def approval_notice_for(pending: PendingApproval, event: int | None = None) -> Notice:
    run = pending.run
    command = f"planegate approve {run}"
    return Notice(
        key=f"approval:{run}:{pending.head}",
        kind="approval_waiting",
        run=run,
        task=None,
        title=f"planegate: run {run} waits for your approval",
        message=f"every gate of run {run!r} ({pending.run_row['goal']}) holds except a human's yes, at integration "
        f"head {pending.head[:12]}",
        next_step=f"review the run (its report), then run `{command}` in your terminal"
        + (" or answer the question in your MCP client" if pending.mode == "interactive" else ""),
        event=event,
        extra={"head": pending.head, "mode": pending.mode},
    )


# --- telling them ------------------------------------------------------------------------------


def deliver(env: Env) -> int:
    """Send the pending notifications this process claims; how many were sent."""
    sent = 0
    for row in env.store.rows(
        "SELECT * FROM notifications WHERE status = 'pending' ORDER BY created_at, key LIMIT ?", (DELIVER_LIMIT,)
    ):
        with env.write(actor="planegate:notify") as w:
            if not w.cas("notifications", {"key": row["key"]}, {"status": "pending"}, {"status": "sending"}):
                continue
        settings = _settings(env, row["run_id"])
        status, channel, error = send(settings, row["payload"])
        if error:
            log.warning("notification %s (%s) not delivered through %s: %s", row["key"], row["kind"], channel, error)
        with env.write(actor="planegate:notify") as w:
            w.execute(
                "UPDATE notifications SET status = ?, channel = ?, error = ?, sent_at = ? WHERE key = ?",
                (status, channel, error, w.at, row["key"]),
            )
        sent += status == "sent"
    return sent


def _settings(env: Env, run: str | None) -> NotifySettings:
    if run is None:
        return NotifySettings()
    row = env.store.one("SELECT policy FROM runs WHERE id = ?", (run,))
    return env.policy(row).notify if row is not None else NotifySettings()


def send(settings: NotifySettings, payload_json: str) -> tuple[str, str, str | None]:
    """(status, channel, error): run the command, else notify-send, else skip."""
    if settings.command:
        env = scrubbed_env([*DEFAULT_ENV_ALLOW, *settings.env_allow])
        return _run(list(settings.command), payload_json.encode(), env, settings.timeout_s, "command")
    desktop = shutil.which("notify-send") if settings.desktop else None
    if desktop is None:
        why = "no [notify] command and no notify-send" if settings.desktop else "no [notify] command, desktop = false"
        return "skipped", "none", why
    payload = json.loads(payload_json)
    argv = [desktop, "--app-name=planegate", payload["title"], f"{payload['message']}\nNext: {payload['next_step']}"]
    return _run(argv, b"", scrubbed_env([*DEFAULT_ENV_ALLOW, *DESKTOP_ENV]), settings.timeout_s, "notify-send")


def _run(
    argv: list[str], stdin: bytes, env: dict[str, str], timeout_s: float, channel: str
) -> tuple[str, str, str | None]:
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own group: a timeout ends whatever it started too
        )
    except OSError as exc:
        return "failed", channel, f"{argv[0]!r} could not be started ({exc.strerror}); fix [notify] command"
    try:
        _, stderr = process.communicate(stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # a child that left the group may hold the pipe
            process.communicate(timeout=2)
        return "failed", channel, f"{argv[0]!r} did not finish within {timeout_s:g} s; it was killed"
    if process.returncode != 0:
        tail = stderr.decode(errors="replace").strip()[-_ERROR_CHARS:]
        return "failed", channel, f"{argv[0]!r} exited {process.returncode}" + (f": {tail}" if tail else "")
    return "sent", channel, None


def notifications(env: Env, run: str | None = None) -> list[dict[str, Any]]:
    """The notifications raised (for one run, or all), newest first."""
    if run is None:
        return env.store.rows("SELECT * FROM notifications ORDER BY created_at DESC, key")
    return env.store.rows("SELECT * FROM notifications WHERE run_id = ? ORDER BY created_at DESC, key", (run,))
