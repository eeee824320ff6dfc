// vectorway console: the wallet views (balance, spend chart, usage, ledger, keys; memory is in
// console-memory.js).

import { $, api, chart, credits, dropChart, el, guard, PALETTE, rows, session, status, when } from "./console-lib.js";
import * as memory from "./console-memory.js";
import * as topup from "./console-topup.js";

let spendChart = null;
const pages = { usage: 0, ledger: 0 };

export async function balance() {
  const b = await api("/v1/credits/me");
  $("balance").textContent = credits(b.credits);
  $("held").textContent = credits(b.held);
  $("available").textContent = credits(b.available);
  return b;
}

export async function spend() {
  const bucket = $("bucket").value;
  const split = $("split").value;
  const s = await api(`/v1/usage/summary?bucket=${bucket}`);
  const series = split === "model" ? s.by_model : s.by_key;
  const label = (x) => (split === "model" ? x.model : x.key_name ? `${x.key_name} (${x.key_id})` : x.key_id) ?? "(no key)";
  dropChart(spendChart);
  const data = [s.starts, ...series.map((x) => x.credits)];
  const opts = {
    title: `Credits per ${bucket}`,
    scales: { x: { time: true } },
    axes: [{}, { size: 70 }],
    series: [{ label: "time" }, ...series.map((x, i) => ({ label: label(x), stroke: PALETTE[i % PALETTE.length], width: 2, points: { show: true } }))],
  };
  if (!series.length) {
    data.push(s.starts.map(() => 0));
    opts.series.push({ label: "no spend yet", stroke: PALETTE[6] });
  }
  spendChart = chart($("chart"), opts, data);
  $("chart").dataset.calls = String(s.total.calls);
  rows(
    $("split-table").tBodies[0],
    series.map((x) =>
      el("tr", {}, el("td", {}, label(x)), el("td", {}, x.total.calls), el("td", {}, x.total.errors),
        el("td", {}, credits(x.total.credits)), el("td", {}, `${x.total.prompt_tokens} / ${x.total.completion_tokens}`)),
    ),
    "No metered calls in this range.",
  );
  return s;
}

function pager(id, page, s, reload) {
  const p = $(id);
  const prev = el("button", { type: "button", class: "quiet", disabled: page === 0 || undefined, onclick: () => reload(Math.max(0, page - 1)) }, "Previous");
  const next = el("button", { type: "button", class: "quiet", disabled: !s.has_more || undefined, onclick: () => reload(page + 1) }, "Next");
  p.replaceChildren(prev, el("span", {}, `${s.total} in all · page ${page + 1}`), next);
}

export async function usage(page = pages.usage) {
  pages.usage = page;
  const filter = encodeURIComponent($("usage-filter").value);
  const s = await api(`/v1/usage?limit=20&cursor=${page * 20}&filter=${filter}`);
  rows(
    $("usage-table").tBodies[0],
    s.events.map((e) =>
      el("tr", {}, el("td", {}, when(e.ts_iso)), el("td", {}, `${e.method} ${e.path}`), el("td", {}, e.status),
        el("td", {}, e.model ?? ""), el("td", {}, e.key_id ?? e.auth_mode), el("td", {}, e.prompt_tokens + e.completion_tokens),
        el("td", {}, credits(e.credits)), el("td", {}, e.transaction ? tx(e.transaction) : "")),
    ),
    "No calls.",
  );
  pager("usage-pager", page, s, usage);
}

/** An on-chain transaction hash with a copy button. */
function tx(hash) {
  const copy = () => guard(async () => {
    await navigator.clipboard.writeText(hash);
    status("Transaction hash copied.");
  });
  return el("span", { class: "tx" }, el("code", { "data-tx": hash, title: "On-chain transaction" }, hash),
    el("button", { type: "button", class: "quiet", "aria-label": `Copy transaction hash ${hash}`, onclick: copy }, "Copy"));
}

