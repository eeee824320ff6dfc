// Sign-In with Ethereum from Node: the `siwe` package builds the EIP-4361 message, ethers v6 / viem sign it, and the gateway's JWT opens account endpoints.
//
// Mirrors the session part of tests/py/test_siwe.py. The gateway issues a challenge
// (`POST /v1/auth/siwe/challenge`: a ready message plus its `nonce`); a dapp either builds its
// own message around that nonce with `new SiweMessage({...}).prepareMessage()` or parses the
// gateway's message with `new SiweMessage(text)`. The signed message goes to
// `POST /v1/auth/siwe/verify` ({wallet_address, message, signature}); the access token it returns
// is a bearer token for `GET /v1/me` and `GET /v1/credits/me` (src/api/routes.rs).

import assert from 'node:assert/strict';
import { Wallet } from 'ethers';
import { SiweMessage } from 'siwe';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';

import { useGateway } from '../harness.js';

const BASE_SEPOLIA = 84532;
const ACCESS_TTL_S = 900;
const STATEMENT = 'Sign in to vectorway.';

const { it } = useGateway();

/** One JSON request to the gateway: `{ status, body }` (error statuses are returned). */
async function call(stack, method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${stack.url}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed };
}

async function challenge(stack, address) {
  const res = await call(stack, 'POST', '/v1/auth/siwe/challenge', {
    body: { wallet_address: address.toLowerCase(), chain_id: BASE_SEPOLIA },
  });
  assert.equal(res.status, 200, `challenge: ${res.status} ${JSON.stringify(res.body)}`);
  assert.equal(res.body.wallet_address, address, 'the challenge names the EIP-55 address');
  assert.equal(typeof res.body.message, 'string');
  assert.match(res.body.nonce, /^[A-Za-z0-9]{8,}$/);
  return res.body;
}

const verify = (stack, address, message, signature) =>
  call(stack, 'POST', '/v1/auth/siwe/verify', { body: { wallet_address: address, message, signature } });

function assertTokens(tokens) {
  assert.equal(typeof tokens?.access_token, 'string', JSON.stringify(tokens));
  assert.equal(typeof tokens.refresh_token, 'string');
  assert.notEqual(tokens.access_token, tokens.refresh_token);
  assert.equal(tokens.token_type, 'bearer');
  assert.equal(tokens.expires_in, ACCESS_TTL_S);
}

/** The JWT opens the account endpoints as this wallet. */
async function assertSignedInAs(stack, accessToken, address) {
  const me = await call(stack, 'GET', '/v1/me', { token: accessToken });
  assert.equal(me.status, 200, JSON.stringify(me.body));
  assert.deepEqual(me.body, { wallet_address: address, credits: 0, created: false });
  const credits = await call(stack, 'GET', '/v1/credits/me', { token: accessToken });
  assert.equal(credits.status, 200, JSON.stringify(credits.body));
  assert.equal(credits.body.wallet_address, address);
  assert.equal(credits.body.credits, 0);
}

it('siwe builds a message around the nonce, ethers signs it, the JWT opens /v1/me', async (stack) => {
  const wallet = Wallet.createRandom();
  const { nonce } = await challenge(stack, wallet.address);

  // What a dapp does: its own origin as domain/uri, the server's nonce, the time now.
  const origin = new URL(stack.url);
  const now = new Date();
  const siwe = new SiweMessage({
    domain: origin.host,
    address: wallet.address,
    statement: STATEMENT,
    uri: origin.origin,
    version: '1',
    chainId: BASE_SEPOLIA,
    nonce,
    issuedAt: now.toISOString(), // with milliseconds: RFC 3339 allows fractional seconds
    expirationTime: new Date(now.getTime() + 5 * 60_000).toISOString(),
  });
  const message = siwe.prepareMessage();
  const signature = await wallet.signMessage(message);
  // The siwe package accepts its own signed message (EIP-191 recovery with ethers).
  const local = await siwe.verify({ signature, domain: origin.host, nonce });
  assert.equal(local.success, true, JSON.stringify(local.error));

  const res = await verify(stack, wallet.address, message, signature);
  assert.equal(res.status, 200, `verify: ${res.status} ${JSON.stringify(res.body)}\n${message}`);
  assert.equal(res.body.wallet_address, wallet.address);
  assert.equal(res.body.created, true);
  assert.equal(res.body.credits, 0);
  assertTokens(res.body.tokens);
  await assertSignedInAs(stack, res.body.tokens.access_token, wallet.address);
});

it("siwe parses the gateway's challenge exactly, viem signs it, the JWT opens /v1/me", async (stack) => {
  const account = privateKeyToAccount(generatePrivateKey());
  const issued = await challenge(stack, account.address);

  const parsed = new SiweMessage(issued.message);
  const origin = new URL(stack.url);
  assert.equal(parsed.domain, origin.host);
  assert.equal(parsed.address, account.address);
  assert.equal(parsed.uri, origin.origin);
  assert.equal(parsed.version, '1');
  assert.equal(parsed.chainId, BASE_SEPOLIA);
  assert.equal(parsed.nonce, issued.nonce);
  assert.ok(parsed.issuedAt && parsed.expirationTime, issued.message);
  // The gateway's text is canonical EIP-4361: re-serialising it gives the same bytes.
  assert.equal(parsed.prepareMessage(), issued.message);

  const signature = await account.signMessage({ message: issued.message });
  const res = await verify(stack, account.address, issued.message, signature);
  assert.equal(res.status, 200, `verify: ${res.status} ${JSON.stringify(res.body)}`);
  assertTokens(res.body.tokens);
  await assertSignedInAs(stack, res.body.tokens.access_token, account.address);

  // The refresh token rotates into a new working access token.
  const refreshed = await call(stack, 'POST', '/v1/auth/refresh', {
    body: { refresh_token: res.body.tokens.refresh_token },
  });
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  assertTokens(refreshed.body);
  await assertSignedInAs(stack, refreshed.body.access_token, account.address);
});

it('a siwe message signed for another domain is refused (401 siwe_domain_mismatch)', async (stack) => {
  const wallet = Wallet.createRandom();
  const { nonce } = await challenge(stack, wallet.address);
  const siwe = new SiweMessage({
    domain: 'evil.example.com',
    address: wallet.address,
    statement: STATEMENT,
    uri: 'https://evil.example.com',
    version: '1',
    chainId: BASE_SEPOLIA,
    nonce,
    issuedAt: new Date().toISOString(),
  });
  const message = siwe.prepareMessage();
  const res = await verify(stack, wallet.address, message, await wallet.signMessage(message));
  assert.equal(res.status, 401, JSON.stringify(res.body));
  assert.equal(res.body.error?.code, 'siwe_domain_mismatch', JSON.stringify(res.body));
});
