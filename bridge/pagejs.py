"""JavaScript the bridge evaluates inside the ChatGPT page.

Each script is one stateless ``(args) => ...`` function taking the selector profile as data, so
a full page load loses nothing and every poll is a single evaluation round trip. Selector
candidates are CSS, optionally ending in Playwright's ``:has-text("...")`` (case-insensitive
substring of the element's text), which the prelude implements so the same profile serves both
Playwright locators and these scripts.

Invariants: the scripts only read the page (the extractor never clicks "copy" or touches the
clipboard); text found inside conversation turns, the composer or the sidebar never counts as a
banner, so a reply that talks about "rate limits" is not mistaken for one.
"""

from __future__ import annotations

_PRELUDE = r"""
const S = args.selectors || {};
const T = args.texts || {};
const HAS_TEXT = /^(.*?):has-text\((["'])(.*)\2\)$/;
const split = (sel) => { const m = HAS_TEXT.exec(sel); return m ? [m[1] || '*', m[3].toLowerCase()] : [sel, null]; };
const qa = (root, sel) => {
  const [css, text] = split(sel);
  let els;
  try { els = Array.from(root.querySelectorAll(css)); } catch (e) { return []; }
  if (text !== null) els = els.filter((el) => (el.textContent || '').toLowerCase().includes(text));
  return els;
};
const visible = (el) => {
  if (!el || !el.isConnected) return false;
  const r = el.getBoundingClientRect();
  if (r.width <= 0 || r.height <= 0) return false;
  return getComputedStyle(el).visibility !== 'hidden';
};
const allOf = (name, root) => {
  const seen = new Set();
  for (const c of S[name] || []) for (const el of qa(root || document, c)) seen.add(el);
  return Array.from(seen);
};
const visibleOf = (name, root) => allOf(name, root).filter(visible);
const matchesAny = (el, name) => (S[name] || []).some((c) => {
  const [css, text] = split(c);
  try { return el.matches(css) && (text === null || (el.textContent || '').toLowerCase().includes(text)); }
  catch (e) { return false; }
});
const closestAny = (el, name) => {
  for (let n = el; n && n.nodeType === 1; n = n.parentElement) if (matchesAny(n, name)) return n;
  return null;
};
const isUserTurn = (el) => matchesAny(el, 'user_turn') || allOf('user_turn', el).length > 0;
const assistantTurns = () => {
  for (const c of S.assistant_turn || []) {
    const els = qa(document, c).filter((el) => !isUserTurn(el));
    if (els.length) return els;
  }
  return [];
};
const lastTurn = () => { const t = assistantTurns(); return t.length ? t[t.length - 1] : null; };
const bodyOf = (turn) => {
  const b = turn ? allOf('reply_body', turn) : [];
  return b.length ? b[b.length - 1] : null;
};
const containerOf = (turn) => (turn ? closestAny(turn, 'turn_container') || turn : null);
const norm = (s) => s.replace(/[\u2018\u2019]/g, "'").toLowerCase();
"""

SCAN_JS = (
    "(args) => {"
    + _PRELUDE
    + r"""
const out = {};
for (const name of args.names) {
  let hit = null;
  for (const c of S[name] || []) {
    const els = qa(document, c);
    if (!els.length) continue;
    const vis = els.some(visible);
    if (vis) { hit = {candidate: c, count: els.length, visible: true}; break; }
    if (!hit) hit = {candidate: c, count: els.length, visible: false};
  }
  out[name] = hit;
}
return out;
}"""
)

