"""The run view: one self-contained HTML page of a run that people look at while it runs.

What it shows: the task graph (``report_svg``'s picture, the same the report draws: tasks coloured
by status), and for each task its gates, evidence, reviews and findings (on hover or click of its
box, and in the task table); the run's stage, counts, approval state, risks and next action.

The page is one template and one script; the data is a JSON "view" (``run_view``) the script
renders with ``textContent`` only (the one piece of markup it inserts is the SVG, which
``report_svg`` builds with every piece of text escaped). Two ways to serve it, one page:

- ``planegate dashboard`` embeds the view and polls a cheap ledger version (the newest event id)
  and fetches the view again when it moves;
- the MCP App resource (``ui://planegate/run``) embeds the newest run's view and, inside a host
  that renders apps, takes the run from the ``get_status`` result the host hands it and reads
  ``planegate://runs/{run}/view`` through the host.

Only reads: nothing on the page changes the ledger (approving stays in the human's terminal).
"""

from __future__ import annotations

import contextlib
import html
import json
from collections import defaultdict
from importlib import resources
from typing import Any, Literal

from planegate.store import placeholders

from ..env import Env
from ..errors import PlanegateError
from .activity import active_tasks
from .report_svg import SVG_LIMIT, plain, task_graph_svg
from .status import blocked_reasons, get_status

EVIDENCE_SHOWN = 6
GATED_TASKS = 50


def newest_run(env: Env) -> str | None:
    row = env.store.one("SELECT id FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1")
    return None if row is None else str(row["id"])


def ledger_version(env: Env) -> int:
    """Moves whenever anything is recorded: what the dashboard polls."""
    return env.store.event_count()


def _approval(env: Env, run_row: dict[str, Any], approvals: list[dict[str, Any]]) -> dict[str, Any]:
    head = None
    with contextlib.suppress(PlanegateError):
        head = env.repo(run_row["repo"]).branch_sha(run_row["integration_branch"])
    latest = approvals[-1] if approvals else None
    if run_row["stage"] == "accepted":
        state = "accepted"
    elif latest is not None and latest["head_sha"] == head:
        state = "approved"
    elif latest is not None:
        state = "stale"
    else:
        state = "none"
    text = {
        "accepted": "the run is accepted",
        "approved": f"approved by {latest['by']} via {latest['via']} at {latest['at']}" if latest else "",
        "stale": "the last approval is for an older integration head; a human approves again",
        "none": f"no human approval yet (a human runs `planegate approve {run_row['id']}` in their terminal)",
    }[state]
    return {
        "state": state,
        "text": text,
        "head": head,
        "approvals": [{"by": a["by"], "via": a["via"], "at": a["at"], "head": a["head_sha"]} for a in approvals],
    }


def run_view(env: Env, run: str, *, wait_for_git: bool = True) -> dict[str, Any]:
    """Everything the page shows for ``run``, read in one snapshot (plus the integration head).
    ``wait_for_git`` as for ``get_status``: a server, whose worker stores each head's git facts,
    passes False and never runs git for a page.

    Raises:
        NotFound: the run does not exist.
    """
    status = get_status(env, run, wait_for_git=wait_for_git)
    assert status.status is not None
    with env.store.snapshot() as db:
        run_row = env.run_row(run)
        tasks = db.rows(
            "SELECT id, title, status, wave, depends_on, merge_sha, accepted_sha, cancel_reason"
            " FROM tasks WHERE run_id = ? ORDER BY seq",
            (run,),
        )
        shown = tasks[:SVG_LIMIT]
        ids = [t["id"] for t in shown]
        evidence: dict[str, list[dict[str, Any]]] = defaultdict(list)
        reviews: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        findings: dict[str, list[dict[str, Any]]] = defaultdict(list)
        if ids:
            for row in db.rows(
                f"SELECT task_id, kind, label, exit_code, head_sha, summary FROM evidence"
                f" WHERE run_id = ? AND task_id IN ({placeholders(ids)}) ORDER BY id DESC",
                (run, *ids),
            ):
                if len(evidence[row["task_id"]]) < EVIDENCE_SHOWN:
                    evidence[row["task_id"]].append(row)
        for row in db.rows(
            "SELECT id, task_id, status, verdict, reviewer, summary, head_sha FROM reviews WHERE run_id = ?"
            " ORDER BY created_at, rowid",
            (run,),
        ):
            reviews[row["task_id"]].append(row)
        for row in db.rows(
            "SELECT f.review_id, f.severity, f.title, f.file, f.line FROM findings f"
            " JOIN reviews r ON r.id = f.review_id WHERE r.run_id = ? ORDER BY f.idx",
            (run,),
        ):
            findings[row["review_id"]].append(row)
        approvals = db.rows("SELECT * FROM approvals WHERE run_id = ? ORDER BY id", (run,))
        active, _, _ = active_tasks(env, db, run_row, GATED_TASKS, wait_for_git=wait_for_git)
        blocked = {b.task: b.reason for b in blocked_reasons(db, run, SVG_LIMIT)}
        version = int(db.scalar("SELECT COALESCE(MAX(id), 0) FROM events"))
    gated = {t.task: t for t in active}

    def review_lines(subject: str | None) -> list[dict[str, Any]]:
        return [
            {
                "id": r["id"],
                "status": r["status"],
                "verdict": r["verdict"],
                "reviewer": r["reviewer"],
                "head": (r["head_sha"] or "")[:12],
                "summary": plain(r["summary"] or "", 400),
                "findings": [
                    {"severity": f["severity"], "title": plain(f["title"], 200), "file": f["file"], "line": f["line"]}
                    for f in findings.get(r["id"], [])
                ],
            }
            for r in reviews.get(subject, [])
        ]

    def task_line(t: dict[str, Any]) -> dict[str, Any]:
        line: dict[str, Any] = {
            "id": t["id"],
            "title": plain(t["title"], 120),
            "status": t["status"],
            "wave": t["wave"],
            "depends_on": json.loads(t["depends_on"]),
            "evidence": [
                {
                    "kind": e["kind"],
                    "label": e["label"],
                    "exit_code": e["exit_code"],
                    "head": (e["head_sha"] or "")[:12],
                    "summary": plain(e["summary"].splitlines()[0] if e["summary"] else "", 200),
                }
                for e in evidence.get(t["id"], [])
            ],
            "reviews": review_lines(t["id"]),
        }
        if t["id"] in gated:
            g = gated[t["id"]]
            line["gates"] = [{"gate": x.gate, "reason": x.reason, "next_step": x.next_step} for x in g.gates]
            line["met"] = g.met
        if t["status"] == "accepted":
            line["note"] = f"accepted: merged as {(t['merge_sha'] or '')[:12]}"
        elif t["status"] == "cancelled":
            line["note"] = f"cancelled: {plain(t['cancel_reason'] or 'no reason recorded', 200)}"
        elif t["id"] in blocked:
            line["note"] = blocked[t["id"]]
        elif t["status"] == "ready":
            line["note"] = "ready to dispatch"
        return line

    s = status.status
    return {
        "run": run,
        "goal": plain(run_row["goal"], 300),
        "stage": s.stage,
        "repo": s.repo,
        "base": s.base_sha[:12],
        "integration_branch": s.integration_branch,
        "counts": s.counts,
        "total": len(tasks),
        "shown": len(shown),
        "next_action": status.next_action,
        "risks": s.risks,
        "workers": status.workers,
        "approval": _approval(env, run_row, approvals),
        "release_reviews": review_lines(None),
        "tasks": [task_line(t) for t in shown],
        "svg": task_graph_svg(tasks, f"Task graph of run {run}"),
        "version": version,
    }


