// The fake ChatGPT page: renders the DOM shapes the bridge's selector profile expects and talks
// to the FakeChat server. State that matters (conversations, reply progress) lives on the server.
(() => {
  const C = window.FAKE;
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'text') e.textContent = v;
      else if (k === 'html') e.innerHTML = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (v !== false && v !== null && v !== undefined) e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) e.append(c);
    return e;
  };
  const post = (url, body) =>
    fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)}).then((r) => r.json());

  let model = C.models[0].name;
  let conversation = C.conversation;
  let attachments = [];
  let uploading = 0;
  let streaming = false;
  let polling = null;
  const turnEls = new Map(); // turn index -> {user, assistant}

  // ---- sidebar + header -----------------------------------------------------------------
  for (const p of C.projects) {
    $('#projects').append(el('a', {href: `/g/g-p-${p.id}-${p.slug}/project`, text: p.name}));
  }
  const header = $('#header');
  if (C.variant === 'logged_out') {
    header.append(el('button', {'data-testid': 'login-button', text: 'Log in', onclick: () => (location.href = '/auth/login')}));
    header.append(el('a', {href: '/auth/login?signup=1', text: 'Sign up for free'}));
    $('#thread').append(el('h1', {text: 'What can I help with?'}));
    return; // no composer for a logged-out session
  }
  const switcher = el('button', {'data-testid': 'model-switcher-dropdown-button', 'aria-haspopup': 'menu', type: 'button', text: `ChatGPT ${model}`});
  header.append(switcher);
  if (C.project) header.append(el('span', {class: 'project-title', text: C.project.name}));
  let menu = null;
  switcher.addEventListener('click', () => {
    if (menu) { menu.remove(); menu = null; return; }
    menu = el('div', {role: 'menu'});
    for (const m of C.models) {
      menu.append(el('div', {role: 'menuitem', tabindex: '-1', onclick: () => {
        model = m.name;
        switcher.textContent = `ChatGPT ${model}`;
        menu.remove(); menu = null;
      }}, m.name, el('div', {class: 'desc', text: m.desc})));
    }
    header.append(menu);
  });
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && menu) { menu.remove(); menu = null; } });

  // ---- composer ------------------------------------------------------------------------
  const drift = C.variant === 'drift';
  const box = el('div', {id: 'prompt-textarea', class: 'ProseMirror', contenteditable: 'true', role: 'textbox', 'aria-label': 'Ask anything'});
  const plus = el('button', {type: 'button', 'data-testid': 'composer-plus-btn', 'aria-label': 'Add files and more', text: '+'});
  const chips = el('div', {id: 'attachments'});
  const send = el('button', drift
    ? {type: 'submit', 'data-testid': 'composer-submit-btn', 'aria-label': 'Submit message', text: '↑'}
    : {type: 'submit', 'data-testid': 'send-button', 'aria-label': 'Send prompt', text: '↑'});
  const speech = el('button', {type: 'button', 'data-testid': 'composer-speech-button', 'aria-label': 'Start voice mode', text: '🎤'});
  const stop = el('button', {type: 'button', 'data-testid': 'stop-button', 'aria-label': 'Stop streaming', text: '■'});
  const form = el('form', {id: 'composer'}, plus, chips, box, speech, send, stop);
  let fileInput = null;
  const makeFileInput = () => {
    fileInput = el('input', {type: 'file', multiple: true, tabindex: '-1', style: 'display:none'});
    fileInput.addEventListener('change', onFiles);
    form.append(fileInput);
  };
  if (!C.lazyFileInput) makeFileInput();
  plus.addEventListener('click', () => { if (!fileInput) makeFileInput(); });
  $('#composer-slot').append(form);

  // ProseMirror keeps one paragraph per line; read it back the same way.
  const composerText = () => {
    const lines = [];
    let current = null;
    for (const n of box.childNodes) {
      if (n.nodeName === 'DIV' || n.nodeName === 'P') {
        if (current !== null) { lines.push(current); current = null; }
        lines.push(n.childNodes.length === 1 && n.firstChild.nodeName === 'BR' ? '' : n.textContent);
      } else if (n.nodeName === 'BR') { lines.push(current ?? ''); current = null; }
      else current = (current ?? '') + n.textContent;
    }
    if (current !== null) lines.push(current);
    return lines.join('\n').replace(/\u00a0/g, ' ');
  };
  const hasText = () => box.textContent.length > 0;
  const refresh = () => {
    const ready = hasText() || attachments.length > 0;
    send.hidden = streaming || !ready;
    speech.hidden = streaming || ready;
    stop.hidden = !streaming;
    send.disabled = uploading > 0;
  };
  box.addEventListener('input', refresh);
  refresh();

  function onFiles() {
    for (const f of fileInput.files) {
      uploading++;
      const chip = el('div', {class: 'attachment', 'data-testid': 'attachment', text: `${f.name} (uploading)`});
      chips.append(chip);
      const reader = new FileReader();
      reader.onload = () => {
        setTimeout(() => {
          attachments.push({name: f.name, data: String(reader.result).split(',', 2)[1] || ''});
          chip.textContent = f.name;
          uploading--;
          refresh();
        }, C.uploadDelayMs);
      };
      reader.readAsDataURL(f);
    }
    fileInput.value = '';
    refresh();
  }

  // ---- thread --------------------------------------------------------------------------
  const thread = $('#thread');
  const userTurn = (i, text, files) => el('article', {'data-testid': `conversation-turn-${2 * i + 1}`, 'data-turn': 'user'},
    el('h5', {class: 'sr-only', text: 'You said:'}),
    el('div', {'data-message-author-role': 'user', 'data-message-id': `u${i}`},
      ...files.map((f) => el('div', {class: 'attachment', text: f})),
      el('div', {class: 'whitespace-pre-wrap', text})));
  const assistantTurn = (i) => el('article', {'data-testid': `conversation-turn-${2 * i + 2}`, 'data-turn': 'assistant'},
    el('h6', {class: 'sr-only', text: 'ChatGPT said:'}),
    el('div', {'data-message-author-role': 'assistant', 'data-message-id': `a${i}`},
      el('div', {class: 'thinking', text: 'Thinking…'}),
      el('div', {class: 'markdown prose'})));
  const ensureTurn = (i, prompt, files) => {
    if (!turnEls.has(i)) {
      const u = userTurn(i, prompt, files);
      const a = assistantTurn(i);
      thread.append(u, a);
      turnEls.set(i, {user: u, assistant: a, html: '', finished: false});
    }
    return turnEls.get(i);
  };
  const banner = (text) => $('#banner-slot').replaceChildren(el('div', {class: 'banner', 'data-testid': 'usage-banner', text}));

  const render = (data) => {
    let active = false;
    for (const t of data.turns) {
      const r = ensureTurn(t.index, t.prompt, t.files);
      if (t.usage_cap) { r.assistant.remove(); banner(t.usage_cap); continue; }
      if (r.finished) continue;
      const body = r.assistant.querySelector('.markdown');
      if (t.html !== r.html) { body.innerHTML = t.html; r.html = t.html; }
      const thinking = r.assistant.querySelector('.thinking');
      if (thinking && t.html) thinking.remove();
      if (t.error) {
        r.finished = true;
        r.assistant.append(el('div', {class: 'text-token-text-error', text: t.error}),
          el('button', {type: 'button', class: 'btn', text: 'Retry'}));
      } else if (t.done) {
        r.finished = true;
        r.assistant.append(el('div', {class: 'turn-actions'},
          el('button', {type: 'button', 'data-testid': 'copy-turn-action-button', 'aria-label': 'Copy', text: '⧉'}),
          el('button', {type: 'button', 'data-testid': 'good-response-turn-action-button', 'aria-label': 'Good response', text: '👍'})));
        post('/api/rendered', {conversation_id: data.id, turn_index: t.index, at: Date.now() / 1000});
      } else active = true;
    }
    streaming = active;
    refresh();
    return active;
  };
  const poll = () => {
    clearTimeout(polling);
    fetch(`/api/conversation/${conversation}`).then((r) => r.json()).then((data) => {
      if (render(data)) polling = setTimeout(poll, C.pollMs);
    });
  };

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (send.hidden || send.disabled) return;
    const prompt = composerText();
    const files = attachments;
    const index = turnEls.size;
    ensureTurn(index, prompt, files.map((f) => f.name));
    box.replaceChildren();
    attachments = [];
    chips.replaceChildren();
    streaming = true;
    refresh();
    post('/api/send', {
      conversation_id: conversation, prompt, files, model, variant: C.variant,
      project: C.project,
    }).then((res) => {
      if (!conversation) history.pushState({}, '', res.path);
      conversation = res.conversation_id;
      if (res.usage_cap) {
        turnEls.get(index).assistant.remove();
        streaming = false;
        refresh();
        banner(res.usage_cap);
        return;
      }
      poll();
    });
  });

  if (conversation) poll();
})();
