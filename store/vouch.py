"""Rows vouched for by the events that wrote them.

Every row of a vouched table (``VOUCHED``: everything a gate or an acceptance reads) is vouched
for by the event that last wrote it: that event's payload carries, under ``"vouch"``, a digest of
the row's content keyed by the row's primary key, or ``null`` for a row it deleted. A row that no
longer hashes to the digest its latest vouching event recorded was edited outside planegate; a
row no event vouches for was inserted outside planegate; a vouched row that is gone was deleted.

How writes are captured: each connection carries TEMP triggers on the vouched tables that note
the primary key of every row an INSERT, UPDATE or DELETE touches (``planegate_touched``). A
``Store.write()`` transaction digests those rows at commit and puts the digests into its last
event before that event is hashed (``Writer``). Nothing has to remember to vouch: a write made
through planegate's connection is vouched, and a write made with any other tool (``sqlite3``,
another program) never is, because that connection has no such triggers.

Keys are the natural primary keys as a canonical JSON array (``[12]``, ``["r-1","api"]``), never
``rowid``, which ``VACUUM`` may renumber. A digest is the first 32 hex characters of the sha256 of
the row's canonical JSON with NULL columns left out, so adding a nullable column to a table in a
later migration leaves every existing digest valid. A migration that changes vouched rows in
any other way must vouch for them again (``vouch_all_rows``), saying why in its event.

``row_vouches`` is an index for fast lookups (table, key → latest vouching event, digest, and the
row's content as vouched). Nothing trusts it: gates confirm each lookup against the event itself,
and ``ledger verify`` rebuilds the truth from the chain; the stored content serves only to name
the columns an edit changed, and only when it still hashes to the event's digest.

Not vouched (bookkeeping no gate trusts): ``jobs``, ``risks``, ``disk_usage``, ``task_counts``, ``row_vouches`` and
the events table itself (the hash chain covers it).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, NamedTuple

from .chain import GENESIS, canonical_json, chain_hash, event_body

VOUCHED: dict[str, tuple[str, ...]] = {
    "runs": ("id",),
    "requirement_versions": ("run_id", "version"),
    "architecture_versions": ("run_id", "version"),
    "graph_versions": ("run_id", "version"),
    "tasks": ("run_id", "id"),
    "task_edges": ("run_id", "task_id", "depends_on"),
    "evidence": ("id",),
    "artifacts": ("id",),
    "reviews": ("id",),
    "findings": ("review_id", "idx"),
    "approvals": ("id",),
    "checkpoints": ("run_id", "n"),
    "test_reports": ("id",),
    "policy_adoptions": ("id",),
}

VOUCH_KEY = "vouch"
"""The payload key of an event's row digests: ``{"vouch": {table: {key: digest | null}}}``."""

TOUCHED = "planegate_touched"

EDITED = "the ledger was edited outside planegate; run `planegate ledger verify`"

Vouch = dict[str, dict[str, str | None]]


def _plain(value: Any) -> Any:
    # A BLOB can only get into these tables from outside planegate; tag it so it cannot collide with text.
    return {"blob": value.hex()} if isinstance(value, bytes | bytearray | memoryview) else value


def _encoder(*, sort_keys: bool) -> Callable[[Any], str]:
    """``canonical_json``'s encoding, with the C encoder built once rather than per call (it is
    most of the cost of digesting the thousands of rows a graph registration writes)."""
    if c_make_encoder is None:  # not CPython: the pure-Python encoder, same output
        return json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False).encode

    def unencodable(value: Any) -> Any:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    encode = c_make_encoder(None, unencodable, encode_basestring, None, ":", ",", sort_keys, False, True)
    return lambda value: "".join(encode(value, 0))


_encode_row = _encoder(sort_keys=True)
_encode_key = _encoder(sort_keys=False)


def row_content(row: Mapping[str, Any]) -> str:
    """The canonical JSON a row's digest covers: every non-NULL column (``canonical_json`` of them)."""
    present = {name: value for name, value in row.items() if value is not None}
    try:
        return _encode_row(present)
    except TypeError:  # a BLOB
        return _encode_row({name: _plain(value) for name, value in present.items()})


