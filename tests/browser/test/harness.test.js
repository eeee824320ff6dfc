// The browser harness itself: the injected EIP-1193 wallet signs a real SIWE sign-in from inside chromium, and the admin secret is the gateway's.

import assert from 'node:assert/strict';
import { Wallet, verifyMessage } from 'ethers';

import { injectWallet, useBrowser } from '../harness.js';

const { it } = useBrowser();

it('window.ethereum signs in with SIWE from the page; the JWT opens /v1/me', async (env) => {
  const wallet = Wallet.createRandom();
  const page = await env.page();
  await injectWallet(page, wallet);
  await page.goto(`${env.url}/llms.txt`);

  // What a dapp does, in the page: ask for the account, fetch a challenge, personal_sign it
  // (hex-encoded, as ethers' BrowserProvider and most dapps send it), verify, use the token.
  const result = await page.evaluate(async () => {
    const eth = globalThis.ethereum;
    const [address] = await eth.request({ method: 'eth_requestAccounts' });
    const chainId = await eth.request({ method: 'eth_chainId' });
    const post = async (path, body) => {
      const res = await fetch(path, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() };
    };
    const challenge = await post('/v1/auth/siwe/challenge', {
      wallet_address: address,
      chain_id: Number.parseInt(chainId, 16),
    });
    const hex = '0x' + [...new TextEncoder().encode(challenge.body.message)]
      .map((b) => b.toString(16).padStart(2, '0'))
      .join('');
    const signature = await eth.request({ method: 'personal_sign', params: [hex, address] });
    const verified = await post('/v1/auth/siwe/verify', {
      wallet_address: address,
      message: challenge.body.message,
      signature,
    });
    const me = await fetch('/v1/me', {
      headers: { authorization: `Bearer ${verified.body.tokens.access_token}` },
    });
    let refused;
    try {
      await eth.request({ method: 'eth_sendTransaction', params: [{}] });
    } catch (err) {
      refused = err.code;
    }
    return {
      address,
      chainId,
      message: challenge.body.message,
      signature,
      verifyStatus: verified.status,
      me: { status: me.status, body: await me.json() },
      refused,
    };
  });

  assert.equal(result.address, wallet.address);
  assert.equal(result.chainId, '0x2105');
  assert.equal(verifyMessage(result.message, result.signature), wallet.address);
  assert.equal(result.verifyStatus, 200);
  assert.equal(result.me.status, 200, JSON.stringify(result.me.body));
  assert.equal(result.me.body.wallet_address, wallet.address);
  assert.equal(result.refused, 4200, 'unsupported methods reject with EIP-1193 4200');
  assert.deepEqual(page.walletCalls, ['eth_requestAccounts', 'eth_chainId', 'personal_sign', 'eth_sendTransaction']);
  assert.deepEqual(page.problems, []);
});

it('the admin secret the harness chose is the gateway\'s', async (env) => {
  const wallet = Wallet.createRandom().address;
  const ask = (secret) =>
    fetch(`${env.url}/admin/balance?wallet=${wallet}`, {
      headers: secret ? { 'x-admin-secret': secret } : {},
    });
  assert.equal((await ask(env.adminSecret)).status, 200);
  assert.equal((await ask(`${env.adminSecret}x`)).status, 401);
});
