// nlb web view: polls /api/state once a second, draws the hosts, the
// selected rule's bucket map and the event history; with the admin key it
// runs commands, each confirmed first.
"use strict";

const $ = (sel) => document.querySelector(sel);
let view = null;
let rule = "";

// colour is a host's colour on the map and its card.
function colour(id) {
  if (!id) return "#e3e6ec";
  return `hsl(${(id * 137.508) % 360}, 62%, 52%)`;
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) e.append(k);
  return e;
}

function fmtRate(v) {
  if (v < 0) return "–";
  return v >= 1000 ? (v / 1000).toFixed(1) + "k/s" : v.toFixed(0) + "/s";
}

function drawHosts() {
  const box = $("#hosts");
  const cards = [];
  for (const h of view.hosts) {
    const idle = !h.sick && !Object.values(h.share).some((v) => v > 0);
    const card = el("div", { class: "host" + (h.sick ? " sick" : idle ? " idle" : ""), id: "host-" + h.id });
    const sw = el("i", { class: "swatch" });
    sw.style.background = colour(h.id);
    card.append(el("h3", {}, sw, `host ${h.id}`, el("span", { class: "state" }, h.state)));
    const dl = el("dl");
    const row = (k, v, cls) => dl.append(el("dt", {}, k), el("dd", cls ? { class: cls } : {}, v));
    if (h.answering) {
      row("epoch", String(h.epoch));
      row("members", h.members.join(",") || "–");
      const shares = Object.entries(h.share).sort().map(([r, v]) => `${r} ${v.toFixed(1)}%`).join(", ");
      row("share", shares || "–", "share");
      row("packets", `${fmtRate(h.accept_pps)} accepted, ${fmtRate(h.drop_pps)} dropped`);
      row("version", h.version);
      row("uptime", h.uptime);
      if (h.why) row("why", h.why);
    }
    card.append(dl);
    if (h.notes.length) card.append(el("div", { class: "notes" }, h.notes.join("; ")));
    if (view.admin && h.answering) {
      const acts = el("div", { class: "actions" });
      for (const c of ["start", "stop", "drainstop", "suspend", "resume"]) {
        acts.append(el("button", { "data-cmd": c, "data-host": String(h.id), onclick: () => ask(c, h.id, "") }, c));
      }
      card.append(acts);
    }
    cards.push(card);
  }
  box.replaceChildren(...cards);
}

function drawRules() {
  const sel = $("#rule-select");
  if (sel.options.length !== view.rules.length || [...sel.options].some((o, i) => o.value !== view.rules[i])) {
    sel.replaceChildren(...view.rules.map((r) => el("option", { value: r }, r)));
    if (!view.rules.includes(rule)) rule = view.rules[0] || "";
    sel.value = rule;
  }
  const t = $("#rules");
  const head = el("tr", {}, el("th", {}, "host"), el("th", {}, "rule " + rule), el("th", {}, "weight"),
    el("th", {}, "owned"), el("th", {}, "retained"), el("th", {}, "connections"));
  const rows = [head];
  for (const h of view.hosts) {
    const r = h.rules.find((x) => x.name === rule);
    if (!r) continue;
    rows.push(el("tr", { id: `rule-${rule}-${h.id}` }, el("td", {}, String(h.id)), el("td", {}, r.state),
      el("td", {}, String(r.weight)), el("td", {}, String(r.owned_buckets)), el("td", {}, String(r.retained_buckets)),
      el("td", {}, String(r.connections))));
  }
  if (view.admin && rule && rule !== "default") {
    const acts = el("td", { colSpan: 6 });
    for (const c of ["enable", "disable", "drain"]) {
      acts.append(el("button", { "data-cmd": c, "data-rule": rule, onclick: () => ask(c, 0, rule) }, `${c} ${rule} on every host`));
    }
    rows.push(el("tr", {}, acts));
  }
  t.replaceChildren(...rows);
}

async function drawMap() {
  if (!rule) return;
  let m;
  try {
    const r = await fetch("api/buckets?rule=" + encodeURIComponent(rule));
    if (!r.ok) return;
    m = await r.json();
  } catch (e) {
    return;
  }
  const cv = $("#map");
  const ctx = cv.getContext("2d");
  const cell = cv.width / 64;
  const owners = new Set();
  for (let b = 0; b < m.owners.length; b++) {
    const x = (b % 64) * cell, y = Math.floor(b / 64) * cell;
    ctx.fillStyle = colour(m.owners[b]);
    ctx.fillRect(x, y, cell, cell);
    owners.add(m.owners[b]);
    if (m.flags[b] === "d") {
      ctx.strokeStyle = "#fff";
      ctx.strokeRect(x + 1, y + 1, cell - 2, cell - 2);
    } else if (m.flags[b] === "r") {
      ctx.fillStyle = "#1d2330";
      ctx.fillRect(x + cell / 2 - 1.5, y + cell / 2 - 1.5, 3, 3);
    }
  }
  cv.dataset.epoch = m.epoch;
  const items = [...owners].sort((a, b) => a - b).map((id) => {
    const i = el("i");
    i.style.background = colour(id);
    return el("span", {}, i, id ? "host " + id : "no owner");
  });
  $("#legend").replaceChildren(...items);
}

function drawEvents() {
  const rows = view.events.slice().reverse().map((e) =>
    el("tr", { class: e.kind }, el("td", {}, new Date(e.time).toLocaleTimeString()), el("td", {}, String(e.on)),
      el("td", {}, e.kind), el("td", {}, String(e.host)), el("td", {}, e.detail), el("td", {}, e.source || "")));
  $("#events tbody").replaceChildren(...rows);
}

// ask confirms a command in the page's dialog, then runs it.
function ask(cmd, host, ruleName) {
  const who = host ? `host ${host}` : "every host";
  $("#confirm-text").textContent = `${cmd}${ruleName ? " " + ruleName : ""} on ${who}?`;
  const d = $("#confirm");
  d.onclose = () => {
    if (d.returnValue === "yes") run(cmd, host, ruleName);
  };
  d.returnValue = "";
  d.showModal();
}

async function run(cmd, host, ruleName) {
  let text;
  try {
    const r = await fetch("api/command", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-NLB-UI": "1" },
      body: JSON.stringify({ command: cmd, host: host, rule: ruleName }),
    });
    text = r.ok ? (await r.json()).summary.join("; ") : await r.text();
  } catch (e) {
    text = String(e);
  }
  const t = $("#toast");
  t.textContent = `${cmd}: ${text}`;
  t.hidden = false;
  setTimeout(() => (t.hidden = true), 6000);
  refresh();
}

async function refresh() {
  try {
    const r = await fetch("api/state");
    view = await r.json();
  } catch (e) {
    $("#error").textContent = "nlbctl ui is not reachable";
    $("#error").hidden = false;
    return;
  }
  $("#title").textContent = view.title;
  const role = $("#role");
  role.textContent = view.admin ? "admin" : "read-only";
  role.className = "badge" + (view.admin ? " admin" : "");
  $("#updated").textContent = view.updated ? "updated " + new Date(view.updated).toLocaleTimeString() : "";
  $("#error").textContent = view.error || "";
  $("#error").hidden = !view.error;
  drawHosts();
  drawRules();
  drawEvents();
  drawMap();
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", () => {
  $("#rule-select").addEventListener("change", (e) => {
    rule = e.target.value;
    drawRules();
    drawMap();
  });
  refresh();
  setInterval(refresh, 1000);
});
