"""Smaller JSON schemas for ``tools/list``: agents pay for every token of it.

pydantic titles every model and property ("Run", "Head Sha"), which repeats what the property
names already say, and spells optional scalars as ``anyOf [{type: T}, {type: null}]``. Dropping
the titles and writing ``type: [T, "null"]`` keeps the schemas' meaning and descriptions intact.
"""

from __future__ import annotations

from typing import Any

_NAME_MAPS = ("properties", "$defs", "patternProperties")
_VALUES = ("default", "enum", "const", "examples")


def compact_schema(schema: dict[str, Any] | None, *, output: bool = False) -> dict[str, Any] | None:
    """The schema without titles; an ``output`` schema also loses ``default: null`` (results
    always carry every field, so the default tells a client nothing)."""
    if schema is None:
        return None
    result = _walk(schema, output)
    assert isinstance(result, dict)
    return result


def _walk(node: Any, output: bool) -> Any:
    if isinstance(node, list):
        return [_walk(item, output) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" or (output and key == "default" and value is None):
            continue
        if key in _NAME_MAPS and isinstance(value, dict):
            out[key] = {name: _walk(sub, output) for name, sub in value.items()}
        elif key in _VALUES:
            out[key] = value
        else:
            out[key] = _walk(value, output)
    branches = out.get("anyOf")
    if (
        isinstance(branches, list)
        and len(branches) == 2
        and all(isinstance(b, dict) and set(b) == {"type"} and isinstance(b["type"], str) for b in branches)
    ):
        del out["anyOf"]
        out["type"] = [b["type"] for b in branches]
    return out
