"""``planegate ledger backup``: a consistent copy of a live ledger, made with SQLite's online backup.

The copy is read from its own read-only connection in one step: in WAL mode that reader sees one
committed state and blocks no writer, so servers and workers keep running while it is made. It is
written beside the target under a temporary name, checked (``PRAGMA integrity_check``, the events
counted, the chain head read), switched to a rollback journal so that it is one self-contained
file, synced, and only then renamed into place: a backup that exists is whole.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .db import LedgerUnavailable, StoreError, translated


class BackupRefused(StoreError):
    """The backup was not made: the target exists, is the ledger itself, or the copy is not sound."""


@dataclass(frozen=True)
class BackupResult:
    target: Path
    bytes: int
    events: int
    head_event: int
    head_hash: str
    seconds: float


def _open_source(source: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A read-only connection to the ledger. In a folder this process cannot write, SQLite cannot
    make the WAL index a reader needs; there nothing can write the ledger either, so it is read as
    immutable."""
    with translated(source):
        try:
            conn = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True, timeout=busy_timeout_s)
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            if os.access(source.parent, os.W_OK) and not os.statvfs(source.parent).f_flag & os.ST_RDONLY:
                raise
            conn.close()
        return sqlite3.connect(f"{source.as_uri()}?mode=ro&immutable=1", uri=True, timeout=busy_timeout_s)


def backup_ledger(source: Path, target: Path, *, busy_timeout_s: float = 30.0, force: bool = False) -> BackupResult:
    """Copy the ledger at ``source`` to ``target``.

    Raises:
        BackupRefused: ``target`` exists (without ``force``), is ``source``, or the copy fails its check.
        LedgerUnavailable: the ledger cannot be read, or the target's folder cannot be written.
    """
    started = time.monotonic()
    source = source.resolve()
    target = target.expanduser().resolve()
    if target == source:
        raise BackupRefused(f"{target} is the ledger itself; name another file for the backup")
    if target.is_dir():
        raise BackupRefused(f"{target} is a folder; name the backup file, e.g. {target / 'ledger-backup.db'}")
    if target.exists() and not force:
        raise BackupRefused(f"{target} exists; name a new file, or pass --force to replace it")
    if not source.is_file():
        raise LedgerUnavailable(source, "cannot open", "no such file")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        src = _open_source(source, busy_timeout_s)
        try:
            with translated(target):
                partial.parent.mkdir(parents=True, exist_ok=True)
                dst = sqlite3.connect(partial, isolation_level=None)
            try:
                with translated(source):
                    src.backup(dst)  # one step: one consistent state, read without blocking writers
                with translated(target):
                    dst.execute("PRAGMA journal_mode = DELETE")
                    check = [row[0] for row in dst.execute("PRAGMA integrity_check").fetchall()]
                    if check != ["ok"]:
                        raise BackupRefused(
                            f"the ledger at {source} fails SQLite's integrity check ({'; '.join(check[:3])}); "
                            "a copy would be as broken, so none was made. Restore an earlier backup instead"
                        )
                    events = int(dst.execute("SELECT COUNT(*) FROM events").fetchone()[0])
                    head = dst.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
            finally:
                dst.close()
        finally:
            src.close()
        with translated(target):
            with partial.open("rb") as handle:
                os.fsync(handle.fileno())
            partial.replace(target)
            folder = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupResult(
        target=target,
        bytes=target.stat().st_size,
        events=events,
        head_event=int(head[0]) if head else 0,
        head_hash=str(head[1]) if head else "",
        seconds=time.monotonic() - started,
    )
