"""Test reports and test changes, without a run: JUnit parsing, which tests a diff adds or changes,
selecting tests, the [tests] policy keys, declarations in the graph, and harness paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from planegate.tools.control.graph import declaration_lines, validate_graph
from planegate.tools.errors import InvalidInput, PolicyError
from planegate.tools.execution.junit import ReportUnreadable, parse_report, parse_report_bytes
from planegate.tools.execution.testchanges import case_matches, declared, file_changes
from planegate.tools.execution.testreports import detect_runner, expand_select, pytest_select_argv
from planegate.tools.execution.unittest_junit import __file__ as UNITTEST_RUNNER
from planegate.tools.gates.facts import harness_changes, harness_patterns
from planegate.tools.gitrepo import GitRepo
from planegate.tools.models import DeclaredHarness, DeclaredTests, TaskSpec
from planegate.tools.policy import parse_policy
from tests.helpers import commit_all, make_repo

PYTEST_XML = b"""<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="1" failures="1" skipped="2" tests="8">
<testcase classname="" name="tests.sub.test_b" file="tests/sub/test_b.py">
  <error message="collection failure">x</error></testcase>
<testcase classname="tests.test_a" name="test_one" file="tests/test_a.py" line="3">
  <failure message="assert 2 == 1">x</failure></testcase>
<testcase classname="tests.test_a.TestK" name="test_m" file="tests/test_a.py" line="7" />
<testcase classname="tests.test_a.TestK.TestInner" name="test_n" file="tests/test_a.py" line="9" />
<testcase classname="tests.test_a.TestK" name="test_p[a/b]" file="tests/test_a.py" line="9" />
<testcase classname="tests.test_a.TestK" name="test_p[c::d]" file="tests/test_a.py" line="9" />
<testcase classname="tests.test_a" name="test_skip" file="tests/test_a.py">
  <skipped type="pytest.skip" message="no"/></testcase>
<testcase classname="tests.test_a" name="test_xf" file="tests/test_a.py">
  <skipped type="pytest.xfail" message=""/></testcase>
