"""How every failed tool call reads: one message, its disposition, never a bare error or a traceback.

A tool error is a ``CallToolResult`` with ``is_error`` whose text starts with the line
``disposition: <word>`` followed by the message, and whose ``structuredContent`` carries the same
as ``{"error", "disposition", "next_step", "incident"}`` for clients that read it. Four sources:

- planegate's own errors (``PlanegateError``) and the ledger's (``StoreError``: locked, read-only,
  disk full, corrupt): their message, their disposition;
- arguments refused before anything runs: unknown names (``StrictTool``), values no tool accepts
  (``screen_arguments``: integers beyond SQLite's 64 bits, NUL characters, text that is not
  Unicode, strings past ``MAX_STRING``), and pydantic's validation errors, rendered as the
  argument, what was given (cut short) and what is accepted (from the tool's schema);
- a few OS errors that say something about the input (a path too long for the file system) or the
  machine (a full or read-only disk outside the ledger);
- anything else is an incident: logged with its traceback, recorded in the ledger when it can be,
  and answered with its id.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Mapping
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import ValidationError

from planegate.tools.errors import DISPOSITIONS, Disposition, PlanegateError, disposition_of

INT64 = (-(2**63), 2**63 - 1)
MAX_STRING = 65_536  # characters in one string argument: far past any id, goal or summary
MAX_MESSAGE = 8_000  # characters of one error message; longer ones lose their middle, not their next step
_SHOWN = 80  # characters of a rejected value shown back


class Refusal(ToolError):
    """A tool error with planegate's disposition (and the incident id when it was a crash)."""

    def __init__(self, message: str, disposition: Disposition, incident: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.disposition = disposition
        self.incident = incident


def refusal_result(refusal: Refusal) -> CallToolResult:
    message = _cut(refusal.message)
    text = f"disposition: {refusal.disposition}\n{message}"
    structured = {
        "error": message,
        "disposition": refusal.disposition,
        "next_step": DISPOSITIONS[refusal.disposition],
        "incident": refusal.incident,
    }
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured, is_error=True)


def _cut(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    keep = MAX_MESSAGE // 2 - 40
    return f"{message[:keep]} … [{len(message) - 2 * keep} characters cut] … {message[-keep:]}"


def shown(value: Any) -> str:
    """A value as given, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 1]}… ({len(text)} characters)"


# --- arguments no tool accepts ----------------------------------------------------------------


def screen_arguments(tool: str, arguments: Mapping[str, Any]) -> Refusal | None:
    """The first argument value no planegate tool can take, refused before validation."""
    for name, value in arguments.items():
        problem = _screen(value, name)
        if problem is not None:
            where, why = problem
            message = f"{tool}: argument {where} {why}. Nothing was done: call {tool} again without it"
            return Refusal(message, "bad_input")
    return None


def _screen(value: Any, where: str, depth: int = 0) -> tuple[str, str] | None:
    if depth > 32:
        return where, "is nested more than 32 levels deep"
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            bounds = f"{INT64[0]} to {INT64[1]}"
            return where, f"is {shown(value)}, beyond the 64-bit range every id and count fits in ({bounds})"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, f"is {value!r}; give a finite number")
    if isinstance(value, str):
        if "\x00" in value:
            return where, f"contains a NUL character (\\x00) at position {value.index(chr(0))}: {shown(value)}"
        if len(value) > MAX_STRING:
            return where, f"is {len(value)} characters long; planegate takes at most {MAX_STRING} in one string"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return where, f"is not valid Unicode text (a lone surrogate at position {exc.start}): {shown(value)}"
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _screen(item, f"{where}[{index}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _screen(key, f"{where} (a key)", depth + 1) or _screen(item, f"{where}.{key}", depth + 1)
            if found:
                return found
    return None


# --- pydantic's validation errors, in planegate's words ---------------------------------------


def validation_refusal(tool: str, error: ValidationError, schema: Mapping[str, Any]) -> Refusal:
    """One line per problem: the argument, what was given, what is accepted."""
    problems = error.errors(include_url=False)
    lines = []
    for problem in problems[:5]:
        loc = [str(part) for part in problem["loc"]]
        argument = loc[0] if loc else "(arguments)"
        where = argument + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
        accepted = describe(_property(schema, loc), schema)
        if problem["type"] == "missing":
            lines.append(f"argument {where} is missing; it takes {accepted}")
        else:
            message = str(problem["msg"]).removeprefix("Value error, ")
            lines.append(f"argument {where}: {message}; given {shown(problem.get('input'))}; it takes {accepted}")
    if len(problems) > 5:
        lines.append(f"and {len(problems) - 5} more problem(s) of the same arguments")
    head = f"{tool} refused its arguments, nothing was done:" if len(lines) > 1 else f"{tool} refused its arguments:"
    body = "\n".join(f"- {line}" for line in lines) if len(lines) > 1 else lines[0] + ". Nothing was done"
    sep = "\n" if len(lines) > 1 else " "
    return Refusal(f"{head}{sep}{body}; call {tool} again with the arguments as described", "bad_input")


def _resolve(node: Any, root: Mapping[str, Any]) -> Any:
    seen = 0
    while isinstance(node, dict) and "$ref" in node and seen < 10:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        node = root.get("$defs", {}).get(name, {})
        seen += 1
    return node


def _property(schema: Mapping[str, Any], loc: list[str]) -> Any:
    """The schema of the value at ``loc`` (pydantic's location, which may name union branches)."""
    node: Any = schema
    for part in loc:
        node = _resolve(node, schema)
        if not isinstance(node, dict):
            return None
        if "anyOf" in node:
            branches = [_resolve(b, schema) for b in node["anyOf"]]
            node = next((b for b in branches if isinstance(b, dict) and b.get("type") != "null"), node)
        if part.isdigit() and isinstance(node.get("items"), dict):
            node = node["items"]
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("items"), dict) and part not in node.get("properties", {}):
            continue  # a union branch name (``list[str]``, ``int``) pydantic puts in the location
        else:
            return node if part not in ("properties",) else None
    return node


_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
    "object": "an object",
    "array": "a list",
}


