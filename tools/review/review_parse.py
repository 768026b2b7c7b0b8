"""Reading a reviewer's reply: find the one JSON block, validate it, check its nonce.

A reply is untrusted text. The block is looked for, in order, between the marker lines
``BEGIN_PLANEGATE_REVIEW`` / ``END_PLANEGATE_REVIEW``, then in fenced code blocks (last first),
then by scanning for balanced ``{...}`` objects. The first candidate that validates against
``ReviewReply`` *and* carries this review's nonce as ``review_id`` is the answer; a valid block
with another ``review_id`` is a stale answer (to another review, or copied) and is refused.
Nothing in a reply can choose which task or commit it applies to: that is fixed when the review
is requested.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

BEGIN = "BEGIN_PLANEGATE_REVIEW"
END = "END_PLANEGATE_REVIEW"
_MARKED = re.compile(rf"{BEGIN}\s*(.*?)\s*{END}", re.DOTALL)
_FENCED = re.compile(r"```[A-Za-z0-9_-]*[^\n]*\n(.*?)```", re.DOTALL)

Severity = Literal["critical", "high", "medium", "low", "info"]


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ReplyFinding(_Loose):
    severity: Severity
    file: str | None = None
    line: int | None = None
    title: str = Field(min_length=1)
    detail: str = ""
    suggestion: str = ""


class RequirementVerdict(_Loose):
    id: str
    status: Literal["met", "partial", "unmet"]
    note: str = ""


class ReviewReply(_Loose):
    review_id: str
    verdict: Literal["approve", "request_changes", "reject"]
    summary: str = Field(min_length=1)
    findings: list[ReplyFinding] = Field(default_factory=list)
    missing_tests: list[str] = Field(default_factory=list)
    requirements: list[RequirementVerdict] = Field(default_factory=list)


class ReplyProblem(Exception):
    """The reply holds no usable review; the message says why, for the repair prompt."""


def _objects(text: str) -> list[Any]:
    """Every JSON object that starts at a ``{`` in ``text`` (balanced, as the decoder sees it)."""
    decoder = json.JSONDecoder()
    found = []
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except ValueError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        index = text.find("{", end)
    return found


def candidates(text: str) -> list[Any]:
    """JSON objects that could be the review, most deliberate placement first."""
    ordered: list[Any] = []
    for block in _MARKED.findall(text):
        inner = _FENCED.findall(block + "\n")
        ordered += _objects(inner[0] if inner else block)
    for block in reversed(_FENCED.findall(text)):
        ordered += _objects(block)
    ordered += list(reversed(_objects(text)))
    unique: list[Any] = []
    for item in ordered:
        if item not in unique:
            unique.append(item)
    return [c for c in unique if "verdict" in c or "review_id" in c]


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "(block)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_reply(text: str, nonce: str) -> ReviewReply:
    """The review in ``text``.

    Raises:
        ReplyProblem: no block, no valid block, or only blocks whose review_id is not ``nonce``.
    """
    found = candidates(text)
    if not found:
        raise ReplyProblem(f"the reply contains no JSON block (looked for {BEGIN} … {END}, fenced blocks, braces)")
    first_problem = None
    stale = None
    for candidate in found:
        try:
            reply = ReviewReply.model_validate(candidate)
        except ValidationError as exc:
            first_problem = first_problem or f"the JSON block does not follow the schema: {_describe(exc)}"
            continue
        if reply.review_id != nonce:
            stale = stale or reply.review_id
            continue
        return reply
    if stale is not None:
        raise ReplyProblem(
            f"the JSON block's review_id {stale!r} is not this review's id {nonce!r} (a stale or copied answer)"
        )
    raise ReplyProblem(first_problem or "no usable JSON block")
