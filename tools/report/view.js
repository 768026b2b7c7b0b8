(function () {
  "use strict";
  const MODE = document.body.dataset.mode;
  let view = JSON.parse(document.getElementById("pg-view").textContent);
  let selected = null;
  const $ = (id) => document.getElementById(id);
  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function list(items, render) {
    const ul = el("ul");
    for (const item of items) { const li = el("li"); render(li, item); ul.appendChild(li); }
    return ul;
  }
  function taskById(id) { return (view.tasks || []).find((t) => t.id === id); }

  function details(task) {
    const box = $("details");
    clear(box);
    if (!task) { box.appendChild(el("p", "Click a task in the graph or the table to see its gates, evidence and reviews.", "muted")); return; }
    box.appendChild(el("h2", task.id + ": " + task.title));
    box.appendChild(el("p", "status " + task.status + (task.note ? " — " + task.note : ""), "status"));
    if (task.gates) {
      box.appendChild(el("h3", "Gates"));
      if (!task.gates.length) box.appendChild(el("p", "every gate holds", "ok"));
      box.appendChild(list(task.gates, (li, g) => {
        li.appendChild(el("span", g.gate + ": ", "bad"));
        li.appendChild(el("span", g.reason + (g.next_step ? " Next: " + g.next_step : "")));
      }));
      if (task.met && task.met.length) box.appendChild(el("p", "hold: " + task.met.join(", "), "ok"));
    } else if (task.status !== "accepted" && task.status !== "cancelled") {
      box.appendChild(el("p", "gates are evaluated once the task is dispatched", "muted"));
    }
    box.appendChild(el("h3", "Evidence"));
    if (!task.evidence.length) box.appendChild(el("p", "none recorded", "muted"));
    box.appendChild(list(task.evidence, (li, e) => {
      li.appendChild(el("code", e.kind));
      li.appendChild(el("span", " " + e.label + " exit " + (e.exit_code === null ? "—" : e.exit_code) + " on " + e.head + ": " + e.summary));
    }));
    box.appendChild(el("h3", "Reviews"));
    if (!task.reviews.length) box.appendChild(el("p", "none", "muted"));
    for (const r of task.reviews) {
      box.appendChild(el("p", (r.verdict || "no verdict") + " (" + r.status + ") by " + r.reviewer + " on " + r.head + (r.summary ? ": " + r.summary : "")));
      box.appendChild(list(r.findings, (li, f) => {
        li.appendChild(el("strong", f.severity));
        li.appendChild(el("span", " " + f.title + (f.file ? " — " + f.file + (f.line ? ":" + f.line : "") : "")));
      }));
    }
  }

  function select(id) {
    selected = id;
    for (const g of document.querySelectorAll("#graph g.task")) g.classList.toggle("selected", g.dataset.task === id);
    details(taskById(id));
  }

  function render() {
    document.title = "planegate: " + view.goal;
    $("goal").textContent = view.goal;
    $("meta").textContent = "run " + view.run + " · stage " + view.stage + " · " + view.repo + " · base " + view.base + " → " + view.integration_branch;
    const chips = $("counts"); clear(chips);
    for (const [status, n] of Object.entries(view.counts).sort()) chips.appendChild(el("span", n + " " + status));
    $("next").textContent = "next: " + view.next_action;
    $("approval").textContent = "approval: " + view.approval.text;
    $("approval").className = view.approval.state === "approved" || view.approval.state === "accepted" ? "ok" : "muted";
    const risks = $("risks"); clear(risks);
    if (view.workers) risks.appendChild(el("li", "workers: " + view.workers, "bad"));
    for (const r of view.risks) risks.appendChild(el("li", r, "bad"));
    if (!risks.firstChild) risks.appendChild(el("li", "no risks recorded", "muted"));
    $("graph").innerHTML = view.svg;  // built server-side with every piece of text escaped
    for (const g of document.querySelectorAll("#graph g.task")) {
      g.addEventListener("click", () => select(g.dataset.task));
      g.addEventListener("mouseenter", () => { if (!selected) details(taskById(g.dataset.task)); });
    }
    const body = $("task-rows"); clear(body);
    for (const t of view.tasks) {
      const tr = el("tr", null, "task"); tr.dataset.task = t.id; tr.dataset.status = t.status;
      tr.appendChild(el("td", t.id));
      tr.appendChild(el("td", t.title));
      tr.appendChild(el("td", t.status, "status"));
      tr.appendChild(el("td", t.gates ? (t.gates.length ? "unmet: " + t.gates.map((g) => g.gate).join(", ") : "all hold") : (t.note || "")));
      tr.appendChild(el("td", t.evidence.length ? t.evidence.map((e) => e.kind + "=" + e.exit_code).join(" ") : "—"));
      tr.appendChild(el("td", t.reviews.length ? t.reviews.map((r) => r.verdict || r.status).join(", ") : "—"));
      tr.addEventListener("click", () => select(t.id));
      body.appendChild(tr);
    }
    $("shown").textContent = view.shown < view.total ? "showing " + view.shown + " of " + view.total + " tasks" : view.total + " tasks";
    const release = $("release"); clear(release);
    for (const r of view.release_reviews) release.appendChild(el("li", "release review " + (r.verdict || r.status) + " by " + r.reviewer + (r.summary ? ": " + r.summary : "")));
    $("stamp").textContent = "ledger event " + view.version;
    document.body.dataset.version = String(view.version);
    select(selected && taskById(selected) ? selected : null);
  }

  async function poll() {
    const token = new URLSearchParams(location.search).get("token") || "";
    const q = "?token=" + encodeURIComponent(token);
    try {
      const version = await (await fetch("/api/version" + q, { cache: "no-store" })).json();
      if (version.version !== view.version) {
        view = await (await fetch("/api/runs/" + encodeURIComponent(view.run) + q, { cache: "no-store" })).json();
        render();
      }
      $("live").textContent = "live";
    } catch (err) {
      $("live").textContent = "not connected: " + err;
    }
  }

  // The MCP Apps bridge: JSON-RPC over postMessage with the host that renders this page.
  let nextId = 1;
  const pending = new Map();
  function ask(method, params) {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      window.parent.postMessage({ jsonrpc: "2.0", id, method, params }, "*");
    });
  }
  async function fromToolResult(result) {
    const data = result && result.structuredContent;
    const run = data && data.status && data.status.run;
    if (!run) return;
    const read = await ask("resources/read", { uri: "planegate://runs/" + run + "/view" });
    const text = read && read.contents && read.contents[0] && read.contents[0].text;
    if (text) { view = JSON.parse(text); render(); }
  }
  if (MODE === "app" && window.parent !== window) {
    window.addEventListener("message", (event) => {
      const msg = event.data || {};
      if (msg.id !== undefined && pending.has(msg.id) && !msg.method) {
        const waiter = pending.get(msg.id); pending.delete(msg.id);
        if (msg.error) waiter.reject(msg.error); else waiter.resolve(msg.result);
      } else if (msg.method === "ui/notifications/tool-result") {
        fromToolResult(msg.params);
      }
    });
    ask("ui/initialize", { appInfo: { name: "planegate run view", version: "1" }, appCapabilities: {}, protocolVersion: "2026-01-26" })
      .then(() => window.parent.postMessage({ jsonrpc: "2.0", method: "ui/notifications/initialized", params: {} }, "*"));
  }

  if (view && view.run) render(); else details(null);
  if (MODE === "dashboard") { setInterval(poll, 1000); }
})();
