"""Incidents: unexpected exceptions, kept with their traceback under an id the caller is given.

An incident is a bug or an environment planegate did not foresee, never an outcome a caller is
expected to act on (those are planegate's own errors). Whoever met it gets one line naming the
incident id; the traceback goes to stderr (the log) and, when the ledger can be written, to the
``incidents`` table, so that an operator can find it from the id the agent quotes. Recording is
bookkeeping in its own transaction: no event, nothing vouched, nothing else changed.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import traceback
from typing import Any

from .db import Store, StoreError

log = logging.getLogger("planegate.incidents")

_CONTEXT_CHARS = 2000


def new_incident_id() -> str:
    return f"inc-{secrets.token_hex(5)}"


def _context_text(context: dict[str, Any] | None) -> str | None:
    if not context:
        return None
    text = json.dumps(context, default=repr, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= _CONTEXT_CHARS else text[:_CONTEXT_CHARS] + "…"


def record_incident(
    store: Store | None,
    exc: BaseException,
    *,
    place: str,
    actor: str = "planegate",
    context: dict[str, Any] | None = None,
) -> tuple[str, str | None]:
    """Log ``exc`` with its traceback and record it; (the incident id, why it is not in the ledger or None).

    Never raises: an incident met while the ledger itself is unusable is still logged.
    """
    incident = new_incident_id()
    trace = "".join(traceback.format_exception(exc))
    log.error("incident %s in %s: %s: %s\n%s", incident, place, type(exc).__name__, exc, trace)
    if store is None:
        return incident, "no ledger was open"
    try:
        with store.write(actor=actor) as w:
            w.insert(
                "incidents",
                {
                    "id": incident,
                    "at": w.at,
                    "actor": actor,
                    "place": place[:200],
                    "error": f"{type(exc).__name__}: {exc}"[:2000],
                    "traceback": trace[-20_000:],
                    "context": _context_text(context),
                },
            )
    except (StoreError, sqlite3.Error, OSError) as problem:
        log.error("incident %s could not be recorded in the ledger: %s", incident, problem)
        return incident, str(problem)
    return incident, None


def incident_row(store: Store, incident: str) -> dict[str, Any] | None:
    return store.one("SELECT * FROM incidents WHERE id = ?", (incident,))


def recent_incidents(store: Store, since: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest incidents first (``since``: an ISO time, or None for any)."""
    return store.rows(
        "SELECT id, at, actor, place, error FROM incidents WHERE at >= ? ORDER BY at DESC LIMIT ?",
        (since or "", limit),
    )
