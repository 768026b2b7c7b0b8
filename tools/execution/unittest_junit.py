"""``python -m unittest`` with a JUnit XML report, and selection by test id: planegate's unittest runner.

planegate copies this file, alone, into a directory of its own as ``planegate_unittest_junit.py``
and runs the test check's argv with ``-m unittest`` replaced by ``-m planegate_unittest_junit``
and that directory on ``PYTHONPATH``. The arguments are unittest's own; the tests load and run
exactly as unittest would load and run them. Added:

- the report goes to ``$PLANEGATE_TEST_REPORT``: one ``<testcase>`` per test, with the file it
  is defined in, so its id is ``tests/test_x.py::TestK::test_y`` like a pytest node id; a module
  that fails to import is one error case named after the module, its file as its id;
- when ``$PLANEGATE_TEST_SELECT`` names a file of test ids (one per line), only those tests run
  (and load failures of their files), after the same discovery as a full run.

It imports only the standard library and runs on the repository's own Python (3.8 and later).
"""

from __future__ import annotations

import inspect
import os
import sys
import time
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

_FAILED = "unittest.loader._FailedTest."
_RANK = {"skipped": 0, "passed": 1, "failure": 2, "error": 3}


def _relative(source: str | None) -> str | None:
    return os.path.relpath(source).replace(os.sep, "/") if source else None


def _module_file(module: str, top: str | None) -> str | None:
    for root in (top, "."):
        if root is None:
            continue
        base = Path(root).joinpath(*module.split("."))
        for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
            if candidate.exists():
                return _relative(str(candidate))
    return None


class _Case:
    """One test as the report names it: ``file``, ``module.Qual.Name`` as classname, method name."""

    def __init__(self, file: str | None, module: str, qualname: str, name: str) -> None:
        self.file, self.module, self.qualname, self.name = file, module, qualname, name
        self.outcome, self.message, self.seconds = "passed", "", 0.0

    @property
    def classname(self) -> str:
        return ".".join(p for p in (self.module, self.qualname) if p) if self.qualname else ""

    @property
    def id(self) -> str:
        if not self.qualname:  # a module that failed to load
            return self.file or self.name
        if self.file:
            return "::".join([self.file, *self.qualname.split("."), self.name])
        return f"{self.classname}::{self.name}"


def _describe(test: Any, top: str | None) -> _Case:
    test_id = test.id()
    if test_id.startswith(_FAILED):
        module = test_id[len(_FAILED) :]
        return _Case(_module_file(module, top), "", "", module)
    if not isinstance(test, unittest.TestCase):  # an error in setUpClass/setUpModule: "setUpClass (mod.K)"
        where = test_id.partition("(")[2].rstrip(")")
        module, _, qualname = where.rpartition(".")
        file = _module_file(module, top) if module else None
        return _Case(file, module, qualname or where, test_id.partition(" ")[0])
    cls = type(test)
    try:
        file = _relative(inspect.getsourcefile(cls))
    except TypeError:
        file = None
    return _Case(file, cls.__module__, cls.__qualname__, test_id.rpartition(".")[2])


class _Result(unittest.TextTestResult):
    top: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cases: dict[str, _Case] = {}
        self._started: dict[str, float] = {}

    def _text(self, err: Any, test: Any) -> str:
        return str(self._exc_info_to_string(err, test))  # type: ignore[attr-defined]

    def startTest(self, test: Any) -> None:
        self._started[test.id()] = time.perf_counter()
        super().startTest(test)

    def _record(self, test: Any, outcome: str, message: str = "") -> None:
        case = _describe(test, self.top)
        case.outcome, case.message = outcome, message[:2000]
        case.seconds = time.perf_counter() - self._started.get(test.id(), time.perf_counter())
        known = self.cases.get(case.id)
        if known is None or _RANK[outcome] > _RANK[known.outcome]:
            self.cases[case.id] = case

    def addSuccess(self, test: Any) -> None:
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._record(test, "failure", self._text(err, test))

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._record(test, "error", self._text(err, test))

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)

    def addExpectedFailure(self, test: Any, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "skipped", "expected failure")

    def addUnexpectedSuccess(self, test: Any) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "failure", "unexpected success")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._record(test, "failure" if failed else "error", self._text(err, test))


class _Runner(unittest.TextTestRunner):
    resultclass = _Result


def _flatten(suite: Any) -> list[Any]:
    if isinstance(suite, unittest.TestSuite):
        return [test for inner in suite for test in _flatten(inner)]
    return [suite]


def _read_selection(path: str) -> set[str]:
    return {line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()}


class Program(unittest.TestProgram):
    def runTests(self) -> None:
        top = getattr(self, "top", None)
        _Result.top = top
        selection = os.environ.get("PLANEGATE_TEST_SELECT")
        if selection:
            wanted = _read_selection(selection)
            kept = []
            suite: Any = getattr(self, "test", None)
            for test in _flatten(suite):
                case = _describe(test, top)
                loading = case.file is not None and case.id == case.file
                if case.id in wanted or (loading and any(w.startswith(f"{case.file}::") for w in wanted)):
                    kept.append(test)
            self.test = unittest.TestSuite(kept)
        super().runTests()


def _write(path: str, result: _Result, seconds: float) -> None:
    suite = ET.Element("testsuite", name="unittest", time=f"{seconds:.3f}")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for case in result.cases.values():
        attrs = {"classname": case.classname, "name": case.name, "time": f"{case.seconds:.3f}"}
        if case.file:
            attrs["file"] = case.file
        element = ET.SubElement(suite, "testcase", attrs)
        counts["tests"] += 1
        if case.outcome != "passed":
            tag = "skipped" if case.outcome == "skipped" else case.outcome
            counts[{"skipped": "skipped", "failure": "failures", "error": "errors"}[tag]] += 1
            child = ET.SubElement(element, tag, message=case.message.splitlines()[0][:300] if case.message else "")
            child.text = case.message
    for key, value in counts.items():
        suite.set(key, str(value))
    root = ET.Element("testsuites")
    root.append(suite)
    Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    started = time.perf_counter()
    program = Program(module=None, argv=["python -m unittest", *args], testRunner=_Runner, exit=False)
    result = program.result
    report = os.environ.get("PLANEGATE_TEST_REPORT")
    if report and isinstance(result, _Result):
        _write(report, result, time.perf_counter() - started)
    if result.testsRun == 0 and not result.skipped and not result.errors:
        return 5
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