def _json_for_script(value: Any) -> str:
    """JSON that cannot end the ``<script>`` element it sits in."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


CSS = """
:root{--ink:#1f2328;--muted:#57606a;--line:#d0d7de;--soft:#f6f8fa}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:var(--ink);margin:0}
header{padding:12px 18px;border-bottom:1px solid var(--line);background:var(--soft)}
h1{font-size:18px;margin:0 0 4px}
main{display:grid;grid-template-columns:minmax(0,1fr) 360px;gap:0}
#graph{overflow:auto;padding:12px;border-right:1px solid var(--line);max-height:70vh}
#graph g.task{cursor:pointer}
#graph g.task.selected rect{stroke-width:3;stroke:#0969da}
aside{padding:12px 16px;max-height:70vh;overflow:auto}
.chips span{display:inline-block;border:1px solid var(--line);border-radius:12px;padding:1px 8px;margin:2px 4px 2px 0;
font-size:12px;background:#fff}
.next{margin-top:6px;font-weight:600}
.muted{color:var(--muted)}
.bad{color:#b42318}.ok{color:#1a7f37}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--soft);padding:1px 4px;
border-radius:4px;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top}
th{background:var(--soft);position:sticky;top:0}
tr.task{cursor:pointer}tr.task:hover{background:#f0f6ff}
section{padding:8px 18px}
h2{font-size:15px;margin:10px 0 6px}
h3{font-size:14px;margin:10px 0 4px}
ul{margin:4px 0;padding-left:18px}
#tasks{max-height:40vh;overflow:auto}
.status{font-weight:600}
#stamp{float:right;font-size:12px}
"""


def _script() -> str:
    return resources.files(__package__).joinpath("view.js").read_text(encoding="utf-8")


def view_page(view: dict[str, Any] | None, *, mode: Literal["app", "dashboard"], nonce: str | None = None) -> str:
    """The page for ``view`` (None: an empty page waiting for a run)."""
    script_src = f"'nonce-{nonce}'" if nonce else "'unsafe-inline'"
    connect = "'self'" if mode == "dashboard" else "'none'"
    csp = (
        f"default-src 'none'; script-src {script_src}; style-src 'unsafe-inline'; connect-src {connect}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    nonce_attr = f' nonce="{html.escape(nonce)}"' if nonce else ""
    empty: dict[str, Any] = {"run": None, "tasks": [], "counts": {}, "risks": [], "svg": "", "release_reviews": []}
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>planegate run view</title>\n<style>{CSS}</style>\n</head>\n"
        f'<body data-mode="{mode}">\n'
        '<header><span id="stamp" class="muted"></span><h1 id="goal">No run yet</h1>'
        '<div id="meta" class="muted"></div><div id="counts" class="chips"></div>'
        '<div id="next" class="next"></div><div id="approval"></div>'
        '<span id="live" class="muted"></span></header>\n'
        '<main><div id="graph"></div><aside id="details"></aside></main>\n'
        '<section><h2>Risks</h2><ul id="risks"></ul><ul id="release"></ul></section>\n'
        '<section><h2>Tasks <span id="shown" class="muted"></span></h2><div id="tasks"><table>'
        "<thead><tr><th>task</th><th>title</th><th>status</th><th>gates</th><th>evidence</th><th>reviews</th></tr>"
        '</thead><tbody id="task-rows"></tbody></table></div></section>\n'
        f'<script type="application/json" id="pg-view">{_json_for_script(view or empty)}</script>\n'
        f"<script{nonce_attr}>{_script()}</script>\n</body>\n</html>\n"
    )
