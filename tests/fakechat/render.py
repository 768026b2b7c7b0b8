"""Markdown → HTML the way ChatGPT's page shows a reply, for the fake page.

Only what replies use: headings, paragraphs, nested lists, block quotes, rules, tables, fenced
code, and inline code, bold, italic, strike and links. Partial input (a reply mid-stream)
renders too: an unclosed fence is a code block so far.

Fenced code comes in the two shapes the site has used (``dom``):
- ``2025``: a header with the language and a copy button, highlighted spans inside
  ``<code class="language-x">``;
- ``2026``: CodeMirror: a sticky header with the language label ("JSON", "Python") and a "Copy"
  button, then ``#code-block-viewer.cm-editor > .cm-scroller > .cm-content`` holding token spans
  with lines split by ``<br>``, and no ``<code>`` at all.
"""

from __future__ import annotations

import html
import re

_FENCE = re.compile(r"^(`{3,})\s*([\w+#.-]*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_ITEM = re.compile(r"^( *)([-*]|\d+\.)\s+(.*)$")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|[{}\[\],:]')


def _inline(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in re.finditer(r"(`+)(.+?)\1", text):
        out.append(_inline_plain(text[pos : m.start()]))
        out.append(f"<code>{html.escape(m.group(2).strip() if m.group(1) != '`' else m.group(2))}</code>")
        pos = m.end()
    out.append(_inline_plain(text[pos:]))
    return "".join(out)


def _inline_plain(text: str) -> str:
    s = html.escape(text, quote=False)
    s = re.sub(
        r"\[([^\]]+)\]\(([^)\s]+)\)",
        lambda m: f'<a href="{m.group(2)}" target="_blank" rel="noopener">{m.group(1)}</a>',  # already escaped
        s,
    )
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])", r"<em>\1</em>", s)
    return re.sub(r"~~(.+?)~~", r"<del>\1</del>", s)


def _highlight(code: str, lang: str) -> str:
    if lang != "json":
        return html.escape(code, quote=False)
    out: list[str] = []
    pos = 0
    for m in _JSON_TOKEN.finditer(code):
        out.append(html.escape(code[pos : m.start()], quote=False))
        tok = m.group(0)
        kind = "string" if tok.startswith('"') else "punctuation" if tok in "{}[],:" else "literal"
        out.append(f'<span class="hljs-{kind}">{html.escape(tok, quote=False)}</span>')
        pos = m.end()
    out.append(html.escape(code[pos:], quote=False))
    return "".join(out)


LABELS = {"json": "JSON", "python": "Python", "bash": "Bash", "diff": "Diff", "js": "JavaScript"}


def _code_block(code: str, lang: str, dom: str) -> str:
    if dom == "2026":
        return _codemirror_block(code, lang)
    label = lang or "plaintext"
    return (
        '<pre class="overflow-visible!"><div class="contain-inline-size rounded-2xl relative">'
        f'<div class="code-header">{html.escape(label)}</div>'
        '<div class="sticky"><button class="code-copy" aria-label="Copy">Copy code</button></div>'
        f'<div class="overflow-y-auto p-4" dir="ltr"><code class="whitespace-pre! language-{html.escape(label)}">'
        f"{_highlight(code, lang)}</code></div></div></pre>"
    )


def _codemirror_block(code: str, lang: str) -> str:
    lines = "<br>".join(_highlight(line, lang) for line in code.split("\n"))
    return (
        '<pre class="overflow-visible! px-0!"><div class="relative w-full mt-4 mb-1"><div class="border rounded-3xl">'
        '<div class="sticky z-2 select-none"><div class="flex w-full items-center justify-between">'
        f'<div class="flex items-center text-sm font-medium"><svg aria-hidden="true"></svg>'
        f"{html.escape(LABELS.get(lang, lang))}</div>"
        '<button aria-label="Copy" data-state="closed">Copy</button></div></div>'
        '<div class="relative z-0 flex max-w-full"><div id="code-block-viewer" dir="ltr" class="cm-editor">'
        f'<div class="cm-scroller"><div class="cm-content">{lines}</div></div>'
        "</div></div></div></div></pre>"
    )


def _list(lines: list[str]) -> str:
    """Render list lines (already known to start a list) into nested <ul>/<ol>."""
    first = _ITEM.match(lines[0])
    assert first
    base = len(first.group(1))
    ordered = first.group(2)[0].isdigit()
    items: list[tuple[str, list[str]]] = []
    for line in lines:
        m = _ITEM.match(line)
        if m and len(m.group(1)) == base:
            items.append((m.group(3), []))
        elif items:
            items[-1][1].append(line)
    parts = []
    for text, children in items:
        nested = _list(children) if children and _ITEM.match(children[0]) else ""
        parts.append(f"<li>{_inline(text)}{nested}</li>")
    tag = "ol" if ordered else "ul"
    start = f' start="{int(first.group(2)[:-1])}"' if ordered and first.group(2) != "1." else ""
    return f"<{tag}{start}>{''.join(parts)}</{tag}>"


def _table(lines: list[str]) -> str:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    head, body = rows[0], rows[2:]
    th = "".join(f"<th>{_inline(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def render_markdown(md: str, dom: str = "2026") -> str:
    lines = md.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if fence := _FENCE.match(line):
            ticks, lang = fence.group(1), fence.group(2)
            body: list[str] = []
            i += 1
            while i < len(lines) and not (lines[i].startswith(ticks) and not lines[i].strip("`").strip()):
                body.append(lines[i])
                i += 1
            i += 1
            out.append(_code_block("\n".join(body), lang, dom))
            continue
        if heading := _HEADING.match(line):
            n = len(heading.group(1))
            out.append(f"<h{n}>{_inline(heading.group(2))}</h{n}>")
            i += 1
            continue
        if re.fullmatch(r"-{3,}|\*{3,}", line.strip()):
            out.append("<hr>")
            i += 1
            continue
        if line.startswith(">"):
            quoted = []
            while i < len(lines) and lines[i].startswith(">"):
                quoted.append(lines[i][1:].removeprefix(" "))
                i += 1
            out.append(f"<blockquote>{render_markdown(chr(10).join(quoted), dom)}</blockquote>")
            continue
        if _ITEM.match(line) and not line.startswith(" "):
            block = []
            while i < len(lines) and lines[i].strip() and (_ITEM.match(lines[i]) or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            out.append(_list(block))
            continue
        if line.lstrip().startswith("|") and i + 1 < len(lines) and re.fullmatch(r"[\s|:-]+", lines[i + 1]):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(_table(block))
            continue
        para = []
        while i < len(lines) and lines[i].strip() and not _FENCE.match(lines[i]) and not _HEADING.match(lines[i]):
            para.append(lines[i].strip())
            i += 1
        out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "".join(out)
