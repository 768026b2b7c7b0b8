"""Which tests a change adds, and which existing tests it changes, file by file.

Red→green runs exactly these tests on the base, and the rule it enforces depends on the split: a
*new* test proves the change when it fails on the base; a *changed* existing test must fail on
the base (a change that leaves it passing there weakened it, or changed nothing it checks) unless
the task declared it in ``rewrites_tests``.

Python test files are read with ``ast``, by pytest's and unittest's rules for what a test is
(``test*`` functions, ``test*`` methods of ``Test*`` classes or ``TestCase`` subclasses). An
existing test counts as changed when its own code changed (docstrings and formatting aside), when
its class's other members changed, or when a module-level name it uses, directly or through the
module's helpers and fixtures, is bound differently (an import, a helper, a fixture, a constant);
statements that bind no name, ``pytestmark`` and autouse fixtures touch every test of the file.
Conftest fixtures are not followed: ``conftest.py`` is a harness path, declared separately.

Other languages are read as text: a test starts at its name (``func TestX(`` in Go, a
``#[test] fn x`` in Rust, ``it("…"`` / ``test("…"`` in JavaScript and TypeScript) and runs to the
next test's start; a test whose text differs from the base's is changed. When no test can be
found in a changed file, the whole file is selected and nothing is known about which of its tests
changed (``precise`` is False).
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .junit import JUnitCase, module_of


@dataclass(frozen=True)
class ChangedTest:
    id: str
    file: str
    name: str
    chain: tuple[str, ...] = ()
    new: bool = True
    python: bool = True

    @property
    def dotted(self) -> str:
        """``tests.test_x.TestK.test_y``: how unittest names the test."""
        return ".".join([module_of(self.file), *self.chain, self.name])


@dataclass(frozen=True)
class FileChanges:
    path: str
    existed: bool
    tests: list[ChangedTest] = field(default_factory=list)
    precise: bool = True
    head_tests: int = 0

    @property
    def changed(self) -> list[ChangedTest]:
        return [t for t in self.tests if not t.new]


# --- Python ----------------------------------------------------------------------------------


def _strip_docstrings(node: ast.AST) -> ast.AST:
    clone = copy.deepcopy(node)
    for inner in ast.walk(clone):
        body = getattr(inner, "body", None)
        if (
            isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module)
            and isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            inner.body = body[1:] or [ast.Pass()]
    return clone


def _sig(node: ast.AST) -> str:
    return ast.dump(_strip_docstrings(node), include_attributes=False)


def _refs(node: ast.AST) -> set[str]:
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        arguments = node.args
        names |= {a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]}
    return names


def _is_test_class(node: ast.stmt) -> bool:
    if not isinstance(node, ast.ClassDef):
        return False
    if node.name.startswith("Test"):
        return True
    for base in node.bases:
        name = base.attr if isinstance(base, ast.Attribute) else base.id if isinstance(base, ast.Name) else ""
        if name.endswith("TestCase"):
            return True
    return False


def _is_test_function(node: ast.stmt) -> bool:
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")


@dataclass
class _PyTest:
    name: str
    chain: tuple[str, ...]
    sig: str
    refs: set[str]
    class_sigs: tuple[str, ...]


def _python_tests(tree: ast.Module) -> dict[tuple[str, ...], _PyTest]:
    found: dict[tuple[str, ...], _PyTest] = {}

    def visit(body: list[ast.stmt], chain: tuple[str, ...], class_sigs: tuple[str, ...], class_refs: set[str]) -> None:
        for node in body:
            if _is_test_function(node):
                assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                found[(*chain, node.name)] = _PyTest(node.name, chain, _sig(node), _refs(node) | class_refs, class_sigs)
            elif _is_test_class(node):
                assert isinstance(node, ast.ClassDef)
                members = [m for m in node.body if not _is_test_function(m) and not _is_test_class(m)]
                shell = copy.copy(node)
                shell.body = members or [ast.Pass()]
                refs = set(class_refs)
                for member in [*members, *node.bases, *node.decorator_list]:
                    refs |= _refs(member)
                visit(node.body, (*chain, node.name), (*class_sigs, _sig(shell)), refs)

    visit(tree.body, (), (), set())
    return found


def _bound(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {stmt.name}
    names = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node is not stmt:
            names.add(node.name)
    return names


def _autouse(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    for decorator in stmt.decorator_list:
        for node in ast.walk(decorator):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "autouse"
                and not (isinstance(node.value, ast.Constant) and not node.value.value)
            ):
                return True
    return False


@dataclass
class _Module:
    sigs: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    refs: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    wide: list[str] = field(default_factory=list)


def _module(tree: ast.Module) -> _Module:
    facts = _Module()
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    for stmt in body:
        if _is_test_function(stmt) or _is_test_class(stmt):
            continue
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            module = stmt.module if isinstance(stmt, ast.ImportFrom) else None
            level = stmt.level if isinstance(stmt, ast.ImportFrom) else 0
            for alias in stmt.names:
                if alias.name == "*":
                    facts.wide.append(f"import * from {module} {level}")
                    continue
                alias_name = alias.asname or alias.name.split(".")[0]
                facts.sigs[alias_name].append(f"import {module} {alias.name} {alias.asname} {level}")
            continue
        sig = _sig(stmt)
        bound = _bound(stmt)
        if not bound or "pytestmark" in bound or _autouse(stmt):
            facts.wide.append(sig)
        for name in bound:
            facts.sigs[name].append(sig)
            facts.refs[name] |= _refs(stmt)
    return facts


def _closure(start: set[str], refs: dict[str, set[str]]) -> set[str]:
    seen = set(start)
    stack = list(start)
    while stack:
        for name in refs.get(stack.pop(), ()):
            if name not in seen:
                seen.add(name)
                stack.append(name)
    return seen


def python_changes(path: str, base: bytes | None, head: bytes) -> FileChanges:
    try:
        head_tree = ast.parse(head)
    except (SyntaxError, ValueError):
        return FileChanges(path, base is not None, [], precise=False)
    head_tests = _python_tests(head_tree)
    base_tree: ast.Module | None = None
    if base is not None:
        try:
            base_tree = ast.parse(base)
        except (SyntaxError, ValueError):
            base_tree = None
    base_tests = _python_tests(base_tree) if base_tree else {}
    head_module = _module(head_tree)
    base_module = _module(base_tree) if base_tree else _Module()
    changed_names = {
        name
        for name in set(head_module.sigs) | set(base_module.sigs)
        if sorted(head_module.sigs.get(name, [])) != sorted(base_module.sigs.get(name, []))
    }
    wide = Counter(head_module.wide) != Counter(base_module.wide)
    refs: dict[str, set[str]] = defaultdict(set)
    for facts in (head_module, base_module):
        for name, used in facts.refs.items():
            refs[name] |= used
    tests = []
    for key, test in head_tests.items():
        before = base_tests.get(key)
        test_id = "::".join([path, *key])
        if before is None:
            tests.append(ChangedTest(test_id, path, test.name, test.chain, new=True))
            continue
        uses = _closure(test.refs | before.refs, refs)
        if test.sig != before.sig or test.class_sigs != before.class_sigs or wide or uses & changed_names:
            tests.append(ChangedTest(test_id, path, test.name, test.chain, new=False))
    return FileChanges(path, base is not None, tests, precise=True, head_tests=len(head_tests))


# --- other languages --------------------------------------------------------------------------

_GO = re.compile(r"^func\s+(Test\w*)\s*\(", re.MULTILINE)
_RUST = re.compile(
    r"#\[(?:[\w:]*::)?test[^\]]*\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+(\w+)", re.MULTILINE
)
_JS = re.compile(
    r"\b(?:it|test)(?:\.(?:only|skip|todo|concurrent|failing))?\s*\(\s*(['\"`])((?:\\.|(?!\1).)*?)\1", re.MULTILINE
)


def _pattern_for(path: str) -> tuple[re.Pattern[str], int] | None:
    suffix = PurePosixPath(path).suffix
    if suffix == ".go":
        return _GO, 1
    if suffix == ".rs":
        return _RUST, 1
    if suffix in (".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs", ".mts", ".cts"):
        return _JS, 2
    return None


def _blocks(text: str, pattern: re.Pattern[str], group: int) -> dict[str, list[str]]:
    """Each test name's text, from its start to the next test's start, whitespace-normalised."""
    starts = [(m.start(), m.group(group)) for m in pattern.finditer(text)]
    blocks: dict[str, list[str]] = defaultdict(list)
    for index, (start, name) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
        blocks[name].append(" ".join(text[start:end].split()))
    return blocks


def text_changes(path: str, base: bytes | None, head: bytes) -> FileChanges:
    found = _pattern_for(path)
    if found is None:
        return FileChanges(path, base is not None, [], precise=False)
    pattern, group = found
    head_blocks = _blocks(head.decode("utf-8", "replace"), pattern, group)
    if not head_blocks:
        return FileChanges(path, base is not None, [], precise=False)
    base_blocks = _blocks(base.decode("utf-8", "replace"), pattern, group) if base is not None else {}
    tests = []
    for name, blocks in head_blocks.items():
        before = base_blocks.get(name)
        if before is None or sorted(before) != sorted(blocks):
            tests.append(ChangedTest(f"{path}::{name}", path, name, new=before is None, python=False))
    return FileChanges(path, base is not None, tests, precise=True, head_tests=len(head_blocks))


def file_changes(path: str, base: bytes | None, head: bytes) -> FileChanges:
    """The new and changed tests of one test file (``base`` None: the file is new)."""
    if path.endswith(".py"):
        return python_changes(path, base, head)
    return text_changes(path, base, head)


# --- matching report entries to changed tests ---------------------------------------------------


def _same_file(report_file: str, path: str) -> bool:
    return report_file == path or path.endswith("/" + report_file) or report_file.endswith("/" + path)


def _suffix_equal(a: str, b: str) -> bool:
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def case_matches(case: JUnitCase, test: ChangedTest) -> bool:
    """Whether a report entry is (an instance of) ``test``, or a failure to load its file."""
    if case.file and not _same_file(case.file, test.file):
        return False
    if case.file and case.id == case.file:  # the file failed to load (a pytest collection error)
        return True
    if test.python:
        base_name = case.name.split("[", 1)[0]
        if base_name != test.name:
            return not case.classname and _suffix_equal(case.name, module_of(test.file))
        return _suffix_equal(case.classname, ".".join([module_of(test.file), *test.chain]))
    name = case.name
    return (
        name == test.name
        or name.endswith(" " + test.name)
        or name.split("/", 1)[0] == test.name
        or name.endswith("::" + test.name)
    )


def declared(test_id: str, patterns: list[str]) -> bool:
    """Whether a test id is covered by a declaration: the id itself, a prefix of it at ``::`` or
    ``[`` (a file, a class, a parametrized test), a directory, or a glob."""
    for pattern in patterns:
        if test_id == pattern or test_id.startswith((pattern + "::", pattern + "[", pattern.rstrip("/") + "/")):
            return True
        if any(c in pattern for c in "*?") and fnmatch.fnmatchcase(test_id, pattern):
            return True
    return False
