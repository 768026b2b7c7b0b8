"""JavaScript the bridge evaluates inside the ChatGPT page.

Each script is one stateless ``(args) => ...`` function (or ``async (args) => ...``) taking the
selector profile as data, so a full page load loses nothing and every poll is a single
evaluation round trip. Selector candidates are CSS, optionally ending in Playwright's
``:has-text("...")`` (case-insensitive substring of the element's text), which the prelude
implements so the same profile serves both Playwright locators and these scripts.

Invariants:
- the scripts read the page; the few that act say so (``COPY_JS`` clicks the turn's own copy
  button, ``DISMISS_JS`` closes a "what's new" dialog, ``ACCOUNT_JS`` picks the configured
  account, ``CLEAR_DRAFT_JS`` removes stale draft attachments, ``MARK_FILE_INPUT_JS`` tags the
  file input to use);
- the user's clipboard is never touched: ``COPY_JS`` replaces the page's clipboard calls
  (``navigator.clipboard.writeText/write`` and ``document.execCommand('copy')``) for the length
  of one click, keeps what the page tried to copy, and puts the originals back;
- text inside conversation turns, the composer or the sidebar never counts as a banner, so a
  reply that talks about "rate limits" is not mistaken for one;
- a status label is reported only as the matching label from the profile, never as the page's
  own text: liveness, not reasoning.
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
  const st = getComputedStyle(el);
  return st.visibility !== 'hidden' && st.display !== 'none';
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
const norm = (s) => String(s || '').replace(/[\u2018\u2019]/g, "'").toLowerCase().replace(/\s+/g, ' ').trim();
const label = (el) => norm(el.getAttribute('aria-label') || el.textContent || el.getAttribute('title') || '');
const inOtherTurn = (el, container) => {
  const c = closestAny(el, 'turn_container');
  return c !== null && c !== container;
};
// Buttons inside a reply body belong to its content (a code block's "Copy"), never to the turn.
const turnControls = (name, container) =>
  visibleOf(name, container).filter((el) => !inOtherTurn(el, container) && closestAny(el, 'reply_body') === null);
const composerEl = () => { const v = visibleOf('composer'); return v.length ? v[0] : null; };
const composerText = (el) => {
  if (!el) return '';
  if (el.value !== undefined && el.tagName.toUpperCase() === 'TEXTAREA') return el.value;
  return el.innerText || el.textContent || '';
};
const EMAIL = /[a-z0-9.!#$%&'*+/=?^_{|}~-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+/gi;
const dialogInfo = () => {
  for (const d of visibleOf('dialog')) {
    const text = norm(d.textContent).slice(0, 300);
    const welcome = (T.welcome_back || []).some((w) => text.includes(norm(w)));
    const accounts = new Set();
    for (const b of d.querySelectorAll('button, a, [role="button"]')) {
      const l = label(b);
      if (/log in|sign up|create account|another account/.test(l)) continue;
      for (const m of l.match(EMAIL) || []) accounts.add(m.toLowerCase());
    }
    return {welcome, accounts: accounts.size, text: text.slice(0, 120)};
  }
  return null;
};
"""

# Which candidate of each named selector matches (a visible match beats a hidden one).
SCAN_JS = (
    "(args) => {"
    + _PRELUDE
    + r"""
const out = {};
for (const name of args.names) {
  let hit = null;
  (S[name] || []).forEach((c, index) => {
    if (hit && hit.visible) return;
    const els = qa(document, c);
    if (!els.length) return;
    const vis = els.some(visible);
    if (vis || !hit) hit = {candidate: c, index, count: els.length, visible: vis};
  });
  out[name] = hit;
}
return out;
}"""
)

# One poll: everything the bridge's waits need, read in a single round trip.
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
const users = allOf('user_turn').filter((u) => !allOf('user_turn', u).length);
const lastUser = users.reduce((a, b) => (a === null || after(a, b) ? b : a), null);
const pendingUser = lastUser !== null && (last === null || (after(last, lastUser) && !last.contains(lastUser)));
const text = body ? body.textContent || '' : '';
let h = 0x811c9dc5;
for (let i = 0; i < text.length; i++) { h ^= text.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }

// Live activity in the newest turn: a skeleton shimmer, aria-busy, a running progress bar, or a
// present-tense status label ("Thinking", "Searching the web"); "Thought for 12s" is past.
let busy = false;
let status = null;
if (container) {
  busy = visibleOf('busy', container).some((el) => {
    if (el.tagName.toUpperCase() === 'PROGRESS') return !(el.max > 0 && el.value >= el.max);
    const now = el.getAttribute('aria-valuenow');
    return now === null || Number(now) < Number(el.getAttribute('aria-valuemax') || 100);
  });
  const labels = (T.thinking_status || []).map(norm);
  const done = /^(?:(?:reasoning|pro thinking)\s*)?thought for\b/;
  const match = (raw) => {
    const t = norm(raw).replace(/[.\u2026:]+$/, '').trim();
    if (!t || t.length > 60 || done.test(t)) return null;
    return labels.find((l) => t === l || t.startsWith(l + ' ')) || null;
  };
  const CONTENT = 'p, li, pre, code, td, th, blockquote, h1, h2, h3, h4, h5, h6, table';
  const walker = document.createTreeWalker(container, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, {
    acceptNode(n) {
      if (n.nodeType === 1) return n.matches(CONTENT) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_SKIP;
      return NodeFilter.FILTER_ACCEPT;
    },
  });
  for (let n = walker.nextNode(); n && status === null; n = walker.nextNode()) {
    if (!n.data.trim() || !n.parentElement || !visible(n.parentElement)) continue;
    status = match(n.parentElement.textContent);
  }
  for (const el of visibleOf('status_node', container)) {
    if (status !== null) break;
    status = match(el.getAttribute('aria-label')) || match(el.textContent);
  }
}
const actions = container ? turnControls('finished_actions', container).length > 0 : false;
const marker = args.endMarker || '';
const at = marker ? text.lastIndexOf(marker) : -1;
const composer = composerEl();
const ctext = composerText(composer);

// Challenge evidence, by strength. The app shell always means "not a challenge": Cloudflare's
// bot management injects its script into healthy pages, so the script alone is only weak
// evidence, and only on a short page without the shell.
const shell = allOf('app_shell').length > 0;
let cfStrong = false;
let cfWeak = false;
let cfEvidence = '';
if (!shell) {
  const title = norm(document.title);
  const bodyText = norm(document.body ? document.body.innerText : '');
  const short = bodyText.length < 600;
  const titled = (T.cloudflare_title || []).some((t) => title.includes(norm(t)));
  const widget = allOf('cloudflare').length > 0;
  const copy = short && (T.cloudflare_copy || []).some((t) => bodyText.includes(norm(t)));
  cfStrong = titled || widget || copy;
  cfEvidence = titled ? 'title ' + JSON.stringify(document.title)
    : widget ? 'challenge widget' : copy ? 'verification text' : '';
  cfWeak = !cfStrong && short && allOf('cloudflare_script').length > 0;
  if (cfWeak) cfEvidence = 'only the challenge-platform script, no app shell';
}