</testsuite></testsuites>"""


def test_a_pytest_report_gives_node_ids_outcomes_and_collection_errors_as_files() -> None:
    report = parse_report_bytes(PYTEST_XML)
    assert {i: c.outcome for i, c in report.cases.items()} == {
        "tests/sub/test_b.py": "error",
        "tests/test_a.py::test_one": "failed",
        "tests/test_a.py::TestK::test_m": "passed",
        "tests/test_a.py::TestK::TestInner::test_n": "passed",
        "tests/test_a.py::TestK::test_p[a/b]": "passed",
        "tests/test_a.py::TestK::test_p[c::d]": "passed",
        "tests/test_a.py::test_skip": "skipped",
        "tests/test_a.py::test_xf": "skipped",
    }
    assert report.counts() == {"tests": 8, "passed": 4, "failed": 2, "skipped": 2}
    assert report.cases["tests/test_a.py::test_one"].message == "assert 2 == 1"


def test_other_runners_reports_nested_suites_and_repeated_ids_are_read() -> None:
    jest = b"""<testsuites><testsuite name="calc" file="src/calc.test.js">
      <testcase classname="calc adds" name="calc adds" />
      <testcase classname="calc divides" name="calc divides"><failure message="boom"/></testcase>
    </testsuite></testsuites>"""
    assert set(parse_report_bytes(jest).cases) == {
        "src/calc.test.js::calc adds::calc adds",
        "src/calc.test.js::calc divides::calc divides",
    }
    go = b"""<testsuites><testsuite name="example.com/calc"><testsuite name="inner">
      <testcase classname="example.com/calc" name="TestAdd"/><testcase classname="example.com/calc" name="TestAdd/neg"/>
      <testcase classname="example.com/calc" name="TestAdd"><failure/></testcase>
    </testsuite></testsuite></testsuites>"""
    cases = parse_report_bytes(go).cases
    assert cases["example.com/calc::TestAdd"].outcome == "failed"  # a repeated id keeps its worst outcome
    assert cases["example.com/calc::TestAdd/neg"].outcome == "passed"
    nextest = b'<testsuite name="calc"><testcase classname="calc" name="tests::adds"><skipped/></testcase></testsuite>'
    assert parse_report_bytes(nextest).cases["calc::tests::adds"].outcome == "skipped"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><testsuites>&a;</testsuites>', "DTD or entities"),
        (b"<testsuites><testcase", "not well-formed"),
        (b"<html><body/></html>", "root element is <html>"),
    ],
)
def test_a_report_that_is_not_plain_junit_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(ReportUnreadable, match=problem):
        parse_report_bytes(data)


def test_a_missing_report_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ReportUnreadable, match="wrote no report at"):
        parse_report(tmp_path / "nothing.xml")


BASE = b'''"""Tests of calc."""
import pytest
from src.calc import add


def expected(a, b):
    return a + b


@pytest.fixture
def pair():
    return (2, 3)


def test_add(pair):
    assert add(*pair) == 5


def test_add_negative():
    assert add(-1, 1) == expected(-1, 1)


class TestMore:
    base = 10

    def test_base(self):
        assert add(self.base, 0) == 10

    def test_zero(self):
        assert add(0, 0) == 0
'''


def changes_of(head: bytes, base: bytes | None = BASE) -> dict[str, bool]:
    """Changed test id -> new?"""
    return {t.id: t.new for t in file_changes("tests/test_calc.py", base, head).tests}


def test_new_and_weakened_tests_are_found_by_their_code() -> None:
    added = BASE.replace(b"from src.calc import add", b"from src.calc import add, mul") + (
        b"\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"
    )
    assert changes_of(added) == {"tests/test_calc.py::test_mul": True}  # an import grown for it changes nothing else
    weakened = BASE.replace(b"assert add(*pair) == 5", b"assert True")
    assert changes_of(weakened) == {"tests/test_calc.py::test_add": False}
    restyled = BASE.replace(b"def test_zero(self):", b'def test_zero(self):\n        """Zero."""').replace(
        b"add(0, 0) == 0", b"add( 0,0 )==0"
    )
    assert changes_of(restyled) == {}
    assert changes_of(BASE, None) == {
        "tests/test_calc.py::test_add": True,
        "tests/test_calc.py::test_add_negative": True,
        "tests/test_calc.py::TestMore::test_base": True,
        "tests/test_calc.py::TestMore::test_zero": True,
    }


def test_a_changed_helper_fixture_class_member_or_module_marker_changes_the_tests_that_use_it() -> None:
    helper = BASE.replace(b"return a + b", b"return add(a, b)")
    assert changes_of(helper) == {"tests/test_calc.py::test_add_negative": False}
    fixture = BASE.replace(b"return (2, 3)", b"return (0, 5)")
    assert changes_of(fixture) == {"tests/test_calc.py::test_add": False}
    member = BASE.replace(b"base = 10", b"base = 0")
    assert changes_of(member) == {
        "tests/test_calc.py::TestMore::test_base": False,
        "tests/test_calc.py::TestMore::test_zero": False,
    }
    marker = BASE + b"\npytestmark = pytest.mark.skip\n"
    assert set(changes_of(marker).values()) == {False} and len(changes_of(marker)) == 4
    imported = BASE.replace(b"from src.calc import add", b"from tests.fake import add")
    assert len(changes_of(imported)) == 4


def test_go_rust_and_javascript_tests_are_found_by_their_text() -> None:
    base = b"package calc\n\nfunc TestAdd(t *testing.T) {\n\tif Add(1, 2) != 3 { t.Fail() }\n}\n"
    head = base.replace(b"!= 3", b"!= 4") + b"\nfunc TestMul(t *testing.T) {}\n"
    assert {t.id: t.new for t in file_changes("calc_test.go", base, head).tests} == {
        "calc_test.go::TestAdd": False,
        "calc_test.go::TestMul": True,
    }
    rust = b"#[test]\nfn adds() { assert_eq!(add(1, 2), 3); }\n\n#[tokio::test]\nasync fn waits() {}\n"
    assert [t.name for t in file_changes("tests/calc.rs", None, rust).tests] == ["adds", "waits"]
    js = b"describe('calc', () => {\n  it('adds', () => expect(add(1, 2)).toBe(3));\n"
    js += b'  test("divides", () => {});\n});\n'
    assert [t.name for t in file_changes("src/calc.test.js", None, js).tests] == ["adds", "divides"]
    unknown = file_changes("tests/data.json", b"{}", b"[]")
    assert not unknown.precise and unknown.tests == []


def test_report_entries_match_the_changed_tests_they_belong_to() -> None:
    report = parse_report_bytes(PYTEST_XML)
    changed = file_changes("tests/test_a.py", None, b"class TestK:\n    def test_p(self):\n        pass\n").tests[0]
    assert {c.id for c in report.cases.values() if case_matches(c, changed)} == {
        "tests/test_a.py::TestK::test_p[a/b]",
        "tests/test_a.py::TestK::test_p[c::d]",
    }
    broken = file_changes("tests/sub/test_b.py", None, b"def test_b():\n    pass\n").tests[0]
    assert [c.id for c in report.cases.values() if case_matches(c, broken)] == ["tests/sub/test_b.py"]


def test_declarations_cover_ids_files_classes_and_globs() -> None:
    assert declared("tests/test_a.py::TestK::test_p[a/b]", ["tests/test_a.py::TestK"])
    assert declared("tests/test_a.py::test_one", ["tests/test_a.py"])
    assert declared("tests/legacy/test_x.py::test_y", ["tests/legacy/"])
    assert declared("tests/test_a.py::test_one", ["tests/*.py::test_o*"])
    assert not declared("tests/test_a.py::test_one_more", ["tests/test_a.py::test_one"])


def test_pytest_runs_chosen_tests_by_node_id_and_other_runners_by_the_policys_template(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    argv = (sys.executable, "-m", "pytest", "-q", "--rootdir", "tests", "tests", "-p", "no:cacheprovider")
    chosen = pytest_select_argv(argv, ["tests/test_a.py::test_one"], tmp_path)
    assert chosen == [
        *(sys.executable, "-m", "pytest", "-q", "--rootdir", "tests", "-p", "no:cacheprovider"),
        "--maxfail=0",
        "--continue-on-collection-errors",
        "tests/test_a.py::test_one",
    ]
    assert pytest_select_argv(("tox", "-e", "py"), ["x"], tmp_path) is None
    assert [detect_runner(a) for a in (["uv", "run", "pytest"], ["python", "-m", "unittest"], ["npm", "test"])] == [
        "pytest",
        "unittest",
        "junit",
    ]
    tests = file_changes("calc_test.go", None, b"func TestAdd(t *testing.T) {}\nfunc TestA_b(t *testing.T) {}\n").tests
    assert expand_select(["go", "test", "./...", "-run", "^{pattern}$"], tests, ["calc_test.go"]) == [
        *("go", "test", "./...", "-run"),
        "^(TestA_b|TestAdd)$",
    ]
    assert expand_select(["npx", "jest", "{files}"], tests, ["calc_test.go"]) == ["npx", "jest", "calc_test.go"]
    assert expand_select(["x", "{names}"], [], []) is None


def test_the_unittest_runner_writes_a_report_and_runs_only_the_selected_tests(tmp_path: Path) -> None:
    support = tmp_path / "support"
    support.mkdir()
    (support / "planegate_unittest_junit.py").write_bytes(Path(UNITTEST_RUNNER).read_bytes())
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "__init__.py").write_text("")
    (project / "tests" / "test_w.py").write_text(
        "import unittest\n\n\nclass W(unittest.TestCase):\n    def test_a(self):\n        pass\n\n"
        "    def test_b(self):\n        self.assertEqual(1, 2)\n"
    )
    (project / "tests" / "test_bad.py").write_text("import not_a_module\n")
    (tmp_path / "only").write_text("tests/test_w.py::W::test_b\n")
    runs = {}
    for name, extra in (("all", {}), ("one", {"PLANEGATE_TEST_SELECT": str(tmp_path / "only")})):
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(support), "PLANEGATE_TEST_REPORT": str(tmp_path / name)}
        done = subprocess.run(
            [sys.executable, "-m", "planegate_unittest_junit", "discover", "-s", "tests", "-t", "."],
            cwd=project,
            env={**env, **extra},
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 1
        runs[name] = {i: c.outcome for i, c in parse_report(tmp_path / name).cases.items()}
    assert runs["all"] == {
        "tests/test_bad.py": "error",
        "tests/test_w.py::W::test_a": "passed",
        "tests/test_w.py::W::test_b": "failed",
    }
    assert runs["one"] == {"tests/test_w.py::W::test_b": "failed"}


@pytest.mark.parametrize(
    ("tests_section", "problem"),
    [
        ('report = "../out.xml"', "relative to the worktree"),
        ('select = ["go", "test"]', "names no tests"),
        ('select = ["x", "--files={files}"]', "whole element"),
        ('select = ["x", "{everything}"]', "placeholders are"),
        ('report_env = ["PATH"]', "cannot carry the report path"),
        ('harness_paths = ["pyproject.toml#"]', "empty key"),
        ('runner = "mocha"', "runner"),
    ],
)
def test_bad_tests_keys_are_refused_naming_the_line(tests_section: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem) as refused:
        parse_policy(f"[checks]\ntest = ['pytest']\n\n[tests]\n{tests_section}\n")
    assert ":5: key 'tests." in str(refused.value)


def test_a_check_may_not_take_the_name_of_planegates_own_evidence() -> None:
    with pytest.raises(PolicyError, match="reserved"):
        parse_policy("[checks]\ntest_integrity = ['pytest']\n")


def test_declarations_need_a_reason_and_are_kept_with_the_task() -> None:
    spec = {"title": "T", "goal": "G", "scope": ["src/**"], "requirements": ["R1"]}
    with pytest.raises(InvalidInput, match="declares removes_tests without a reason"):
        validate_graph(
            [TaskSpec(id="a", removes_tests=DeclaredTests(tests=["tests/test_x.py"], reason=" "), **spec)], {"R1"}, None
        )
    with pytest.raises(InvalidInput, match="list one or more"):
        validate_graph([TaskSpec(id="a", changes_harness=DeclaredHarness(paths=[], reason="r"), **spec)], {"R1"}, None)
    plain = validate_graph([TaskSpec(id="a", **spec)], {"R1"}, None)
    assert "declarations" not in plain.tasks[0]
    graph = validate_graph(
        [
            TaskSpec(
                id="a",
                removes_tests=DeclaredTests(tests=["tests/test_old.py"], reason="the old API is gone (R1)"),
                changes_harness=DeclaredHarness(paths=["./conftest.py"], reason="a fixture for R1"),
                **spec,
            )
        ],
        {"R1"},
        None,
    )
    assert graph.content_sha256 != plain.content_sha256
    assert declaration_lines(graph.tasks[0]["declarations"]) == [
        "removes tests: tests/test_old.py — reason: the old API is gone (R1)",
        "changes test harness: conftest.py — reason: a fixture for R1",
    ]


def test_harness_paths_are_whole_files_or_the_test_part_of_a_shared_file(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "repo",
        {
            "pyproject.toml": '[project]\nname = "x"\nversion = "1"\n\n[tool.pytest.ini_options]\naddopts = "-q"\n',
            "package.json": '{"version": "1.0.0", "scripts": {"test": "jest"}}\n',
            "scripts/test.sh": "pytest\n",
            "src/app.py": "",
        },
    )
    git_repo = GitRepo(repo)
    base = git_repo.rev("HEAD")
    assert base is not None
    from planegate.tools.policy import Policy

    policy = parse_policy("[checks]\ntest = ['bash', 'scripts/test.sh']\n")
    patterns = harness_patterns(policy)
    assert "scripts/test.sh" in patterns

    def touched(files: dict[str, str]) -> list[str]:
        for name, text in files.items():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_text(text)
        head = commit_all(repo, "change")
        return harness_changes(git_repo, base, head, git_repo.diff(base, head).files, patterns)

    assert touched({"pyproject.toml": (repo / "pyproject.toml").read_text().replace('"1"', '"2"')}) == []
    assert touched({"package.json": '{"version": "1.0.1", "scripts": {"test": "jest"}}\n'}) == []
    assert touched({"src/sub/conftest.py": "x = 1\n"}) == ["src/sub/conftest.py"]
    assert touched(
        {
            "pyproject.toml": (repo / "pyproject.toml").read_text().replace('"-q"', '"-q -p flip"'),
            "package.json": '{"version": "1.0.1", "scripts": {"test": "true"}}\n',
            "scripts/test.sh": "true\n",
        }
    ) == ["package.json#scripts", "pyproject.toml#tool.pytest", "scripts/test.sh", "src/sub/conftest.py"]
    assert isinstance(Policy().tests.harness_paths, list)


def test_the_tests_gate_judges_harness_declarations_and_the_integrity_evidence() -> None:
    from planegate.tools.gates.gates import TaskFacts, tests_gate
    from planegate.tools.gitrepo import FileChange

    def facts(harness: list[str], evidence: list[dict[str, Any]], declarations: dict[str, Any]) -> TaskFacts:
        return TaskFacts(
            run="r",
            task="t",
            status="in_progress",
            scope=["src/**"],
            deps=[],
            head_sha="h" * 40,
            base_sha="b" * 40,
            files=[FileChange("tests/conftest.py", 3, 0)],
            secrets=[],
            evidence=evidence,
            executor_identity="agent",
            reviews=[],
            requirements_changed_at=0,
            merge=None,
            harness=harness,
            declarations=declarations,
        )

    holds = {"id": 1, "kind": "test_integrity", "label": "direct", "exit_code": 0, "head_sha": "h" * 40, "summary": ""}
    with_test = parse_policy("[checks]\ntest = ['pytest']\n")
    gate = tests_gate(facts(["tests/conftest.py"], [holds], {}), with_test)
    assert not gate.ok and "did not declare: tests/conftest.py" in gate.reason and "changes_harness" in gate.next_step
    declared = {"changes_harness": {"paths": ["tests/conftest.py"], "reason": "fixtures"}}
    assert tests_gate(facts(["tests/conftest.py"], [holds], declared), with_test).ok
    missing = tests_gate(facts([], [], {}), with_test)
    assert not missing.ok and "not checked on head" in missing.reason and "run_checks" in missing.next_step
    stale = {**holds, "head_sha": "o" * 40}
    assert not tests_gate(facts([], [stale], {}), with_test).ok
    broken = {**holds, "exit_code": 1, "summary": "test_integrity: broken: 1 test(s) passing on the base are gone"}
    assert "gone" in tests_gate(facts([], [broken], {}), with_test).reason
    without_test = parse_policy("[checks]\nlint = ['ruff']\n")
    assert "no test check to compare by" in tests_gate(facts([], [], {}), without_test).reason
    off = parse_policy("[checks]\ntest = ['pytest']\n\n[tests]\nintegrity = false\n")
    assert tests_gate(facts([], [], {}), off).reason == "test integrity not required by the policy"
