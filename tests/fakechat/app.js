// The fake ChatGPT page: renders the DOM shapes of the live site (2025 and 2026 generations, see
// server.py) and talks to the FakeChat server. State that matters (conversations, reply
// progress) lives on the server; this page only shows it, with the site's quirks.
(() => {
  const C = window.FAKE;
  const is26 = C.dom === '2026';
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

  function start() {
    const app = $('#app');
    const header = el('header', {id: 'header'});
    const thread = el('div', {id: 'thread'});
    const bannerSlot = el('div', {id: 'banner-slot'});
    const composerSlot = el('div', {id: 'composer-slot'});
    const projects = el('div', {id: 'projects'}, el('h2', {text: 'Projects'}));
    for (const p of C.projects) projects.append(el('a', {href: `/g/g-p-${p.id}-${p.slug}/project`, text: p.name}));
    const nav = el('nav', {id: 'sidebar', 'aria-label': 'Chat history'},
      el('a', {'data-testid': 'create-new-chat-button', href: '/', text: 'New chat'}), projects);
    app.append(nav, el('main', {id: 'main'}, header, bannerSlot, thread, composerSlot));
    const account = !['logged_out', 'guest', 'welcome_back'].includes(C.variant);
    if (account) {
      nav.append(el('div', {id: 'history'}, el('h2', {text: 'Chats'}),
        el('a', {href: '/c/old-rate-limit-chat', 'data-testid': 'history-item-0', text: 'Fix rate limit bug'})));
      nav.append(el(is26 ? 'button' : 'div', {'data-testid': 'accounts-profile-button', 'aria-label': 'Open profile menu', text: 'Test User'}));
    }

    if (C.variant === 'logged_out') {
      header.append(el('button', {'data-testid': 'login-button', text: 'Log in', onclick: () => (location.href = '/auth/login')}));
      header.append(el('a', {href: '/auth/login?signup=1', text: 'Sign up for free'}));
      thread.append(el('h1', {text: 'What can I help with?'}));
      return; // no composer for a logged-out session
    }
    if (C.variant === 'welcome_back') {
      const picker = el('div', {role: 'dialog', 'aria-modal': 'true'}, el('h2', {text: 'Welcome back'}),
        el('p', {text: 'Choose an account to continue.'}));
      for (const a of C.accounts) {
        picker.append(el('button', {type: 'button', class: 'account', text: a, onclick: () =>
          post('/api/choose-account', {email: a}).then(() => location.reload())}));
      }
      picker.append(el('button', {type: 'button', text: 'Log in to another account'}));
      app.append(el('div', {class: 'overlay'}, picker));
      return;
    }
    // "What's new" covers the page at load, or pops up once the composer is first focused.
    let modalShown = false;
    const showModal = () => {
      if (C.variant !== 'modal' || modalShown) return;
      modalShown = true;
      const overlay = el('div', {class: 'overlay'});
      overlay.append(el('div', {role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'whats-new'},
        el('h2', {id: 'whats-new', text: "What's new in ChatGPT"}),
        el('p', {text: 'Projects now remember your files.'}),
        el('button', {type: 'button', text: 'Got it', onclick: () => overlay.remove()})));
      document.body.append(overlay);
    };
    if (C.modalOn === 'load') showModal();

    let model = C.models[0];
    let conversation = C.conversation;
    let attachments = [];
    let uploading = 0;
    let streaming = false;
    let polling = null;
    let hydrating = false;
    const turnEls = new Map(); // turn index -> rendered state

    // ---- model choice: 2025 a header dropdown, 2026 a composer pill that mounts late ---------
    let menu = null;
    const closeMenu = () => { if (menu) { menu.remove(); menu = null; } };
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeMenu(); });
    const pillText = () => (C.variant === 'pill_unverifiable' ? 'Intelligence' : model.pill);
    let switcher;
    const openMenu = (anchor, item) => {
      if (menu) { closeMenu(); return; }
      menu = el('div', is26 ? {role: 'menu', 'data-testid': 'composer-intelligence-picker-content'} : {role: 'menu'});
      for (const m of C.models) {
        const attrs = {role: item, tabindex: '-1'};
        if (item === 'menuitemradio' && C.variant !== 'pill_unverifiable') attrs['aria-checked'] = String(m === model);
        attrs.onclick = () => {
          model = m;
          switcher.textContent = is26 ? pillText() : `ChatGPT ${model.name}`;
          closeMenu();
        };
        menu.append(el('div', attrs, m.name, el('div', {class: 'desc', text: m.desc})));
      }
      anchor.after(menu);
    };
    if (!is26) {
      switcher = el('button', {'data-testid': 'model-switcher-dropdown-button', 'aria-haspopup': 'menu', type: 'button', text: `ChatGPT ${model.name}`});
      switcher.addEventListener('click', () => openMenu(switcher, 'menuitem'));
      header.append(switcher);
    }
    if (C.project) header.append(el('span', {class: 'project-title', text: C.project.name}));

    // ---- composer ------------------------------------------------------------------------
    const drift = C.variant === 'drift';
    const box = el('div', {id: 'prompt-textarea', class: 'ProseMirror', contenteditable: 'true', role: 'textbox', 'aria-label': 'Ask anything'});
    const plus = el('button', {type: 'button', 'data-testid': 'composer-plus-btn', 'aria-label': 'Add files and more', text: '+'});
    const chips = el('div', {id: 'attachments'});
    let send;
    if (drift) send = el('button', {type: 'submit', id: 'composer-submit', 'data-testid': 'composer-submit-btn', 'aria-label': 'Submit message', text: '↑'});
    else if (is26 && C.variant === 'send_no_testid') send = el('button', {type: 'submit', id: 'composer-submit-button', 'aria-label': 'Submit', text: '↑'});
    else if (is26) send = el('button', {type: 'submit', id: 'composer-submit-button', 'data-testid': 'send-button', 'aria-label': 'Send prompt', text: '↑'});
    else send = el('button', {type: 'submit', 'data-testid': 'send-button', 'aria-label': 'Send prompt', text: '↑'});
    const speech = el('button', {type: 'button', 'data-testid': 'composer-speech-button', 'aria-label': 'Start voice mode', text: '🎤'});
    // 2025: a separate stop button; 2026: the send button itself turns into the stop control.
    const stop = is26 && !drift ? null : el('button', {type: 'button', 'data-testid': 'stop-button', 'aria-label': 'Stop streaming', text: '■'});
    const footer = el('div', {'data-testid': 'composer-footer-actions', class: 'footer'});
    const form = el('form', is26 ? {id: 'composer', 'data-type': 'unified-composer'} : {id: 'composer'},
      plus, chips, box, footer, speech, send);
    if (stop) form.append(stop);
    if (is26) form.append(el('textarea', {name: 'prompt-textarea', style: 'display:none'}));
    composerSlot.append(form);
    if (is26) {
      setTimeout(() => {
        switcher = el('button', {type: 'button', class: '__composer-pill', 'aria-haspopup': 'menu', text: pillText()});
        switcher.addEventListener('click', () => openMenu(switcher, 'menuitemradio'));
        footer.append(switcher);
      }, C.pillDelayMs);
    }

    // ---- files: 2026 has an image-only input before the general, single-file one ----------
    let fileInput = null;
    const chipFor = (name, state) => {
      const chip = el('div', {class: 'attachment', 'data-testid': is26 ? 'attachment-chip' : 'attachment',
        'data-state': is26 ? state : null, text: is26 || state === 'done' ? name : `${name} (uploading)`});
      if (is26) {
        chip.append(el('button', {type: 'button', 'aria-label': `Remove file ${name}`, text: '×', onclick: () => {
          attachments = attachments.filter((a) => a.name !== name);
          chip.remove();
          refresh();
        }}));
      }
      return chip;
    };
    const upload = (f) => {
      uploading++;
      const chip = chipFor(f.name, 'uploading');
      chips.append(chip);
      const reader = new FileReader();
      reader.onload = () => {
        setTimeout(() => {
          attachments.push({name: f.name, data: String(reader.result).split(',', 2)[1] || ''});
          if (is26) chip.setAttribute('data-state', 'done');
          else chip.textContent = f.name;
          uploading--;
          refresh();
        }, C.uploadDelayMs);
      };
      reader.readAsDataURL(f);
    };
    const makeFileInputs = () => {
      if (is26) {
        const images = el('input', {type: 'file', accept: 'image/*', multiple: true, tabindex: '-1', style: 'display:none'});
        images.addEventListener('change', () => {
          for (const f of images.files) {
            if (f.type.startsWith('image/')) upload(f);
            else chips.append(el('div', {class: 'upload-error', text: `${f.name} is not an image`}));
          }
          images.value = '';
        });
        form.append(images);
      }
      fileInput = el('input', {type: 'file', multiple: !is26, tabindex: '-1', style: 'display:none'});
      fileInput.addEventListener('change', () => {
        for (const f of fileInput.files) upload(f);
        fileInput.value = '';
        refresh();
      });
      form.append(fileInput);
    };
    if (!C.lazyFileInput) makeFileInputs();
    plus.addEventListener('click', () => { if (!fileInput) makeFileInputs(); });
    if (C.variant === 'stale_draft') {
      attachments.push({name: 'old-draft.txt', data: btoa('a draft from another day')});
      chips.append(chipFor('old-draft.txt', 'done'));
    }

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
      if (is26 && !drift) {
        send.hidden = !streaming && !ready;
        if (C.variant !== 'send_no_testid') send.setAttribute('data-testid', streaming ? 'stop-button' : 'send-button');
        send.setAttribute('aria-label', streaming ? 'Stop streaming' : 'Send prompt');
        send.disabled = !streaming && uploading > 0;
      } else {
        send.hidden = streaming || !ready;
        stop.hidden = !streaming;
        send.disabled = uploading > 0;
      }
      speech.hidden = streaming || ready;
    };
    box.addEventListener('input', () => {
      // The live site can cut a long insert without saying so.
      if (C.insertLimit && composerText().length > C.insertLimit) {
        const kept = composerText().slice(0, C.insertLimit).split('\n');
        box.replaceChildren(...kept.map((l) => el('p', {}, l ? document.createTextNode(l) : el('br'))));
      }
      refresh();
    });
    box.addEventListener('focus', () => { if (C.modalOn === 'focus') setTimeout(showModal, 0); });
    box.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); submit('enter'); }
    });
    refresh();

    // ---- thread --------------------------------------------------------------------------
    const userTurn = (i, text, files) => el('article', {'data-testid': `conversation-turn-${2 * i + 1}`, 'data-turn': 'user'},
      el('h5', {class: 'sr-only', text: 'You said:'}),
      el('div', {'data-message-author-role': 'user', 'data-message-id': `u${i}`},
        ...files.map((f) => el('div', {class: 'attachment', text: f})),
        el('div', {class: 'whitespace-pre-wrap', text})));
    const assistantTurn = (i) => {
      const message = el('div', {'data-message-author-role': 'assistant', 'data-message-id': `a${i}`});
      if (is26) message.append(el('div', {'data-testid': 'thinking-status', class: 'status loading-shimmer'}));
      else message.append(el('div', {class: 'thinking', text: 'Thinking…'}));
      message.append(el('div', {class: 'markdown prose'}));
      return el('article', {'data-testid': `conversation-turn-${2 * i + 2}`, 'data-turn': 'assistant'},
        el('h6', {class: 'sr-only', text: 'ChatGPT said:'}), message);
    };
    const ensureTurn = (i, prompt, files) => {
      if (!turnEls.has(i)) {
        const u = userTurn(i, prompt, files);
        const a = assistantTurn(i);
        thread.append(u, a);
        turnEls.set(i, {user: u, assistant: a, html: '', markdown: '', finished: false, actions: null, flashed: false});
      }
      return turnEls.get(i);
    };
    const banner = (text) => bannerSlot.replaceChildren(el('div', {class: 'banner', 'data-testid': 'usage-banner', text}));

    const copyTurn = (r) => {
      if (!C.copyWorks) return;
      if (is26) { navigator.clipboard.writeText(r.markdown); return; }
      const ta = el('textarea', {style: 'position:fixed;top:-1000px'});
      ta.value = r.markdown;
      document.body.append(ta);
      ta.focus();
      ta.select();
      document.execCommand('copy');
      ta.remove();
    };
    const actionBar = (r) => {
      const copy = el('button', {type: 'button', 'data-testid': 'copy-turn-action-button', 'aria-label': is26 ? 'Copy response' : 'Copy', text: '⧉'});
      copy.addEventListener('click', () => copyTurn(r));
      const good = el('button', {type: 'button', 'data-testid': 'good-response-turn-action-button', 'aria-label': 'Good response', text: '👍'});
      if (!is26) return el('div', {class: 'turn-actions'}, copy, good);
      return el('div', {role: 'group', 'aria-label': 'Response actions', class: 'turn-actions'},
        copy, good, el('button', {type: 'button', 'aria-label': 'Share', text: '⇪'}));
    };
    const showActions = (r, on) => {
      if (on && !r.actions) {
        r.actions = actionBar(r);
        (is26 ? r.assistant : r.assistant.querySelector('[data-message-author-role]')).append(r.actions);
      } else if (!on && r.actions) { r.actions.remove(); r.actions = null; }
    };

    const renderTurn = (data, t) => {
      const r = ensureTurn(t.index, t.prompt, t.files);
      if (t.usage_cap) { r.assistant.remove(); banner(t.usage_cap); return 'idle'; }
      if (r.finished) return 'idle';
      const body = r.assistant.querySelector('.markdown');
      if (t.html !== r.html) { body.innerHTML = t.html; r.html = t.html; }
      r.markdown = t.markdown;
      const status = r.assistant.querySelector('.status, .thinking');
      if (status && t.status) {
        status.textContent = t.status;
        if (is26 && !r.assistant.querySelector('[aria-label="Reasoning details"]')) {
          status.after(el('section', {'aria-label': 'Reasoning details', class: 'reasoning', text: C.reasoning}));
        }
      } else if (status) {
        const reasoning = r.assistant.querySelector('[aria-label="Reasoning details"]');
        if (reasoning) reasoning.remove();
        if (is26) status.replaceWith(el('button', {type: 'button', class: 'thought', text: `Thought for ${t.thought_s}s`}));
        else if (t.html) status.remove();
      }
      if (t.error) {
        r.finished = true;
        r.assistant.append(el('div', {class: 'text-token-text-error', text: t.error}),
          el('button', {type: 'button', class: 'btn', text: 'Retry'}));
        return 'idle';
      }
      if (t.done) {
        r.finished = true;
        showActions(r, true);
        post('/api/rendered', {conversation_id: data.id, turn_index: t.index, at: Date.now() / 1000});
        return 'idle';
      }
      if (t.flash) {
        // The thinking→answer transition: no stop control, the action bar up, first tokens only.
        showActions(r, true);
        if (!r.flashed) { r.flashed = true; post('/api/rendered', {conversation_id: data.id, turn_index: t.index, flash: true}); }
        return 'flash';
      }
      showActions(r, false);
      return 'streaming';
    };
    const render = (data) => {
      let live = false;
      let busy = false;
      for (const t of data.turns) {
        const state = renderTurn(data, t);
        if (state !== 'idle') live = true;
        if (state === 'streaming') busy = true;
      }
      streaming = busy;
      refresh();
      return live;
    };
    const poll = () => {
      clearTimeout(polling);
      fetch(`/api/conversation/${conversation}`).then((r) => r.json()).then((data) => {
        if (render(data)) polling = setTimeout(poll, C.pollMs);
      });
    };
    // A reopened conversation renders its turns one by one and resets the composer when done.
    const hydrate = () => {
      hydrating = true;
      fetch(`/api/conversation/${conversation}`).then((r) => r.json()).then((data) => {
        let i = 0;
        const step = () => {
          if (i < data.turns.length) { renderTurn(data, data.turns[i++]); setTimeout(step, C.hydrateTurnMs); return; }
          box.replaceChildren();
          hydrating = false;
          refresh();
          poll();
        };
        step();
      });
    };

    let swallowed = false;
    send.addEventListener('click', (e) => {
      if (C.variant === 'dead_send' || (C.variant === 'swallow_send' && !swallowed)) {
        swallowed = true;
        e.preventDefault();
      }
    });
    const submit = (how) => {
      if (C.variant === 'dead_send' || hydrating) return;
      if (streaming || uploading > 0 || !(hasText() || attachments.length)) return;
      const prompt = composerText();
      const files = attachments;
      const index = turnEls.size;
      ensureTurn(index, prompt, files.map((f) => f.name));
      box.replaceChildren();
      attachments = [];
      chips.replaceChildren();
      streaming = true;
      refresh();
      const fresh = !conversation;
      const sentAt = Date.now();
      if (fresh && is26) history.pushState({}, '', `/c/WEB:${Math.random().toString(16).slice(2)}`);
      post('/api/send', {
        conversation_id: conversation, prompt, files, model: model.name, variant: C.variant, dom: C.dom,
        project: C.project,
      }).then((res) => {
        conversation = res.conversation_id;
        if (fresh) {
          const durable = () => history.replaceState({}, '', res.path);
          if (is26) setTimeout(durable, Math.max(0, C.transientUrlMs - (Date.now() - sentAt)));
          else history.pushState({}, '', res.path);
        }
        if (res.usage_cap) {
          turnEls.get(index).assistant.remove();
          streaming = false;
          refresh();
          banner(res.usage_cap);
          return;
        }
        poll();
      });
    };
    form.addEventListener('submit', (e) => { e.preventDefault(); submit('click'); });

    if (conversation) { if (C.hydrateTurnMs) hydrate(); else poll(); }
  }

  if (C.shellDelayMs) setTimeout(start, C.shellDelayMs);
  else start();
})();
