"""How a tool result goes on the wire: a short text for people and text-only clients, the full
result as ``structuredContent``, and a ``resource_link`` block for each big payload it names.

What each client shows its model: Claude Code and Codex read ``structuredContent`` when the tool
has an ``outputSchema`` (every planegate tool does) and leave the text block out; Claude Code
keeps the non-text blocks, so the links reach its model as resource links, and Codex sees them in
the structured result's ``links``. Other clients read the text block, so it is written for them:
a few lines saying what happened and the next step, followed by the compact JSON of the result
when that is small, or a pointer to ``structuredContent`` when it is not. The text is never a
second, pretty-printed copy of a big result.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mcp_types import CallToolResult, ResourceLink, TextContent
from pydantic import BaseModel

if TYPE_CHECKING:
    from planegate.tools.models import Link, StatusResult

JSON_IN_TEXT = 1_000
"""Compact JSON of a result up to this many bytes is appended to the text; a bigger one is not."""
LINES_SHOWN = 8


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _drop_empty(value: Any) -> Any:
    """The result without nulls and empty lists or maps: what a reader of the text needs."""
    if isinstance(value, dict):
        kept = {k: _drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, [], {}, "")}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def _more(items: list[str], total: int | None = None) -> str:
    shown = items[:LINES_SHOWN]
    extra = (total if total is not None else len(items)) - len(shown)
    return ", ".join(shown) + (f" (+{extra} more)" if extra > 0 else "")


def _status_lines(result: StatusResult) -> list[str]:
    if result.status is None:
        runs = result.runs or []
        lines = [f"{result.runs_total or 0} run(s)" + (", newest first:" if runs else "")]
        lines += [f"- {r.run}: {r.stage}, {r.tasks} task(s): {r.goal}" for r in runs[:LINES_SHOWN]]
        if len(runs) > LINES_SHOWN:
            lines.append(f"- … {len(runs) - LINES_SHOWN} more listed in structuredContent")
        return lines
    s = result.status
    counts = ", ".join(f"{n} {k}" for k, n in sorted(s.counts.items())) or "no tasks registered"
    lines = [f"run {s.run}: {s.stage}; tasks: {counts}"]
    if s.active:
        active = [
            f"{t.task} {t.status}" + (f" (unmet: {', '.join(g.gate for g in t.gates)})" if t.gates else "")
            for t in s.active
        ]
        lines.append("active: " + _more(active, len(active) + s.more.get("active", 0)))
    if s.ready:
        lines.append("ready: " + _more(s.ready, len(s.ready) + s.more.get("ready", 0)))
    if s.blocked:
        lines.append(f"blocked: {len(s.blocked) + s.more.get('blocked', 0)} task(s), e.g. {s.blocked[0].task}")
    lines += [f"risk: {risk}" for risk in s.risks[:3]]
    if len(s.risks) > 3:
        lines.append(f"… {len(s.risks) - 3} more risk(s)")
    return lines


_IDENTITY = (
    "run",
    "task",
    "job",
    "review",
    "kind",
    "executor",
    "stage",
    "state",
    "verdict",
    "all_passed",
    "version",
    "merge_sha",
    "checkpoint",
    "worktree",
)


def _generic_lines(result: BaseModel) -> list[str]:
    values = result.__dict__
    head = [f"{k}={values[k]}" for k in _IDENTITY if values.get(k) not in (None, "", [])]
    lines = ["; ".join(head)] if head else []
    for line in values.get("results") or values.get("checks") or []:
        lines.append(f"- {line.check}: exit {line.exit_code} ({line.label}) {line.summary.splitlines()[0][:160]}")
    for finding in (values.get("findings") or [])[:LINES_SHOWN]:
        where = f" {finding.file}:{finding.line}" if finding.file else ""
        lines.append(f"- {finding.severity}{where}: {finding.title}")
    gates = values.get("gates") or []
    unmet = [g for g in gates if not g.ok]
    if gates:
        lines.append("gates: " + ("all hold" if not unmet else "unmet " + ", ".join(g.gate for g in unmet)))
    for key in ("summary", "progress", "error", "note"):
        text = values.get(key)
        if isinstance(text, str) and text:
            lines.append(f"{key}: {text.splitlines()[0][:300]}")
    return lines


def summary(tool: str, result: BaseModel) -> str:
    """A few lines on what the call did or found, and the next step."""
    from planegate.tools.models import StatusResult

    lines = _status_lines(result) if isinstance(result, StatusResult) else _generic_lines(result)
    workers = getattr(result, "workers", None)
    if workers:
        lines.append(f"workers: {workers}")
    step = getattr(result, "next_step", None) or getattr(result, "next_action", None)
    if step:
        lines.append(f"next: {step}")
    return f"{tool}: " + "\n".join(lines) if lines else tool


def resource_link(link: Link) -> ResourceLink:
    return ResourceLink(
        type="resource_link", uri=link.uri, name=link.name, mime_type=link.mime_type or None, size=link.bytes
    )


def reply(tool: str, result: BaseModel, structured: dict[str, Any]) -> CallToolResult:
    """The ``CallToolResult`` for ``result`` (already validated and dumped as ``structured``)."""
    from planegate.tools.models import link_details

    text = summary(tool, result)
    size = len(result.model_dump_json())  # the serializer's own pass: cheap even for a big status
    compact = _compact(_drop_empty(structured)) if size <= 2 * JSON_IN_TEXT else None
    if compact is not None and len(compact) <= JSON_IN_TEXT:
        text += "\n" + compact
    else:
        text += "".join(f"\nlink: {link.name} {link.uri}" for link in link_details(result))
        text += f"\n(the whole result, {size} bytes of JSON, is the structured content)"
    content: list[Any] = [TextContent(type="text", text=text)]
    content += [resource_link(link) for link in link_details(result)]
    return CallToolResult(content=content, structured_content=structured)
