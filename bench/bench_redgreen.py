"""``dispatch_task`` + ``run_checks`` with red→green and test integrity, against one plain run of the suite.

DESIGN §8: ``run_checks`` with red→green on a ~1,000-test suite ≤ 1.15× one plain run of it.

No real library can be downloaded here, so the script writes a faithful one: a package of six
modules (number, size, time, text and list formatting, a small parser) with a ``conftest.py`` of
session- and function-scoped fixtures, and test modules made mostly of parametrized tests (plus
test classes), 1,000 tests in all, each doing a realistic amount of work so a plain run takes a
few seconds. The policy's test check is ``python -m pytest -q -p no:cacheprovider``.

The task, like the measurement it answers (a task adding one test to an existing test file of a
real library): a new function ``percent`` in ``mylib/numbers.py`` and one new test for it in the
existing ``tests/test_numbers.py`` (the import line grows). Each repetition opens a fresh run
(untimed), then times ``dispatch_task`` and, after the change is committed (untimed, the agent's
work), ``start_checks`` + the job run in this process + ``checks_result``. The job records three
pieces of direct evidence, all required to pass: ``test`` (the suite on the head), ``red_green``
(the new test alone on the base: red) and ``test_integrity`` (the base's passing tests all pass on
the head). Interleaved with ``python -m pytest -q`` in a checkout of the same commit, alternating
which goes first, with the environment a check gets.

Two cases:
- warm: the base's report is cached for its tree (what every task after the first one from an
  integration head sees); the base runs only the new test;
- cold: the cache is emptied before each repetition, so the full base run integrity needs runs
  too, concurrently with the head's run.

Besides wall-clock time, CPU seconds (this process and the children it reaped: git, pytest) are
reported for both sides: on a machine shared with other work the wall-clock ratio drifts towards
the CPU ratio, because the base runs that overlap the head's run then compete for the same cores.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import emit, git, log, make_repo, parser, quantile, scratch
from _workload import open_env

from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.env import Env
from planegate.tools.execution.checkrun import check_env
from planegate.tools.execution.checks import checks_result, start_checks
from planegate.tools.execution.dispatch import dispatch_task
from planegate.tools.execution.jobs import claim, run_job
from planegate.tools.models import Module, Requirement, TaskSpec

PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
WORKER = "bench-worker"
LEASE_S = 120.0
TARGET = 1.15

NUMBERS = '''"""Number formatting."""

from __future__ import annotations


def intcomma(value: int | float, sep: str = ",") -> str:
    negative = value < 0
    whole, _, fraction = f"{abs(value)}".partition(".")
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    text = sep.join(groups) + (f".{fraction}" if fraction else "")
    return f"-{text}" if negative else text


def ordinal(value: int) -> str:
    if 10 <= value % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")
    return f"{value}{suffix}"


def scientific(value: float, precision: int = 2) -> str:
    mantissa, _, exponent = f"{value:.{precision}e}".partition("e")
    return f"{mantissa} x 10^{int(exponent)}"


def fractional(value: float, limit: int = 64) -> str:
    whole = int(value)
    rest = value - whole
    best = (0, 1)
    for denominator in range(1, limit + 1):
        numerator = round(rest * denominator)
        if abs(rest - numerator / denominator) < abs(rest - best[0] / best[1]):
            best = (numerator, denominator)
    if best[0] == 0:
        return str(whole)
    if best[0] == best[1]:
        return str(whole + 1)
    return f"{whole} {best[0]}/{best[1]}" if whole else f"{best[0]}/{best[1]}"


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))
'''

PERCENT = """

def percent(value: float, digits: int = 1) -> str:
    return f"{value * 100:.{digits}f}%"
