"""The run report: what was asked, what was done, what proves it, who reviewed it, who said yes.

One report, three files: ``report.md`` (meant as a pull-request body), ``report.html`` (one
self-contained page: inline CSS, no script, no external asset) and ``graph.svg`` (the task graph).
Sections come in a fixed order — summary, requirements, architecture, tasks, changes of course
(graph amendments and adopted policies, when there are any), evidence, reviews, the task graph,
gates, timing (``stats``: from ledger timestamps only) — and are built once as a small list of
blocks that each format renders, so the two documents always say the same thing.

Invariants: the report only reads (the ledger in one snapshot, and the integration branch tip
from git); the same ledger and repository give byte-identical files (no clock is read; only
ledger timestamps appear); every piece of text that came from a client or a reviewer — goals,
titles, summaries, findings, file names — is escaped for the format it lands in. Only ``direct``
evidence on a task's accepted head is presented as proof; reported evidence is listed apart as
not counted, the same rule the gates apply.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..control.graph import declaration_lines, task_declarations
from ..env import Env
from ..errors import PlanegateError
from ..gates.gates import SERIOUS, GateResult
from .render import MERMAID_LIMIT, mermaid_graph
from .report_format import (
    Block,
    Bullets,
    Code,
    Graph,
    Heading,
    Inline,
    Para,
    Parts,
    Strong,
    Table,
    cells,
    para,
    to_html,
    to_markdown,
)
from .report_svg import plain, task_graph_svg
from .stats import PHASE_TITLES, PHASES, RunStats, duration, run_stats


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    svg: Path


# -- what the ledger says -----------------------------------------------------------------


@dataclass
class _Facts:
    run: dict[str, Any]
    tasks: list[dict[str, Any]]
    requirement_versions: list[dict[str, Any]]
    architecture: dict[str, Any] | None
    checkpoints: list[dict[str, Any]]
    evidence: list[dict[str, Any]]
    artifacts: dict[str, list[dict[str, Any]]]
    reviews: list[dict[str, Any]]
    findings: dict[str, list[dict[str, Any]]]
    approvals: list[dict[str, Any]]
    risks: list[dict[str, Any]]
    run_events: int
    ledger_events: int
    ledger_head: str | None
    amendments: list[dict[str, Any]] = field(default_factory=list)
    adoptions: list[dict[str, Any]] = field(default_factory=list)
    stats: RunStats | None = None
    integration_head: str | None = None
    head_note: str = ""
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)


def _gather(env: Env, run: str) -> _Facts:
    """Everything the report shows, read in one snapshot so its parts agree with each other."""
    with env.store.snapshot() as db:
        run_row = env.run_row(run)
        tasks = db.rows(
            "SELECT t.*, c.tag AS checkpoint_tag FROM tasks t LEFT JOIN checkpoints c"
            " ON c.run_id = t.run_id AND c.n = t.checkpoint WHERE t.run_id = ? ORDER BY t.seq",
            (run,),
        )
        artifacts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in db.rows("SELECT owner, name, sha256 FROM artifacts WHERE run_id = ? ORDER BY id", (run,)):
            artifacts[row["owner"]].append(row)
        findings: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in db.rows(
            "SELECT f.* FROM findings f JOIN reviews r ON r.id = f.review_id WHERE r.run_id = ? ORDER BY f.idx",
            (run,),
        ):
            findings[row["review_id"]].append(row)
        last = db.one("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1")
        facts = _Facts(
            run=run_row,
            tasks=tasks,
            requirement_versions=db.rows(
                "SELECT * FROM requirement_versions WHERE run_id = ? ORDER BY version", (run,)
            ),
            architecture=db.one(
                "SELECT * FROM architecture_versions WHERE run_id = ? ORDER BY version DESC LIMIT 1", (run,)
            ),
            checkpoints=db.rows("SELECT * FROM checkpoints WHERE run_id = ? ORDER BY n", (run,)),
            evidence=db.rows("SELECT * FROM evidence WHERE run_id = ? ORDER BY id", (run,)),
            artifacts=artifacts,
            reviews=db.rows("SELECT * FROM reviews WHERE run_id = ? ORDER BY created_at, rowid", (run,)),
            findings=findings,
            approvals=db.rows("SELECT * FROM approvals WHERE run_id = ? ORDER BY id", (run,)),
            risks=db.rows("SELECT kind, task_id, detail FROM risks WHERE run_id = ? ORDER BY id", (run,)),
            run_events=int(db.scalar("SELECT COUNT(*) FROM events WHERE run_id = ?", (run,))),
            ledger_events=int(last["id"]) if last else 0,
            ledger_head=last["hash"] if last else None,
            amendments=db.rows(
                "SELECT version, reason, amendment, registered_at FROM graph_versions"
                " WHERE run_id = ? AND amendment IS NOT NULL ORDER BY version",
                (run,),
            ),
            adoptions=db.rows(
                "SELECT by, via, mode, principal, source, changes, at FROM policy_adoptions"
                " WHERE run_id = ? ORDER BY id",
                (run,),
            ),
            by_id={t["id"]: t for t in tasks},
            stats=run_stats(db, run),
        )
    try:
        facts.integration_head = env.repo(run_row["repo"]).branch_sha(run_row["integration_branch"])
    except PlanegateError as exc:  # a moved or deleted repository must not hide the ledger's record
        facts.head_note = f" ({exc})"
    if facts.integration_head is None and not facts.head_note:
        facts.head_note = " (the integration branch is missing)"
    return facts


def _sha(value: str | None, n: int = 12) -> Inline:
    return Code(value[:n]) if value else "—"


def _codes(values: list[str]) -> Parts:
    parts: Parts = []
    for i, value in enumerate(values):
        parts += [", "] if i else []
        parts.append(Code(value))
    return parts or ["—"]


def _location(finding: dict[str, Any]) -> Inline:
    if not finding["file"]:
        return "—"
    return Code(f"{finding['file']}:{finding['line']}" if finding["line"] else finding["file"])


def _exit(code: int | None) -> str:
    return "—" if code is None else str(code)


def _duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _artifact_parts(facts: _Facts, evidence_id: int) -> Parts:
    parts: Parts = []
    for i, row in enumerate(facts.artifacts.get(f"evidence:{evidence_id}", [])):
        parts += [", " if i else "", row["name"], " ", Code(f"sha256:{row['sha256'][:16]}")]
    return parts or ["—"]


# -- the sections, in the order the report shows them -------------------------------------


def _summary(facts: _Facts) -> list[Block]:
    run, tasks = facts.run, facts.tasks
    counts = {s: sum(1 for t in tasks if t["status"] == s) for s in ("accepted", "cancelled")}
    live = [c for c in facts.checkpoints if not c["reverted_at"]]
    blocks: list[Block] = [Heading(1, plain(run["goal"], 120))]
    if len(plain(run["goal"])) > 120:
        blocks.append(para("Goal: ", run["goal"]))
    parts: Parts = ["Run ", Code(run["id"]), " · stage ", Strong(run["stage"]), " · repository ", Code(run["repo"])]
    parts += [" · base ", _sha(run["base_sha"]), " → integration head ", _sha(facts.integration_head)]
    parts += [facts.head_note, f" · tasks: {counts['accepted']} accepted, {counts['cancelled']} cancelled"]
    parts += [f", {len(tasks) - sum(counts.values())} open of {len(tasks)}", f" · checkpoints: {len(live)}"]
    reverted = len(facts.checkpoints) - len(live)
    blocks.append(para(*parts, f" ({reverted} reverted)" if reverted else ""))
    return blocks


def _requirements(facts: _Facts) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Requirements")]
    if not facts.requirement_versions:
        return [*blocks, para("Requirements are not frozen yet.")]
    current = facts.requirement_versions[-1]
    blocks.append(para(f"Frozen version {current['version']}, content sha256 ", Code(current["content_sha256"])))
    rows = []
    for req in json.loads(current["body"]):
        serving = [t for t in facts.tasks if req["id"] in json.loads(t["requirements"]) and t["status"] != "cancelled"]
        accepted = [t["id"] for t in serving if t["status"] == "accepted"]
        coverage: Parts = _codes(accepted) if accepted else [Strong("not covered by an accepted task")]
        if not accepted and serving:
            coverage += [" (planned: ", *_codes([t["id"] for t in serving]), ")"]
        criteria = " · ".join(plain(c, 300) for c in req["criteria"])
        rows.append(cells(Code(req["id"]), plain(req["statement"], 400), criteria, coverage))
    blocks.append(Table(["requirement", "statement", "acceptance criteria", "accepted tasks"], rows))
    amendments = [v for v in facts.requirement_versions if v["version"] > 1]
    if amendments:
        blocks.append(para("Amendments:"))
        items: list[Parts] = [
            [f"version {v['version']} (frozen {v['frozen_at']}): ", plain(v["reason"] or "no reason recorded", 400)]
            for v in amendments
        ]
        blocks.append(Bullets(items))
    return blocks


def _architecture(facts: _Facts) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Architecture")]
    if facts.architecture is None:
        return [*blocks, para("No architecture was frozen for this run.")]
    arch, body = facts.architecture, json.loads(facts.architecture["body"])
    blocks.append(para(f"Frozen version {arch['version']}, content sha256 ", Code(arch["content_sha256"])))
    rows = [
        cells([Code(m["name"]), " (shared)" if m.get("shared") else ""], _codes(m["owns"]), _codes(m["depends_on"]))
        for m in body["modules"]
    ]
    blocks.append(Table(["module", "owns", "depends on"], rows))
    decisions: list[Parts] = []
    for d in body["decisions"]:
        rationale: Parts = [" (", plain(d["rationale"], 300), ")"] if d.get("rationale") else []
        decisions.append([Strong(plain(d["title"], 120)), ": ", plain(d["decision"], 300), *rationale])
    if decisions:
        blocks += [para("Decisions:"), Bullets(decisions)]
    return blocks


def _tasks(facts: _Facts) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Tasks")]
    if not facts.tasks:
        return [*blocks, para("No task graph registered.")]
    rows = [
        cells(Code(t["id"]), plain(t["title"], 80), Strong(t["status"]) if t["status"] == "accepted" else t["status"])
        + cells(str(t["wave"]), _sha(t["checkpoint_tag"], 200), _sha(t["merge_sha"]), t["executor"] or "—")
        for t in facts.tasks
    ]
    blocks.append(Table(["task", "title", "status", "wave", "checkpoint", "merge", "executor"], rows))
    for t in facts.tasks:
        items: list[Parts] = [["Goal: ", plain(t["goal"], 600)], ["Serves: ", *_codes(json.loads(t["requirements"]))]]
        deps = json.loads(t["depends_on"])
        if deps:
            items.append(["Depends on: ", *_codes(deps)])
        notes = json.loads(t["acceptance"])
        if notes:
            items.append(["Acceptance notes: ", " · ".join(plain(n, 300) for n in notes)])
        items += [[Strong("Declared"), ": ", plain(line, 600)] for line in declaration_lines(task_declarations(t))]
        if t["status"] == "cancelled":
            items.append([Strong("Cancelled"), ": ", plain(t["cancel_reason"] or "no reason recorded", 600)])
        blocks += [Heading(3, f"{t['id']} — {plain(t['title'], 80)}"), Bullets(items)]
    return blocks


def _changes_of_course(facts: _Facts) -> list[Block]:
    """Amendments to the plan after dispatch and policies adopted after the start: a human must see them."""
    if not facts.amendments and not facts.adoptions:
        return []
    blocks: list[Block] = [Heading(2, "Changes of course")]
    for row in facts.amendments:
        done = json.loads(row["amendment"])
        items: list[Parts] = []
        for verb in ("added", "cancelled"):
            for task in done.get(verb, []):
                title = facts.by_id.get(task, {}).get("title", "")
                items.append([Strong(verb), " ", Code(task), ": ", plain(title, 120)])
        for task, fields in done.get("changed", {}).items():
            items.append([Strong("changed"), " ", Code(task), " (", ", ".join(fields) or "nothing", ")"])
        blocks.append(
            para(f"Graph version {row['version']} ({row['registered_at']}), reason: ", plain(row["reason"] or "", 600))
        )
        blocks.append(Bullets(items))
    for row in facts.adoptions:
        who = f"signed by {row['principal']}" if row["mode"] == "signed" else f"by {row['by']} via {row['via']}"
        blocks.append(para(f"Policy adopted {row['at']} {who}, from ", Code(plain(row["source"], 200)), ":"))
        blocks.append(Bullets([[Code(plain(change, 300))] for change in json.loads(row["changes"])]))
    return blocks


def _evidence_rows(facts: _Facts, rows: list[dict[str, Any]], *, reported: bool) -> Table:
    if reported:
        return Table(
            ["check", "label", "exit", "head", "summary", "artifacts"],
            [
                cells(Code(e["kind"]), e["label"], _exit(e["exit_code"]), _sha(e["head_sha"]))
                + cells(plain(e["summary"], 200), _artifact_parts(facts, e["id"]))
                for e in rows
            ],
        )
    return Table(
        ["check", "exit", "duration", "head", "artifacts"],
        [
            cells(Code(e["kind"]), _exit(e["exit_code"]), _duration(e["duration_ms"]), _sha(e["head_sha"]))
            + cells(_artifact_parts(facts, e["id"]))
            for e in rows
        ],
    )


def _evidence(facts: _Facts) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, "Evidence"),
        para(
            "Only ",
            Code("direct"),
            " evidence (the server's own run of a check on the commit) counts for a gate; "
            "evidence an agent reported (local, proxy, blocked) is listed as reported, not counted.",
        ),
    ]
    per_task: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for row in facts.evidence:
        per_task[row["task_id"]].append(row)
    for t in facts.tasks:
        rows = per_task.get(t["id"], [])
        if not rows:
            continue
        blocks.append(Heading(3, t["id"]))
        direct = [e for e in rows if e["label"] == "direct"]
        head = t["accepted_sha"] or (direct[-1]["head_sha"] if direct else None)
        on_head = [e for e in direct if e["head_sha"] == head]
        where = "accepted head" if t["accepted_sha"] else "latest checked head (task not accepted)"
        if on_head:
            blocks += [para(f"Direct evidence on the {where} ", _sha(head), ":")]
            blocks.append(_evidence_rows(facts, on_head, reported=False))
        else:
            blocks.append(para(f"No direct evidence on the {where}", " ", _sha(head), "."))
        if len(direct) > len(on_head):
            blocks.append(para(f"{len(direct) - len(on_head)} direct result(s) on earlier commits are stale."))
        reported = [e for e in rows if e["label"] != "direct"]
        if reported:
            blocks += [para("Reported, not counted:"), _evidence_rows(facts, reported, reported=True)]
    run_rows = per_task.get(None, [])
    blocks.append(Heading(3, "Run (integration head)"))
    if run_rows:
        head = _sha(facts.integration_head)
        current = [e for e in run_rows if e["head_sha"] == facts.integration_head]
        blocks.append(
            para(f"{len(current)} of {len(run_rows)} run-level result(s) on the current integration head ", head, ".")
        )
        blocks.append(_evidence_rows(facts, run_rows, reported=False))
    else:
        blocks.append(para("No checks were run on the integration branch."))
    if facts.risks:
        items: list[Parts] = [
            [Strong(r["kind"]), " ", Code(r["task_id"] or "run"), ": ", plain(r["detail"], 400)] for r in facts.risks
        ]
        blocks += [Heading(3, "Risks"), Bullets(items)]
    return blocks


def _reviews(facts: _Facts) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Reviews")]
    subjects: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for review in facts.reviews:
        subjects[review["task_id"]].append(review)
    order: list[str | None] = [t["id"] for t in facts.tasks if t["id"] in subjects]
    order += sorted((s for s in subjects if s is not None and s not in facts.by_id), key=str)
    order += [None] if None in subjects else []
    for subject in order:
        blocks.append(Heading(3, "Release review" if subject is None else subject))
        reviews = subjects[subject]
        for i, r in enumerate(reviews):
            # Only a subject's latest review speaks for it now; earlier ones were answered by it.
            latest = i == len(reviews) - 1
            parts: Parts = [Strong(r["verdict"] or "no verdict"), " by ", Code(r["reviewer"]), " on "]
            parts += [_sha(r["head_sha"]), f" ({r['status']}", "" if latest else ", superseded", ", review "]
            parts += [Code(r["id"]), ")", ": " if r["summary"] else "", plain(r["summary"] or "", 800)]
            blocks.append(Para(parts))
            findings = facts.findings.get(r["id"], [])
            if findings:
                rows = [
                    cells(Strong(f["severity"]) if f["severity"] in SERIOUS else f["severity"], _location(f))
                    + cells(plain(f["title"], 200), "open" if latest else "superseded")
                    for f in findings
                ]
                blocks.append(Table(["severity", "location", "finding", "status"], rows))
    unreviewed = [t["id"] for t in facts.tasks if t["status"] == "accepted" and t["id"] not in subjects]
    if unreviewed:
        blocks.append(para("Accepted without a review (the policy did not require one): ", *_codes(unreviewed)))
    if not facts.reviews:
        blocks.append(para("No reviews recorded."))
    return blocks


def _graph(facts: _Facts, svg: str) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Task graph")]
    if not facts.tasks:
        return [*blocks, para("No task graph registered.")]
    if len(facts.tasks) > MERMAID_LIMIT:
        blocks.append(para(f"The mermaid graph shows the first {MERMAID_LIMIT} of {len(facts.tasks)} tasks."))
    return [*blocks, Graph(mermaid_graph(facts.tasks), svg)]


def _gates(facts: _Facts, run_gates: list[GateResult] | None) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Gates")]
    if run_gates is None:
        blocks.append(para("Run gates were not evaluated for this report."))
    else:
        rows = [
            cells(Code(g.gate), "ok" if g.ok else Strong("unmet"), plain(g.reason, 400), plain(g.next_step, 300))
            for g in run_gates
        ]
        blocks.append(Table(["gate", "ok", "reason", "next step"], rows))
    blocks.append(Heading(3, "Human approval"))
    if facts.approvals:
        rows = [
            cells(plain(a["by"], 120), plain(a["via"], 60), a["at"], _sha(a["head_sha"]))
            + cells("yes" if a["head_sha"] == facts.integration_head else "no")
            for a in facts.approvals
        ]
        blocks.append(Table(["by", "via", "at", "head", "is the integration head"], rows))
    else:
        blocks.append(para("No human approval recorded."))
    blocks += [
        Heading(3, "Ledger"),
        para(
            f"{facts.ledger_events} events in the ledger ({facts.run_events} of this run); head hash ",
            _sha(facts.ledger_head, 64),
            ". ",
            Code("planegate ledger verify"),
            " recomputes the chain and re-hashes the artifacts.",
        ),
    ]
    return blocks


def _timing(facts: _Facts) -> list[Block]:
    stats = facts.stats
    assert stats is not None
    blocks: list[Block] = [Heading(2, "Timing")]
    if not stats.tasks:
        return [*blocks, para("No task has run yet.")]
    rows = [
        cells(Code(t.task), t.status, *(duration(t.phases.get(p)) for p in PHASES), str(t.retries))
        + cells(", ".join(f"{gate} ×{n}" for gate, n in sorted(t.refusals.items())) or "—")
        for t in stats.tasks
    ]
    rows.append(cells(Strong("all"), "", *(duration(stats.totals[p]) for p in PHASES), str(stats.retries), ""))
    blocks.append(Table(["task", "status", *(PHASE_TITLES[p] for p in PHASES), "retries", "refused by"], rows))
    latency = stats.review_latency
    lines = [
        f"Wall time {duration(stats.wall_s)}" if stats.ended_at else f"Started {stats.started_at}, not finished",
        f"review latency: median {duration(latency.median_s)}, p90 {duration(latency.p90_s)}, "
        f"max {duration(latency.max_s)} over {latency.count} review(s)"
        if latency.count
        else "no review answered",
        f"{stats.refused_calls} acceptance call(s) refused"
        + (" (" + ", ".join(f"{gate} ×{n}" for gate, n in stats.refusals.items()) + ")" if stats.refusals else ""),
    ]
    if stats.release:
        lines.append(
            "whole run: " + ", ".join(f"{k.replace('_', ' ')} {duration(v)}" for k, v in sorted(stats.release.items()))
        )
    blocks.append(Bullets([[line] for line in lines]))
    blocks.append(
        para(
            "Each phase is the time between two ledger events (see ",
            Code("planegate stats"),
            "); a phase still open is not counted.",
        )
    )
    return blocks


def build_report(env: Env, run: str, run_gates: list[GateResult] | None = None) -> tuple[str, str, str]:
    """(markdown, html, svg) for a run; run_gates = the run gates' final state if the caller has them.

    Raises:
        NotFound: the run does not exist.
    """
    facts = _gather(env, run)
    svg = task_graph_svg(facts.tasks, f"Task graph of run {run}")
    blocks = [
        *_summary(facts),
        *_requirements(facts),
        *_architecture(facts),
        *_tasks(facts),
        *_changes_of_course(facts),
        *_evidence(facts),
        *_reviews(facts),
        *_graph(facts, svg),
        *_gates(facts, run_gates),
        *_timing(facts),
    ]
    return to_markdown(blocks), to_html(blocks, f"planegate report: {facts.run['goal']}"), svg


def write_report(
    env: Env, run: str, out_dir: Path | None = None, run_gates: list[GateResult] | None = None
) -> ReportFiles:
    """Write report.md, report.html and graph.svg to out_dir (default PLANEGATE_HOME/artifacts/<run>/report/).

    Raises:
        NotFound: the run does not exist.
    """
    markdown, page, svg = build_report(env, run, run_gates)
    folder = out_dir if out_dir is not None else env.settings.artifacts / run / "report"
    folder.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(markdown=folder / "report.md", html=folder / "report.html", svg=folder / "graph.svg")
    for path, text in ((files.markdown, markdown), (files.html, page), (files.svg, svg)):
        path.write_text(text, encoding="utf-8")
    return files
