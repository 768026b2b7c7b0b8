"""The report's format layer: a small list of blocks, and the markdown and HTML renderers.

Both renderers take the same blocks, so the markdown (a pull-request body) and the HTML page say
the same thing. User and reviewer text is escaped for the format it lands in: in markdown it may
not open HTML, links, images or code spans; the HTML page also forbids scripts and loads.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from .report_svg import clean, plain

# -- the blocks both formats render -------------------------------------------------------


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Strong:
    text: str


Inline = str | Code | Strong
Parts = list[Inline]


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    parts: Parts


@dataclass(frozen=True)
class Bullets:
    items: list[Parts]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[Parts]]


@dataclass(frozen=True)
class Graph:
    mermaid: str
    svg: str


Block = Heading | Para | Bullets | Table | Graph


def para(*parts: Inline) -> Para:
    return Para(list(parts))


def cells(*items: Inline | Parts) -> list[Parts]:
    """A table row: each item is one cell's parts (a lone inline becomes a one-part cell)."""
    return [item if isinstance(item, list) else [item] for item in items]


WIDTH = 100
# In markdown, user text may not open HTML (a stray "<!--" would hide the rest of a PR body),
# links or images (tracking pixels), or code spans.
_MD_ESCAPES = str.maketrans({"\\": "\\\\", "`": "\\`", "[": "\\[", "]": "\\]", "<": "&lt;", ">": "&gt;"})
# A wrapped line starting like this would turn into a heading, list item, quote or fence.
_BLOCK_START = re.compile(r"^(#|>|[-+*=~_](\s|$)|`{3}|\d+[.)](\s|$))")


def _md_text(text: str) -> str:
    return clean(text).translate(_MD_ESCAPES)


def _md_code(text: str) -> str:
    text = clean(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_inline(parts: Parts, *, cell: bool = False) -> str:
    out = []
    for part in parts:
        if isinstance(part, Code):
            out.append(_md_code(part.text))
        elif isinstance(part, Strong):
            out.append(f"**{_md_text(part.text)}**")
        else:
            out.append(_md_text(part))
    text = "".join(out)
    return text.replace("|", "\\|") if cell else text


def _wrap(text: str, first: str = "", rest: str = "") -> list[str]:
    """Greedy wrap at ``WIDTH``; a word that would open a block on a new line stays on the old one."""
    lines: list[str] = []
    line, fresh = first, True
    for word in text.split():
        if fresh:
            line, fresh = line + word, False
        elif len(line) + 1 + len(word) <= WIDTH or _BLOCK_START.match(word):
            line += " " + word
        else:
            lines.append(line)
            line = rest + word
    return [*lines, line]


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + _md_text(block.text))
        elif isinstance(block, Para):
            out.append("\n".join(_wrap(_md_inline(block.parts))))
        elif isinstance(block, Bullets):
            out.append("\n".join(line for item in block.items for line in _wrap(_md_inline(item), "- ", "  ")))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(_md_text(h) for h in block.header) + " |"]
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(_md_inline(c, cell=True) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        else:
            out.append(f"```mermaid\n{block.mermaid}\n```\n\n![Task graph](graph.svg)")
    return "\n\n".join(out) + "\n"


def _html_inline(parts: Parts) -> str:
    out = []
    for part in parts:
        if isinstance(part, Code):
            out.append(f"<code>{html.escape(clean(part.text))}</code>")
        elif isinstance(part, Strong):
            out.append(f"<strong>{html.escape(clean(part.text))}</strong>")
        else:
            out.append(html.escape(clean(part)))
    return "".join(out)


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;
max-width:1200px;margin:2rem auto;padding:0 1rem}
h1{font-size:1.6rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
h2{font-size:1.3rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1.05rem;margin-top:1.4rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:14px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f6f8fa;padding:1px 4px;
border-radius:4px;overflow-wrap:anywhere}
td code{white-space:nowrap}
figure{margin:0;overflow-x:auto}
"""


def to_html(blocks: list[Block], title: str) -> str:
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(plain(block.text))}</h{block.level}>")
        elif isinstance(block, Para):
            body.append(f"<p>{_html_inline(block.parts)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_html_inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            body.append(f"<figure>{block.svg}</figure>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        # The page carries untrusted text; even if escaping ever failed, nothing may run or load.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(plain(title, 200))}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
