// vectorway console: the entry module: sign-in (SIWE through an EIP-1193 wallet, an API key or
// the operator secret) and the switch between the wallet and operator views.

import { $, api, ApiError, session, setSession, status } from "./console-lib.js";
import * as ops from "./console-ops.js";
import * as views from "./console-views.js";

function hexOf(text) {
  return `0x${Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** Sign-In with Ethereum: the server's challenge, signed by the injected wallet (personal_sign). */
async function siwe() {
  const eth = window.ethereum;
  if (!eth) throw new Error("No browser wallet found (window.ethereum). Paste an API key instead.");
  const [address] = await eth.request({ method: "eth_requestAccounts" });
  const chainId = parseInt(await eth.request({ method: "eth_chainId" }), 16);
  const c = await api("/v1/auth/siwe/challenge", { method: "POST", body: { wallet_address: address, chain_id: chainId }, as: {} });
  const signature = await eth.request({ method: "personal_sign", params: [hexOf(c.message), address] });
  const v = await api("/v1/auth/siwe/verify", { method: "POST", body: { wallet_address: address, message: c.message, signature }, as: {} });
  setSession({ kind: "jwt", token: v.tokens.access_token, refresh: v.tokens.refresh_token, wallet: v.wallet_address });
}

async function useKey(key) {
  const me = await api("/v1/me", { as: { kind: "key", token: key } });
  setSession({ kind: "key", token: key, wallet: me.wallet_address });
}

async function useAdmin(secret) {
  await api("/admin/stats", { as: { kind: "admin", token: secret } });
  setSession({ kind: "admin", token: secret });
}

async function render() {
  const s = session;
  $("signin").hidden = !!s;
  $("wallet").hidden = !s || s.kind === "admin";
  $("ops").hidden = !s || s.kind !== "admin";
  $("signout").hidden = !s;
  $("who").textContent = !s ? "" : s.kind === "admin" ? "Operator" : `${s.wallet} · ${s.kind === "jwt" ? "wallet session" : "API key"}`;
  ops.stop();
  if (!s) return;
  if (s.kind === "admin") await ops.start();
  else await views.show("overview");
}

function signinError(e) {
  $("signin-error").textContent = e instanceof ApiError ? `${e.message} (${e.code ?? e.status})` : String(e.message || e);
}

async function attempt(f) {
  $("signin-error").textContent = "";
  try {
    await f();
    status("");
    await render();
  } catch (e) {
    signinError(e);
  }
}

function wire() {
  views.wire();
  $("siwe").addEventListener("click", () => attempt(siwe));
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key-input").value.trim();
    $("key-input").value = "";
    attempt(() => useKey(key));
  });
  $("admin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const secret = $("admin-input").value;
    $("admin-input").value = "";
    attempt(() => useAdmin(secret));
  });
  $("signout").addEventListener("click", async () => {
    const s = session;
    setSession(null);
    if (s?.kind === "jwt" && s.refresh) {
      await fetch("/v1/auth/revoke", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ refresh_token: s.refresh }), credentials: "omit" }).catch(() => {});
    }
    status("Signed out.");
    await render();
  });
}

wire();
render();
