"""The hash chain over the ``events`` table.

Every event's ``hash`` is ``sha256(prev_hash + canonical_json(event))`` where the event is
``{"actor", "at", "id", "kind", "payload", "run", "task"}``. The first event chains from
``GENESIS``. Payloads are stored as canonical JSON text, so the canonical form of an event can
be assembled from its columns without re-parsing the payload; ``event_body`` and
``canonical_json`` agree byte for byte (a test holds them to it).

Invariants: ids are dense (1, 2, 3, ...), each ``prev_hash`` equals the previous event's
``hash``, and each ``hash`` matches the row's content. ``verify_chain`` reports the first event
where any of these breaks.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_dump_str = json.JSONEncoder(ensure_ascii=False).encode


def _body(event_id: int, run: str, task: str, kind: str, actor: str, at: str, payload: str) -> str:
    """The event body from its fields already encoded as JSON (strings quoted, None as null)."""
    return f'{{"actor":{actor},"at":{at},"id":{event_id},"kind":{kind},"payload":{payload},"run":{run},"task":{task}}}'


def event_body(event_id: int, run: str | None, task: str | None, kind: str, actor: str, at: str, payload: str) -> str:
    """``canonical_json`` of an event whose payload is already canonical JSON text."""
    return _body(event_id, _dump_str(run), _dump_str(task), _dump_str(kind), _dump_str(actor), _dump_str(at), payload)


def chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    """The first place the chain does not hold."""

    event_id: int
    kind: str
    what: str


@dataclass(frozen=True)
class ChainReport:
    verified: int
    head: str
    broken: ChainBreak | None


EventRow = tuple[int, str | None, str | None, str, str, str, str, str, str]

_SELECT = "SELECT id, run_id, task_id, kind, actor, at, payload, prev_hash, hash FROM events ORDER BY id"


def iter_event_rows(conn: sqlite3.Connection, batch: int = 20_000) -> Iterator[EventRow]:
    cursor = conn.execute(_SELECT)
    while rows := cursor.fetchmany(batch):
        yield from rows


def verify_chain(rows: Iterable[EventRow]) -> ChainReport:
    """Recompute the chain over ``rows`` (ordered by id); stop at the first break."""
    prev_hash = GENESIS
    expected_id = 1
    count = 0
    # Runs, tasks, kinds, actors and times repeat from event to event: encode each once.
    encoded: dict[str | None, str] = {}
    known = encoded.get
    sha256 = hashlib.sha256
    for event_id, run, task, kind, actor, at, payload, stored_prev, stored_hash in rows:
        if event_id != expected_id:
            missing = f"event {expected_id}" if event_id == expected_id + 1 else f"events {expected_id}..{event_id - 1}"
            return ChainReport(
                count, prev_hash, ChainBreak(event_id, kind, f"{missing} missing before it (deleted from the ledger)")
            )
        if stored_prev != prev_hash:
            return ChainReport(
                count,
                prev_hash,
                ChainBreak(
                    event_id,
                    kind,
                    f"prev_hash {stored_prev[:12]}… does not link to the previous event's hash {prev_hash[:12]}…",
                ),
            )
        if (r := known(run)) is None:
            r = encoded[run] = _dump_str(run)
        if (t := known(task)) is None:
            t = encoded[task] = _dump_str(task)
        if (k := known(kind)) is None:
            k = encoded[kind] = _dump_str(kind)
        if (a := known(actor)) is None:
            a = encoded[actor] = _dump_str(actor)
        if (w := known(at)) is None:
            if len(encoded) > 100_000:
                encoded.clear()
            w = encoded[at] = _dump_str(at)
        computed = sha256((prev_hash + _body(event_id, r, t, k, a, w, payload)).encode()).hexdigest()
        if computed != stored_hash:
            what = _describe_edit(payload, stored_hash, computed)
            return ChainReport(count, prev_hash, ChainBreak(event_id, kind, what))
        prev_hash = stored_hash
        expected_id += 1
        count += 1
    return ChainReport(count, prev_hash, None)


def _describe_edit(payload: str, stored: str, computed: str) -> str:
    hashes = f"stored hash {stored[:12]}…, content hashes to {computed[:12]}…"
    try:
        canonical = canonical_json(json.loads(payload)) == payload
    except ValueError:
        return f"payload is not valid JSON: the row was edited ({hashes})"
    what = "a column of the row" if canonical else "the payload (no longer canonical JSON)"
    return f"content no longer matches its hash: {what} was edited ({hashes})"