def describe(node: Any, root: Mapping[str, Any], depth: int = 0) -> str:
    """A schema in a few words: "a list of strings", "one of 'agent', 'command'", "a number from 0 to 45"."""
    node = _resolve(node, root)
    if not isinstance(node, dict) or depth > 3:
        return "a value as the tool's input schema describes"
    if "enum" in node:
        return "one of " + ", ".join(repr(v) for v in node["enum"])
    if "anyOf" in node:
        return " or ".join(dict.fromkeys(describe(b, root, depth + 1) for b in node["anyOf"]))
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(describe({**node, "type": k}, root, depth + 1) for k in kind)
    if kind == "array":
        item = describe(node.get("items", {}), root, depth + 1)
        return f"a list of {_plural(item)}" if "items" in node else "a list"
    if kind == "object" and "properties" in node:
        required = node.get("required", [])
        keys = ", ".join(f"{k}{'' if k in required else ' (optional)'}" for k in node["properties"])
        closed = " and no others" if node.get("additionalProperties") is False else ""
        return f"an object with the keys {keys}{closed}"
    words = _TYPE_WORDS.get(str(kind), "a value")
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None and high is not None:
        words += f" from {low} to {high}"
    elif low is not None:
        words += f" of at least {low}"
    elif high is not None:
        words += f" of at most {high}"
    description = node.get("description")
    return f"{words} ({description})" if description and depth == 0 else words


def _plural(words: str) -> str:
    for single, many in (("a string", "strings"), ("an integer", "integers"), ("a number", "numbers")):
        if words == single:
            return many
    if words.startswith("an object"):
        return "objects" + words.removeprefix("an object")
    return words


# --- everything else ---------------------------------------------------------------------------


def _unwrap(exc: BaseException) -> BaseException:
    """The exception the SDK wrapped as ``Error executing tool X`` (its cause), or ``exc`` itself."""
    while isinstance(exc, ToolError) and not isinstance(exc, Refusal) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def refusal_for(
    tool: str, exc: Exception, schema: Mapping[str, Any], store: Any, actor: str, arguments: Mapping[str, Any]
) -> Refusal:
    """What the caller of ``tool`` reads about ``exc``."""
    from planegate.store import StoreError, record_incident  # the ledger's modules load on first use

    original = _unwrap(exc)
    if isinstance(original, Refusal):
        return original
    if isinstance(original, ValidationError):
        return validation_refusal(tool, original, schema)
    if isinstance(original, PlanegateError | StoreError):
        return Refusal(str(original), disposition_of(original))
    if isinstance(original, ToolError):  # a deliberate ToolError of a resolver or of the SDK itself
        text = str(original).removeprefix(f"Error executing tool {tool}: ")
        return Refusal(text, "bad_input")
    if isinstance(original, OSError) and original.errno == errno.ENAMETOOLONG:
        return Refusal(
            f"{tool}: a path in the arguments is too long for the file system ({original.strerror}: "
            f"{shown(original.filename)}); nothing was done. Give a shorter path",
            "bad_input",
        )
    if isinstance(original, OSError) and original.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        what = "full" if original.errno != errno.EROFS else "read-only"
        return Refusal(
            f"{tool} could not write {shown(original.filename)}: the disk is {what} ({original.strerror}). "
            "The ledger records nothing of a half-done step; free space (or make the folder writable), then call "
            "again",
            "infrastructure",
        )
    incident, not_recorded = record_incident(
        store, original, place=f"tool {tool}", actor=actor, context={"arguments": dict(arguments)}
    )
    where = "the server's log" if not_recorded else "the server's log and the ledger's incidents table"
    return Refusal(
        f"{tool} failed unexpectedly: {type(original).__name__} (incident {incident}; the traceback is in {where}). "
        "This is a planegate bug, not a problem with the call; what was recorded before it stays consistent (each "
        "step is one transaction). Report the incident id to the user; get_status shows the state",
        "infrastructure",
        incident=incident,
    )
