"""``planegate hook stop``: the Stop hook that keeps an agent from ending its turn on an unfinished run.

Claude Code and Codex run the hook each time the agent is about to end its turn and pass a JSON
payload on stdin (``session_id``, ``cwd``, ``hook_event_name: "Stop"``, ``stop_hook_active``; the
recorded payloads live in ``tests/data/hooks/``). Both clients read the same answer: exit 0 with
``{"decision": "block", "reason": ...}`` on stdout keeps the agent going and hands it the reason
as its next message; exit 0 with nothing (or only ``{"systemMessage": ...}``, shown to the user)
lets the turn end. Any other exit code never blocks, and Codex rejects unknown output keys, so the
hook prints only those keys.

Which run: the runs in ``executing`` or ``release_review`` whose repository, or one of whose task
worktrees, contains the payload's ``cwd``. Neither client tells an MCP server and its hook apart
per session in a way the ledger records, so the working directory is the link.

When it blocks: such a run still has a step for the agent — a task not yet accepted (or not yet
dispatched), a release check or review to run, ``accept_run`` to call. What remains and the next
call come from ``get_status`` and the run gates; the hook judges no gate itself. Steps only a
person can take (a manual review waiting for its answer, the human approval) do not block; the
user sees them as a system message instead.

Bounds: a stop that follows one of our blocks (``stop_hook_active``) is blocked again only if the
run moved since (a new ledger event), and at most ``MAX_BLOCKS`` times in a row; Claude Code caps
consecutive blocks at 8 and Codex not at all. The count lives in a small file per session under
``PLANEGATE_HOME/hooks/``, never in the ledger.

Opting out is per run and needs a person at a terminal: ``planegate hook off RUN`` asks for the
run id on ``/dev/tty`` (like ``planegate approve``) and records a ``run.stop_hook`` event with
the OS user; ``planegate hook on RUN`` turns it back on.

Sessions planegate itself starts for one task (an executor such as ``codex exec`` in the task's
worktree, which has ``PLANEGATE_TASK`` in its environment) are never held: finishing the run is the
orchestrator's job, not the worker's.

The hook never breaks the client: any failure lets the stop through with one line on stderr.
The common case (no unfinished run under ``cwd``) reads the ledger with plain ``sqlite3`` and
imports nothing else of planegate's, because the hook runs at every turn end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, NamedTuple

# Kept out on purpose (the common case must stay cheap): dataclasses (it loads inspect), sqlite3
# and hashlib until a ledger or a session state is actually read, and all of planegate.tools.

MAX_BLOCKS = 5
WATCHED_STAGES = ("executing", "release_review")
TOGGLE_EVENT = "run.stop_hook"
PAYLOAD_LIMIT = 1 << 20
STATE_TTL_S = 7 * 24 * 3600
LEDGER_BUSY_S = 5.0
RUNS_SHOWN = 3
TASKS_SHOWN = 8


class HookInputError(ValueError):
    """The payload on stdin is not a hook payload."""


class StopPayload(NamedTuple):
    session_id: str
    cwd: Path
    event: str
    stop_hook_active: bool

    @classmethod
    def parse(cls, raw: str) -> StopPayload:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise HookInputError(f"stdin is not JSON ({exc.msg} at {exc.pos})") from exc
        if not isinstance(data, dict):
            raise HookInputError(f"stdin holds a JSON {type(data).__name__}, not an object")
        cwd, session = data.get("cwd"), data.get("session_id")
        if not isinstance(cwd, str) or not cwd:
            raise HookInputError(f"the payload has no cwd (got {cwd!r})")
        if not isinstance(session, str) or not session:
            raise HookInputError(f"the payload has no session_id (got {session!r})")
        return cls(
            session_id=session,
            cwd=Path(cwd),
            event=str(data.get("hook_event_name") or "Stop"),
            stop_hook_active=data.get("stop_hook_active") is True,
        )


class RunVerdict:
    """What one watched run still needs: steps for the agent (they block) and for a person (they don't)."""

    def __init__(self, run: str, marker: int, next_action: str = "", goal: str = "") -> None:
        self.run = run
        self.marker = marker
        self.next_action = next_action
        self.goal = goal
        self.agent: list[str] = []
        self.human: list[str] = []
        self.notes: list[str] = []


class HookAnswer(NamedTuple):
    """What the hook prints: a JSON object on stdout (or nothing), and maybe a line on stderr."""

    output: dict[str, str] | None = None
    warning: str | None = None


# --- finding the runs: plain sqlite3, nothing else of planegate's ---------------------------------


def _home() -> Path:
    configured = os.environ.get("PLANEGATE_HOME")
    return (Path(configured).expanduser() if configured else Path.home() / ".planegate").resolve()


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def watched_runs(home: Path, cwd: Path) -> list[tuple[str, int]]:
    """The runs in ``executing``/``release_review`` under ``cwd`` that have the hook on, with their
    newest event id (the marker that tells whether a run moved between two stops)."""
    ledger = home / "ledger.db"
    if not ledger.is_file():
        return []
    try:
        where = cwd.resolve()
    except OSError:
        return []
    import sqlite3
    from contextlib import closing

    worktrees = (home / "worktrees").resolve()
    found: list[tuple[str, int]] = []
    # mode=rw: an existing ledger only, never a new empty file in a home that has none
    with closing(sqlite3.connect(f"{ledger.as_uri()}?mode=rw", uri=True, timeout=LEDGER_BUSY_S)) as conn:
        rows = conn.execute(
            "SELECT id, repo FROM runs WHERE stage IN (?, ?) ORDER BY created_at DESC", WATCHED_STAGES
        ).fetchall()
        for run, repo in rows:
            if not (_within(where, Path(repo)) or _within(where, worktrees / run)):
                continue
            toggle = conn.execute(
                "SELECT payload FROM events WHERE run_id = ? AND kind = ? ORDER BY id DESC LIMIT 1",
                (run, TOGGLE_EVENT),
            ).fetchone()
            if toggle and json.loads(toggle[0]).get("enabled") is False:
                continue
            marker = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events WHERE run_id = ?", (run,)).fetchone()[0]
            found.append((run, int(marker)))
    return found


# --- what a run still needs: the domain's status and gates ---------------------------------------


def _open_env(home: Path) -> Any:
    from planegate.store import Store
    from planegate.tools.config import Settings
    from planegate.tools.env import Env

    settings = Settings(home=home, actor="planegate:hook")
    return Env(settings, Store(settings.ledger_path, actor=settings.actor, busy_timeout_s=LEDGER_BUSY_S))


def _waiting_manual_reviews(env: Any, run: str) -> dict[str | None, str]:
    """Manual reviews waiting for a person's answer, by task (``None`` for the release review)."""
    rows = env.store.rows(
        "SELECT id, task_id FROM reviews WHERE run_id = ? AND status = 'waiting' ORDER BY created_at", (run,)
    )
    return {row["task_id"]: row["id"] for row in rows}


def assess_run(env: Any, run: str, marker: int) -> RunVerdict:
    """Split what ``run`` still needs into the agent's steps and a person's, from ``get_status``."""
    from planegate.tools.gates.release import evaluate_run
    from planegate.tools.report.status import get_status

    result = get_status(env, run)
    status = result.status
    assert status is not None
    verdict = RunVerdict(run=run, marker=marker, next_action=result.next_action, goal=status.goal)
    waiting = _waiting_manual_reviews(env, run)
    for task in status.active:
        review = waiting.get(task.task) if task.status == "in_review" else None
        if review:
            verdict.human.append(
                f"task {task.task}: answer manual review {review} (`planegate review submit {review}`)"
            )
            continue
        unmet = [g.gate for g in task.gates if not g.ok]
        verdict.agent.append(f"{task.task} {task.status}" + (f" (unmet: {', '.join(unmet)})" if unmet else ""))
    if status.more.get("active"):
        verdict.agent.append(f"{status.more['active']} more dispatched task(s)")
    if status.ready:
        more = status.more.get("ready", 0)
        verdict.agent.append("not dispatched yet: " + ", ".join(status.ready) + (f" and {more} more" if more else ""))
    if status.blocked:
        more = status.more.get("blocked", 0)
        line = (
            "waiting on dependencies: "
            + ", ".join(b.task for b in status.blocked)
            + (f" and {more} more" if more else "")
        )
        # Blocked tasks wait on others listed above; alone (nothing active or ready) they are stuck,
        # which is the agent's to resolve.
        (verdict.agent if not verdict.agent and not verdict.human else verdict.notes).append(line)
    open_tasks = sum(n for s, n in status.counts.items() if s not in ("accepted", "cancelled"))
    if open_tasks == 0:
        _, gates = evaluate_run(env, run)
        unmet_run = [g for g in gates if not g.ok]
        release_review = waiting.get(None)
        for gate in unmet_run:
            if gate.gate == "human_approval":
                verdict.human.append(f"approve the run yourself: `planegate approve {run}`")
            elif gate.gate == "release_review" and release_review:
                verdict.human.append(
                    f"answer the manual release review {release_review} (`planegate review submit {release_review}`)"
                )
            else:
                verdict.agent.append(f"run gate {gate.gate}: {gate.reason}")
        if not unmet_run:
            verdict.agent.append("every gate holds; the run is not accepted yet")
    return verdict


def block_reason(verdicts: list[RunVerdict]) -> str:
    lines = []
    for v in verdicts:
        lines.append(f"planegate: run {v.run} ({v.goal!r}) is not finished, so this turn should not end yet.")
        shown = v.agent[:TASKS_SHOWN] + ([f"… {len(v.agent) - TASKS_SHOWN} more"] if len(v.agent) > TASKS_SHOWN else [])
        lines += [f"- {item}" for item in shown + v.notes]
        lines += [f"- waiting for the user: {item}" for item in v.human]
        lines.append(f"Next call: {v.next_action}")
    lines.append(
        "Keep working until the run is accepted. If you cannot go on, tell the user why; only the user can "
        "turn this check off for a run (`planegate hook off RUN`, typed at their terminal)."
    )
    return "\n".join(lines)


def human_message(verdicts: list[RunVerdict]) -> str:
    items = [f"run {v.run}: {step}" for v in verdicts for step in v.human]
    return "planegate: waiting for you — " + "; ".join(items)


# --- the chain of blocks within one session --------------------------------------------------------


def _state_path(home: Path, session: str) -> Path:
    import hashlib

    digest = hashlib.sha256(session.encode()).hexdigest()[:32]
    return home / "hooks" / f"stop-{digest}.json"


def _load_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(state), encoding="utf-8")
    partial.replace(path)
    import time

    cutoff = time.time() - STATE_TTL_S
    for old in path.parent.glob("stop-*.json"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass  # another hook removed it first


# --- the hook --------------------------------------------------------------------------------------


def decide(payload: StopPayload, home: Path | None = None) -> HookAnswer:
    """The hook's answer to one payload (raises on internal failure; ``run_stop_hook`` fails open)."""
    if payload.event != "Stop" or os.environ.get("PLANEGATE_TASK"):
        # PLANEGATE_TASK: an executor planegate started for one task (e.g. `codex exec` in its
        # worktree); the run is the orchestrator's to finish, not that worker's.
        return HookAnswer()
    home = home or _home()
    runs = watched_runs(home, payload.cwd)
    if not runs:
        return HookAnswer()
    state_file = _state_path(home, payload.session_id)
    state = _load_state(state_file) if payload.stop_hook_active else {}
    blocks = int(state.get("blocks", 0))
    before: dict[str, int] = state.get("markers", {})
    # Decided before the domain is loaded: these answers repeat at every stop of a loop.
    if blocks and all(before.get(run) == marker for run, marker in runs):
        return _let_go(before, "the agent ended its turn again without moving it")
    if blocks >= MAX_BLOCKS:
        return _let_go(before, f"the stop hook let the turn end after {blocks} blocks in a row")
    env = _open_env(home)
    try:
        verdicts = [assess_run(env, run, marker) for run, marker in runs[:RUNS_SHOWN]]
    finally:
        env.close()
    unfinished = [v for v in verdicts if v.agent]
    waiting = [v for v in verdicts if v.human]
    if not unfinished:
        return HookAnswer({"systemMessage": human_message(waiting)} if waiting else None)
    if blocks and all(before.get(v.run) == v.marker for v in unfinished):
        return _let_go(before, "the agent ended its turn again without moving it")
    _save_state(state_file, {"blocks": blocks + 1, "markers": {v.run: v.marker for v in unfinished}})
    return HookAnswer({"decision": "block", "reason": block_reason(verdicts)})


def _let_go(blocked: dict[str, int], why: str) -> HookAnswer:
    names = ", ".join(sorted(blocked))
    return HookAnswer({"systemMessage": f"planegate: run {names} is not finished; {why}."})


def run_stop_hook(stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> int:
    """Read the payload, answer, and exit 0 whatever happens: a hook must never break its client."""
    try:
        raw = stdin.read(PAYLOAD_LIMIT)
        answer = decide(StopPayload.parse(raw))
    except Exception as exc:  # noqa: BLE001 - the top of the hook: fail open, say why in one line
        answer = HookAnswer(warning=f"planegate hook stop: let the stop through after an error: {_one_line(exc)}")
    if answer.output is not None:
        stdout.write(json.dumps(answer.output) + "\n")
        stdout.flush()
    if answer.warning:
        stderr.write(answer.warning + "\n")
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


# --- the per-run switch (a person's command) -------------------------------------------------------


def set_stop_hook(env: Any, run: str, enabled: bool, by: str) -> bool:
    """Record the stop hook on or off for ``run``; returns whether it was on before.

    Raises:
        NotFound: an unknown run.
    """
    env.run_row(run)
    with env.write() as w:
        previous = w.one(
            "SELECT payload FROM events WHERE run_id = ? AND kind = ? ORDER BY id DESC LIMIT 1", (run, TOGGLE_EVENT)
        )
        was_on = previous is None or json.loads(previous["payload"]).get("enabled") is not False
        if was_on != enabled:
            w.event(TOGGLE_EVENT, run=run, enabled=enabled, by=by)
    return was_on
