"""The glob dialect: matching, normalization, and exact overlap between two globs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planegate.tools import globs
from planegate.tools.errors import InvalidInput
from planegate.tools.globs import (
    compile_glob,
    first_overlap,
    glob_matches,
    glob_overlap,
    matches_any,
    normalize_glob,
)
from planegate.tools.policy import DEFAULT_RUNTIME_PATHS, DEFAULT_TEST_PATHS

# --- examples --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("src/**", "src/a.py"),
        ("src/**", "src/a/b.py"),
        ("src/**", "src"),
        ("**/test_*.py", "test_x.py"),
        ("**/test_*.py", "a/b/test_x.py"),
        ("a/**/b", "a/b"),
        ("a/**/b", "a/x/y/b"),
        ("src/*.py", "src/.hidden.py"),
        ("src/?.py", "src/a.py"),
        ("src/[abc].py", "src/b.py"),
        ("src/[a-c]x.py", "src/cx.py"),
        ("src/[!x].py", "src/y.py"),
        ("src/[^x].py", "src/y.py"),
        ("src/[]]", "src/]"),
        ("src/[*]", "src/*"),
        ("src/", "src/deep/file.txt"),
        ("src/api", "src/api"),
        ("src/api", "src/api/handlers/x.py"),
        ("./docs/*.md", "docs/index.md"),
        ("src/a**b.py", "src/aXYb.py"),
        ("**", "anything/at/all"),
        ("README.md", "README.md"),
    ],
)
def test_glob_matches(pattern: str, path: str) -> None:
    assert glob_matches(pattern, path)


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("src/*.py", "src/api/app.py"),
        ("src/?.py", "src/ab.py"),
        ("src/?.py", "src//.py"),
        ("src/[abc].py", "src/d.py"),
        ("src/[!x].py", "src/x.py"),
        ("src/[!x]y", "src//y"),
        ("src/api", "src/apis/x.py"),
        ("src/api", "src"),
        ("**/test_*.py", "a/b/xtest_x.py"),
        ("a/**/b", "a/xb"),
        ("src/a**b.py", "src/a/b.py"),
        ("docs/", "docs2/a.md"),
        ("README.md", "docs/README.md"),
    ],
)
def test_glob_does_not_match(pattern: str, path: str) -> None:
    assert not glob_matches(pattern, path)


def test_matches_any_and_compile_cache() -> None:
    assert matches_any("src/api/x.py", ["docs/**", "src/api/"])
    assert not matches_any("lib/x.py", ["docs/**", "src/**"])
    assert not matches_any("lib/x.py", [])
    assert compile_glob("src/**") is compile_glob("src/**")


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("./src/**", "src/**"),
        ("src/", "src/**"),
        ("src//api/./x.py", "src/api/x.py"),
        ("**/**/*.py", "**/*.py"),
        ("src/api", "src/api"),
    ],
)
def test_normalize_glob_canonical_forms(raw: str, canonical: str) -> None:
    assert normalize_glob(raw) == canonical


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        ("", "empty"),
        ("./", "empty"),
        ("/etc/passwd", "absolute"),
        ("src/../secrets", ".."),
        ("src\\api", "backslash"),
        ("src/\x00x", "NUL"),
        ("src/[ab", "closing ']'"),
        ("src/[a/b]", "closing ']'"),
        ("src/[z-a]", "reversed range"),
    ],
)
def test_normalize_glob_rejects_with_the_pattern_and_a_fix(bad: str, hint: str) -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_glob(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert hint in message
    with pytest.raises(InvalidInput):
        glob_matches(bad, "src/x")
    with pytest.raises(InvalidInput):
        glob_overlap(bad, "src/**")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("src/*.py", "src/api/**"),
        ("src/api/**", "src/web/**"),
        ("docs/*.md", "docs/*.txt"),
        ("src/[ab].py", "src/[cd].py"),
        ("src/[!a]", "src/a"),
        ("src/?", "src/ab"),
        ("*.py", "**/x/*"),
        ("a/**/b", "a/*/c"),
        ("src/api", "src/apis"),
        ("src/*/x.py", "src/x.[p]y"),
    ],
)
def test_disjoint_globs_have_no_overlap(a: str, b: str) -> None:
    assert glob_overlap(a, b) is None
    assert glob_overlap(b, a) is None


@pytest.mark.parametrize(
    ("a", "b", "witness"),
    [
        ("src/**", "src/api/x.py", "src/api/x.py"),
        ("**/*.md", "docs/**", "docs/a.md"),
        ("src/api", "src/api/x.py", "src/api/x.py"),
        ("src/", "src", "src"),
        ("**/test_*.py", "tests/", "tests/test_a.py"),
        ("src/*/x.py", "src/**/x.py", "src/a/x.py"),
        ("a/**/b/*", "a/c/**", "a/c/b/a"),
        ("src/[!a]", "src/?", "src/b"),
        ("*.[ch]", "[!a]*", "b.c"),
    ],
)
def test_overlapping_globs_give_a_witness(a: str, b: str, witness: str) -> None:
    assert glob_overlap(a, b) == witness
    found = glob_overlap(b, a)
    assert found is not None
    assert glob_matches(a, found)
    assert glob_matches(b, found)


def test_a_wildcard_free_glob_also_covers_what_lies_below_it() -> None:
    # 'src/x.py' names a path and everything below it, so a directory of that name overlaps.
    assert glob_overlap("src/*/x.py", "src/x.py") == "src/x.py/x.py"


def test_overlap_witness_is_a_valid_path() -> None:
    # '*' alone would accept '.' or '..', which are never repo paths.
    assert glob_overlap("*", ".?") == ".a"
    assert glob_overlap("[.]", "*") is None
    assert glob_overlap("[.][.]", "*") is None
    assert glob_overlap("a/*/b", "a/[!x]/b") == "a/a/b"


def test_first_overlap_names_both_patterns() -> None:
    assert first_overlap(["docs/**", "src/api/**"], ["lib/**", "src/*/handlers.py"]) == (
        "src/api/**",
        "src/*/handlers.py",
        "src/api/handlers.py",
    )
    assert first_overlap(["docs/**"], ["src/**", "lib/"]) is None


# --- properties ------------------------------------------------------------------------------

ALPHABET = "ab.c"
TOKENS = ["a", "b", ".", "*", "?", "[ab]", "[!a]", "[a-b]", "[.c]"]


def _valid_segment(segment: str) -> bool:
    return segment not in ("", ".", "..")


path_segments = st.text(alphabet=ALPHABET, min_size=1, max_size=3).filter(_valid_segment)
paths = st.lists(path_segments, min_size=1, max_size=4).map("/".join)
pattern_segments = st.one_of(
    st.just("**"),
    st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3).map("".join).filter(_valid_segment),
)
patterns = st.builds(
    lambda segments, slash: "/".join(segments) + ("/" if slash else ""),
    st.lists(pattern_segments, min_size=1, max_size=4),
    st.booleans(),
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reference_segment(pattern: str, text: str) -> bool:
    """Character-wise recursion over one segment (no regex, no automaton)."""
    if not pattern:
        return not text
    head = pattern[0]
    if head == "*":
        rest = pattern.lstrip("*")
        return any(_reference_segment(rest, text[i:]) for i in range(len(text) + 1))
    if not text:
        return False
    if head == "?":
        return _reference_segment(pattern[1:], text[1:])
    if head == "[":
        end = pattern.index("]", 2)
        body = pattern[1:end]
        negated = body[:1] in ("!", "^")
        if negated:
            body = body[1:]
        members: set[str] = set()
        i = 0
        while i < len(body):
            if i + 2 < len(body) and body[i + 1] == "-":
                members.update(chr(c) for c in range(ord(body[i]), ord(body[i + 2]) + 1))
                i += 3
            else:
                members.add(body[i])
                i += 1
        return (text[0] in members) != negated and _reference_segment(pattern[end + 1 :], text[1:])
    return head == text[0] and _reference_segment(pattern[1:], text[1:])


def _reference_segments(pattern: list[str], path: list[str]) -> bool:
    if not pattern:
        return not path
    if pattern[0] == "**":
        return _reference_segments(pattern[1:], path) or (bool(path) and _reference_segments(pattern, path[1:]))
    return bool(path) and _reference_segment(pattern[0], path[0]) and _reference_segments(pattern[1:], path[1:])


def reference_match(pattern: str, path: str) -> bool:
    """Slow segment-wise matcher written from the dialect's description."""
    below = pattern.endswith("/")
    segments = [s for s in pattern.split("/") if s]
    if below or not any(c in pattern for c in "*?["):
        segments.append("**")
    return _reference_segments(segments, path.split("/"))