# One poll: everything the completion loop needs, read in a single round trip.
PROBE_JS = (
    "(args) => {"
    + _PRELUDE
    + r"""
const turns = assistantTurns();
const last = turns.length ? turns[turns.length - 1] : null;
const container = containerOf(last);
const body = bodyOf(last);
// How long the reply body has been free of mutations, measured in-page so completion does not
// depend on when a poll happened to look. Null until the observer has watched this body.
let quietMs = null;
if (body) {
  const w = window.__planegateWatch;
  if (w && w.body === body) quietMs = Date.now() - w.last;
  else {
    if (w) w.observer.disconnect();
    const watch = {body, last: Date.now(), observer: null};
    watch.observer = new MutationObserver(() => { watch.last = Date.now(); });
    watch.observer.observe(body, {subtree: true, childList: true, characterData: true});
    window.__planegateWatch = watch;
  }
}
// A user turn after the last assistant turn means the newest prompt has no reply rendered yet.
const after = (a, b) => (a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING) !== 0;
const lastUser = allOf('user_turn').reduce((a, b) => (a === null || after(a, b) ? b : a), null);
const pendingUser = lastUser !== null && (last === null || (after(last, lastUser) && !last.contains(lastUser)));
const text = body ? body.textContent || '' : '';
let h = 0x811c9dc5;
for (let i = 0; i < text.length; i++) { h ^= text.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
const inOtherTurn = (el) => { const c = closestAny(el, 'turn_container'); return c !== null && c !== container; };
// Buttons inside a reply body belong to its content (a code block's "Copy"), never to the turn.
const turnControl = (el) => !inOtherTurn(el) && closestAny(el, 'reply_body') === null;
const retry = visibleOf('retry').filter(turnControl);
const errors = visibleOf('error_banner').filter((el) => !inOtherTurn(el));
const cfTitle = (T.cloudflare_title || []).some((t) => document.title.includes(t));

// Banner scan: text outside turns, composer and sidebar, so conversation content never matches.
let capText = null;
const phrases = (T.usage_cap || []).map(norm);
if (phrases.length && document.body) {
  const skip = ['turn_container', 'assistant_turn', 'user_turn', 'composer', 'scan_exclude'];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, {
    acceptNode(n) {
      if (n.nodeType !== 1) return NodeFilter.FILTER_ACCEPT;
      return skip.some((k) => matchesAny(n, k)) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_SKIP;
      return NodeFilter.FILTER_ACCEPT;
    },
  });
  for (let n = walker.nextNode(); n && capText === null; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || !phrases.some((p) => norm(n.data).includes(p)) || !visible(el)) continue;
    // Quote the whole banner when the hit sits in a short element (e.g. a <b> inside it).
    const box = el.closest('[role="alert"], [role="status"], div, p, section') || el;
    const whole = (box.textContent || '').trim();
    capText = (whole.length <= 300 ? whole : n.data.trim()).slice(0, 300);
  }
}
return {
  url: location.href,
  title: document.title,
  ready: document.readyState,
  composer: allOf('composer').some(visible),
  loggedOut: visibleOf('logged_out').length > 0,
  cloudflare: cfTitle || allOf('cloudflare').length > 0,
  turns: turns.length,
  pendingUser,
  hasBody: body !== null,
  textLen: text.length,
  textHash: h,
  quietMs,
  stop: visibleOf('stop').length > 0,
  actions: container ? visibleOf('finished_actions', container).filter(turnControl).length > 0 : false,
  retry: retry.length > 0,
  error: errors.length ? (errors[0].textContent || '').trim().slice(0, 300) || 'error banner shown' : null,
  usageCap: capText,
};
}"""
)

# Finds the sidebar link of a project by (case-insensitive) text, without needing it visible:
# a collapsed sidebar still holds the links, and the bridge navigates to the href.
PROJECT_JS = (
    "(args) => {"
    + _PRELUDE
    + r"""
const want = args.name.toLowerCase();
const seen = [];
for (const c of S.project_link || []) {
  for (const a of qa(document, c)) {
    const label = (a.textContent || a.getAttribute('aria-label') || '').trim();
    if (label && !seen.includes(label)) seen.push(label);
    if (label.toLowerCase().includes(want) && a.href) return {href: a.href, seen};
  }
}
return {href: null, seen};
}"""
)

