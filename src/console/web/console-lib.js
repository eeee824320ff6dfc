// vectorway console: the session, the API helper and DOM helpers shared by the views.
// The session (a SIWE JWT, a pasted API key or the operator secret) lives in this module's
// memory and in sessionStorage (this tab only); no cookie is ever set.

const STORE = "vw-console-session";

/** The signed-in caller: {kind: "jwt"|"key"|"admin", token, refresh?, wallet?}. */
export let session = null;
try {
  session = JSON.parse(sessionStorage.getItem(STORE) || "null");
} catch {
  session = null;
}

export function setSession(s) {
  session = s;
  if (s) sessionStorage.setItem(STORE, JSON.stringify(s));
  else sessionStorage.removeItem(STORE);
}

/** An API error with the gateway's stable code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

function authHeaders(as) {
  const s = as || session;
  if (!s) return {};
  if (s.kind === "jwt") return { authorization: `Bearer ${s.token}` };
  if (s.kind === "key") return { "x-api-key": s.token };
  if (s.kind === "admin") return { "x-admin-secret": s.token };
  return {};
}

async function send(path, { method = "GET", body, as, headers = {} } = {}) {
  const h = { ...authHeaders(as), ...headers };
  if (body !== undefined) h["content-type"] = "application/json";
  return fetch(path, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
}

/** Calls the gateway's JSON API; throws an ApiError on a non-2xx answer. A session whose
 * access token expired is refreshed once with its refresh token. */
export async function api(path, opts = {}) {
  let res = await send(path, opts);
  if (res.status === 401 && !opts.as && session && session.kind === "jwt" && session.refresh) {
    const r = await send("/v1/auth/refresh", { method: "POST", body: { refresh_token: session.refresh }, as: {} });
    if (r.ok) {
      const t = await r.json();
      setSession({ ...session, token: t.access_token, refresh: t.refresh_token });
      res = await send(path, opts);
    }
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!res.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(res.status, e.code, e.message);
  }
  return data;
}

/** Builds an element: el("td", {class: "x"}, "text", child…). Text is always text, never HTML. */
export function el(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}

export const $ = (id) => document.getElementById(id);

/** Replaces a table body's rows; `empty` is shown in one cell when there are none. */
export function rows(tbody, list, empty) {
  tbody.replaceChildren(...list);
  if (!list.length) {
    const cols = tbody.closest("table").querySelectorAll("thead th").length;
    tbody.append(el("tr", {}, el("td", { colspan: cols }, empty)));
  }
}

/** Integer credits with thousands separators (1 credit = $0.000001). */
export function credits(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "–";
}

export function usd(n) {
  return typeof n === "number" ? `$${(n / 1e6).toFixed(6)}` : "–";
}

export function when(msOrIso) {
  const d = typeof msOrIso === "number" ? new Date(msOrIso) : new Date(msOrIso);
  return Number.isNaN(d.getTime()) ? String(msOrIso ?? "–") : d.toISOString().replace("T", " ").slice(0, 19);
}

export function status(msg, bad = false) {
  const s = $("status");
  s.textContent = msg || "";
  s.classList.toggle("error", bad);
}

/** Runs `f`, reporting an API error in the status line instead of throwing. */
export async function guard(f) {
  try {
    return await f();
  } catch (e) {
    status(e.code ? `${e.message} (${e.code})` : String(e.message || e), true);
    return undefined;
  }
}

export const PALETTE = ["#0b57d0", "#c5221f", "#188038", "#e37400", "#8e24aa", "#00796b", "#5f6368", "#b06000"];

/** A uPlot chart sized to its container, redrawn on resize. */
export function chart(container, opts, data) {
  container.replaceChildren();
  const width = Math.max(200, container.clientWidth || 320);
  // Axis text and grid in the theme's colours (the canvas does not inherit CSS).
  const css = getComputedStyle(document.documentElement);
  const fg = css.getPropertyValue("--fg").trim() || "#1b1f24";
  const line = css.getPropertyValue("--line").trim() || "#d0d5dc";
  const axes = (opts.axes || [{}, {}]).map((a) => ({ stroke: fg, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 }, ...a }));
  const u = new window.uPlot({ width, height: 220, ...opts, axes }, data, container);
  const ro = new ResizeObserver(() => u.setSize({ width: Math.max(200, container.clientWidth), height: 220 }));
  ro.observe(container);
  u.vwObserver = ro;
  return u;
}

export function dropChart(u) {
  if (u) {
    u.vwObserver?.disconnect();
    u.destroy();
  }
}
