"""The one glob dialect planegate uses for repository paths.

Task scopes, module ownership, deny paths and the policy's test/runtime globs are all written in
this dialect and matched against repo-relative POSIX paths (``src/api/app.py``: no leading ``/``,
no empty, ``.`` or ``..`` segments).

Syntax:

- ``**`` as a whole segment matches zero or more whole segments, so ``src/**`` matches
  ``src/a.py`` and ``src/a/b.py`` (and ``src`` itself), ``**/test_*.py`` matches ``test_x.py``
  and ``a/b/test_x.py``, ``a/**/b`` matches ``a/b`` and ``a/x/y/b``. Inside a longer segment
  (``a**b``) it is an ordinary ``*``.
- ``*`` matches any run of characters except ``/`` (including none, and leading dots).
- ``?`` matches one character except ``/``.
- ``[abc]``, ``[a-z]``, ``[!x]`` (or ``[^x]``) match one character of a class; a class never
  matches ``/``. A ``]`` right after the opening ``[`` (or ``[!``) is literal. There is no
  backslash escape: write a literal ``*``, ``?`` or ``[`` as ``[*]``, ``[?]``, ``[[]``.
- Everything else is literal.
- A pattern ending in ``/`` means everything below it: ``src/`` is ``src/**``.
- A pattern without any wildcard names a path and everything below it: ``src/api`` is
  ``src/api/**``, which also matches the path ``src/api`` itself.

Invariants: every public function accepts patterns in any form ``normalize_glob`` accepts and
raises ``InvalidInput`` for the rest; ``glob_matches`` (a compiled regex) and ``glob_overlap`` (an
automaton product) are two implementations of the same language over valid paths, and the tests
hold them to each other and to a segment-wise reference matcher. ``glob_overlap`` is exact: it
answers None only when no valid path matches both patterns.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from .errors import InvalidInput

__all__ = [
    "compile_glob",
    "first_overlap",
    "glob_matches",
    "glob_overlap",
    "matches_any",
    "normalize_glob",
]

_MAX_CODEPOINT = 0x10FFFF
_WILDCARDS = frozenset("*?[")
_HOW_TO_WRITE = (
    "write a repo-relative POSIX glob such as 'src/**', 'src/api/*.py' or '**/test_*.py' "
    "(no leading '/', no '..', forward slashes only)"
)


# --- normalization and parsing -------------------------------------------------------------


@lru_cache(maxsize=65536)
def normalize_glob(pattern: str) -> str:
    """Return ``pattern`` in canonical form, or raise ``InvalidInput`` naming what is wrong.

    Canonical form: leading ``./`` removed, repeated ``/`` collapsed, interior ``.`` segments
    dropped, a trailing ``/`` turned into ``/**``, and runs of ``**`` segments merged.

    Raises:
        InvalidInput: empty pattern, absolute path, ``..`` segment, backslash, NUL, or a ``[``
            without its closing ``]`` (or a reversed range such as ``[z-a]``).
    """
    if not isinstance(pattern, str):
        raise InvalidInput(f"glob {pattern!r} is not a string; {_HOW_TO_WRITE}")
    if "\x00" in pattern:
        raise InvalidInput(f"glob {pattern!r} contains a NUL character; {_HOW_TO_WRITE}")
    if "\\" in pattern:
        raise InvalidInput(
            f"glob {pattern!r} contains a backslash; use '/' between directories and [*] or [?] "
            "for a literal wildcard character"
        )
    if pattern.startswith("/"):
        raise InvalidInput(f"glob {pattern!r} is an absolute path; {_HOW_TO_WRITE}")
    below = pattern.endswith("/")
    segments: list[str] = []
    for segment in pattern.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            raise InvalidInput(f"glob {pattern!r} contains a '..' segment; {_HOW_TO_WRITE}")
        if segment == "**" and segments and segments[-1] == "**":
            continue
        segments.append(segment)
    if not segments:
        raise InvalidInput(f"glob {pattern!r} is empty; {_HOW_TO_WRITE}")
    if below and segments[-1] != "**":
        segments.append("**")
    for segment in segments:
        if "[" in segment:  # only a class can be malformed
            _parse_segment(segment, pattern)
    return "/".join(segments)


@dataclass(frozen=True)
class _CharSet:
    """A set of code points as sorted, disjoint, non-adjacent closed intervals."""

    ranges: tuple[tuple[int, int], ...]

    @staticmethod
    def of(ranges: Iterable[tuple[int, int]]) -> _CharSet:
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        return _CharSet(tuple(merged))

    def complement(self) -> _CharSet:
        out: list[tuple[int, int]] = []
        start = 0
        for lo, hi in self.ranges:
            if lo > start:
                out.append((start, lo - 1))
            start = hi + 1
        if start <= _MAX_CODEPOINT:
            out.append((start, _MAX_CODEPOINT))
        return _CharSet(tuple(out))

    def __and__(self, other: _CharSet) -> _CharSet:
        out: list[tuple[int, int]] = []
        i = j = 0
        while i < len(self.ranges) and j < len(other.ranges):
            lo = max(self.ranges[i][0], other.ranges[j][0])
            hi = min(self.ranges[i][1], other.ranges[j][1])
            if lo <= hi:
                out.append((lo, hi))
            if self.ranges[i][1] < other.ranges[j][1]:
                i += 1
            else:
                j += 1
        return _CharSet(tuple(out))

    def __contains__(self, char: str) -> bool:
        code = ord(char)
        return any(lo <= code <= hi for lo, hi in self.ranges)

    def pick(self) -> str | None:
        """A readable member if there is one, else the smallest member; None when empty."""
        for char in _PREFERRED:
            if char in self:
                return char
        return chr(self.ranges[0][0]) if self.ranges else None


_PREFERRED = "abcdefghijklmnopqrstuvwxyz0123456789_-ABCDEFGHIJKLMNOPQRSTUVWXYZ."
_SLASH = _CharSet.of([(ord("/"), ord("/"))])
_DOT = _CharSet.of([(ord("."), ord("."))])
# Path characters: anything but NUL (git file names may hold any other byte).
_PATH_CHAR = _CharSet.of([(1, _MAX_CODEPOINT)])
_SEGMENT_CHAR = _PATH_CHAR & _SLASH.complement()


@dataclass(frozen=True)
class _Star:
    """``*`` inside a segment."""


_Token = _CharSet | _Star
_GLOBSTAR = "**"


def _parse_segment(segment: str, pattern: str) -> tuple[_Token, ...]:
    tokens: list[_Token] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1
            tokens.append(_Star())
            i += 1
        elif char == "?":
            tokens.append(_SEGMENT_CHAR)
            i += 1
        elif char == "[":
            charset, i = _parse_class(segment, i, pattern)
            tokens.append(charset)
        else:
            tokens.append(_literal(char))
            i += 1
    return tuple(tokens)


@lru_cache(maxsize=1024)
def _literal(char: str) -> _CharSet:
    return _CharSet.of([(ord(char), ord(char))])


def _parse_class(segment: str, start: int, pattern: str) -> tuple[_CharSet, int]:
    i = start + 1
    negated = i < len(segment) and segment[i] in "!^"
    if negated:
        i += 1
    ranges: list[tuple[int, int]] = []
    first = True
    while True:
        if i >= len(segment):
            raise InvalidInput(
                f"glob {pattern!r} has a '[' without its closing ']' (a class cannot span '/'); "
                "close the class, or write a literal '[' as '[[]'"
            )
        char = segment[i]
        if char == "]" and not first:
            i += 1
            break
        first = False
        if i + 2 < len(segment) and segment[i + 1] == "-" and segment[i + 2] != "]":
            lo, hi = ord(char), ord(segment[i + 2])
            if lo > hi:
                raise InvalidInput(
                    f"glob {pattern!r} has the reversed range '{char}-{segment[i + 2]}'; "
                    f"write it as '{segment[i + 2]}-{char}'"
                )
            ranges.append((lo, hi))
            i += 3
        else:
            ranges.append((ord(char), ord(char)))
            i += 1
    members = _CharSet.of(ranges)
    return (members.complement() if negated else members) & _SEGMENT_CHAR, i


def _segments(pattern: str) -> tuple[str, ...]:
    """The canonical segments, with the implied ``**`` of a wildcard-free pattern appended."""
    normal = normalize_glob(pattern)
    segments = tuple(normal.split("/"))
    if not _WILDCARDS.intersection(normal):
        segments += (_GLOBSTAR,)
    return segments


# --- matching: a regex per pattern -----------------------------------------------------------


def _charset_regex(charset: _CharSet) -> str:
    if charset == _SEGMENT_CHAR:
        return "[^/]"
    if len(charset.ranges) == 1 and charset.ranges[0][0] == charset.ranges[0][1]:
        return re.escape(chr(charset.ranges[0][0]))
    parts = []
    for lo, hi in charset.ranges:
        parts.append(re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}")
    return "[" + "".join(parts) + "]" if parts else "(?!)"


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regex (to be used with ``fullmatch``) for ``pattern``.

    Raises:
        InvalidInput: as ``normalize_glob``.
    """
    segments = _segments(pattern)
    last = len(segments) - 1
    out: list[str] = []
    need_separator = False
    for index, segment in enumerate(segments):
        if segment == _GLOBSTAR:
            if index == 0 and index == last:
                out.append("[^/]+(?:/[^/]+)*")
            elif index == last:
                out.append("(?:/[^/]+)*")
            else:
                out.append(("/" if need_separator else "") + "(?:[^/]+/)*")
                need_separator = False
            continue
        if need_separator:
            out.append("/")
        for token in _parse_segment(segment, pattern):
            out.append("[^/]*" if isinstance(token, _Star) else _charset_regex(token))
        need_separator = True
    return re.compile("".join(out), re.DOTALL)


@lru_cache(maxsize=4096)
def _matcher(pattern: str) -> Callable[[str], bool]:
    """``pattern``'s match test. The usual shapes are compared as text, with no regex to compile
    (about 60 µs each, which a fresh process would pay for every pattern it meets):

    - a path and everything below it (``src/api``, ``src/api/**``): the usual task scope;
    - one name pattern, alone, under ``**/`` or between two ``**`` (``*.py``, ``**/test_*.py``,
      ``**/*.[jt]s``, ``**/__tests__/**``): the policy's test and runtime paths. The name may hold
      one ``*`` and classes of a few characters.

    Each accepts exactly what the regex does, on any string."""
    segments = _segments(pattern)
    *fixed, last = segments
    if last == _GLOBSTAR and fixed and not any(_WILDCARDS.intersection(segment) for segment in fixed):
        prefix = "/".join(fixed)
        below = prefix + "/"

        def path_or_below(path: str) -> bool:
            if path == prefix:
                return True
            rest = path[len(below) :]
            return path.startswith(below) and bool(rest) and "//" not in rest and rest[0] != "/" and rest[-1] != "/"

        return path_or_below
    shape = "/".join(segment if segment == _GLOBSTAR else "NAME" for segment in segments)
    if shape in _PLACES:
        name_matches = _name_test(next(s for s in segments if s != _GLOBSTAR), pattern)
        if name_matches is not None:
            return _placed(name_matches, shape)
    regex = compile_glob(pattern)
    return lambda path: regex.fullmatch(path) is not None


_PLACES = ("NAME", "**/NAME", "**/NAME/**")


def _placed(name_matches: Callable[[str], bool], shape: str) -> Callable[[str], bool]:
    """The path test for a name test placed as ``shape`` (one of ``_PLACES``)."""
    if shape == "NAME":
        return lambda path: "/" not in path and name_matches(path)
    if shape == "**/NAME":

        def name_anywhere(path: str) -> bool:
            # (?:[^/]+/)*NAME: what comes before the last slash is names joined by single slashes.
            head, slash, name = path.rpartition("/")
            if slash and (not head or head[0] == "/" or head[-1] == "/" or "//" in head):
                return False
            return name_matches(name)

        return name_anywhere

    def name_on_the_way(path: str) -> bool:
        # (?:[^/]+/)*NAME(?:/[^/]+)*: names joined by slashes, one of them NAME; only NAME may be
        # empty (when it can be: ``*``).
        names = path.split("/")
        empty = names.count("")
        if empty:
            return empty == 1 and name_matches("")
        return any(name_matches(name) for name in names)

    return name_on_the_way


_SPELLINGS = 16


def _name_test(segment: str, pattern: str) -> Callable[[str], bool] | None:
    """A text test for one name pattern of literals, at most one ``*`` and classes spelled out in
    at most ``_SPELLINGS`` ways (``*.[jt]s``: ``*.js``, ``*.ts``); None for anything else."""
    spellings = [("", "")]
    star = False
    for token in _parse_segment(segment, pattern):
        if isinstance(token, _Star):
            if star:
                return None
            star = True
            continue
        size = sum(hi - lo + 1 for lo, hi in token.ranges)
        if size * len(spellings) > _SPELLINGS:
            return None
        chars = [chr(code) for lo, hi in token.ranges for code in range(lo, hi + 1)]
        spellings = [(head + c, tail) if not star else (head, tail + c) for head, tail in spellings for c in chars]
    if not star:
        names = frozenset(head for head, _ in spellings)
        return names.__contains__
    ends = [(head, tail, len(head) + len(tail)) for head, tail in spellings]

    def name_matches(name: str) -> bool:
        return any(len(name) >= least and name.startswith(head) and name.endswith(tail) for head, tail, least in ends)

    return name_matches


def glob_matches(pattern: str, path: str) -> bool:
    """Whether the repo-relative ``path`` matches ``pattern``.

    Raises:
        InvalidInput: as ``normalize_glob``.
    """
    return _matcher(pattern)(path)


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    """Whether ``path`` matches at least one of ``patterns``.

    Raises:
        InvalidInput: as ``normalize_glob``, for the first malformed pattern reached.
    """
    return any(glob_matches(pattern, path) for pattern in patterns)


# --- overlap: product of automata ------------------------------------------------------------

# Witness readability only (any positive costs keep the search exact): an empty ``*`` costs
# more than one character and punctuation costs a little more than [a-z0-9], so the cheapest
# witness for ``**/*.md`` and ``docs/**`` is ``docs/a.md``, not ``docs/.md`` or ``docs/..md``.
_CHAR_COST = 4
_ODD_CHAR_COST = 5
_EMPTY_STAR_COST = 6
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


@dataclass(frozen=True)
class _Nfa:
    """Character-level automaton: ``edges[s]`` are (charset, target), ``eps[s]`` (target, cost)."""

    edges: tuple[tuple[tuple[_CharSet, int], ...], ...]
    eps: tuple[tuple[tuple[int, int], ...], ...]
    accept: int


class _NfaBuilder:
    def __init__(self) -> None:
        self.edges: list[list[tuple[_CharSet, int]]] = []
        self.eps: list[list[tuple[int, int]]] = []

    def state(self) -> int:
        self.edges.append([])
        self.eps.append([])
        return len(self.edges) - 1

    def step(self, source: int, charset: _CharSet) -> int:
        target = self.state()
        self.edges[source].append((charset, target))
        return target

    def build(self, accept: int) -> _Nfa:
        return _Nfa(tuple(map(tuple, self.edges)), tuple(map(tuple, self.eps)), accept)


@lru_cache(maxsize=1024)
def _nfa(pattern: str) -> _Nfa:
    # ``**`` is built loosely over any path characters: the path-validity automaton in the
    # product (see _VALID) is what enforces non-empty segments, so both stay simple.
    segments = _segments(pattern)
    last = len(segments) - 1
    nfa = _NfaBuilder()
    current = nfa.state()
    need_separator = False
    for index, segment in enumerate(segments):
        if segment == _GLOBSTAR:
            if index == 0 and index == last:  # any path
                nfa.edges[current].append((_PATH_CHAR, current))
            elif index == last:  # (/.*)?
                inner = nfa.step(current, _SLASH)
                nfa.edges[inner].append((_PATH_CHAR, inner))
                end = nfa.state()
                nfa.eps[current].append((end, 0))
                nfa.eps[inner].append((end, 0))
                current = end
            else:  # (.*/)?, preceded by the separator of the previous segment
                if need_separator:
                    current = nfa.step(current, _SLASH)
                inner = nfa.state()
                nfa.edges[inner].append((_PATH_CHAR, inner))
                end = nfa.state()
                nfa.eps[current].append((inner, 0))
                nfa.edges[inner].append((_SLASH, end))
                nfa.eps[current].append((end, 0))
                current = end
                need_separator = False
            continue
        if need_separator:
            current = nfa.step(current, _SLASH)
        for token in _parse_segment(segment, pattern):
            if isinstance(token, _Star):
                busy = nfa.step(current, _SEGMENT_CHAR)
                nfa.edges[busy].append((_SEGMENT_CHAR, busy))
                end = nfa.state()
                nfa.eps[busy].append((end, 0))
                nfa.eps[current].append((end, _EMPTY_STAR_COST))
                current = end
            else:
                current = nfa.step(current, token)
        need_separator = True
    return nfa.build(current)


# Valid repo paths as a DFA: segments are non-empty and neither "." nor "..".
_SEGMENT_START, _ONE_DOT, _TWO_DOTS, _IN_SEGMENT = range(4)
_NOT_DOT_SEGMENT_CHAR = _SEGMENT_CHAR & _DOT.complement()
_VALID: dict[int, tuple[tuple[_CharSet, int], ...]] = {
    _SEGMENT_START: ((_DOT, _ONE_DOT), (_NOT_DOT_SEGMENT_CHAR, _IN_SEGMENT)),
    _ONE_DOT: ((_DOT, _TWO_DOTS), (_NOT_DOT_SEGMENT_CHAR, _IN_SEGMENT)),
    _TWO_DOTS: ((_SEGMENT_CHAR, _IN_SEGMENT),),
    _IN_SEGMENT: ((_SEGMENT_CHAR, _IN_SEGMENT), (_SLASH, _SEGMENT_START)),
}


# A product state: (state in a's automaton, state in b's, state of the valid-path DFA).
_State = tuple[int, int, int]


@lru_cache(maxsize=65536)
def glob_overlap(a: str, b: str) -> str | None:
    """A valid path matching both ``a`` and ``b``, or None when no such path exists.

    Exact, not heuristic: a cheapest-first search over the product of both patterns' automata
    and the automaton of valid paths; the witness is the path spelled along the way.

    Raises:
        InvalidInput: as ``normalize_glob``, for either pattern.
    """
    nfa_a, nfa_b = _nfa(a), _nfa(b)
    start: _State = (0, 0, _SEGMENT_START)
    best: dict[_State, int] = {start: 0}
    came_from: dict[_State, tuple[_State, str]] = {}
    order = itertools.count()  # tie-breaker so states themselves are never compared
    queue: list[tuple[int, int, _State]] = [(0, next(order), start)]
    while queue:
        cost, _, state = heapq.heappop(queue)
        if cost > best[state]:
            continue
        sa, sb, sv = state
        if sa == nfa_a.accept and sb == nfa_b.accept and sv == _IN_SEGMENT:
            return _spell(state, came_from)
        moves: list[tuple[_State, int, str]] = []
        moves += [((ta, sb, sv), c, "") for ta, c in nfa_a.eps[sa]]
        moves += [((sa, tb, sv), c, "") for tb, c in nfa_b.eps[sb]]
        for (set_a, ta), (set_b, tb), (set_v, tv) in itertools.product(nfa_a.edges[sa], nfa_b.edges[sb], _VALID[sv]):
            char = (set_a & set_b & set_v).pick()
            if char is not None:
                moves.append(((ta, tb, tv), _CHAR_COST if char in _PLAIN else _ODD_CHAR_COST, char))
        for target, step_cost, char in moves:
            new_cost = cost + step_cost
            if new_cost < best.get(target, new_cost + 1):
                best[target] = new_cost
                came_from[target] = (state, char)
                heapq.heappush(queue, (new_cost, next(order), target))
    return None


def _spell(state: _State, came_from: dict[_State, tuple[_State, str]]) -> str:
    chars: list[str] = []
    while state in came_from:
        state, char = came_from[state]
        chars.append(char)
    return "".join(reversed(chars))


def first_overlap(globs_a: Iterable[str], globs_b: Iterable[str]) -> tuple[str, str, str] | None:
    """The first ``(pattern_a, pattern_b, witness)`` where the two pattern sets overlap, else None.

    Raises:
        InvalidInput: as ``normalize_glob``, for any pattern reached.
    """
    list_b = list(globs_b)
    for pattern_a in globs_a:
        for pattern_b in list_b:
            witness = glob_overlap(pattern_a, pattern_b)
            if witness is not None:
                return pattern_a, pattern_b, witness
    return None


# --- containment: is every path of one pattern matched by another? -------------------------------


def _closure(nfa: _Nfa, states: Iterable[int]) -> frozenset[int]:
    seen = set(states)
    stack = list(seen)
    while stack:
        for target, _ in nfa.eps[stack.pop()]:
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return frozenset(seen)


def _regions(charset: _CharSet, splitters: Iterable[_CharSet]) -> list[_CharSet]:
    """Split ``charset`` so that every splitter holds each region wholly or not at all."""
    regions = [charset] if charset.ranges else []
    for splitter in splitters:
        refined: list[_CharSet] = []
        for region in regions:
            for part in (region & splitter, region & splitter.complement()):
                if part.ranges:
                    refined.append(part)
        regions = refined
    return regions


@lru_cache(maxsize=65536)
def literal_prefix(pattern: str) -> str:
    """The part of a pattern before its first wildcard: every path it matches starts with it."""
    for index, char in enumerate(pattern):
        if char in _WILDCARDS:
            return pattern[:index]
    return pattern


@lru_cache(maxsize=65536)
def glob_within(inner: str, outer: str) -> bool:
    """True when every valid path ``inner`` matches is also matched by ``outer``.

    Exact: a search over ``inner``'s automaton paired with the subset construction of
    ``outer``'s, looking for a path that ``inner`` accepts and ``outer`` does not.

    Raises:
        InvalidInput: as ``normalize_glob``, for either pattern.
    """
    inner, outer = normalize_glob(inner), normalize_glob(outer)
    if inner == outer or outer == _GLOBSTAR:
        return True
    if outer.endswith("/**") and not _WILDCARDS & set(outer[:-3]):
        prefix = outer[:-3]
        if inner == prefix or inner.startswith(prefix + "/"):
            return True
    outer_prefix, inner_prefix = literal_prefix(outer), literal_prefix(inner)
    if not (inner_prefix.startswith(outer_prefix) or outer_prefix.startswith(inner_prefix)):
        return False  # the literal starts already differ, and inner matches at least one path
    nfa_in, nfa_out = _nfa(inner), _nfa(outer)
    start = (_closure(nfa_in, [0]), _closure(nfa_out, [0]), _SEGMENT_START)
    seen = {start}
    stack = [start]
    while stack:
        set_in, set_out, sv = stack.pop()
        if nfa_in.accept in set_in and nfa_out.accept not in set_out and sv == _IN_SEGMENT:
            return False
        out_edges = [edge for state in set_out for edge in nfa_out.edges[state]]
        for in_state in set_in:
            for set_a, _ in nfa_in.edges[in_state]:
                for set_v, tv in _VALID[sv]:
                    for region in _regions(set_a & set_v, [s for s, _ in out_edges]):
                        char = region.pick()
                        assert char is not None
                        next_in = _closure(nfa_in, [t for s in set_in for cs, t in nfa_in.edges[s] if char in cs])
                        next_out = _closure(nfa_out, [t for cs, t in out_edges if char in cs])
                        state = (next_in, next_out, tv)
                        if state not in seen:
                            seen.add(state)
                            stack.append(state)
    return True
