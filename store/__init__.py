"""The SQLite ledger: runs, tasks, jobs, evidence, reviews and the hash-chained events.

Knows nothing of MCP or git. ``Store`` opens (and migrates) a ledger file; ``Store.write()``
is a write transaction whose ``Writer.event`` appends to the chain and whose last event vouches
for the rows it wrote; ``Store.check_row`` confirms a row against its event; ``verify_ledger``
checks everything.
"""

from .chain import GENESIS, ChainBreak, canonical_json
from .db import ChainHead, Store, StoreBusy, StoreError, Writer, now_iso, placeholders
from .verify import Anchor, LedgerReport, verify_ledger
from .vouch import EDITED, VOUCHED, RowProblem

__all__ = [
    "EDITED",
    "GENESIS",
    "VOUCHED",
    "Anchor",
    "ChainBreak",
    "ChainHead",
    "LedgerReport",
    "RowProblem",
    "Store",
    "StoreBusy",
    "StoreError",
    "Writer",
    "canonical_json",
    "now_iso",
    "placeholders",
    "verify_ledger",
]