def _short_paths(max_len: int) -> list[str]:
    found = []
    for length in range(1, max_len + 1):
        for chars in itertools.product(ALPHABET + "/", repeat=length):
            path = "".join(chars)
            if all(_valid_segment(s) for s in path.split("/")):
                found.append(path)
    return found


SHORT_PATHS = _short_paths(5)


@PROPERTY
@given(patterns, paths)
def test_glob_matches_agrees_with_the_reference_matcher(pattern: str, path: str) -> None:
    assert glob_matches(pattern, path) == reference_match(pattern, path)


@PROPERTY
@given(patterns, patterns)
def test_overlap_witness_matches_both_globs(a: str, b: str) -> None:
    witness = glob_overlap(a, b)
    if witness is not None:
        assert glob_matches(a, witness)
        assert glob_matches(b, witness)
        assert all(_valid_segment(s) for s in witness.split("/"))


@PROPERTY
@given(patterns, patterns, paths)
def test_a_path_matching_both_globs_means_they_overlap(a: str, b: str, path: str) -> None:
    if glob_matches(a, path) and glob_matches(b, path):
        assert glob_overlap(a, b) is not None


@settings(max_examples=60, deadline=None)
@given(patterns, patterns)
def test_no_overlap_means_no_short_path_matches_both(a: str, b: str) -> None:
    if glob_overlap(a, b) is None:
        ra, rb = compile_glob(a), compile_glob(b)
        assert not [p for p in SHORT_PATHS if ra.fullmatch(p) and rb.fullmatch(p)]