// Banner scan: text outside turns, composer and sidebar, so conversation content never matches.
let capText = null;
const phrases = (T.usage_cap || []).map(norm);
if (phrases.length && document.body) {
  const skip = ['turn_container', 'assistant_turn', 'user_turn', 'composer', 'scan_exclude'];
  const banners = document.createTreeWalker(document.body, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, {
    acceptNode(n) {
      if (n.nodeType !== 1) return NodeFilter.FILTER_ACCEPT;
      return skip.some((k) => matchesAny(n, k)) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_SKIP;
    },
  });
  for (let n = banners.nextNode(); n && capText === null; n = banners.nextNode()) {
    const el = n.parentElement;
    if (!el || !phrases.some((p) => norm(n.data).includes(p)) || !visible(el)) continue;
    // Quote the whole banner when the hit sits in a short element (e.g. a <b> inside it).
    const box = el.closest('[role="alert"], [role="status"], div, p, section') || el;
    const whole = (box.textContent || '').trim();
    capText = (whole.length <= 300 ? whole : n.data.trim()).slice(0, 300);
  }
}
// Which stop candidate shows (the first with a visible element), so a fallback in use is known
// from this same read: a stop control that a later read would no longer find is still recorded.
let stopHit = null;
(S.stop || []).forEach((c, index) => {
  if (stopHit) return;
  const els = qa(document, c);
  if (els.some(visible)) stopHit = {candidate: c, index, count: els.length, visible: true};
});
const retry = container ? turnControls('retry', container) : [];
const errors = visibleOf('error_banner').filter((el) => !container || !inOtherTurn(el, container));
return {
  url: location.href,
  title: document.title,
  composer: composer !== null,
  composerChars: ctext.replace(/\s+/g, '').length,
  loggedOut: visibleOf('logged_out').length > 0,
  loggedIn: allOf('logged_in').length > 0,
  shell,
  cfStrong,
  cfWeak,
  cfEvidence,
  dialog: dialogInfo(),
  turns: turns.length,
  userTurns: users.length,
  lastUser: lastUser ? (lastUser.textContent || '').replace(/\s+/g, '').slice(0, 400) : '',
  pendingUser,
  hasBody: body !== null,
  textLen: text.length,
  textHash: h,
  quietMs,
  markerAtEnd: at >= 0 && text.length - (at + marker.length) <= 200,
  stop: stopHit,
  busy,
  status,
  actions,
  retry: retry.length > 0,
  error: errors.length ? (errors[0].textContent || '').trim().slice(0, 300) || 'error banner shown' : null,
  usageCap: capText,
};
}"""
)

# Does the page's own session endpoint know a user? Never returns the session's tokens.
SESSION_PATH = "/api/auth/session"
SESSION_JS = r"""async (args) => {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), args.timeoutMs);
  try {
    const r = await fetch(args.path, {credentials: 'include', cache: 'no-store', signal: ctl.signal});
    if (!r.ok) return {status: r.status, user: null};
    let data = null;
    try { data = await r.json(); } catch (e) { return {status: r.status, user: null}; }
    if (!data || typeof data !== 'object') return {status: r.status, user: null};
    return {status: r.status, user: Boolean(data.user && (data.user.id || data.user.email || data.user.name))};
  } catch (e) {
    return {status: 0, user: null};
  } finally {
    clearTimeout(timer);
  }
}"""

# Closes one blocking "what's new"-style dialog by its own close/ok button. Never touches the
# "Welcome back" account picker (that needs a choice, see ACCOUNT_JS).
DISMISS_JS = (
    "(args) => {"
    + _PRELUDE
    + r"""
const words = (T.dismiss || []).map(norm);
for (const d of visibleOf('dialog')) {
  const text = norm(d.textContent);
  if ((T.welcome_back || []).some((w) => text.includes(norm(w)))) continue;
  const buttons = Array.from(d.querySelectorAll('button, [role="button"], a')).filter(visible);
  const pick = buttons.find((b) => { const l = label(b); return l === 'close' || l.startsWith('close '); })
    || buttons.find((b) => words.includes(label(b)));
  if (pick) { pick.click(); return {dismissed: label(pick), text: text.slice(0, 80)}; }
  return {dismissed: null, text: text.slice(0, 80)};
}
return {dismissed: null, text: null};
}"""
)

# Picks the configured account on the "Welcome back" picker (exact e-mail match only).
ACCOUNT_JS = (
    "(args) => {"
    + _PRELUDE
    + r"""
const want = String(args.email || '').toLowerCase();
for (const d of visibleOf('dialog')) {
  for (const b of d.querySelectorAll('button, a, [role="button"]')) {
    const l = label(b);
    if (/log in|sign up|create account|another account/.test(l)) continue;
    // Clicked after this script returns: the choice reloads the page under it.
    if ((l.match(EMAIL) || []).map((m) => m.toLowerCase()).includes(want)) {
      setTimeout(() => b.click(), 100);
      return true;
    }
  }
}
return false;
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
    const text = (a.textContent || a.getAttribute('aria-label') || '').trim();
    if (text && !seen.includes(text)) seen.push(text);
    if (text.toLowerCase().includes(want) && a.href) return {href: a.href, seen};
  }
}
return {href: null, seen};
}"""
)

# Tags the general-purpose file input (never an image-only one, which does not take a packet
# file) with data-planegate-file, so Playwright can hand it files. Returns what it saw.
MARK_FILE_INPUT_JS = (
    "(args) => {"
    + _PRELUDE
    + r"""
