"""The run report: markdown for a pull request, a self-contained HTML page, and the task graph as SVG.

One real run is built once for the module (real git, real checks through the job queue, one task
accepted, one cancelled, one left open, integration checks); the review and the approval are
written straight into the ledger, with their events, the way the review plane records them.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from planegate.store import verify_ledger
from planegate.tools.control.evidence import record_evidence
from planegate.tools.control.graph import register_graph
from planegate.tools.control.runs import freeze_architecture, freeze_requirements, start_run
from planegate.tools.env import Env
from planegate.tools.errors import NotFound
from planegate.tools.execution.checks import start_checks
from planegate.tools.execution.dispatch import cancel_task, dispatch_task
from planegate.tools.gates.accept import accept_task
from planegate.tools.gates.gates import GateResult
from planegate.tools.models import Decision, Module, Requirement
from planegate.tools.report.report import build_report, write_report
from planegate.tools.report.report_svg import SVG_LIMIT, task_graph_svg
from tests.execution import MUL, MUL_TEST, TASKS, calc_repo, drain, open_env, write
from tests.helpers import commit_all

SVG = "{http://www.w3.org/2000/svg}"
GOAL = 'Grow the library <script>alert("goal")</script>'
SUMMARY = 'Looks right. <script>alert("summary")</script> | pipes too'
GATES = [
    GateResult("tasks", False, "task docs is ready", "accept or cancel docs"),
    GateResult("human_approval", True, "approved by user:alice"),
]


@dataclass
class Built:
    env: Env
    run: str
    markdown: str
    html: str
    svg: str


def _requirements(r2: str) -> list[Requirement]:
    return [
        Requirement(id="R1", statement="mul multiplies", acceptance_criteria=["mul(2, 3) == 6"]),
        Requirement(id="R2", statement=r2, acceptance_criteria=["whisper('A') == 'a'"]),
    ]


def _review_and_approval(env: Env, run: str) -> None:
    calc = env.task_row(run, "calc")
    integration = env.repo(env.run_row(run)["repo"]).branch_sha(env.run_row(run)["integration_branch"])
    assert integration is not None
    with env.write("reviewer:chatgpt") as w:
        for review_id, task, head, summary in (
            ("rv-calc", "calc", calc["accepted_sha"], SUMMARY),
            ("rv-release", None, integration, "Release is coherent."),
        ):
            w.insert(
                "reviews",
                {
                    "id": review_id,
                    "run_id": run,
                    "task_id": task,
                    "nonce": f"nonce-{review_id}",
                    "reviewer": "chatgpt",
                    "status": "completed",
                    "verdict": "approve",
                    "summary": summary,
                    "base_sha": calc["base_sha"],
                    "head_sha": head,
                    "diff_sha256": "0" * 64,
                    "requirements_version": 2,
                    "created_at": w.at,
                    "completed_at": w.at,
                },
            )
            w.event("review.completed", run=run, task=task, review=review_id, verdict="approve", head_sha=head)
        finding = {"review_id": "rv-calc", "idx": 0, "severity": "medium", "file": "src/calc.py", "line": 4}
        w.insert("findings", {**finding, "title": "mul has no docstring"})
        w.insert("approvals", {"run_id": run, "by": "user:alice", "via": "cli", "head_sha": integration, "at": w.at})
        w.event("run.approved", run=run, by="user:alice", via="cli", head_sha=integration)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        # The module fixture runs before the per-test fresh machine exists: isolate git the same way.
        (root / "user-home").mkdir()
        mp.setenv("HOME", str(root / "user-home"))
        mp.setenv("GIT_CONFIG_GLOBAL", str(root / "user-home" / ".gitconfig"))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        env = open_env(root / "home")
        repo = calc_repo(root / "calc")
        run = start_run(env, str(repo), GOAL).run
        freeze_requirements(env, run, _requirements("whisper lowers"))
        freeze_requirements(env, run, _requirements("whisper lowers ASCII"), amend_reason="ASCII only, said the user")
        modules = [Module(name=n, owns=[g]) for n, g in (("calc", "src/calc.py"), ("text", "src/text.py"))]
        decision = Decision(title="Pure functions", decision="no I/O in src", rationale="easy to test")
        freeze_architecture(env, run, [*modules, Module(name="secrets", owns=["secrets/**"])], [decision])
        register_graph(env, run, TASKS)

        worktree = Path(dispatch_task(env, run, "calc").worktree)
        write(worktree, {"src/calc.py": MUL, "tests/test_mul.py": MUL_TEST})
        commit_all(worktree, "mul")
        write(worktree, {"out.log": "1 passed\n"})
        record_evidence(env, run, "calc", "test", "local", "1 passed on my machine", "pytest", 0, ["out.log"])
        (worktree / "out.log").unlink()  # the artifact was copied; the worktree must be clean for checks
        start_checks(env, run, "calc")
        assert drain(env) == ["succeeded"]
        accept_task(env, run, "calc")
        cancel_task(env, run, "text", "whisper ships upstream; no longer needed")
        start_checks(env, run, None)
        assert drain(env) == ["succeeded"]
        _review_and_approval(env, run)
        markdown, page, svg = build_report(env, run, GATES)
        yield Built(env, run, markdown, page, svg)
        env.close()


def test_the_markdown_report_runs_requirements_tasks_evidence_reviews_graph_gates_in_order(built: Built) -> None:
    md = built.markdown
    titles = ["# Grow the library", "## Requirements", "## Architecture", "## Tasks", "## Evidence", "## Reviews"]
    titles += ["## Task graph", "## Gates"]
    positions = [md.index(title) for title in titles]
    assert positions == sorted(positions)
    assert "Frozen version 2, content sha256 `" in md and "version 2 (frozen " in md
    assert "ASCII only, said the user" in md
    assert "| `R1` | mul multiplies | mul(2, 3) == 6 | `calc` |" in md
    assert "| `R2` | whisper lowers ASCII | whisper('A') == 'a' | **not covered by an accepted task** |" in md
    assert "**Pure functions**: no I/O in src (easy to test)" in md
    assert "tasks: 1 accepted, 1 cancelled, 1 open of 3 · checkpoints: 1" in md


def test_the_accepted_task_shows_its_checkpoint_and_merge_and_the_cancelled_one_its_reason(built: Built) -> None:
    calc = built.env.task_row(built.run, "calc")
    assert f"| `calc` | Multiply | **accepted** | 0 | `planegate/{built.run}/cp-1` | `{calc['merge_sha'][:12]}` |" in (
        built.markdown
    )
    assert "| `text` | Whisper | cancelled | 0 | — | — | — |" in built.markdown
    assert "**Cancelled**: whisper ships upstream; no longer needed" in built.markdown


def test_direct_evidence_on_the_accepted_head_is_shown_with_artifact_hashes_and_reported_apart(built: Built) -> None:
    env, run = built.env, built.run
    head = env.task_row(run, "calc")["accepted_sha"]
    md = built.markdown
    evidence = md[md.index("## Evidence") : md.index("## Reviews")]
    assert f"Direct evidence on the accepted head `{head[:12]}`:" in evidence
    direct = env.store.rows(
        "SELECT e.kind, a.name, a.sha256 FROM evidence e JOIN artifacts a ON a.owner = 'evidence:' || e.id"
        " WHERE e.run_id = ? AND e.task_id = 'calc' AND e.label = 'direct' AND e.head_sha = ?",
        (run, head),
    )
    assert {row["kind"] for row in direct} >= {"test", "red_green"}
    for row in direct:
        assert f"{row['name']} `sha256:{row['sha256'][:16]}`" in evidence
    reported = evidence[evidence.index("Reported, not counted:") :]
    local = env.store.one("SELECT sha256 FROM artifacts WHERE run_id = ? AND name = 'out.log'", (run,))
    assert local is not None
    assert "| `test` | local | 0 |" in reported and f"out.log `sha256:{local['sha256'][:16]}`" in reported
    assert "1 run-level result(s) on the current integration head" in evidence


def test_reviews_show_verdicts_findings_and_the_release_review(built: Built) -> None:
    md = built.markdown
    reviews = md[md.index("## Reviews") : md.index("## Task graph")]
    assert "**approve** by `chatgpt` on `" in reviews and "(completed, review `rv-calc`)" in reviews
    assert "| medium | `src/calc.py:4` | mul has no docstring | open |" in reviews
    assert "### Release review" in reviews and "Release is coherent." in reviews


def test_the_graph_and_gates_sections_carry_mermaid_svg_link_gates_approval_and_ledger_head(built: Built) -> None:
    md, env = built.markdown, built.env
    assert "```mermaid\ngraph TD\n" in md and "t_calc --> t_docs" in md and "![Task graph](graph.svg)" in md
    assert "| `tasks` | **unmet** | task docs is ready | accept or cancel docs |" in md
    assert "| user:alice | cli |" in md and "| yes |" in md
    last = env.store.one("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1")
    assert last is not None and verify_ledger(env.store).ok
    assert f"{last['id']} events in the ledger" in md and f"`{last['hash']}`" in md


def test_untrusted_text_is_escaped_in_html_and_markdown(built: Built) -> None:
    assert "<script" not in built.html.lower() and "<script" not in built.markdown.lower()
    assert "&lt;script&gt;alert(&quot;goal&quot;)&lt;/script&gt;" in built.html
    assert "&lt;script&gt;alert(&quot;summary&quot;)&lt;/script&gt;" in built.html
    assert '&lt;script&gt;alert("summary")&lt;/script&gt; | pipes too' in built.markdown  # not a table cell
    assert "default-src 'none'" in built.html and "<svg" in built.html and "```mermaid" not in built.html


def test_the_svg_parses_with_one_box_per_task_and_one_arrow_per_edge(built: Built) -> None:
    root = ET.fromstring(built.svg)  # noqa: S314 (our own output, not untrusted input)
    boxes = {g.get("data-task"): g.get("data-status") for g in root.iter(f"{SVG}g") if g.get("class") == "task"}
    assert boxes == {"calc": "accepted", "text": "cancelled", "docs": "ready"}
    edges = [(p.get("data-from"), p.get("data-to")) for p in root.iter(f"{SVG}path") if p.get("class") == "edge"]
    assert edges == [("calc", "docs")]


def test_the_same_ledger_gives_the_same_report(built: Built) -> None:
    assert build_report(built.env, built.run, GATES) == (built.markdown, built.html, built.svg)


def test_write_report_writes_three_files_to_the_run_artifacts_or_a_given_folder(built: Built, tmp_path: Path) -> None:
    files = write_report(built.env, built.run, run_gates=GATES)
    assert files.markdown.parent == built.env.settings.artifacts / built.run / "report"
    assert files.markdown.read_text() == built.markdown and files.html.read_text() == built.html
    assert files.svg.name == "graph.svg" and files.svg.read_text() == built.svg
    elsewhere = write_report(built.env, built.run, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["graph.svg", "report.html", "report.md"]
    assert "Run gates were not evaluated" in elsewhere.markdown.read_text()


def test_an_unknown_run_is_not_found(built: Built, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="run 'nope' not found"):
        build_report(built.env, "nope")
    with pytest.raises(NotFound):
        write_report(built.env, "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_graph_beyond_the_limit_draws_the_first_tasks_and_says_so() -> None:
    tasks = [
        {
            "id": f"t{i}",
            "title": f'step {i} <&> \x00 "quoted"',
            "status": "ready",
            "wave": i % 7,
            "depends_on": json.dumps([f"t{i - 1}"] if i % 7 else []),
        }
        for i in range(SVG_LIMIT + 50)
    ]
    root = ET.fromstring(task_graph_svg(tasks))  # noqa: S314 (our own output)
    boxes = [g for g in root.iter(f"{SVG}g") if g.get("class") == "task"]
    edges = [p for p in root.iter(f"{SVG}path") if p.get("class") == "edge"]
    assert len(boxes) == SVG_LIMIT
    assert len(edges) == sum(1 for i in range(SVG_LIMIT) if i % 7)
    assert any(t.text == f"showing the first {SVG_LIMIT} of {SVG_LIMIT + 50} tasks" for t in root.iter(f"{SVG}text"))