def content_digest(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()[:32]


def row_digest(row: Mapping[str, Any]) -> str:
    return content_digest(row_content(row))


def row_key(table: str, row: Mapping[str, Any]) -> str:
    """The row's primary key as canonical JSON, the form events and ``row_vouches`` use."""
    return _encode_key([row[column] for column in VOUCHED[table]])


def show_key(key: str) -> str:
    """``12`` or ``r-1/api``: a key as people read it in a message."""
    return "/".join(str(part) for part in json.loads(key))


def install_triggers(conn: sqlite3.Connection) -> None:
    """The per-connection capture of touched rows (TEMP: invisible to every other connection)."""
    conn.execute("PRAGMA temp_store = MEMORY")  # the notes live only as long as one transaction: no file for them
    statements = [
        f"CREATE TEMP TABLE IF NOT EXISTS {TOUCHED} (tbl TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (tbl, key))"
        " WITHOUT ROWID"
    ]
    for table, columns in VOUCHED.items():
        new = "json_array(" + ", ".join(f"NEW.{c}" for c in columns) + ")"
        old = "json_array(" + ", ".join(f"OLD.{c}" for c in columns) + ")"
        note = f"INSERT OR IGNORE INTO {TOUCHED} (tbl, key) VALUES ('{table}', {{}});"
        statements += [
            f"CREATE TEMP TRIGGER IF NOT EXISTS planegate_vouch_{table}_insert AFTER INSERT ON main.{table}"
            f" BEGIN {note.format(new)} END",
            f"CREATE TEMP TRIGGER IF NOT EXISTS planegate_vouch_{table}_update AFTER UPDATE ON main.{table}"
            f" BEGIN {note.format(new)} {note.format(old)} END",
            f"CREATE TEMP TRIGGER IF NOT EXISTS planegate_vouch_{table}_delete AFTER DELETE ON main.{table}"
            f" BEGIN {note.format(old)} END",
        ]
    for statement in statements:
        conn.execute(statement)


def forget_touched(conn: sqlite3.Connection) -> None:
    """Drop notes of writes made outside a ``Store.write()`` transaction (they stay unvouched);
    called as each write transaction begins."""
    conn.execute(f"DELETE FROM temp.{TOUCHED}")


class RowState(NamedTuple):
    """One touched row at commit: its digest and content, or None for both when it was deleted."""

    table: str
    key: str
    digest: str | None
    content: str | None


def touched_rows(conn: sqlite3.Connection) -> list[RowState]:
    """Every row the current transaction touched, as it stands now (called just before COMMIT)."""
    states = []
    tables = [r[0] for r in conn.execute(f"SELECT DISTINCT tbl FROM temp.{TOUCHED}")]
    for table in tables:
        columns = VOUCHED[table]
        # One indexed lookup per touched key, in one statement per table.
        on = " AND ".join(f"t.{c} = json_extract(k.key, '$[{i}]')" for i, c in enumerate(columns))
        cursor = conn.execute(
            f"SELECT k.key, t.* FROM temp.{TOUCHED} k LEFT JOIN main.{table} t ON {on} WHERE k.tbl = ?", (table,)
        )
        names = [d[0] for d in cursor.description[1:]]
        first = names.index(columns[0])
        for found in cursor:
            raw = found[0]
            # SQLite's json_array text is already canonical for plain ASCII keys (no escapes).
            key = raw if raw.isascii() and "\\" not in raw else _encode_key(json.loads(raw))
            if found[first + 1] is None:
                states.append(RowState(table, key, None, None))
                continue
            content = row_content(dict(zip(names, found[1:], strict=True)))
            states.append(RowState(table, key, content_digest(content), content))
    return states


def vouch_payload(states: Iterable[RowState]) -> Vouch:
    vouch: Vouch = {}
    for state in states:
        vouch.setdefault(state.table, {})[state.key] = state.digest
    return vouch


def index_vouches(conn: sqlite3.Connection, event_id: int, states: Iterable[RowState]) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO row_vouches (tbl, key, event_id, digest, content) VALUES (?, ?, ?, ?, ?)",
        [(s.table, s.key, event_id, s.digest, s.content) for s in states],
    )