const IMAGE = /^(image\/.*|\.(png|jpe?g|gif|webp|heic|heif|bmp|svg|avif))$/i;
const imageOnly = (el) => {
  const accept = (el.getAttribute('accept') || '').split(',').map((s) => s.trim()).filter(Boolean);
  return accept.length > 0 && accept.every((a) => IMAGE.test(a));
};
for (const el of document.querySelectorAll('[data-planegate-file]')) el.removeAttribute('data-planegate-file');
const all = allOf('file_input');
const usable = all.filter((el) => !el.disabled && !imageOnly(el));
if (!usable.length) return {found: false, seen: all.length, imageOnly: all.filter(imageOnly).length};
usable[0].setAttribute('data-planegate-file', '1');
return {found: true, seen: all.length, imageOnly: all.filter(imageOnly).length, multiple: usable[0].multiple};
}"""
)

# The composer's attachment chips: which of args.names show, and whether any still uploads.
CHIPS_JS = (
    "(args) => {"
    + _PRELUDE
    + r"""
const composer = composerEl();
const scope = (composer && (composer.closest('form') || composer.parentElement)) || document;
const chips = visibleOf('attachment_chip', scope);
const labels = chips.map((c) => norm((c.getAttribute('aria-label') || '') + ' ' + (c.textContent || '')));
const found = {};
for (const n of args.names) found[n] = labels.some((l) => l.includes(norm(n)));
return {found, uploading: visibleOf('upload_busy', scope).length > 0, chips: labels.slice(0, 20)};
}"""
)

# Removes draft attachments left in the composer by an earlier, unsent prompt.
CLEAR_DRAFT_JS = (
    "(args) => {"
    + _PRELUDE
    + r"""
const composer = composerEl();
const scope = (composer && (composer.closest('form') || composer.parentElement)) || document;
const buttons = visibleOf('attachment_remove', scope);
for (const b of buttons) b.click();
return buttons.length;
}"""
)

# Reads the newest reply through ChatGPT's own turn copy button. The page's clipboard calls are
# replaced for the duration of the click, so what the page would copy lands here, and the
# user's clipboard is never written.
COPY_JS = (
    "async (args) => {"
    + _PRELUDE
    + r"""
const container = containerOf(lastTurn());
if (!container) return {status: 'no assistant turn'};
const buttons = turnControls('turn_copy', container);
if (!buttons.length) return {status: 'no copy button in the turn'};
const button = buttons[buttons.length - 1];
let captured = null;
const cb = navigator.clipboard || null;
const own = cb ? {writeText: Object.prototype.hasOwnProperty.call(cb, 'writeText'),
                  write: Object.prototype.hasOwnProperty.call(cb, 'write')} : null;
