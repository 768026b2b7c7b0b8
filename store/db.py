"""The ledger connection: WAL, a busy timeout, and write transactions that lock up front.

One ``Store`` wraps one SQLite connection shared by the threads of a process (a lock
serialises them); several processes share the file through SQLite's own locking. Every write
goes through ``Store.write()``, which opens ``BEGIN IMMEDIATE`` so a writer holds the write lock
before it reads what it is about to change; compare-and-set updates inside it therefore see the
latest committed state and two processes racing for one change give one winner.

Every state change appends its event inside the same transaction (``Writer.event``); a
transaction that raises is rolled back whole, events included. Event ids are assigned when
``Writer.event`` is called, but the events are inserted (and hashed) at commit, so that the last
one can carry the digests of every vouched row the transaction wrote (``vouch``).

A ledger that cannot be used — its folder read-only, its disk full, the file not a database or
corrupt — raises ``LedgerUnavailable`` from wherever SQLite (or the file system) said so: while
opening, reading, or writing. It names the file, the cause and the next step. A write that fails
this way is rolled back whole, so nothing is half-written; the ``Store`` stays usable and the next
call simply tries again (space freed, folder made writable).
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from sqlite_utils import Database

from .chain import GENESIS, canonical_json, chain_hash, event_body
from .vouch import (
    VOUCH_KEY,
    RowChecker,
    RowProblem,
    forget_touched,
    index_vouches,
    install_triggers,
    touched_rows,
    vouch_payload,
)

Params = Sequence[Any] | Mapping[str, Any]


class StoreError(Exception):
    """Base of the ledger's own errors."""


class StoreBusy(StoreError):
    """The write lock stayed taken by another process for longer than the busy timeout."""


class LedgerUnavailable(StoreError):
    """The ledger file cannot be used: read-only, disk full, not a database, corrupt, unopenable.

    ``cause`` is one of ``CAUSES``; the message names the file, what SQLite or the OS said, and
    the next step.
    """

    def __init__(self, path: Path, cause: str, detail: str) -> None:
        self.path = path
        self.cause = cause
        self.detail = detail
        super().__init__(_unavailable_message(path, cause, detail))


CAUSES = ("read-only", "disk full", "not a database", "malformed", "cannot open", "I/O error")
_RESTORE = (
    "stop every planegate process using it, move it aside and put your latest backup in its place "
    "(`planegate ledger backup PATH` makes one; README: Operations, When the ledger is broken), then run "
    "`planegate ledger verify`"
)


def _unavailable_message(path: Path, cause: str, detail: str) -> str:
    folder = path.parent
    if cause == "read-only":
        folder = next((f for f in (folder, *folder.parents) if f.exists()), folder)  # the one that exists
        return (
            f"the ledger at {path} cannot be written: {folder} is read-only ({detail}); nothing was written. "
            f"Make {folder} writable by this user or point PLANEGATE_HOME at a writable folder, then call again"
        )
    if cause == "disk full":
        return (
            f"the ledger at {path} cannot be written: the disk holding {folder} is full ({detail}); the change was "
            f"rolled back, nothing was half-written. Free space on that disk (`df -h {folder}`), then call again"
        )
    if cause == "not a database":
        return (
            f"the ledger at {path} is not a SQLite database ({detail}); planegate will not touch it. "
            f"To recover: {_RESTORE}"
        )
    if cause == "malformed":
        return f"the ledger at {path} is corrupt ({detail}); planegate will not write to it. To recover: {_RESTORE}"
    if cause == "cannot open":
        return (
            f"the ledger at {path} cannot be opened ({detail}); check that {folder} exists and that this user may "
            "read and write it (or point PLANEGATE_HOME elsewhere), then call again"
        )
    return (
        f"the ledger at {path} hit an I/O error ({detail}); check the disk (`dmesg`), then call again; "
        f"if it repeats: {_RESTORE}"
    )


# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_CAUSES = {3: "read-only", 8: "read-only", 10: "I/O error", 11: "malformed", 13: "disk full", 14: "cannot open"}
_SQLITE_NOTADB = 26
_OS_CAUSES = {
    errno.EROFS: "read-only",
    errno.EACCES: "read-only",
    errno.EPERM: "read-only",
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk full",
}


def _writable(folder: Path) -> bool:
    try:
        return os.access(folder, os.W_OK) and not os.statvfs(folder).f_flag & os.ST_RDONLY
    except OSError:
        return False