"""

SIZES = '''"""File sizes."""

UNITS = ("B", "kB", "MB", "GB", "TB", "PB")
BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def naturalsize(value: float, binary: bool = False) -> str:
    base = 1024 if binary else 1000
    units = BINARY if binary else UNITS
    size = float(value)
    for unit in units:
        if abs(size) < base or unit == units[-1]:
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= base
    raise AssertionError("unreachable")
'''

TIMES = '''"""Durations in words."""


def naturaldelta(seconds: float) -> str:
    seconds = abs(int(seconds))
    for name, length in (("year", 31536000), ("month", 2592000), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = seconds // length
            return f"{count} {name}" + ("s" if count != 1 else "")
    return "a moment" if seconds == 0 else f"{seconds} second" + ("s" if seconds != 1 else "")


def precisedelta(seconds: int) -> str:
    parts = []
    for name, length in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, length)
        if count:
            parts.append(f"{count} {name}" + ("s" if count != 1 else ""))
    return ", ".join(parts) or "0 seconds"
'''

TEXT = '''"""Text helpers."""

import re
import unicodedata


def slugify(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def truncate(text: str, length: int, end: str = "…") -> str:
    return text if len(text) <= length else text[: max(0, length - len(end))] + end


def title_case(text: str) -> str:
    small = {"a", "an", "the", "of", "in", "on", "and", "or"}
    words = text.split()
    return " ".join(w if i and w in small else w[:1].upper() + w[1:] for i, w in enumerate(words))


def wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])
'''

LISTS = '''"""List helpers."""


def natural_list(items: list[str]) -> str:
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def chunk(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
'''

PARSING = '''"""A small expression parser."""

import operator
import re

TOKEN = re.compile(r"\\s*(?:(\\d+)|(.))")
OPS = {"+": (1, operator.add), "-": (1, operator.sub), "*": (2, operator.mul), "/": (2, operator.floordiv)}


def evaluate(text: str) -> int:
    tokens = [(n, o) for n, o in TOKEN.findall(text)]
    values: list[int] = []
    ops: list[str] = []

    def apply() -> None:
        right, left = values.pop(), values.pop()
        values.append(OPS[ops.pop()][1](left, right))

    for number, op in tokens:
        if number:
            values.append(int(number))
        elif op == "(":
            ops.append(op)
        elif op == ")":
            while ops[-1] != "(":
                apply()
            ops.pop()
        elif op in OPS:
            while ops and ops[-1] in OPS and OPS[ops[-1]][0] >= OPS[op][0]:
                apply()
            ops.append(op)
    while ops:
        apply()
    return values[0]
'''

CONFTEST = """import pytest


@pytest.fixture(scope="session")
def corpus():
    words = "the quick brown fox jumps over a lazy dog of the north and the south".split()
    return [" ".join(words[i:] + words[:i]) for i in range(len(words))]


@pytest.fixture
def numbers():
    return [i * 7919 % 100003 for i in range(300)]


@pytest.fixture(params=[",", ".", " "])
def separator(request):
    return request.param
"""


def numbers_tests(cases: int) -> str:
    return f"""import pytest

from mylib.numbers import clamp, fractional, intcomma, ordinal, scientific

WORK = 1000


@pytest.mark.parametrize("value", range(0, {cases * 997}, 997))
def test_intcomma_round_trips(value):
    for _ in range(WORK):
        assert intcomma(value).replace(",", "") == str(value)


@pytest.mark.parametrize("value", range(1, {cases + 1}))
def test_ordinal_suffix(value):
    for _ in range(WORK):
        assert ordinal(value)[-2:] in ("st", "nd", "rd", "th")


@pytest.mark.parametrize("value", [0.5, 0.25, 1.75, 3.125, 0.1, 2.0, 7.5, 0.333])
def test_fractional(value):
    assert fractional(value)


def test_intcomma_uses_the_separator(separator, numbers):
    for value in numbers:
        assert intcomma((value + 1) * 1000, separator).count(separator) >= 1


