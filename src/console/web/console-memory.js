// vectorway console: the memory view. The wallet's namespaces (GET /v1/memory/namespaces), one
// namespace's memories newest first (GET /v1/memory/records, free), a search by meaning
// (GET /v1/memory, its embedding billed) and delete; all with the session the console holds, a
// wallet's SIWE session or an API key alike.

import { $, api, el, guard, rows, status, when } from "./console-lib.js";

/** What the memory table shows: {namespace, before?} for a list, or {namespace, q} for a search. */
let shown = null;

const nsLabel = (ns) => ns ?? "(default)";

function nsParam(q, ns) {
  if (ns) q.set("namespace", ns);
  return q;
}

export async function namespaces() {
  const r = await api("/v1/memory/namespaces");
  rows(
    $("ns-table").tBodies[0],
    r.data.map((n) =>
      el("tr", { "data-namespace": n.namespace ?? "" }, el("td", {}, nsLabel(n.namespace)), el("td", {}, n.records),
        el("td", {}, when(n.newest_at)),
        el("td", {}, el("button", { type: "button", class: "quiet", "aria-label": `Open namespace ${nsLabel(n.namespace)}`, onclick: () => guard(() => open(n.namespace)) }, "Open"))),
    ),
    "No memories yet: chat calls with memory_write store them.",
  );
  return r;
}

function memoryRow(m, detail) {
  return el("tr", { "data-memory": m.id }, el("td", {}, m.text), el("td", {}, detail), el("td", {}, el("code", {}, m.id)),
    el("td", {}, el("button", { type: "button", class: "quiet", "aria-label": `Delete memory ${m.id}`, onclick: () => guard(() => forget(m)) }, "Delete")));
}

/** Lists a namespace's memories, newest first; `before` pages to older ones. */
export async function open(ns, before) {
  $("memory-ns").value = ns ?? "";
  const q = nsParam(new URLSearchParams({ limit: "20" }), ns);
  if (before) q.set("before", before);
  const r = await api(`/v1/memory/records?${q}`);
  shown = { namespace: ns ?? null, before };
  $("memory-caption").textContent = `Memories in ${nsLabel(ns)}, newest first`;
  $("memory-detail").textContent = "Written";
  rows($("memory-table").tBodies[0], r.data.map((m) => memoryRow(m, when(m.created_at))), "No memories in this namespace.");
  const pager = [];
  if (before) pager.push(el("button", { type: "button", class: "quiet", onclick: () => guard(() => open(ns)) }, "Newest"));
  if (r.has_more) pager.push(el("button", { type: "button", class: "quiet", onclick: () => guard(() => open(ns, r.next_before)) }, "Older"));
  $("memory-pager").replaceChildren(...pager);
}

async function search(ev) {
  ev.preventDefault();
  const ns = $("memory-ns").value.trim() || null;
  const text = $("memory-q").value;
  const r = await api(`/v1/memory?${nsParam(new URLSearchParams({ q: text }), ns)}`);
  shown = { namespace: ns, q: text };
  $("memory-caption").textContent = `Matches in ${nsLabel(ns)}, best first`;
  $("memory-detail").textContent = "Score";
  rows($("memory-table").tBodies[0], r.matches.map((m) => memoryRow(m, m.score.toFixed(3))), "No memories match.");
  $("memory-pager").replaceChildren();
}

async function forget(m) {
  await api(`/v1/memory/${encodeURIComponent(m.id)}`, { method: "DELETE" });
  document.querySelector(`[data-memory="${CSS.escape(m.id)}"]`)?.remove();
  status("Memory deleted.");
  await namespaces();
}

/** The tab's loader: the namespaces, and the default namespace's list unless one is shown. */
export async function load() {
  const r = await namespaces();
  if (!r.data.length) {
    shown = null;
    rows($("memory-table").tBodies[0], [], "No memories.");
    return;
  }
  const again = shown && r.data.some((n) => (n.namespace ?? null) === shown.namespace);
  await open(again ? shown.namespace : r.data[0].namespace);
}

export function wire() {
  $("memory-form").addEventListener("submit", (ev) => guard(() => search(ev)));
  $("memory-list").addEventListener("click", () => guard(() => open($("memory-ns").value.trim() || null)));
}