# The last assistant reply as markdown. Code blocks keep their text byte for byte
# (textContent of the <code>, never the highlighted markup or the block's header/buttons).
MARKDOWN_JS = (
    "(args) => {"
    + _PRELUDE
    + r"""
const body = bodyOf(lastTurn());
if (!body) return null;
const SKIP = new Set(['BUTTON', 'SVG', 'SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'INPUT', 'SELECT', 'TEXTAREA']);
const BLOCK = new Set(['P', 'DIV', 'SECTION', 'ARTICLE', 'HEADER', 'FOOTER', 'MAIN', 'FIGURE', 'DETAILS', 'SUMMARY',
  'UL', 'OL', 'LI', 'PRE', 'BLOCKQUOTE', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6', 'TABLE', 'HR']);
const skipped = (el) =>
  SKIP.has(el.tagName.toUpperCase()) || el.classList.contains('sr-only') || el.getAttribute('aria-hidden') === 'true';
const tex = (el) => {
  const a = el.querySelector('annotation[encoding="application/x-tex"]');
  return a ? a.textContent : null;
};
const wrap = (inner, mark) => {
  const m = /^(\s*)([\s\S]*?)(\s*)$/.exec(inner);
  return m[2] ? m[1] + mark + m[2] + mark + m[3] : inner;
};
const codeSpan = (s) => {
  let ticks = '`';
  while (s.includes(ticks)) ticks += '`';
  const pad = s.startsWith('`') || s.endsWith('`') ? ' ' : '';
  return ticks + pad + s + pad + ticks;
};
function inline(node) {
  if (node.nodeType === 3) return node.data.replace(/\s+/g, ' ');
  if (node.nodeType !== 1 || skipped(node)) return '';
  const tag = node.tagName.toUpperCase();
  if (node.classList.contains('katex')) { const t = tex(node); if (t !== null) return '$' + t + '$'; }
  const inner = () => Array.from(node.childNodes).map(inline).join('');
  switch (tag) {
    case 'BR': return '\n';
    case 'STRONG': case 'B': return wrap(inner(), '**');
    case 'EM': case 'I': return wrap(inner(), '*');
    case 'DEL': case 'S': return wrap(inner(), '~~');
    case 'CODE': return codeSpan(node.textContent || '');
    case 'A': {
      const t = inner().trim();
      const href = node.getAttribute('href') || '';
      return href ? '[' + t + '](' + href + ')' : t;
    }
    case 'IMG': return '![' + (node.getAttribute('alt') || '') + '](' + (node.getAttribute('src') || '') + ')';
    default: return inner();
  }
}
const cleanInline = (s) => s.split('\n').map((l) => l.trim()).join('\n').replace(/^\n+|\n+$/g, '');
const indent = (s, pad) => s.split('\n').map((l, i) => (i === 0 || l === '' ? l : pad + l)).join('\n');
function list(el) {
  const ordered = el.tagName.toUpperCase() === 'OL';
  let n = parseInt(el.getAttribute('start') || '1', 10);
  const items = [];
  for (const li of el.children) {
    if (li.tagName.toUpperCase() !== 'LI') continue;
    const marker = ordered ? n++ + '. ' : '- ';
    items.push(marker + indent(blocks(li).join('\n'), ' '.repeat(marker.length)));
  }
  return items.join('\n');
}
function table(el) {
  const rows = Array.from(el.querySelectorAll('tr')).map((tr) =>
    Array.from(tr.children).map((c) => cleanInline(inline(c)).replace(/\n/g, ' ').replace(/\|/g, '\\|')));
  if (!rows.length) return '';
  const line = (r) => '| ' + r.join(' | ') + ' |';
  return [line(rows[0]), line(rows[0].map(() => '---')), ...rows.slice(1).map(line)].join('\n');
}
function pre(el) {
  const code = el.querySelector('code') || el;
  const text = code.textContent || '';
  const cls = (code.className || '') + ' ' + (el.className || '');
  const m = /(?:^|\s)(?:language|lang)-([^\s]+)/.exec(cls);
  // Only a line starting with the fence would close it early, so only that forces a longer one.
  let fence = '```';
  while (new RegExp('^ {0,3}' + fence, 'm').test(text)) fence += '`';
  return fence + (m ? m[1] : '') + '\n' + text + (text.endsWith('\n') ? '' : '\n') + fence;
}
function block(el) {
  const tag = el.tagName.toUpperCase();
  if (/^H[1-6]$/.test(tag)) return ['#'.repeat(+tag[1]) + ' ' + cleanInline(inline(el)).replace(/\n/g, ' ')];
  if (tag === 'PRE') return [pre(el)];
  if (tag === 'UL' || tag === 'OL') return [list(el)];
  if (tag === 'HR') return ['---'];
  if (tag === 'TABLE') return [table(el)];
  if (tag === 'BLOCKQUOTE') return [blocks(el).join('\n\n').split('\n').map((l) => (l ? '> ' + l : '>')).join('\n')];
  if (el.classList.contains('katex-display')) { const t = tex(el); if (t !== null) return ['$$\n' + t + '\n$$']; }
  return blocks(el);
}
function blocks(parent) {
  const out = [];
  let run = '';
  const flush = () => { const t = cleanInline(run); if (t) out.push(t); run = ''; };
  for (const child of parent.childNodes) {
    const isBlock = child.nodeType === 1 && !skipped(child) &&
      (BLOCK.has(child.tagName.toUpperCase()) || child.classList.contains('katex-display'));
    if (isBlock) {
      flush();
      out.push(...block(child).filter((b) => b !== ''));
    } else {
      run += inline(child);
    }
  }
  flush();
  return out;
}
return blocks(body).join('\n\n') + '\n';
}"""
)