def ledger_problem(exc: BaseException, path: Path) -> LedgerUnavailable | None:
    """What ``exc`` says about the ledger file, or None when it is not about the file (a bug, a lock)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return None
        primary = code & 0xFF
        detail = str(exc)
        if primary == _SQLITE_NOTADB:
            cause = "not a database"
        elif primary in _SQLITE_CAUSES:
            cause = _SQLITE_CAUSES[primary]
        else:
            return None
        if cause in ("cannot open", "I/O error") and path.parent.is_dir() and not _writable(path.parent):
            cause = "read-only"  # SQLite cannot create the -wal/-shm files beside a ledger in a read-only folder
        return LedgerUnavailable(path, cause, detail)
    if isinstance(exc, OSError):
        cause = _OS_CAUSES.get(exc.errno or 0, "I/O error")
        detail = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        return LedgerUnavailable(path, cause, detail)
    return None


@contextmanager
def translated(path: Path) -> Iterator[None]:
    """Raise ``LedgerUnavailable`` instead of the SQLite or OS error that says the file is unusable."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        problem = ledger_problem(exc, path)
        if problem is None:
            raise
        raise problem from exc


def now_iso(offset_seconds: float = 0.0) -> str:
    """UTC time as an ISO-8601 string with milliseconds; such strings sort in time order."""
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def placeholders(values: Sequence[Any]) -> str:
    """``?, ?, ?`` for an ``IN (...)`` list of ``values``."""
    return ", ".join("?" for _ in values)


def _rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class _Access:
    """Query helpers shared by plain reads and writers."""

    conn: sqlite3.Connection

    def rows(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        return _rows(self.conn.execute(sql, params))

    def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        cursor = self.conn.execute(sql, params)
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cursor.description], row, strict=True))

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]


class ChainHead(NamedTuple):
    """The newest event of the chain: its id (0 for an empty ledger) and hash."""

    event_id: int
    hash: str


def _chain_head(conn: sqlite3.Connection) -> ChainHead:
    last = conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
    return ChainHead(int(last[0]), str(last[1])) if last else ChainHead(0, GENESIS)


class _Pending(NamedTuple):
    event_id: int
    run: str | None
    task: str | None
    kind: str
    text: str  # canonical_json(payload), made when the event is written
    vouch_last: bool  # no payload key sorts after "vouch": the digests can be appended to the text


