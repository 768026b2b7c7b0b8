"""Reading a test runner's JUnit XML report: which tests ran, and how each one ended.

JUnit XML is what pytest (``--junitxml``), jest-junit, go-junit-report and cargo-nextest all
write, each a little differently; this reader accepts any of them. Every ``<testcase>`` anywhere
in the document is one test: a ``<failure>`` child makes it ``failed``, ``<error>`` ``error``,
``<skipped>`` ``skipped`` (pytest's xfail included: it proves nothing passed), none ``passed``.
A test listed more than once keeps its worst outcome.

Test ids follow pytest's node ids where the report allows it: with a ``file`` attribute (pytest
with ``junit_family=xunit1``, which planegate asks for; jest-junit with ``addFileAttribute``), a
classname that spells the file's module (``tests.test_x.TestK``) becomes
``tests/test_x.py::TestK::name``; a pytest collection error (empty classname, the module as its
name) becomes the file path itself. Otherwise the id is ``classname::name``. Base and head runs
use the same runner and settings, so their ids compare.

The report is written by code under test, so it is read defensively: at most
``MAX_REPORT_BYTES``, and no DTD or entity declarations (nothing a test report needs, and the
way to make an XML parser expand a small file into gigabytes).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import ExecutionError

Outcome = Literal["passed", "failed", "error", "skipped"]
_RANK: dict[str, int] = {"skipped": 0, "passed": 1, "failed": 2, "error": 3}
MAX_REPORT_BYTES = 64 * 1024 * 1024
_SOURCE_SUFFIX = re.compile(r"\.(py|[cm]?[jt]sx?|go|rs|rb|java|kt|cs|php|swift)$")


class ReportUnreadable(ExecutionError):
    """The report is missing, too large, or not JUnit XML."""


@dataclass(frozen=True)
class JUnitCase:
    id: str
    outcome: Outcome
    classname: str
    name: str
    file: str | None = None
    message: str = ""

    @property
    def failing(self) -> bool:
        return self.outcome in ("failed", "error")


@dataclass
class JUnitReport:
    cases: dict[str, JUnitCase] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        tally = Counter(c.outcome for c in self.cases.values())
        return {
            "tests": len(self.cases),
            "passed": tally["passed"],
            "failed": tally["failed"] + tally["error"],
            "skipped": tally["skipped"],
        }

    def passed_ids(self) -> set[str]:
        return {i for i, c in self.cases.items() if c.outcome == "passed"}

    def describe(self) -> str:
        c = self.counts()
        noun = "test" if c["tests"] == 1 else "tests"
        return f"{c['tests']} {noun}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"


def module_of(path: str) -> str:
    """The dotted name a runner derives from a test file: ``tests/test_x.py`` → ``tests.test_x``."""
    return _SOURCE_SUFFIX.sub("", path).replace("/", ".")


def case_id(classname: str, name: str, file: str | None) -> str:
    """The id of one test case (see the module docstring)."""
    if file:
        file = file.replace("\\", "/").removeprefix("./")
        module = module_of(file)
        if not classname and (name == module or module.endswith("." + name) or name.endswith("." + module)):
            return file
        if classname == module:
            return f"{file}::{name}"
        if classname.startswith(module + "."):
            return f"{file}::{classname[len(module) + 1 :].replace('.', '::')}::{name}"
        return f"{file}::{classname}::{name}" if classname else f"{file}::{name}"
    return f"{classname}::{name}" if classname else name


def _outcome(case: ET.Element) -> tuple[Outcome, str]:
    tags = {child.tag: child for child in case}
    for tag, outcome in (("error", "error"), ("failure", "failed"), ("skipped", "skipped")):
        if tag in tags:
            message = tags[tag].get("message") or (tags[tag].text or "").strip()
            return outcome, message[:300]  # type: ignore[return-value]
    return "passed", ""


def parse_report_bytes(data: bytes) -> JUnitReport:
    """Parse JUnit XML.

    Raises:
        ReportUnreadable: too large, declares a DTD or entities, or is not JUnit XML.
    """
    if len(data) > MAX_REPORT_BYTES:
        raise ReportUnreadable(f"the test report is {len(data)} bytes, over the {MAX_REPORT_BYTES} byte limit")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ReportUnreadable("the test report declares a DTD or entities, which a JUnit report never needs")
    try:
        root = ET.fromstring(data)  # noqa: S314 - size-capped, DTD/entities refused above
    except ET.ParseError as exc:
        raise ReportUnreadable(f"the test report is not well-formed XML ({exc})") from exc
    if root.tag not in ("testsuites", "testsuite", "testcase"):
        raise ReportUnreadable(f"the test report's root element is <{root.tag}>, not <testsuites> or <testsuite>")
    report = JUnitReport()

    def walk(element: ET.Element, inherited_file: str | None) -> None:
        file = element.get("file") or inherited_file
        if element.tag == "testcase":
            classname, name = element.get("classname") or "", element.get("name") or ""
            if not classname and not name:
                return
            outcome, message = _outcome(element)
            case = JUnitCase(case_id(classname, name, file), outcome, classname, name, file, message)
            known = report.cases.get(case.id)
            if known is None or _RANK[outcome] > _RANK[known.outcome]:
                report.cases[case.id] = case
            return
        for child in element:
            walk(child, file)

    walk(root, None)
    return report


def parse_report(path: Path) -> JUnitReport:
    """Parse the JUnit XML file at ``path``.

    Raises:
        ReportUnreadable: the file is missing or unreadable (see ``parse_report_bytes``).
    """
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise ReportUnreadable(f"the test report {path} is {size} bytes, over the {MAX_REPORT_BYTES} byte limit")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ReportUnreadable(f"the test check wrote no report at {path}") from exc
    except OSError as exc:
        raise ReportUnreadable(f"the test report {path} cannot be read: {exc.strerror}") from exc
    return parse_report_bytes(data)
