"""The demo's reviewer: a command reviewer that really reads the change it is given.

``planegate demo`` runs it as ``[review] command`` (prompt on stdin, answer on stdout). It reads
the diff in the review packet and judges it mechanically: every changed runtime file needs a
changed test, and added code must not leave ``TODO``/``FIXME`` markers or stray ``print``
calls. A requirement is ``met`` when the functions its acceptance criteria call appear in the
added lines. It answers in the format every planegate reviewer must use.
"""

from __future__ import annotations

import json
import re
import sys

from planegate.tools.review.review import REQUIREMENTS_HEADING
from planegate.tools.review.review_parse import BEGIN, END

_TEST = re.compile(r"(^|/)tests?/|(^|/)test_[^/]*\.py$")
_CALL = re.compile(r"\b([a-z_][a-z0-9_]*)\(")


def read_diff(prompt: str) -> dict[str, list[str]]:
    """Changed file → its added lines, from the packet's unified diff."""
    added: dict[str, list[str]] = {}
    current = None
    for line in prompt.splitlines():
        header = re.match(r"^diff --git a/(\S+) b/(\S+)", line)
        if header:
            current = header.group(2)
            added[current] = []
        elif current and line.startswith("+") and not line.startswith("+++"):
            added[current].append(line[1:])
    return added


def requirements(prompt: str) -> dict[str, list[str]]:
    """Requirement id → its acceptance criteria, from the packet's requirements section."""
    section = prompt.split(REQUIREMENTS_HEADING, 1)[-1].split("\n## ", 1)[0]
    found: dict[str, list[str]] = {}
    current = None
    for line in section.splitlines():
        top = re.match(r"^- ([A-Za-z][\w.-]*): ", line)
        if top:
            current = top.group(1)
            found[current] = []
        elif current and line.startswith("  - "):
            found[current].append(line[4:])
    return found


def review(prompt: str) -> dict[str, object]:
    nonce = re.search(r'"review_id": "([0-9a-f]+)"', prompt)
    changes = read_diff(prompt)
    runtime = [f for f in changes if f.endswith(".py") and not _TEST.search(f)]
    tests = [f for f in changes if _TEST.search(f)]
    findings: list[dict[str, object]] = []
    if runtime and not tests:
        findings += [{"severity": "high", "file": f, "title": "runtime change without a test"} for f in runtime]
    for path in runtime:
        for number, text in enumerate(changes[path], start=1):
            if re.search(r"\b(TODO|FIXME)\b", text):
                findings.append({"severity": "medium", "file": path, "line": number, "title": "unfinished marker"})
            if re.match(r"\s*print\(", text):
                findings.append({"severity": "medium", "file": path, "line": number, "title": "stray print"})
    added = "\n".join(line for lines in changes.values() for line in lines)
    verdicts = []
    for rid, criteria in requirements(prompt).items():
        calls = {name for criterion in criteria for name in _CALL.findall(criterion)}
        met = bool(calls) and all(re.search(rf"\bdef {name}\b|\b{name}\(", added) for name in calls)
        verdicts.append(
            {
                "id": rid,
                "status": "met" if met else "partial",
                "note": f"checked {', '.join(sorted(calls)) or 'no named function'} in the added lines",
            }
        )
    serious = any(f["severity"] == "high" for f in findings)
    return {
        "review_id": nonce.group(1) if nonce else "",
        "verdict": "request_changes" if serious else "approve",
        "summary": f"{len(changes)} file(s) changed ({len(runtime)} runtime, {len(tests)} test); "
        f"{len(findings)} finding(s)",
        "findings": findings,
        "missing_tests": [f for f in runtime if not tests],
        "requirements": verdicts,
    }


def main() -> None:
    answer = review(sys.stdin.read())
    print(f"I read the diff in the packet.\n\n{BEGIN}\n```json\n{json.dumps(answer, indent=2)}\n```\n{END}")


if __name__ == "__main__":
    main()