const saved = cb ? {writeText: cb.writeText, write: cb.write} : null;
const savedExec = document.execCommand;
const selected = () => {
  const a = document.activeElement;
  if (a && (a.tagName === 'TEXTAREA' || a.tagName === 'INPUT') && typeof a.selectionStart === 'number') {
    return a.value.slice(a.selectionStart, a.selectionEnd);
  }
  return String(window.getSelection() || '');
};
try {
  if (cb) {
    cb.writeText = (value) => { captured = String(value); return Promise.resolve(); };
    cb.write = async (items) => {
      for (const item of Array.from(items || [])) {
        if (item && (item.types || []).includes('text/plain')) {
          captured = await (await item.getType('text/plain')).text();
          return;
        }
      }
      captured = captured === null ? '' : captured;
    };
  }
  document.execCommand = function (command, ...rest) {
    if (String(command).toLowerCase() === 'copy') { captured = selected(); return true; }
    return savedExec.call(document, command, ...rest);
  };
  button.click();
  const deadline = Date.now() + args.timeoutMs;
  while (captured === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  // Some pages write twice (plain text, then rich); let a second write land.
  await new Promise((r) => setTimeout(r, 50));
} finally {
  if (cb) {
    if (own.writeText) cb.writeText = saved.writeText; else delete cb.writeText;
    if (own.write) cb.write = saved.write; else delete cb.write;
  }
  document.execCommand = savedExec;
}
const body = bodyOf(lastTurn());
const domChars = body ? (body.textContent || '').replace(/\s+/g, '').length : 0;
if (captured === null) return {status: 'nothing was copied', domChars};
return {status: 'ok', text: captured, domChars};
}"""
)

# The last assistant reply as markdown, rebuilt from the DOM (the fallback when the copy button
# gives nothing). Code blocks keep their text byte for byte: CodeMirror blocks (2026: a sticky
# header with the language and a "Copy" button, then .cm-content with lines as .cm-line or split
# by <br>) and <pre><code class="language-x"> blocks (2024/25) alike.
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
// Text of a code element where <br> and line elements are line breaks.
function linesOf(root) {
  const lines = Array.from(root.children).filter((c) => c.classList.contains('cm-line'));
  if (lines.length) return lines.map((l) => (l.textContent || '')).join('\n');
  let out = '';
  const walk = (n) => {
    if (n.nodeType === 3) { out += n.data; return; }
    if (n.nodeType !== 1 || SKIP.has(n.tagName.toUpperCase())) return;
    if (n.tagName.toUpperCase() === 'BR') { out += '\n'; return; }
    const isLine = n !== root && n.tagName.toUpperCase() === 'DIV';
    if (isLine && out && !out.endsWith('\n')) out += '\n';
    n.childNodes.forEach(walk);
  };
  walk(root);
  return out;
}
function pre(el) {
  // The code itself: CodeMirror's content, else <code>, else the last child after a header.
  const cm = el.querySelector('.cm-content');
  const code = cm ? null : el.querySelector('code');
  let root = cm || code;
  if (!root) root = el.children.length > 1 ? el.children[el.children.length - 1] : el;
  const text = cm ? linesOf(cm) : code ? code.textContent || '' : linesOf(root);
  // The language: a language-* class, else the header's label (text outside the code and buttons).
  const cls = ((code && code.className) || '') + ' ' + (el.className || '');
  let lang = (/(?:^|\s)(?:language|lang)-([^\s]+)/.exec(cls) || [])[1] || '';
  if (!lang && root !== el) {
    let head = '';
    const walk = (n) => {
      if (n === root || (n.nodeType === 1 && SKIP.has(n.tagName.toUpperCase()))) return;
      if (n.nodeType === 3) head += n.data; else n.childNodes.forEach(walk);
    };
    walk(el);
    head = head.trim();
    if (/^[\w+#.-]{1,30}$/.test(head)) lang = head.toLowerCase();
  }
  // Only a line starting with the fence would close it early, so only that forces a longer one.
  let fence = '```';
  while (new RegExp('^ {0,3}' + fence, 'm').test(text)) fence += '`';
  return fence + lang + '\n' + text + (text.endsWith('\n') ? '' : '\n') + fence;
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

# A bounded summary of the page for a failure report: no screenshot can be grepped.
DIAGNOSE_JS = (
    "(args) => {"
    + _PRELUDE
    + r"""
const turns = allOf('turn_container').filter((t) => !allOf('turn_container', t).length);
const roleOf = (el) => {
  const inner = el.querySelector('[data-message-author-role]');
  return el.getAttribute('data-turn') || el.getAttribute('data-message-author-role')
    || (inner ? inner.getAttribute('data-message-author-role') : null);
};
const summary = (el) => ({
  role: roleOf(el),
  testid: el.getAttribute('data-testid'),
  text: (el.innerText || el.textContent || '').slice(0, 2000),
  buttons: Array.from(el.querySelectorAll('button')).slice(0, 20).map((b) => ({
    label: label(b).slice(0, 60), testid: b.getAttribute('data-testid'), visible: visible(b)})),
  html_chars: el.innerHTML.length,
});
const composer = composerEl();
return {
  url: location.href,
  title: document.title,
  ready: document.readyState,
  dialog: dialogInfo(),
  composer_chars: composerText(composer).length,
  last_turns: turns.slice(-6).map(summary),
  body_text: (document.body ? document.body.innerText : '').slice(0, 5000),
};
}"""
)