literal_patterns = st.builds(
    lambda segments, tail: "/".join(segments) + tail,
    st.lists(path_segments, min_size=1, max_size=3),
    st.sampled_from(["", "/", "/**"]),
)


@PROPERTY
@given(literal_patterns, st.text(alphabet="ab./", max_size=10))
def test_a_path_or_below_is_matched_as_text_exactly_as_its_regex_matches(pattern: str, text: str) -> None:
    """Wildcard-free scopes skip the regex; on any string, even one no valid path looks like
    (empty segments, a trailing slash), they must answer as the regex does."""
    assert glob_matches(pattern, text) == (compile_glob(pattern).fullmatch(text) is not None)


name_patterns = st.builds(
    lambda around, name: around.format(name),
    st.sampled_from(["{}", "**/{}", "./**/{}", "**//{}", "**/{}/**", "**/{}/"]),
    st.lists(st.sampled_from([*TOKENS, "[*]", "[a-c.]", "[!ab]"]), min_size=1, max_size=4)
    .map("".join)
    .filter(_valid_segment),
)


@PROPERTY
@given(st.one_of(name_patterns, patterns), st.text(alphabet="ab.c*/", max_size=10))
def test_every_text_match_answers_as_the_regex_on_any_string(pattern: str, text: str) -> None:
    """Name patterns (``**/*.py``, ``**/__tests__/**``) skip the regex too; they must answer as the
    regex does on any string, empty names and stray slashes included."""
    assert glob_matches(pattern, text) == (compile_glob(pattern).fullmatch(text) is not None)


def test_the_default_test_and_runtime_paths_compile_no_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_regex(pattern: str) -> None:
        raise AssertionError(f"{pattern!r} compiled a regex")

    monkeypatch.setattr(globs, "compile_glob", no_regex)
    globs._matcher.cache_clear()
    try:
        for pattern in [*DEFAULT_TEST_PATHS, *DEFAULT_RUNTIME_PATHS]:
            glob_matches(pattern, "src/pkg/__tests__/test_a.py")
    finally:
        globs._matcher.cache_clear()
    assert glob_matches("**/*.test.[jt]sx", "web/src/app.test.tsx")
    assert not glob_matches("**/*.test.[jt]sx", "web/src/app.test.csx")
