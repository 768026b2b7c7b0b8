"""``ledger verify``: the hash chain, the rows it vouches for, the artifacts, and the anchors.

Checked, in order:
1. the event chain (``chain.verify_chain``), stopping at the first break;
2. every row of every vouched table (``vouch.VOUCHED``) against the digest its latest vouching
   event recorded: a row that no longer matches (edited), a row no event vouches for (inserted
   outside planegate), a vouched row that is gone (deleted) and a row whose latest event recorded
   its deletion (put back) are each reported with table, key and what differs;
3. each task's status and each run's stage against the last status/stage its events recorded;
4. every artifact file still hashes to the sha256 recorded for it;
5. each anchor — a chain head recorded outside the file, such as an annotated checkpoint tag —
   names an event of the verified chain with that hash, so a ledger rewritten from some event on
   (hashes recomputed, so the chain itself verifies) no longer matches what was tagged or signed.

Not vouched, and therefore not checked here: ``jobs`` and ``risks`` (bookkeeping no gate trusts),
and job heartbeats. Rows 2 and 3 are checked only when the chain holds: a broken chain vouches for
nothing. What stays out of reach: deleting the newest events (those no anchor records yet) and
rewriting the whole file together with every anchor.

State-changing events carry ``{"from": …, "to": …}`` for one task's status (the event's task),
``{"statuses": {task: status, …}}`` for many at once (registering a graph), and
``{"stage_from": …, "stage_to": …}`` for a run stage. Tasks removed by a re-registered graph
are recorded with the status ``"removed"``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chain import ChainBreak, EventRow, iter_event_rows, verify_chain
from .db import Store
from .vouch import VOUCH_KEY, VOUCHED, content_digest, row_content, row_key, show_key


@dataclass(frozen=True)
class Anchor:
    """A chain head recorded outside the ledger file: ``source`` says where (a tag, a signature)."""

    source: str
    event_id: int
    hash: str


@dataclass
class LedgerReport:
    events_verified: int
    artifacts_verified: int = 0
    rows_verified: int = 0
    anchors_verified: int = 0
    chain_break: ChainBreak | None = None
    artifact_problems: list[str] = field(default_factory=list)
    state_problems: list[str] = field(default_factory=list)
    row_problems: list[str] = field(default_factory=list)
    anchor_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.chain_break is None and not self.problems

    @property
    def problems(self) -> list[str]:
        """Everything found besides a chain break, rows first."""
        return [*self.row_problems, *self.state_problems, *self.anchor_problems, *self.artifact_problems]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _Replay:
    """What the events say, gathered while the chain is verified."""

    def __init__(self, anchored: Collection[int]) -> None:
        self.last_status: dict[tuple[str, str], str] = {}
        self.last_stage: dict[str, str] = {}
        self.vouched: dict[tuple[str, str], tuple[int, str | None]] = {}
        self.anchored = set(anchored)
        self.hashes: dict[int, str] = {}

    def watch(self, rows: Iterable[EventRow]) -> Iterator[EventRow]:
        last_status, last_stage, vouched = self.last_status, self.last_stage, self.vouched
        anchored, hashes = self.anchored, self.hashes
        for row in rows:
            payload = row[6]
            if '"to":' in payload or '"stage_to":' in payload or '"statuses":' in payload or '"vouch":' in payload:
                data = json.loads(payload)
                run = row[1]
                if run is not None and row[2] is not None and "to" in data:
                    last_status[(run, row[2])] = data["to"]
                if run is not None and isinstance(data.get("statuses"), dict):
                    for task_id, status in data["statuses"].items():
                        last_status[(run, task_id)] = status
                if run is not None and "stage_to" in data:
                    last_stage[run] = data["stage_to"]
                vouch = data.get(VOUCH_KEY)
                if isinstance(vouch, dict):
                    event_id = row[0]
                    for table, entries in vouch.items():
                        if isinstance(entries, dict):
                            for key, digest in entries.items():
                                vouched[(table, key)] = (event_id, digest)
            if anchored and row[0] in anchored:
                hashes[row[0]] = row[8]
            yield row


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:59] + "…"


def _differences(before: str, now: str) -> str:
    old, new = json.loads(before), json.loads(now)
    changed = sorted(name for name in {*old, *new} if old.get(name) != new.get(name))
    return ", ".join(f"{name} (was {_value(old.get(name))}, now {_value(new.get(name))})" for name in changed[:6]) + (
        f" and {len(changed) - 6} more column(s)" if len(changed) > 6 else ""
    )


def _vouched_content(conn: sqlite3.Connection, table: str, key: str, digest: str | None) -> str | None:
    """The index's copy of the row as vouched, when it still hashes to the event's digest."""
    if digest is None:
        return None
    found = conn.execute("SELECT content FROM row_vouches WHERE tbl = ? AND key = ?", (table, key)).fetchone()
    content = found[0] if found else None
    return content if isinstance(content, str) and content_digest(content) == digest else None


def _check_rows(conn: sqlite3.Connection, replay: _Replay, report: LedgerReport) -> None:
    vouched = replay.vouched
    seen: set[tuple[str, str]] = set()
    for table in VOUCHED:
        cursor = conn.execute(f"SELECT * FROM main.{table}")
        names = [d[0] for d in cursor.description]
        while batch := cursor.fetchmany(5_000):
            for values in batch:
                row = dict(zip(names, values, strict=True))
                key = row_key(table, row)
                seen.add((table, key))
                entry = vouched.get((table, key))
                name = f"{table} {show_key(key)}"
                if entry is None:
                    report.row_problems.append(f"{name} is vouched for by no event (inserted outside planegate)")
                    continue
                event_id, digest = entry
                if digest is None:
                    report.row_problems.append(
                        f"{name} exists, but event {event_id} recorded its deletion (put back outside planegate)"
                    )
                    continue
                content = row_content(row)
                if content_digest(content) == digest:
                    report.rows_verified += 1
                    continue
                before = _vouched_content(conn, table, key, digest)
                what = (
                    _differences(before, content)
                    if before is not None
                    else "edited (the index's copy of the vouched row was changed too, so the columns are not named)"
                )
                report.row_problems.append(f"{name} does not match event {event_id}: {what}")
    for (table, key), (event_id, digest) in vouched.items():
        if digest is not None and table in VOUCHED and (table, key) not in seen:
            before = _vouched_content(conn, table, key, digest)
            held = ""
            if before is not None:
                content = json.loads(before)
                held = "; it held " + ", ".join(f"{k}={_value(v)}" for k, v in list(content.items())[:6])
            report.row_problems.append(
                f"{table} {show_key(key)} is missing: event {event_id} vouched for it and no event deleted it "
                f"(deleted outside planegate){held}"
            )


def _check_state(conn: sqlite3.Connection, replay: _Replay, report: LedgerReport) -> None:
    last_stage, last_status = replay.last_stage, replay.last_status
    for run_id, stage in conn.execute("SELECT id, stage FROM runs"):
        if last_stage.get(run_id) != stage:
            report.state_problems.append(
                f"run {run_id}: stage is {stage!r} but its events last recorded {last_stage.get(run_id)!r}"
            )
    present: set[tuple[str, str]] = set()
    for run_id, task_id, status in conn.execute("SELECT run_id, id, status FROM tasks"):
        present.add((run_id, task_id))
        recorded = last_status.get((run_id, task_id))
        if recorded != status:
            report.state_problems.append(
                f"task {run_id}/{task_id}: status is {status!r} but its events last recorded {recorded!r}"
            )
    for (run_id, task_id), status in last_status.items():
        if (run_id, task_id) not in present and status != "removed":
            report.state_problems.append(f"task {run_id}/{task_id}: recorded as {status!r} but its row is gone")


def _check_artifacts(conn: sqlite3.Connection, runs: Collection[str] | None, report: LedgerReport) -> None:
    for artifact_id, run_id, path, expected in conn.execute(
        "SELECT id, run_id, path, sha256 FROM artifacts ORDER BY id"
    ):
        if runs is not None and run_id not in runs:
            continue
        file = Path(path)
        if not file.is_file():
            report.artifact_problems.append(f"artifact {artifact_id}: {path} is missing")
        elif _sha256_file(file) != expected:
            report.artifact_problems.append(f"artifact {artifact_id}: {path} no longer hashes to {expected[:12]}…")
        else:
            report.artifacts_verified += 1


def _check_anchors(anchors: list[Anchor], replay: _Replay, report: LedgerReport) -> None:
    broken_at = report.chain_break.event_id if report.chain_break else None
    for anchor in anchors:
        recorded = replay.hashes.get(anchor.event_id)
        if broken_at is not None and anchor.event_id >= broken_at:
            report.anchor_problems.append(
                f"{anchor.source} records event {anchor.event_id}, which the broken chain cannot vouch for"
            )
        elif recorded is None:
            report.anchor_problems.append(
                f"{anchor.source} records event {anchor.event_id} (hash {anchor.hash[:12]}…), which the ledger "
                f"does not have ({report.events_verified} events): its newest events were removed"
            )
        elif recorded != anchor.hash:
            report.anchor_problems.append(
                f"{anchor.source} records event {anchor.event_id} with hash {anchor.hash[:12]}…, but the ledger's "
                f"event {anchor.event_id} hashes to {recorded[:12]}…: the ledger was rewritten after it was tagged"
            )
        else:
            report.anchors_verified += 1


def verify_ledger(
    store: Store, *, anchors: Iterable[Anchor] = (), artifact_runs: Collection[str] | None = None
) -> LedgerReport:
    """Check everything the ledger can vouch for; ``artifact_runs`` limits the artifacts re-hashed."""
    anchor_list = list(anchors)
    replay = _Replay({a.event_id for a in anchor_list})
    with store.reader() as conn:  # one consistent read of the whole file, beside the store's own connection
        chain = verify_chain(replay.watch(iter_event_rows(conn)))
        report = LedgerReport(events_verified=chain.verified, chain_break=chain.broken)
        if chain.broken is None:
            _check_rows(conn, replay, report)
            _check_state(conn, replay, report)
        _check_artifacts(conn, artifact_runs, report)
    _check_anchors(anchor_list, replay, report)
    return report
