"""Big payloads as links: which artifacts a reply names, and serving an artifact's full content.

A tool reply stays small: a check's log, a review's packet and reply, an executor's output and
the run report are named by a link (``planegate://runs/{run}/artifacts/{id}``, the id being the
artifact's row) with a short summary inline; the client reads the link when it wants the whole
thing. Serving re-hashes the file against the sha256 the ledger recorded, so what a client reads
through a link is what planegate recorded, or an error saying it is not.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path
from typing import Any

from planegate.store import placeholders

from ..env import Env
from ..errors import NotFound, PlanegateError
from ..models import (
    AcceptRunResult,
    ChecksResult,
    JobResult,
    Link,
    ReviewRequestResult,
    ReviewResult,
    artifact_uri,
    report_uri,
    set_links,
)

SUMMARY_CHARS = 600
DETAIL_CHARS = 500
FINDINGS_SHOWN = 25
LINKS_SHOWN = 8

_MIME = {
    ".md": "text/markdown",
    ".patch": "text/x-diff",
    ".diff": "text/x-diff",
    ".log": "text/plain",
    ".txt": "text/plain",
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".xml": "application/xml",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class ArtifactChanged(PlanegateError):
    """An artifact's file no longer hashes to what the ledger recorded."""


def mime_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return _MIME.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def is_text(mime: str) -> bool:
    return mime.startswith("text/") or mime in ("application/json", "application/jsonl", "application/xml")


# A review's packet parts are all inside prompt.md; linking each would only repeat it.
PACKET_PARTS = {"envelope.md", "requirements.md", "evidence.md", "tests.md", "prompt-attached.md"}


def artifact_links(env: Env, run: str, owners: list[str]) -> list[Link]:
    """Links to the non-empty artifacts of ``owners`` (``evidence:12``, ``review:rv-…``, ``job:7``),
    in the owners' order, at most ``LINKS_SHOWN``."""
    if not owners:
        return []
    rows = env.store.rows(
        f"SELECT id, owner, name, bytes FROM artifacts WHERE run_id = ? AND owner IN ({placeholders(owners)})"
        " AND bytes > 0 ORDER BY id",
        (run, *owners),
    )
    rank = {owner: i for i, owner in enumerate(owners)}
    rows = [r for r in rows if not (r["owner"].startswith("review:") and r["name"] in PACKET_PARTS)]
    rows.sort(key=lambda r: (rank[r["owner"]], r["id"]))
    return [
        Link(uri=artifact_uri(run, r["id"]), name=r["name"], mime_type=mime_type(r["name"]), bytes=r["bytes"])
        for r in rows[:LINKS_SHOWN]
    ]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def attach_links(env: Env, result: Any) -> Any:
    """Fill ``result.links`` for the replies that point at artifacts, and cut the long texts those
    artifacts hold in full (a check's summary, a finding's detail). Returns ``result``."""
    if isinstance(result, ChecksResult) or (isinstance(result, JobResult) and result.checks):
        lines = result.results if isinstance(result, ChecksResult) else (result.checks or [])
        # The logs of what failed come first: those are the ones to read.
        ordered = sorted(lines, key=lambda line: line.exit_code == 0 and line.label == "direct")
        set_links(result, artifact_links(env, result.run, [f"evidence:{line.evidence}" for line in ordered]))
        for line in lines:
            line.summary = _cut(line.summary, SUMMARY_CHARS)
    elif isinstance(result, JobResult):
        set_links(result, artifact_links(env, result.run, [f"job:{result.job}"]))
    elif isinstance(result, ReviewRequestResult | ReviewResult):
        set_links(result, artifact_links(env, result.run, [f"review:{result.review}"]))
    if isinstance(result, ReviewResult):
        if result.summary:
            result.summary = _cut(result.summary, SUMMARY_CHARS * 2)
        hidden = len(result.findings) - FINDINGS_SHOWN
        result.findings = result.findings[:FINDINGS_SHOWN]
        for finding in result.findings:
            finding.detail = _cut(finding.detail, DETAIL_CHARS)
        if hidden > 0:
            result.notes = [*result.notes, f"{hidden} more finding(s) are in the review's reply (links)"]
    if isinstance(result, AcceptRunResult):
        set_links(
            result, [Link(uri=report_uri(result.run), name=f"report of run {result.run}", mime_type="text/markdown")]
        )
    return result


def read_artifact(env: Env, run: str, artifact: str) -> tuple[bytes, str]:
    """The recorded content of artifact ``artifact`` of ``run`` and its MIME type.

    Raises:
        NotFound: no such artifact in that run.
        ArtifactChanged: the file is gone or no longer hashes to the recorded sha256.
    """
    row = None
    if artifact.isdigit():
        row = env.store.one("SELECT * FROM artifacts WHERE id = ? AND run_id = ?", (int(artifact), run))
    if row is None:
        env.run_row(run)
        raise NotFound(
            f"artifact {artifact!r} is not an artifact of run {run!r}; use the links the tools return "
            f"(planegate://runs/{run}/artifacts/<id>)"
        )
    what = f"artifact {row['id']} ({row['name']}, {row['owner']}) of run {run!r}"
    try:
        data = Path(row["path"]).read_bytes()
    except OSError as exc:
        raise ArtifactChanged(
            f"{what} cannot be read at {row['path']} ({exc.strerror or exc}); the recorded file is gone. "
            "Run `planegate ledger verify` to see every artifact that changed"
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != row["sha256"]:
        raise ArtifactChanged(
            f"{what} does not match its recorded sha256 (recorded {row['sha256'][:16]}…, now {actual[:16]}…): "
            "it was changed after planegate recorded it. Run `planegate ledger verify` to see every artifact "
            "that changed"
        )
    return data, mime_type(row["name"])
