"""The SQLite ledger: runs, tasks, jobs, evidence, reviews and the hash-chained events.

Knows nothing of MCP or git. ``Store`` opens (and migrates) a ledger file; ``Store.write()``
is a write transaction whose ``Writer.event`` appends to the chain and whose last event vouches
for the rows it wrote; ``Store.check_row`` confirms a row against its event; ``verify_ledger``
checks everything. ``LedgerUnavailable`` says why the file cannot be used (read-only, disk full,
not a database, corrupt); ``record_incident`` keeps an unexpected exception under an id;
``backup_ledger`` copies a live ledger with SQLite's online backup.
"""

from .backup import BackupRefused, BackupResult, backup_ledger
from .chain import GENESIS, ChainBreak, canonical_json
from .db import ChainHead, LedgerUnavailable, Store, StoreBusy, StoreError, Writer, now_iso, placeholders
from .incidents import record_incident
from .verify import Anchor, LedgerReport, verify_ledger
from .vouch import EDITED, VOUCHED, RowProblem

__all__ = [
    "EDITED",
    "GENESIS",
    "VOUCHED",
    "Anchor",
    "BackupRefused",
    "BackupResult",
    "ChainBreak",
    "ChainHead",
    "LedgerReport",
    "LedgerUnavailable",
    "RowProblem",
    "Store",
    "StoreBusy",
    "StoreError",
    "Writer",
    "backup_ledger",
    "canonical_json",
    "now_iso",
    "placeholders",
    "record_incident",
    "verify_ledger",
]