class TestScientific:
    @pytest.mark.parametrize("value", [1.0, 12.5, 1234.5, 0.001, 99999.0])
    def test_has_a_power(self, value):
        assert "10^" in scientific(value)

    def test_clamp(self, numbers):
        assert all(0 <= clamp(n, 0, 50000) <= 50000 for n in numbers)
"""


def sizes_tests(cases: int) -> str:
    return f"""import pytest

from mylib.sizes import naturalsize

WORK = 1000


@pytest.mark.parametrize("value", [1000 ** (i % 6) * (i + 1) for i in range({cases})])
@pytest.mark.parametrize("binary", [False, True])
def test_naturalsize_has_a_unit(value, binary):
    for _ in range(WORK):
        assert naturalsize(value, binary).split()[-1].endswith("B")


class TestSmall:
    @pytest.mark.parametrize("value", range(0, 1000, 37))
    def test_bytes_are_whole(self, value):
        assert naturalsize(value) == f"{{value}} B"
"""


def times_tests(cases: int) -> str:
    return f"""import pytest

from mylib.times import naturaldelta, precisedelta

WORK = 1000


@pytest.mark.parametrize("seconds", [i * 4547 for i in range({cases})])
def test_naturaldelta_is_words(seconds):
    for _ in range(WORK):
        assert naturaldelta(seconds)


@pytest.mark.parametrize("seconds", [i * 3631 for i in range({cases})])
def test_precisedelta_adds_up(seconds):
    units = {{"day": 86400, "days": 86400, "hour": 3600, "hours": 3600, "minute": 60, "minutes": 60,
              "second": 1, "seconds": 1}}
    for _ in range(WORK):
        text = precisedelta(seconds)
        total = sum(int(part.split()[0]) * units[part.split()[1]] for part in text.split(", "))
        assert total == seconds
"""


def text_tests(cases: int) -> str:
    return f"""import pytest

from mylib.text import slugify, title_case, truncate, wrap

WORK = 1000


@pytest.mark.parametrize("index", range({cases}))
def test_slug_is_clean(index, corpus):
    for _ in range(WORK):
        slug = slugify(corpus[index % len(corpus)] + f" {{index}}!")
        assert slug == slug.lower() and " " not in slug


@pytest.mark.parametrize("length", range(1, {cases + 1}))
def test_truncate_respects_the_length(length, corpus):
    for text in corpus:
        assert len(truncate(text, length)) <= max(length, 1)


class TestWrapping:
    @pytest.mark.parametrize("width", range(10, 40))
    def test_lines_fit(self, width, corpus):
        for text in corpus:
            assert all(len(line) <= width for line in wrap(text, width))

    def test_title_case(self):
        assert title_case("the lord of the rings") == "The Lord of the Rings"
"""


def misc_tests(cases: int) -> str:
    return f"""import pytest

from mylib.lists import chunk, natural_list
from mylib.parsing import evaluate

WORK = 1000


@pytest.mark.parametrize("count", range({cases}))
def test_natural_list(count):
    items = [f"item{{i}}" for i in range(count)]
    for _ in range(WORK):
        text = natural_list(items)
        assert (" and " in text) == (count > 1)


@pytest.mark.parametrize("size", range(1, {cases + 1}))
def test_chunks_keep_everything(size, numbers):
    assert sum(chunk(numbers, size), []) == numbers


@pytest.mark.parametrize("a", range(1, 8))
@pytest.mark.parametrize("b", range(1, 8))
def test_evaluate(a, b):
    for _ in range(WORK):
        assert evaluate(f"({{a}} + {{b}}) * {{a}} - {{b}} / 1") == (a + b) * a - b
"""


NEW_TEST = """

def test_percent():
    assert percent(0.125) == "12.5%"
