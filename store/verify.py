"""``ledger verify``: the hash chain, the artifacts, and the state tables against the events.

Three things are checked, in order, and the first failure of each kind is reported:
1. the event chain (``chain.verify_chain``);
2. every artifact file still hashes to the sha256 recorded for it;
3. each task's status and each run's stage equal the last status/stage its events recorded, so
   an ``UPDATE tasks SET status = 'accepted'`` made outside planegate is found even though the
   state tables themselves are not chained.

State-changing events carry ``{"from": …, "to": …}`` for one task's status (the event's task),
``{"statuses": {task: status, …}}`` for many at once (registering a graph), and
``{"stage_from": …, "stage_to": …}`` for a run stage. Tasks removed by a re-registered graph
are recorded with the status ``"removed"``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .chain import ChainBreak, iter_event_rows, verify_chain
from .db import Store


@dataclass
class LedgerReport:
    events_verified: int
    artifacts_verified: int = 0
    chain_break: ChainBreak | None = None
    artifact_problems: list[str] = field(default_factory=list)
    state_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.chain_break is None and not self.artifact_problems and not self.state_problems


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_ledger(store: Store) -> LedgerReport:
    last_status: dict[tuple[str, str], str] = {}
    last_stage: dict[str, str] = {}

    def watch_state(rows):  # type: ignore[no-untyped-def]
        for row in rows:
            payload = row[6]
            if '"to":' in payload or '"stage_to":' in payload or '"statuses":' in payload:
                data = json.loads(payload)
                if row[1] is not None and row[2] is not None and "to" in data:
                    last_status[(row[1], row[2])] = data["to"]
                if row[1] is not None and isinstance(data.get("statuses"), dict):
                    for task_id, status in data["statuses"].items():
                        last_status[(row[1], task_id)] = status
                if row[1] is not None and "stage_to" in data:
                    last_stage[row[1]] = data["stage_to"]
            yield row

    with store._lock:  # one consistent read of the whole file
        chain = verify_chain(watch_state(iter_event_rows(store.conn)))
        report = LedgerReport(events_verified=chain.verified, chain_break=chain.broken)
        for row in store.conn.execute("SELECT id, path, sha256 FROM artifacts ORDER BY id"):
            artifact_id, path, expected = row
            file = Path(path)
            if not file.is_file():
                report.artifact_problems.append(f"artifact {artifact_id}: {path} is missing")
            elif _sha256_file(file) != expected:
                report.artifact_problems.append(f"artifact {artifact_id}: {path} no longer hashes to {expected[:12]}…")
            else:
                report.artifacts_verified += 1
        if chain.broken is None:
            for run_id, stage in store.conn.execute("SELECT id, stage FROM runs"):
                if last_stage.get(run_id) != stage:
                    report.state_problems.append(
                        f"run {run_id}: stage is {stage!r} but its events last recorded {last_stage.get(run_id)!r}"
                    )
            present: set[tuple[str, str]] = set()
            for run_id, task_id, status in store.conn.execute("SELECT run_id, id, status FROM tasks"):
                present.add((run_id, task_id))
                recorded = last_status.get((run_id, task_id))
                if recorded != status:
                    report.state_problems.append(
                        f"task {run_id}/{task_id}: status is {status!r} but its events last recorded {recorded!r}"
                    )
            for (run_id, task_id), status in last_status.items():
                if (run_id, task_id) not in present and status != "removed":
                    report.state_problems.append(f"task {run_id}/{task_id}: recorded as {status!r} but its row is gone")
    return report