def all_rows(conn: sqlite3.Connection) -> list[RowState]:
    """Every row of every vouched table as it stands (for a migration that vouches for them all).

    Tables a later migration creates are not there yet when an earlier one runs: they are skipped.
    """
    states = []
    present = {r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")}
    for table in VOUCHED:
        if table not in present:
            continue
        cursor = conn.execute(f"SELECT * FROM main.{table}")
        names = [d[0] for d in cursor.description]
        for found in cursor:
            row = dict(zip(names, found, strict=True))
            content = row_content(row)
            states.append(RowState(table, row_key(table, row), content_digest(content), content))
    return states


def vouch_all_rows(conn: sqlite3.Connection, *, kind: str, at: str, note: str) -> int | None:
    """Vouch for every existing row with one event saying why (inside a migration's transaction).

    Returns the event's id, or None when there was no row to vouch for.
    """
    states = all_rows(conn)
    if not states:
        return None
    last = conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
    event_id, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    payload = canonical_json({"note": note, "rows": len(states), VOUCH_KEY: vouch_payload(states)})
    actor = "planegate:upgrade"
    digest = chain_hash(prev_hash, event_body(event_id, None, None, kind, actor, at, payload))
    conn.execute(
        "INSERT INTO events (id, run_id, task_id, kind, actor, at, payload, prev_hash, hash)"
        " VALUES (?, NULL, NULL, ?, ?, ?, ?, ?, ?)",
        (event_id, kind, actor, at, payload, prev_hash, digest),
    )
    index_vouches(conn, event_id, states)
    return event_id


# -- checking rows at gate time --------------------------------------------------------------


@dataclass(frozen=True)
class RowProblem:
    """A row a gate was about to trust that its event does not vouch for."""

    table: str
    key: str
    event_id: int | None
    what: str

    @property
    def short(self) -> str:
        """``evidence 12 does not match event 431``"""
        return f"{self.table} {show_key(self.key)} {self.what}"

    def __str__(self) -> str:
        return f"{self.short}; {EDITED}"


class RowChecker:
    """Confirms rows against the events that vouch for them, caching what it has confirmed.

    A row is trusted when ``row_vouches`` names an event whose hash recomputes from its columns,
    whose successor's ``prev_hash`` links to it, and whose vouch records the row's current digest.
    This catches any edit of a row (and any forged index entry) without replaying the chain. What
    only a replay finds — a row put back to an older vouched content, a consistent rewrite of
    every later event, a deleted row — is ``ledger verify``'s job; accepting a run runs it.

    Confirmed events are immutable facts, so their vouches are cached; so is the last confirmed
    content of each row, so a row read again unchanged costs one comparison, not a digest.
    """

    def __init__(self, events: int = 64, rows: int = 4096) -> None:
        self._lock = threading.Lock()
        self._events: OrderedDict[int, Vouch] = OrderedDict()
        self._confirmed: OrderedDict[tuple[str, tuple[Any, ...]], dict[str, Any]] = OrderedDict()
        self._event_limit = events
        self._row_limit = rows

    def event_vouch(self, conn: sqlite3.Connection, event_id: int) -> Vouch | str:
        """The vouch an authentic event carries, or why the event cannot be trusted."""
        with self._lock:
            cached = self._events.get(event_id)
        if cached is not None:
            return cached
        found = conn.execute(
            "SELECT id, run_id, task_id, kind, actor, at, payload, prev_hash, hash FROM events WHERE id = ?",
            (event_id,),
        ).fetchone()
        if found is None:
            return f"names event {event_id}, which is not in the ledger"
        _, run, task, kind, actor, at, payload, prev_hash, stored = found
        successor = conn.execute("SELECT prev_hash FROM events WHERE id = ?", (event_id + 1,)).fetchone()
        if chain_hash(prev_hash, event_body(event_id, run, task, kind, actor, at, payload)) != stored:
            return f"is vouched for by event {event_id}, whose content no longer matches its hash"
        if successor is not None and successor[0] != stored:
            return f"is vouched for by event {event_id}, which the next event no longer links to"
        data = json.loads(payload)
        vouch = data.get(VOUCH_KEY) if isinstance(data, dict) else None
        result: Vouch = vouch if isinstance(vouch, dict) else {}
        with self._lock:
            self._events[event_id] = result
            while len(self._events) > self._event_limit:
                self._events.popitem(last=False)
        return result

    def check(self, conn: sqlite3.Connection, table: str, row: Mapping[str, Any]) -> RowProblem | None:
        """None when ``row`` (all its columns) is what its vouching event recorded."""
        primary = (table, tuple(row[column] for column in VOUCHED[table]))
        with self._lock:
            if self._confirmed.get(primary) == row:
                return None
        key = canonical_json(list(primary[1]))
        index = conn.execute("SELECT event_id FROM row_vouches WHERE tbl = ? AND key = ?", (table, key)).fetchone()
        if index is None:
            return RowProblem(table, key, None, "is vouched for by no event (it was written outside planegate)")
        event_id = int(index[0])
        vouch = self.event_vouch(conn, event_id)
        if isinstance(vouch, str):
            return RowProblem(table, key, event_id, vouch)
        if vouch.get(table, {}).get(key, "absent") != row_digest(row):
            return RowProblem(table, key, event_id, f"does not match event {event_id}")
        with self._lock:
            self._confirmed[primary] = dict(row)
            self._confirmed.move_to_end(primary)
            while len(self._confirmed) > self._row_limit:
                self._confirmed.popitem(last=False)
        return None