"""


def library(scale: int) -> dict[str, str]:
    """The generated library; ``scale`` sets the number of parametrized cases per test function."""
    return {
        "README.md": "# mylib\n",
        "pyproject.toml": (
            '[project]\nname = "mylib"\nversion = "1.0"\n\n[tool.pytest.ini_options]\ntestpaths = ["tests"]\n'
        ),
        "mylib/__init__.py": "",
        "mylib/numbers.py": NUMBERS,
        "mylib/sizes.py": SIZES,
        "mylib/times.py": TIMES,
        "mylib/text.py": TEXT,
        "mylib/lists.py": LISTS,
        "mylib/parsing.py": PARSING,
        "tests/__init__.py": "",
        "tests/conftest.py": CONFTEST,
        "tests/test_numbers.py": numbers_tests(scale),
        "tests/test_sizes.py": sizes_tests(scale),
        "tests/test_times.py": times_tests(scale),
        "tests/test_text.py": text_tests(scale),
        "tests/test_misc.py": misc_tests(scale),
        ".planegate/policy.toml": (
            f"require_review = false\nmax_parallel = 100\n\n[checks]\ntest = {json.dumps(PYTEST)}\n"
        ),
    }


def count_tests(repo: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if "::" in line]
    return len(lines)


def cpu_s() -> float:
    """CPU seconds used so far by this process and its reaped children (git, pytest)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def plain_run(repo: Path) -> dict[str, float]:
    env = check_env_for_plain()
    cpu = cpu_s()
    began = time.perf_counter()
    done = subprocess.run([*PYTEST], cwd=repo, env=env, capture_output=True, timeout=600, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"the plain suite failed: {done.stdout[-2000:]!r}")
    return {"total": elapsed, "cpu": cpu_s() - cpu}


def check_env_for_plain() -> dict[str, str]:
    from planegate.tools.policy import Policy

    return check_env(Policy(), "bench", "bench")


class Planegate:
    """One fresh run per repetition; times dispatch and the checks job."""

    def __init__(self, env: Env, repo: Path) -> None:
        self.env = env
        self.repo = repo
        self.count = 0
        self.evidence: list[dict[str, Any]] = []

    def new_run(self) -> str:
        self.count += 1
        run = start_run(self.env, str(self.repo), f"Bench red-green {self.count}").run
        freeze_requirements(
            self.env, run, [Requirement(id="R1", statement="percent formats", acceptance_criteria=["12.5%"])]
        )
        freeze_architecture(self.env, run, [Module(name="lib", owns=["mylib/**", "tests/**"])], [])
        task = TaskSpec(id="percent", title="Percent", goal="Add percent()", scope=["mylib/**"], requirements=["R1"])
        register_graph(self.env, run, [task])
        return run

    def once(self, cold: bool) -> dict[str, float]:
        run = self.new_run()
        if cold:
            with self.env.write() as w:
                w.execute("DELETE FROM test_reports")
        cpu = cpu_s()
        began = time.perf_counter()
        worktree = Path(dispatch_task(self.env, run, "percent").worktree)
        dispatched = time.perf_counter() - began
        cpu_dispatch = cpu_s() - cpu
        numbers = worktree / "mylib" / "numbers.py"
        numbers.write_text(numbers.read_text() + PERCENT)
        tests = worktree / "tests" / "test_numbers.py"
        tests.write_text(
            tests.read_text().replace("intcomma, ordinal, scientific", "intcomma, ordinal, percent, scientific")
            + NEW_TEST
        )
        git(worktree, "commit", "-q", "-am", "percent")
        cpu = cpu_s()
        began = time.perf_counter()
        job_id = start_checks(self.env, run, "percent")
        job = claim(self.env, WORKER, LEASE_S)
        assert job is not None and job["id"] == job_id
        status = run_job(self.env, job, WORKER, LEASE_S)
        result = checks_result(self.env, job_id)
        checked = time.perf_counter() - began
        cpu_checks = cpu_s() - cpu
        lines = {line.check: line for line in result.results}
        if status != "succeeded" or set(lines) != {"test", "red_green", "test_integrity"} or not result.all_passed:
            raise RuntimeError(f"the checks did not all pass: {status} {[(k, v.summary) for k, v in lines.items()]}")
        self.evidence.append({k: v.summary.splitlines()[0][:240] for k, v in lines.items()})
        return {
            "dispatch": dispatched,
            "run_checks": checked,
            "total": dispatched + checked,
            "cpu": cpu_dispatch + cpu_checks,
        }


