"""The task graph as a self-contained SVG picture, and the text cleaning the report formats share.

Layout is layered: one column per wave (a task's wave is one more than its deepest dependency's,
so every arrow points right), boxes coloured by status with the same palette as the mermaid
graph. Within a column tasks are ordered by the mean row of their dependencies (one barycentre
sweep, ties broken by registration order), which keeps most arrows short and crossings few while
staying deterministic. A wave taller than ``MAX_ROWS`` wraps into further sub-columns so a wide
graph stays readable; beyond ``SVG_LIMIT`` tasks only the first ones (in registration order) are
drawn and the picture says so.

No external tools: the picture is plain SVG text built here, with every piece of task text
escaped, so it parses as XML and can be inlined into HTML as is.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from .render import STATUS_CLASS

SVG_LIMIT = 200
MAX_ROWS = 25
BOX_W, BOX_H = 184, 40
COL_GAP, ROW_GAP = 64, 12
MARGIN, HEADER, LEGEND_ROW = 16, 22, 20
FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"

# Characters XML 1.0 forbids (a NUL or a lone surrogate in a task title would make the whole
# picture unparsable), plus DEL, which no reader wants to see.
_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_SPACE = re.compile(r"\s+")


def clean(text: Any) -> str:
    """``text`` on one line: forbidden characters dropped, whitespace runs made one space."""
    return _SPACE.sub(" ", _INVALID.sub("", str(text)))


def plain(text: Any, limit: int | None = None) -> str:
    """``clean`` text without outer spaces, cut at ``limit`` characters with an ellipsis."""
    line = clean(text).strip()
    if limit is not None and len(line) > limit:
        return line[: max(limit - 1, 0)].rstrip() + "…"
    return line


def _esc(text: Any, limit: int | None = None) -> str:
    return html.escape(plain(text, limit), quote=True)


def _style(status: str) -> dict[str, str]:
    """The mermaid class of ``status`` (``fill:#eee,stroke:#999``) as SVG attributes."""
    spec = STATUS_CLASS.get(status, "fill:#fff,stroke:#666")
    return {key.strip(): value.strip() for key, value in (part.split(":", 1) for part in spec.split(","))}


def _barycentre(task: dict[str, Any], row_of: dict[str, int]) -> float:
    """The mean row of the task's already placed dependencies; tasks without any go last."""
    rows = [row_of[d] for d in json.loads(task["depends_on"]) if d in row_of]
    return sum(rows) / len(rows) if rows else math.inf


def _columns(tasks: Sequence[dict[str, Any]]) -> tuple[list[list[dict[str, Any]]], list[int]]:
    """Tasks per drawn column (top to bottom) and the wave each column belongs to."""
    by_wave: dict[int, list[dict[str, Any]]] = {}
    for task in tasks:
        by_wave.setdefault(int(task["wave"]), []).append(task)
    row_of: dict[str, int] = {}
    columns: list[list[dict[str, Any]]] = []
    waves: list[int] = []
    for wave in sorted(by_wave):
        keyed = sorted((_barycentre(task, row_of), i, task) for i, task in enumerate(by_wave[wave]))
        ranked = [task for _, _, task in keyed]
        for start in range(0, len(ranked), MAX_ROWS):
            column = ranked[start : start + MAX_ROWS]
            for row, task in enumerate(column):
                row_of[task["id"]] = row
            columns.append(column)
            waves.append(wave)
    return columns, waves


def task_graph_svg(tasks: Sequence[dict[str, Any]], title: str = "Task graph") -> str:
    """An SVG of ``tasks`` (rows with id, title, status, wave, depends_on as JSON), in given order.

    Each task is one ``<g class="task">`` box; each dependency between two drawn tasks is one
    ``<path class="edge">`` arrow from the dependency to its dependent.
    """
    shown = list(tasks[:SVG_LIMIT])
    columns, waves = _columns(shown)
    place: dict[str, tuple[int, int]] = {}
    for col, column in enumerate(columns):
        for row, task in enumerate(column):
            place[task["id"]] = (
                MARGIN + col * (BOX_W + COL_GAP),
                MARGIN + HEADER + row * (BOX_H + ROW_GAP),
            )
    rows = max((len(c) for c in columns), default=0)
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task["status"]] = counts.get(task["status"], 0) + 1
    notes = [f"showing the first {len(shown)} of {len(tasks)} tasks"] if len(tasks) > len(shown) else []
    if not tasks:
        notes = ["no tasks registered"]
    legend: list[tuple[int, str, str]] = []  # x, status, label
    x = MARGIN
    for status, count in sorted(counts.items()):
        legend.append((x, status, f"{status} {count}"))
        x += 28 + 7 * len(legend[-1][2])
    graph_h = HEADER + rows * (BOX_H + ROW_GAP)
    legend_y = MARGIN + graph_h + 8
    width = max(MARGIN * 2 + len(columns) * (BOX_W + COL_GAP) - COL_GAP, x + MARGIN, 420)
    height = legend_y + LEGEND_ROW * (1 + len(notes)) + MARGIN

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title, 200)}" '
        f'font-family="{FONT}" font-size="12">',
        f"<title>{_esc(title, 200)}</title>",
        '<defs><marker id="pg-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#57606a"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    previous_wave = None
    for col, wave in enumerate(waves):
        if wave != previous_wave:
            x = MARGIN + col * (BOX_W + COL_GAP)
            out.append(f'<text x="{x}" y="{MARGIN + 12}" fill="#57606a" font-weight="600">wave {wave}</text>')
        previous_wave = wave
    # Arrows first, so boxes are drawn over any arrow that passes behind them.
    for task in shown:
        x2, y2 = place[task["id"]]
        for dep in json.loads(task["depends_on"]):
            if dep not in place:
                continue
            x1, y1 = place[dep]
            sx, sy, ex, ey = x1 + BOX_W, y1 + BOX_H // 2, x2 - 2, y2 + BOX_H // 2
            bend = max(min(COL_GAP, (ex - sx) // 2), 8)
            out.append(
                f'<path class="edge" data-from="{_esc(dep)}" data-to="{_esc(task["id"])}" '
                f'd="M{sx},{sy} C{sx + bend},{sy} {ex - bend},{ey} {ex},{ey}" fill="none" stroke="#8c959f" '
                'stroke-width="1.3" marker-end="url(#pg-arrow)"/>'
            )
    for task in shown:
        x, y = place[task["id"]]
        style = _style(task["status"])
        dash = f' stroke-dasharray="{style["stroke-dasharray"]}"' if "stroke-dasharray" in style else ""
        out += [
            f'<g class="task" data-task="{_esc(task["id"])}" data-status="{_esc(task["status"])}">',
            f"<title>{_esc(task['id'])}: {_esc(task['title'], 300)} ({_esc(task['status'])})</title>",
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{style["fill"]}" '
            f'stroke="{style["stroke"]}" stroke-width="1.4"{dash}/>',
            f'<text x="{x + 8}" y="{y + 16}" font-weight="600" fill="#1f2328">{_esc(task["id"], 24)}</text>',
            f'<text x="{x + 8}" y="{y + 32}" font-size="11" fill="#424a53">{_esc(task["title"], 28)}</text>',
            "</g>",
        ]
    for x, status, label in legend:
        style = _style(status)
        out.append(
            f'<rect x="{x}" y="{legend_y}" width="12" height="12" rx="2" fill="{style["fill"]}" '
            f'stroke="{style["stroke"]}"/>'
        )
        out.append(f'<text x="{x + 16}" y="{legend_y + 10}" fill="#424a53">{_esc(label)}</text>')
    for i, note in enumerate(notes, start=1):
        out.append(f'<text x="{MARGIN}" y="{legend_y + 10 + i * LEGEND_ROW}" fill="#57606a">{_esc(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
