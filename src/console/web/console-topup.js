// vectorway console: a top-up with x402 from the signed-in browser wallet. POST /v1/topup
// answers 402 with its requirements (the PAYMENT-REQUIRED header, x402 v2); the wallet signs an
// EIP-3009 TransferWithAuthorization for the requirement on its own chain (eth_signTypedData_v4);
// the same request with PAYMENT-SIGNATURE settles it on chain and credits the wallet. The ledger
// then shows the top-up with its transaction hash.

import { $, api, ApiError, session } from "./console-lib.js";

const DOMAIN = [
  { name: "name", type: "string" },
  { name: "version", type: "string" },
  { name: "chainId", type: "uint256" },
  { name: "verifyingContract", type: "address" },
];
const AUTHORIZATION = [
  { name: "from", type: "address" },
  { name: "to", type: "address" },
  { name: "value", type: "uint256" },
  { name: "validAfter", type: "uint256" },
  { name: "validBefore", type: "uint256" },
  { name: "nonce", type: "bytes32" },
];

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const fromBase64 = (text) => JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(text), (c) => c.charCodeAt(0))));
const toBase64 = (value) => btoa(String.fromCharCode(...new TextEncoder().encode(JSON.stringify(value))));

/** The 402's requirements (x402 v2, from the PAYMENT-REQUIRED header). */
async function requirements(body) {
  const res = await fetch("/v1/topup", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const header = res.headers.get("payment-required");
  if (res.status !== 402 || !header) {
    const e = (await res.json().catch(() => ({}))).error ?? {};
    throw new ApiError(res.status, e.code, e.message ?? `expected a 402 payment challenge, got HTTP ${res.status}`);
  }
  return fromBase64(header);
}

/** Pays `amount` US dollars of USDC from the signed-in wallet; returns the top-up's answer. */
export async function topup(amount) {
  const eth = window.ethereum;
  if (!eth || session?.kind !== "jwt") throw new Error("A top-up is paid from the browser wallet you signed in with.");
  const [from] = await eth.request({ method: "eth_requestAccounts" });
  if (from.toLowerCase() !== session.wallet.toLowerCase()) {
    throw new Error(`The wallet's account ${from} is not the signed-in ${session.wallet}.`);
  }
  const body = { amount };
  const required = await requirements(body);
  const chainId = parseInt(await eth.request({ method: "eth_chainId" }), 16);
  const accepted = required.accepts.find((a) => a.scheme === "exact" && a.network === `eip155:${chainId}`);
  if (!accepted) {
    const networks = required.accepts.map((a) => a.network).join(", ");
    throw new Error(`The gateway takes payments on ${networks}; the wallet is on eip155:${chainId}.`);
  }
  const now = Math.floor(Date.now() / 1000);
  const authorization = {
    from,
    to: accepted.payTo,
    value: accepted.amount,
    validAfter: String(now - 600),
    validBefore: String(now + accepted.maxTimeoutSeconds),
    nonce: `0x${hex(crypto.getRandomValues(new Uint8Array(32)))}`,
  };
  const typed = {
    types: { EIP712Domain: DOMAIN, TransferWithAuthorization: AUTHORIZATION },
    primaryType: "TransferWithAuthorization",
    domain: { name: accepted.extra?.name, version: accepted.extra?.version, chainId, verifyingContract: accepted.asset },
    message: authorization,
  };
  const signature = await eth.request({ method: "eth_signTypedData_v4", params: [from, JSON.stringify(typed)] });
  const payment = { x402Version: 2, resource: required.resource, accepted, payload: { signature, authorization } };
  return api("/v1/topup", {
    method: "POST",
    body,
    as: {},
    headers: { "payment-signature": toBase64(payment), "idempotency-key": crypto.randomUUID() },
  });
}

/** Shows the form only where it can work: a wallet session in a browser with a wallet. */
export function offer() {
  $("topup-form").hidden = !(session?.kind === "jwt" && window.ethereum);
}