class Writer(_Access):
    """The handle a write transaction yields: queries, compare-and-set, and events."""

    def __init__(self, store: Store, actor: str) -> None:
        self.conn = store.conn
        self.db = store.db
        self.actor = actor
        self.at = now_iso()
        self.events: list[int] = []
        self._pending: list[_Pending] = []
        self._head: ChainHead | None = None  # read at the first event; the write lock keeps it still

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def insert(self, table: str, row: Mapping[str, Any]) -> int:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
        cursor = self.conn.execute(sql, tuple(row.values()))
        return int(cursor.lastrowid or 0)

    def cas(self, table: str, key: Mapping[str, Any], expected: Mapping[str, Any], changes: Mapping[str, Any]) -> bool:
        """Update one row only if its ``expected`` columns still hold; True when it did.

        An expected value that is a tuple or set matches any of its members.
        """
        where: list[str] = []
        params: list[Any] = []
        for column, value in [*key.items(), *expected.items()]:
            if isinstance(value, tuple | set | frozenset):
                where.append(f"{column} IN ({', '.join('?' for _ in value)})")
                params.extend(value)
            elif value is None:
                where.append(f"{column} IS NULL")
            else:
                where.append(f"{column} = ?")
                params.append(value)
        sets = ", ".join(f"{column} = ?" for column in changes)
        cursor = self.conn.execute(
            f"UPDATE {table} SET {sets} WHERE {' AND '.join(where)}",
            [*changes.values(), *params],
        )
        return cursor.rowcount == 1

    def event(self, kind: str, /, *, run: str | None = None, task: str | None = None, **payload: Any) -> int:
        """Append one event to the chain (written when the transaction commits); returns its id."""
        if VOUCH_KEY in payload:
            raise ValueError(f"event payload key {VOUCH_KEY!r} is the ledger's own; name the value otherwise")
        text = canonical_json(payload)  # a payload that cannot be serialised fails here, where it was made
        if self._head is None:
            self._head = _chain_head(self.conn)
        event_id = self._head.event_id + len(self._pending) + 1
        self._pending.append(_Pending(event_id, run, task, kind, text, all(key < VOUCH_KEY for key in payload)))
        self.events.append(event_id)
        return event_id

    def chain_head(self) -> ChainHead:
        """The newest committed event (this transaction's own events are not in the chain yet)."""
        return _chain_head(self.conn)

    def _commit_events(self) -> None:
        """Vouch for the rows this transaction wrote in its last event, then chain and insert its events."""
        states = touched_rows(self.conn)
        if states and not self._pending:
            # Rows written with no event of their own (a review's job id, a conversation url).
            runs = {json.loads(s.content).get("run_id") for s in states if s.content is not None}
            self.event("ledger.rows", run=runs.pop() if len(runs) == 1 else None)
        if not self._pending:
            return
        last = self._pending[-1]
        if states:
            vouch = vouch_payload(states)
            if last.vouch_last:  # the canonical text of the payload plus one last key, without re-encoding it
                joint = "," if last.text != "{}" else ""
                text = f'{last.text[:-1]}{joint}"{VOUCH_KEY}":{canonical_json(vouch)}}}'
            else:
                text = canonical_json({**json.loads(last.text), VOUCH_KEY: vouch})
            self._pending[-1] = last._replace(text=text)
        assert self._head is not None
        prev_hash = self._head.hash
        rows = []
        for pending in self._pending:
            body_payload = pending.text
            event_id, run, task, kind = pending.event_id, pending.run, pending.task, pending.kind
            digest = chain_hash(prev_hash, event_body(event_id, run, task, kind, self.actor, self.at, body_payload))
            rows.append((event_id, run, task, kind, self.actor, self.at, body_payload, prev_hash, digest))
            prev_hash = digest
        self.conn.executemany(
            "INSERT INTO events (id, run_id, task_id, kind, actor, at, payload, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        if states:
            index_vouches(self.conn, last.event_id, states)


class Store(_Access):
    """The ledger file: open it, read from it, write to it in transactions."""

    db: Database

    def __init__(self, path: Path | str, *, actor: str = "planegate", busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.actor = actor
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        conn = None
        try:
            with translated(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # isolation_level=None: transactions are ours to open (BEGIN IMMEDIATE), never implicit.
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
                self.conn = conn
                self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
                self._set_wal()
                self.conn.execute("PRAGMA synchronous = NORMAL")
                self.conn.execute("PRAGMA foreign_keys = ON")
                from sqlite_utils import Database  # imported here: it costs start-up time and serves migrations

                self.db = Database(self.conn, recursive_triggers=False, execute_plugins=False)
                from .schema import migrate

                with self._locked_transaction():
                    migrate(self.db)
                install_triggers(self.conn)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self.rows_checker = RowChecker()

    def _set_wal(self) -> None:
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise  # read-only, full, not a database: ``translated`` names it
                if time.monotonic() > deadline:
                    raise StoreBusy(f"could not open the ledger at {self.path}: {exc}") from exc
                time.sleep(0.05)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _locked_transaction(self) -> Iterator[None]:
        with self._lock, translated(self.path):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise StoreBusy(
                        f"the ledger at {self.path} stayed locked by another process for "
                        f"{self.busy_timeout_s:.0f} s; nothing was written, retry the call"
                    ) from exc
                raise
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full) may leave the transaction open or have ended it: roll
                # back what is left, so nothing of it stays and the connection can be used again.
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    @contextmanager
    def write(self, actor: str | None = None) -> Iterator[Writer]:
        """One write transaction; the lock is taken before anything is read.

        At commit the rows it wrote are vouched for by its last event (see ``vouch``).
        """
        with self._locked_transaction():
            forget_touched(self.conn)
            writer = Writer(self, actor or self.actor)
            yield writer
            writer._commit_events()

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own, reading one consistent state, for long reads (``ledger verify``)
        that should not hold up this store's other threads."""
        with translated(self.path):
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=self.busy_timeout_s)
            try:
                conn.execute("BEGIN")
                yield conn
                conn.execute("COMMIT")
            finally:
                conn.close()

    @contextmanager
    def snapshot(self) -> Iterator[_Access]:
        """Several reads that see one consistent state."""
        with self._lock, translated(self.path):
            self.conn.execute("BEGIN")
            try:
                yield self
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")

    def rows(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        with self._lock, translated(self.path):
            return super().rows(sql, params)

    def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        with self._lock, translated(self.path):
            return super().one(sql, params)

    def scalar(self, sql: str, params: Params = ()) -> Any:
        with self._lock, translated(self.path):
            return super().scalar(sql, params)

    def event_count(self) -> int:
        return int(self.scalar("SELECT COALESCE(MAX(id), 0) FROM events"))

    def chain_head(self) -> ChainHead:
        """The newest event's id and hash: what an anchor outside the file (a tag, a signature) records."""
        with self._lock, translated(self.path):
            return _chain_head(self.conn)

    def check_row(self, table: str, row: Mapping[str, Any]) -> RowProblem | None:
        """None when ``row`` (every column of a vouched table's row) is what its event vouched for."""
        with self._lock, translated(self.path):
            return self.rows_checker.check(self.conn, table, row)
