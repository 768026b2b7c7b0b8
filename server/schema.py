"""Smaller JSON schemas for ``tools/list``: agents pay for every token of it.

pydantic titles every model and property ("Run", "Head Sha"), which repeats what the property
names already say, spells optional scalars as ``anyOf [{type: T}, {type: null}]`` and puts every
nested model under ``$defs`` even when one property uses it. Dropping the titles, writing
``type: [T, "null"]`` and inlining a model used once keeps the schemas' meaning and descriptions.

A ``default: null`` says no more than leaving the property out of ``required``, and a nullable
array or object is one schema whose ``type`` admits null. Output schemas lose more: ``required``,
``default`` and ``enum`` (a result always carries every field, so these tell a client nothing the
result does not show; the states a field takes are named in its description where they matter),
and a nested ``type`` that its ``items`` or ``properties`` already implies.
Input schemas keep them: they say what a caller may send and leave out.
"""

from __future__ import annotations

import json
from typing import Any

_NAME_MAPS = ("properties", "$defs", "patternProperties")
_VALUES = ("default", "enum", "const", "examples")
_REF = "#/$defs/"


def compact_schema(schema: dict[str, Any] | None, *, output: bool = False) -> dict[str, Any] | None:
    """The schema without titles or null defaults, single-use ``$defs`` inlined; an ``output``
    schema also without ``required``, ``default`` and ``enum``."""
    if schema is None:
        return None
    result = _walk(_inline_single_use(schema), output)
    assert isinstance(result, dict)
    if output:
        result = {**_implied_types(result), "type": result.get("type", "object")}
    else:
        result = {
            **_nested_strictness_dropped(result),
            **({"additionalProperties": False} if "additionalProperties" in result else {}),
        }
    return result


def _nested_strictness_dropped(node: Any) -> Any:
    """Without ``additionalProperties: false`` below the top: the server refuses an unknown key at
    any depth with an error naming it, so one statement at the top is enough for the schema."""
    if isinstance(node, list):
        return [_nested_strictness_dropped(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: _nested_strictness_dropped(value) if key not in _VALUES else value
        for key, value in node.items()
        if not (key == "additionalProperties" and value is False)
    }


_IMPLIED = {"object": ("properties", "additionalProperties"), "array": ("items",)}


def _implied_types(node: Any) -> Any:
    """Without a ``type`` its shape keyword already states (``items`` → array, ``properties`` →
    object); a nullable type stays, it says more than the shape."""
    if isinstance(node, list):
        return [_implied_types(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: (_implied_types(value) if key not in _VALUES else value) for key, value in node.items()}
    if key_implied(out):
        del out["type"]
    return out


def key_implied(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    return isinstance(kind, str) and any(key in node for key in _IMPLIED.get(kind, ()))


def _refs(node: Any, counts: dict[str, int]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            counts[ref[len(_REF) :]] = counts.get(ref[len(_REF) :], 0) + 1
        for value in node.values():
            _refs(value, counts)
    elif isinstance(node, list):
        for item in node:
            _refs(item, counts)


def _inline_single_use(schema: dict[str, Any]) -> dict[str, Any]:
    """Put each definition referenced exactly once where it is referenced (recursively, so a
    definition used once inside another one used once ends up nested in place)."""
    defs: dict[str, Any] = dict(schema.get("$defs", {}))
    if not defs:
        return schema
    counts: dict[str, int] = {}
    _refs({k: v for k, v in schema.items() if k != "$defs"}, counts)
    for definition in defs.values():
        _refs(definition, counts)
    once = {name for name in defs if counts.get(name) == 1 and not _self_referencing(name, defs[name])}

    def replace(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_REF) and ref[len(_REF) :] in once and len(node) == 1:
                return replace(defs[ref[len(_REF) :]])
            return {key: replace(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [replace(item) for item in node]
        return node

    result = replace(schema)
    kept = {name: replace(body) for name, body in defs.items() if name not in once}
    if kept:
        result["$defs"] = kept
    return result


def described_elsewhere(schema: dict[str, Any], definitions: dict[str, str]) -> dict[str, Any]:
    """The schema with each named definition replaced by an object and a description that points
    to the tool whose schema spells it out (a second copy of a large model would be paid for in
    every ``tools/list``), and the definitions nothing refers to any more dropped. The arguments
    are still validated against the full model: an unknown or missing field is refused by name."""

    def replace(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_REF) and ref[len(_REF) :] in definitions:
                return {"type": "object", "description": definitions[ref[len(_REF) :]]}
            return {key: replace(value) for key, value in node.items()}
        if isinstance(node, list):
            return [replace(item) for item in node]
        return node

    result = replace({key: value for key, value in schema.items() if key != "$defs"})
    defs = {name: body for name, body in schema.get("$defs", {}).items() if name not in definitions}
    while defs:  # keep only what is still referenced, from the schema or from a kept definition
        counts: dict[str, int] = {}
        _refs(result, counts)
        for body in defs.values():
            _refs(body, counts)
        used = {name: body for name, body in defs.items() if counts.get(name)}
        if used == defs:
            break
        defs = used
    if defs:
        result["$defs"] = defs
    return result


def _self_referencing(name: str, body: Any) -> bool:
    return f'"{_REF}{name}"' in json.dumps(body)


def _walk(node: Any, output: bool) -> Any:
    if isinstance(node, list):
        return [_walk(item, output) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if (
            key == "title"
            or (output and key in ("default", "required", "enum"))
            or (key == "default" and value is None)
        ):
            continue
        if key in _NAME_MAPS and isinstance(value, dict):
            out[key] = {name: _walk(sub, output) for name, sub in value.items()}
        elif key in _VALUES:
            out[key] = value
        else:
            out[key] = _walk(value, output)
    branches = out.get("anyOf")
    if isinstance(branches, list) and len(branches) == 2 and {"type": "null"} in branches:
        other = branches[0] if branches[1] == {"type": "null"} else branches[1]
        kind = other.get("type") if isinstance(other, dict) else None
        if isinstance(kind, str) and (set(other) == {"type"} or kind in ("object", "array")):
            del out["anyOf"]
            out = {**other, **out, "type": [kind, "null"]}
    return out
