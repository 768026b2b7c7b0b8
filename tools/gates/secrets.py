"""Secrets in the lines a change adds, found with detect-secrets.

Only added lines are scanned: a secret that a change removes is not the change's fault, and a
secret already on the base is reported against the change that introduced it. The detector is
detect-secrets with the library's default configuration (every built-in plugin, each with its
default limits, and the library's default false-positive filters), run in-process.

Invariants: a finding carries the path, the new-file line number and the detector's name, never
the secret value, so findings can be stored, logged and shown to a model safely.
``import planegate.tools.gates.secrets`` does not import detect-secrets; the first scan does.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput

__all__ = ["SecretFinding", "added_lines", "scan_added_lines", "scan_diff"]


@dataclass(frozen=True, order=True)
class SecretFinding:
    """A secret in an added line: where it is and what kind, never its value."""

    path: str
    line: int
    kind: str


# --- unified diff parsing --------------------------------------------------------------------

_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def _unquote_git_path(raw: str) -> str:
    """A path as git prints it after ``+++ ``: C-quoted (``"b/a\\tb.py"``) or plain."""
    if not raw.startswith('"'):
        # git ends an unquoted name that contains a space with a TAB; nothing else follows.
        return raw.split("\t", 1)[0]
    data = bytearray()
    i = 1
    while i < len(raw) and raw[i] != '"':
        char = raw[i]
        if char != "\\":
            data += char.encode("utf-8", "surrogateescape")
            i += 1
            continue
        following = raw[i + 1 : i + 2]
        if following in _C_ESCAPES:
            data.append(_C_ESCAPES[following])
            i += 2
        elif re.fullmatch(r"[0-7]{3}", raw[i + 1 : i + 4]):
            data.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            raise InvalidInput(f"diff path {raw!r} has an unknown escape; pass the output of 'git diff' unchanged")
    return data.decode("utf-8", "surrogateescape")


def _new_path(raw: str) -> str | None:
    path = _unquote_git_path(raw)
    if path == "/dev/null":
        return None
    return path[2:] if path.startswith("b/") else path


def added_lines(diff_text: str) -> dict[str, list[tuple[int, str]]]:
    """The added lines of a unified git diff: new path → [(new line number, text)].

    Expects ``git diff --no-color --no-ext-diff`` output with git's default ``a/``/``b/``
    prefixes (any ``-U``). New files, renames (keyed by the new name), quoted paths, binary
    files (skipped) and ``\\ No newline at end of file`` markers are handled. Only files with at
    least one added line appear. Hunk line counts decide where a hunk ends, so added text that
    looks like a header (``+++ b/x``) stays text.

    Raises:
        InvalidInput: a hunk header or quoted path that is not git's format.
    """
    result: dict[str, list[tuple[int, str]]] = {}
    path: str | None = None
    old_left = new_left = 0
    line_no = 0
    in_binary_patch = False
    lines = diff_text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        if old_left > 0 or new_left > 0:
            marker, text = line[:1], line[1:]
            if marker == "+":
                if path is not None:
                    result.setdefault(path, []).append((line_no, text))
                line_no += 1
                new_left -= 1
            elif marker == "-":
                old_left -= 1
            elif marker == " " or line == "":
                line_no += 1
                old_left -= 1
                new_left -= 1
            elif marker != "\\":
                raise InvalidInput(
                    f"diff line {line[:60]!r} is not part of its hunk (expected ' ', '+', '-' or '\\'); "
                    "pass the output of 'git diff' unchanged"
                )
            continue
        if line.startswith("diff --git ") or line.startswith("diff --cc "):
            path, in_binary_patch = None, False
        elif in_binary_patch:
            continue
        elif line == "GIT binary patch" or line.startswith("Binary files "):
            path, in_binary_patch = None, True
        elif line.startswith("+++ "):
            path = _new_path(line[4:])
        elif line.startswith("@@"):
            match = _HUNK.match(line)
            if match is None:
                raise InvalidInput(
                    f"diff hunk header {line[:60]!r} is malformed; pass the output of 'git diff' unchanged"
                )
            old_left = int(match.group(1) or 1)
            line_no = int(match.group(2))
            new_left = int(match.group(3) or 1)
    return result


# --- scanning --------------------------------------------------------------------------------

# detect-secrets keeps its settings in process-wide globals; one scan at a time.
_SCAN_LOCK = threading.Lock()

# The library's default filters assume a file on disk next to the caller (``is_invalid_file``
# drops any name that does not exist in the cwd); here the lines come from a diff.
_DISABLED_FILTERS = ("detect_secrets.filters.common.is_invalid_file",)


def _runs(lines: Sequence[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    """Split added lines into runs of consecutive line numbers."""
    run: list[tuple[int, str]] = []
    for number, text in sorted(lines, key=lambda item: item[0]):
        if run and number != run[-1][0] + 1:
            yield run
            run = []
        run.append((number, text))
    if run:
        yield run


def scan_added_lines(files: Mapping[str, Sequence[tuple[int, str]]]) -> list[SecretFinding]:
    """Secrets detect-secrets finds in the given added lines, sorted by path and line.

    Each file's lines are scanned under its own name (plugins such as the keyword detector
    behave per file type, and lock files or non-text files are skipped as the library does).
    Consecutive lines are scanned together, so an ``allowlist nextline`` pragma on an added line
    applies to the added line after it, and never across a gap. One finding per (path, line,
    kind). Thread-safe.

    Raises:
        InvalidInput: a line number below 1.
    """
    for path, lines in files.items():
        for number, _ in lines:
            if number < 1:
                raise InvalidInput(f"added line {number} of {path!r} is not a line number; line numbers start at 1")
    if not any(files.values()):
        return []

    from detect_secrets.core import scan
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.settings import Settings, transient_settings

    plugin_classes: list[type] = list(get_mapping_from_secret_type_to_class().values())
    config: dict[str, Any] = {
        "plugins_used": [{"name": plugin.__name__} for plugin in plugin_classes],
        "filters_used": [{"path": path} for path in Settings().filters if path not in _DISABLED_FILTERS],
    }
    found: set[SecretFinding] = set()
    with _SCAN_LOCK, transient_settings(config) as settings:
        settings.disable_filters(*_DISABLED_FILTERS)
        for path, lines in files.items():
            if scan._is_filtered_out(required_filter_parameters=["filename"], filename=path):
                continue
            for run in _runs(lines):
                # The library numbers lines by their index in the list it is given (its code
                # snippets index into that list), so scan 1..n and map back to file lines.
                texts = [text for _, text in run]
                for secret in scan._process_line_based_plugins(list(enumerate(texts, start=1)), filename=path):
                    found.add(SecretFinding(path, run[secret.line_number - 1][0], str(secret.type)))
    return sorted(found)


def scan_diff(diff_text: str) -> list[SecretFinding]:
    """Secrets in the lines ``diff_text`` adds; see ``added_lines`` and ``scan_added_lines``.

    Raises:
        InvalidInput: as ``added_lines``.
    """
    return scan_added_lines(added_lines(diff_text))