def stats(values: list[float]) -> dict[str, float]:
    return {
        "min_s": round(min(values), 3),
        "median_s": round(quantile(values, 0.5), 3),
        "max_s": round(max(values), 3),
    }


def measure(planegate: Planegate, plain_repo: Path, repetitions: int, cold: bool) -> dict[str, Any]:
    name = "cold" if cold else "warm"
    plain: list[dict[str, float]] = []
    rows: list[dict[str, float]] = []
    planegate.once(cold)  # warm-up; for warm, it fills the cache for the base tree
    plain_run(plain_repo)
    for rep in range(repetitions):
        if rep % 2 == 0:
            plain.append(plain_run(plain_repo))
            rows.append(planegate.once(cold))
        else:
            rows.append(planegate.once(cold))
            plain.append(plain_run(plain_repo))
        log(f"{name} {rep + 1}/{repetitions}: plain {plain[-1]['total']:.2f} s, planegate {rows[-1]['total']:.2f} s")
    plain_s = [p["total"] for p in plain]
    totals = [r["total"] for r in rows]
    ratios = [t / p for t, p in zip(totals, plain_s, strict=True)]
    median_ratio = quantile(totals, 0.5) / quantile(plain_s, 0.5)
    plain_cpu, planegate_cpu = [p["cpu"] for p in plain], [r["cpu"] for r in rows]
    return {
        "plain_pytest": stats(plain_s),
        "dispatch_plus_run_checks": stats(totals),
        "dispatch": stats([r["dispatch"] for r in rows]),
        "run_checks": stats([r["run_checks"] for r in rows]),
        "ratio_of_medians": round(median_ratio, 3),
        "ratio_per_repetition": {
            "min": round(min(ratios), 3),
            "median": round(quantile(ratios, 0.5), 3),
            "max": round(max(ratios), 3),
        },
        "cpu": {
            "plain_pytest_median_s": round(quantile(plain_cpu, 0.5), 3),
            "planegate_median_s": round(quantile(planegate_cpu, 0.5), 3),
            "ratio_of_medians": round(quantile(planegate_cpu, 0.5) / quantile(plain_cpu, 0.5), 3),
        },
        "evidence_last": planegate.evidence[-1],
    }


def main() -> None:
    args = parser(__doc__ or "", quick_help="a ~300-test suite and 3 repetitions per case").parse_args()
    scale = 16 if args.quick else 88
    repetitions = 3 if args.quick else 10
    with scratch("redgreen") as root:
        repo = make_repo(root / "mylib", library(scale))
        plain_repo = root / "plain"
        git(root, "clone", "-q", str(repo), str(plain_repo))
        tests = count_tests(plain_repo)
        log(f"generated suite: {tests} tests")
        env = open_env("agent:bench")
        try:
            planegate = Planegate(env, repo)
            warm = measure(planegate, plain_repo, repetitions, cold=False)
            cold = measure(planegate, plain_repo, repetitions, cold=True)
        finally:
            env.close()
    emit(
        {
            "benchmark": "run_checks_red_green",
            "quick": args.quick,
            "tests_in_suite": tests,
            "repetitions": repetitions,
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0],
            "warm_cache": warm,
            "cold_cache": cold,
            "target": f"dispatch_task + run_checks with red→green ≤ {TARGET}× one plain pytest run (warm cache: the "
            "base's report cached for its tree, as for every task after the first from an integration head); the "
            "cold case (a full base run concurrently with the head's) is reported",
            "meets_target": warm["ratio_of_medians"] <= TARGET,
        }
    )


if __name__ == "__main__":
    main()
