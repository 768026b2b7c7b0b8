"""Secrets a change adds, found with detect-secrets.

Three kinds of content, each scanned the way it can be scanned without drowning in noise:

- Text files: the lines the change adds, with the library's default configuration (every
  built-in plugin with its default limits, and the library's default false-positive filters).
- Text files the defaults skip by name — lock files (``package-lock.json``, ``yarn.lock``,
  ``poetry.lock``, ``Cargo.lock``, ``uv.lock``, ``pnpm-lock.yaml``, …), names with a "non-text"
  extension (``.svg``, ``.map``, ``.lock``, ``.sum``, …) and anything with "swagger" in its path:
  their added lines, with the high-confidence detectors only (``HIGH_CONFIDENCE``).
- Files git treats as binary: the blob at the head (its first ``BLOB_SCAN_LIMIT`` bytes; the
  caller says so when a blob is longer), cut into printable ASCII and UTF-16LE strings the way
  ``strings`` does, with the high-confidence detectors only. A secret the base version of the same
  file already held is not reported again.

A secret that a change removes is not the change's fault, and a secret already on the base is
reported against the change that introduced it.

High confidence means a detector that matches a fixed, documented token format (a prefix, a
header, or a structure it validates), so hashes, base64 and random bytes do not trip it: AWS
keys, private keys, GitHub, GitLab, Slack, Stripe, OpenAI, PyPI, npm, SendGrid, Square OAuth and
Azure storage keys, and JSON Web Tokens (whose header must decode to JSON). Left out because they
fire on ordinary lock-file hashes and binary noise: the keyword and entropy detectors, and the
loose shapes (Artifactory's ``AP…``, Twilio, Mailchimp, Discord, Telegram, basic-auth URLs,
IBM/SoftLayer/Cloudant keywords, public IPs).

Invariants: a finding carries the path, where in the file (new-file line number, or byte offset
in a binary) and the detector's name, never the secret value, so findings can be stored, logged
and shown to a model safely. ``import planegate.tools.gates.secrets`` does not import
detect-secrets; the first scan does.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput

__all__ = [
    "BLOB_SCAN_LIMIT",
    "HIGH_CONFIDENCE",
    "LOCK_FILES",
    "SecretFinding",
    "added_lines",
    "is_lock_file",
    "scan_added_lines",
    "scan_blob",
    "scan_diff",
]

# How much of one binary blob is read and scanned.
BLOB_SCAN_LIMIT = 8 * 1024 * 1024

HIGH_CONFIDENCE = (
    "AWSKeyDetector",
    "PrivateKeyDetector",
    "GitHubTokenDetector",
    "GitLabTokenDetector",
    "SlackDetector",
    "StripeDetector",
    "OpenAIDetector",
    "PypiTokenDetector",
    "NpmDetector",
    "SendGridDetector",
    "SquareOAuthDetector",
    "AzureStorageKeyDetector",
    "JwtTokenDetector",
)

# Lock files of the common package managers (detect-secrets skips its own list of them by name).
LOCK_FILES = frozenset(
    {
        "Brewfile.lock.json",
        "Cargo.lock",
        "Cartfile.resolved",
        "Gemfile.lock",
        "Package.resolved",
        "Pipfile.lock",
        "Podfile.lock",
        "bun.lock",
        "bun.lockb",
        "composer.lock",
        "conda-lock.yml",
        "deno.lock",
        "flake.lock",
        "go.sum",
        "gradle.lockfile",
        "mix.lock",
        "npm-shrinkwrap.json",
        "package-lock.json",
        "packages.lock.json",
        "pdm.lock",
        "pnpm-lock.yaml",
        "poetry.lock",
        "pubspec.lock",
        "uv.lock",
        "yarn.lock",
    }
)


def is_lock_file(path: str) -> bool:
    return path.rsplit("/", 1)[-1] in LOCK_FILES


@dataclass(frozen=True, order=True)
class SecretFinding:
    """A secret the change adds: where it is and what kind, never its value.

    ``line`` is the new-file line number; a finding in a binary file has line 0 and says where in
    ``where`` (``"byte 1024"``).
    """

    path: str
    line: int
    kind: str
    where: str = ""

    def location(self) -> str:
        return f"{self.path} ({self.where})" if self.where else f"{self.path}:{self.line}"


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

# Filters that skip a whole file by its name. The default scan honours them; the high-confidence
# scan is exactly for the files they skip, so it drops them.
_NAME_FILTERS = (
    "detect_secrets.filters.common.is_invalid_file",
    "detect_secrets.filters.heuristic.is_non_text_file",
    "detect_secrets.filters.heuristic.is_lock_file",
    "detect_secrets.filters.heuristic.is_swagger_file",
)


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


def _check_numbers(files: Mapping[str, Sequence[tuple[int, str]]]) -> None:
    for path, lines in files.items():
        for number, _ in lines:
            if number < 1:
                raise InvalidInput(f"added line {number} of {path!r} is not a line number; line numbers start at 1")


def _config(high_confidence: bool) -> tuple[dict[str, Any], tuple[str, ...]]:
    """detect-secrets settings for one scan, and the filters to drop after loading them."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.settings import Settings

    defaults = list(Settings().filters)
    plugins: list[str] = list(HIGH_CONFIDENCE)
    dropped: tuple[str, ...] = _NAME_FILTERS
    if not high_confidence:
        classes: list[type] = list(get_mapping_from_secret_type_to_class().values())
        plugins = [cls.__name__ for cls in classes]
        dropped = _DISABLED_FILTERS
    config = {
        "plugins_used": [{"name": name} for name in plugins],
        "filters_used": [{"path": path} for path in defaults if path not in dropped],
    }
    return config, dropped


