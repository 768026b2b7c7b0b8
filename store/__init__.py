"""The SQLite ledger: runs, tasks, jobs, evidence, reviews and the hash-chained events.

Knows nothing of MCP or git. ``Store`` opens (and migrates) a ledger file; ``Store.write()``
is a write transaction whose ``Writer.event`` appends to the chain; ``verify_ledger`` checks it.
"""

from .chain import GENESIS, ChainBreak, canonical_json
from .db import Store, StoreBusy, StoreError, Writer, now_iso, placeholders
from .verify import LedgerReport, verify_ledger

__all__ = [
    "GENESIS",
    "ChainBreak",
    "LedgerReport",
    "Store",
    "StoreBusy",
    "StoreError",
    "Writer",
    "canonical_json",
    "now_iso",
    "placeholders",
    "verify_ledger",
]