/** A ledger row's reference: an x402 payment's or refund's transaction, else the reference. */
function reference(e) {
  if (e.transaction) return tx(e.transaction);
  return e.ref ? el("code", {}, e.ref) : "";
}

export async function ledger(page = pages.ledger) {
  pages.ledger = page;
  topup.offer();
  const kind = $("ledger-kind").value;
  const s = await api(`/v1/credits/ledger?limit=20&cursor=${page * 20}${kind ? `&kind=${kind}` : ""}`);
  rows(
    $("ledger-table").tBodies[0],
    s.events.map((e) =>
      el("tr", {}, el("td", {}, when(e.ts)), el("td", {}, e.kind), el("td", {}, credits(e.credits)), el("td", {}, e.usd),
        el("td", {}, reference(e)), el("td", {}, e.note ?? "")),
    ),
    "No movements.",
  );
  pager("ledger-pager", page, s, ledger);
}

export async function keys() {
  const jwt = session.kind === "jwt";
  $("keys-jwt-only").hidden = jwt;
  $("key-create").hidden = !jwt;
  if (!jwt) {
    rows($("keys-table").tBodies[0], [], "Key management needs a wallet sign-in.");
    return;
  }
  const list = await api("/v1/api-keys");
  rows(
    $("keys-table").tBodies[0],
    list.map((k) =>
      el("tr", { "data-key": k.key_id }, el("td", {}, k.key_name), el("td", {}, el("code", {}, k.key_id)),
        el("td", {}, when(k.created_at)), el("td", {}, k.last_used_at ? when(k.last_used_at) : "never"),
        el("td", {}, el("button", { type: "button", class: "quiet", "aria-label": `Revoke ${k.key_name}`, onclick: () => guard(() => revoke(k)) }, "Revoke"))),
    ),
    "No active keys.",
  );
}

async function revoke(k) {
  if (!window.confirm(`Revoke the key "${k.key_name}"? Calls with it will fail at once.`)) return;
  await api(`/v1/api-keys/${encodeURIComponent(k.key_id)}`, { method: "DELETE" });
  status(`Key ${k.key_name} revoked.`);
  await keys();
}

async function createKey(ev) {
  ev.preventDefault();
  const name = $("key-name").value.trim();
  const r = await api("/v1/api-keys", {
    method: "POST",
    body: { wallet_address: session.wallet, key_name: name },
    headers: { "idempotency-key": crypto.randomUUID() },
  });
  $("new-key-value").textContent = r.api_key;
  $("new-key").hidden = false;
  $("key-name").value = "";
  status(`Key ${name} created.`);
  await keys();
}

const loaders = { overview: () => Promise.all([balance(), spend()]), usage: () => usage(0), ledger: () => ledger(0), keys, memory: memory.load };

export async function show(tab) {
  for (const b of document.querySelectorAll("[data-tab]")) {
    if (b.dataset.tab === tab) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== `tab-${tab}`;
  await guard(loaders[tab]);
}

export function wire() {
  for (const b of document.querySelectorAll("[data-tab]")) b.addEventListener("click", () => show(b.dataset.tab));
  const on = (id, f) => $(id).addEventListener("submit", (ev) => { ev.preventDefault(); guard(() => f(ev)); });
  on("chart-form", () => Promise.all([balance(), spend()]));
  on("usage-form", () => usage(0));
  on("ledger-form", () => ledger(0));
  on("key-create", createKey);
  memory.wire();
  on("topup-form", async () => {
    const amount = Number($("topup-amount").value);
    status("Waiting for the wallet's signature…");
    const r = await topup.topup(amount);
    status(`Topped up: ${credits(r.credited_usdc)} credits (settled on chain).`);
    $("ledger-kind").value = "";
    await ledger(0);
  });
  $("copy-key").addEventListener("click", () =>
    guard(async () => {
      await navigator.clipboard.writeText($("new-key-value").textContent);
      status("Copied to the clipboard.");
    }),
  );
  $("hide-key").addEventListener("click", () => {
    $("new-key-value").textContent = "";
    $("new-key").hidden = true;
  });
}