def _scan(files: Mapping[str, Sequence[tuple[int, str]]], *, high_confidence: bool) -> tuple[set[Any], list[str]]:
    """(path, line, secret) for every secret in ``files``, and the paths the default
    configuration skips by name (always empty for the high-confidence scan)."""
    from detect_secrets.core import scan
    from detect_secrets.settings import transient_settings

    config, dropped = _config(high_confidence)
    found: set[Any] = set()
    skipped: list[str] = []
    with _SCAN_LOCK, transient_settings(config) as settings:
        settings.disable_filters(*dropped)
        for path, lines in files.items():
            if not high_confidence and scan._is_filtered_out(required_filter_parameters=["filename"], filename=path):
                skipped.append(path)
                continue
            for run in _runs(lines):
                # The library numbers lines by their index in the list it is given (its code
                # snippets index into that list), so scan 1..n and map back to file lines.
                texts = [text for _, text in run]
                for secret in scan._process_line_based_plugins(list(enumerate(texts, start=1)), filename=path):
                    found.add((path, run[secret.line_number - 1][0], secret))
    return found, skipped


def scan_added_lines(files: Mapping[str, Sequence[tuple[int, str]]]) -> list[SecretFinding]:
    """Secrets detect-secrets finds in the given added lines, sorted by path and line.

    Each file's lines are scanned under its own name (plugins such as the keyword detector
    behave per file type). Lock files (``LOCK_FILES``) and files the library's defaults skip by
    name ("non-text" extensions, swagger) are scanned with the high-confidence detectors only.
    Consecutive lines are scanned together, so an ``allowlist nextline`` pragma on an added line
    applies to the added line after it, and never across a gap. One finding per (path, line,
    kind). Thread-safe.

    Raises:
        InvalidInput: a line number below 1.
    """
    _check_numbers(files)
    if not any(files.values()):
        return []
    # Lock files are mostly hashes, which the entropy detectors would flag line after line.
    found, skipped = _scan({p: lines for p, lines in files.items() if not is_lock_file(p)}, high_confidence=False)
    narrow = [p for p in files if is_lock_file(p)] + skipped
    if narrow:
        more, _ = _scan({path: files[path] for path in narrow}, high_confidence=True)
        found |= more
    return sorted({SecretFinding(path, line, str(secret.type)) for path, line, secret in found})


def scan_diff(diff_text: str) -> list[SecretFinding]:
    """Secrets in the lines ``diff_text`` adds; see ``added_lines`` and ``scan_added_lines``.

    Raises:
        InvalidInput: as ``added_lines``.
    """
    return scan_added_lines(added_lines(diff_text))


# --- binary blobs ----------------------------------------------------------------------------

# Printable ASCII (and tab), as ``strings`` finds it; and the same in UTF-16LE, as Windows
# binaries store their strings. Shorter runs cannot hold any token the detectors know.
_MIN_RUN = 8
_ASCII_RUN = re.compile(rb"[\t\x20-\x7e]{%d,}" % _MIN_RUN)
_UTF16_RUN = re.compile(rb"(?:[\t\x20-\x7e]\x00){%d,}" % _MIN_RUN)


def _strings(data: bytes) -> list[tuple[int, str]]:
    """(byte offset, text) of every printable run in ``data``, in offset order."""
    runs = [(m.start(), m.group().decode("ascii")) for m in _ASCII_RUN.finditer(data)]
    runs += [(m.start(), m.group().decode("utf-16-le")) for m in _UTF16_RUN.finditer(data)]
    return sorted(runs)


def _blob_secrets(path: str, data: bytes) -> dict[tuple[str, str], int]:
    """(kind, secret hash) → byte offset of its first occurrence in ``data``."""
    runs = _strings(data)
    if not runs:
        return {}
    found, _ = _scan({path: [(i, text) for i, (_, text) in enumerate(runs, start=1)]}, high_confidence=True)
    first: dict[tuple[str, str], int] = {}
    for _, index, secret in sorted(found, key=lambda item: item[1]):
        first.setdefault((str(secret.type), str(secret.secret_hash)), runs[index - 1][0])
    return first


def scan_blob(path: str, data: bytes, base: bytes | None = None) -> list[SecretFinding]:
    """Secrets in a binary file's bytes, by the high-confidence detectors, sorted by offset.

    ``base``: the bytes of the same file before the change; a secret found there too is not
    reported. Findings have line 0 and ``where="byte N"``. Thread-safe.
    """
    found = _blob_secrets(path, data)
    if found and base:
        before = _blob_secrets(path, base)
        found = {key: offset for key, offset in found.items() if key not in before}
    return sorted(
        (SecretFinding(path, 0, kind, f"byte {offset}") for (kind, _), offset in found.items()),
        key=lambda f: (int(f.where.split()[1]), f.kind),
    )
