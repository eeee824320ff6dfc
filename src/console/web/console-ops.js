// vectorway console: the operator view (live counters polled from /admin/stats, health, top
// wallets, grants and the redacted config).

import { $, api, chart, credits, dropChart, el, guard, PALETTE, rows, status } from "./console-lib.js";

const POLL_MS = 2000;
let timer = null;
let last = null;
let liveChart = null;
const history = [[], []];

/** The q quantile of a cumulative histogram [{le, count}], interpolated within its bucket. */
export function quantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1].count : 0;
  if (!total) return null;
  const rank = q * total;
  let lo = 0;
  let below = 0;
  for (const { le, count } of buckets) {
    if (count >= rank) {
      if (le === "+Inf") return lo;
      const inside = count - below;
      return lo + (le - lo) * (inside > 0 ? Math.min(1, Math.max(0, (rank - below) / inside)) : 1);
    }
    lo = le === "+Inf" ? lo : le;
    below = count;
  }
  return lo;
}

const ms = (s) => (s === null || s === undefined ? "–" : `${(s * 1000).toFixed(1)} ms`);

async function tick() {
  const s = await api("/admin/stats");
  let rps = null;
  let err = s.error_rate;
  let p50 = s.latency_ms.p50 === null ? null : s.latency_ms.p50 / 1000;
  let p99 = s.latency_ms.p99 === null ? null : s.latency_ms.p99 / 1000;
  if (last) {
    const dt = (s.at_ms - last.at_ms) / 1000;
    const dn = s.requests.total - last.requests.total;
    rps = dt > 0 ? dn / dt : 0;
    if (dn > 0) {
      // The window since the last poll: errors and latency of these requests only.
      err = (s.requests.server_errors - last.requests.server_errors) / dn;
      const window = s.latency_buckets.map((b, i) => ({ le: b.le, count: b.count - (last.latency_buckets[i]?.count ?? 0) }));
      p50 = quantile(window, 0.5) ?? p50;
      p99 = quantile(window, 0.99) ?? p99;
    }
  }
  last = s;
  $("rps").textContent = rps === null ? "…" : rps.toFixed(2);
  $("err").textContent = `${(err * 100).toFixed(2)} %`;
  $("p50").textContent = ms(p50);
  $("p99").textContent = ms(p99);
  $("streams").textContent = String(s.streams_in_flight);
  $("held-all").textContent = credits(s.credits_held);
  $("req-total").textContent = credits(s.requests.total);
  $("live").dataset.updated = String(s.at_ms);
  if (rps !== null) {
    history[0].push(s.at_ms / 1000);
    history[1].push(rps);
    if (history[0].length > 90) history.forEach((h) => h.shift());
    if (!liveChart) {
      liveChart = chart($("ops-chart"), { title: "Requests per second", scales: { x: { time: true } }, series: [{ label: "time" }, { label: "req/s", stroke: PALETTE[0], width: 2 }] }, history);
    } else {
      liveChart.setData(history);
    }
  }
}

async function health() {
  const r = await fetch("/readyz", { cache: "no-store", credentials: "omit" });
  const ready = await r.json();
  const st = await (await fetch("/status", { cache: "no-store", credentials: "omit" })).json();
  const f = st.x402?.facilitator || {};
  const facts = [
    ["Ready", ready.status],
    ["Store", ready.store],
    ["Upstream", `${ready.upstream}${st.upstream?.simulated ? " (simulator)" : ""}`],
    ["Facilitator", `${ready.facilitator}${f.self ? " (self)" : f.simulated ? " (simulator)" : f.host ? ` (${f.host})` : ""}`],
    ["Settlement", ready.settlement],
    ["Open intents", st.x402?.settlements?.open_intents ?? "–"],
  ];
  $("health").replaceChildren(...facts.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, String(v)))));
}

export async function top() {
  const t = await api("/admin/top-wallets?limit=20");
  rows(
    $("top-table").tBodies[0],
    t.wallets.map((w) =>
      el("tr", {}, el("td", {}, el("code", {}, w.wallet)), el("td", {}, credits(w.spent)), el("td", {}, w.calls),
        el("td", {}, credits(w.credits)), el("td", {}, credits(w.held)), el("td", {}, credits(w.granted)), el("td", {}, credits(w.topped_up))),
    ),
    "No spend yet.",
  );
}

async function grant(ev) {
  ev.preventDefault();
  const wallet = $("grant-wallet").value.trim();
  const n = Number($("grant-credits").value);
  const note = $("grant-note").value.trim() || undefined;
  const r = await api("/admin/grant", { method: "POST", body: { wallet, credits: n, note }, headers: { "idempotency-key": crypto.randomUUID() } });
  status(`Granted ${credits(r.granted)} credits; the balance is ${credits(r.credits)}.`);
  $("grant-form").reset();
  await top();
}

export async function start() {
  $("grant-form").addEventListener("submit", (ev) => { ev.preventDefault(); guard(() => grant(ev)); });
  await guard(async () => {
    await tick();
    $("config").textContent = JSON.stringify(await api("/admin/config"), null, 2);
    await Promise.all([health(), top()]);
  });
  let n = 0;
  timer = setInterval(() => {
    n += 1;
    guard(tick);
    if (n % 5 === 0) guard(() => Promise.all([health(), top()]));
  }, POLL_MS);
}

export function stop() {
  clearInterval(timer);
  dropChart(liveChart);
  liveChart = null;
  last = null;
}
