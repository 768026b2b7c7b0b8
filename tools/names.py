"""Validation of the names clients give: runs, tasks, modules, requirements, checks.

Task and run names become git branch names and directory names, so they are held to
``^[a-z0-9][a-z0-9._-]{0,63}$`` and to git's ref rules (no ``..``, no trailing ``.`` or
``.lock``). A name can therefore never start with ``-`` nor climb out of a directory.
"""

from __future__ import annotations

import re

from .errors import InvalidInput

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
REQUIREMENT_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a well-formed name for ``kind``.

    Raises:
        InvalidInput: naming the value and the rule it breaks.
    """
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or ".." in value or value.endswith((".", ".lock")):
        raise InvalidInput(
            f"{kind} id {value!r} is not allowed: use 1-64 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit (no '..', no trailing '.' or '.lock'), e.g. 'api-auth'"
        )
    return value


def check_requirement_id(value: str) -> str:
    if not isinstance(value, str) or not REQUIREMENT_ID_RE.fullmatch(value):
        raise InvalidInput(
            f"requirement id {value!r} is not allowed: use a letter then up to 31 letters, digits, '.', '_' "
            "or '-', e.g. 'R1' or 'REQ-login'"
        )
    return value


def slug(text: str, limit: int = 24) -> str:
    """A name-safe slug of free text ('' when nothing usable is left)."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(words) > limit:
        cut = words.rfind("-", 0, limit + 1)
        words = words[: cut if cut > 0 else limit]
    return words.strip("-.")
