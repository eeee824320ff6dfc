// x402 payments in the console, on a real chain: anvil with Circle's USDC (tests/browser/chain.js),
// the gateway settling itself (`x402.facilitator = "self"`). The signed-in wallet tops up from the
// ledger view (the injected window.ethereum signs the EIP-3009 authorization), the ledger shows
// the top-up with its transaction hash, and that hash is a mined transaction on anvil that moved
// the USDC from the wallet to payTo. Then a paid chat call's change appears as a refund with its
// own transaction, and the call's row in the usage table names that transaction too.

import assert from 'node:assert/strict';
import { Wallet, getAddress, hexlify, randomBytes } from 'ethers';

import { CHAIN_ID, Chain, devAccount } from '../chain.js';
import { fitsPhone, noSeriousAxe, tab, until } from '../console.js';
import { injectWallet, screenshot, useBrowser } from '../harness.js';

let chain = null;
const payTo = devAccount(2).address;

const { it } = useBrowser({
  prepare: async () => {
    chain = await Chain.start();
    return {
      env: {
        VECTORWAY_X402__FACILITATOR: 'self',
        VECTORWAY_X402__FACILITATOR_URL: '',
        // The key through a variable the config names, never a literal.
        VECTORWAY_X402__SETTLEMENT_KEY: '$TEST_SETTLEMENT_KEY',
        TEST_SETTLEMENT_KEY: devAccount(1).privateKey.replace(/^0x/, ''),
        VECTORWAY_X402__PAY_TO: payTo,
        VECTORWAY_AUTH__CHAIN_IDS: `[8453, ${CHAIN_ID}]`,
        ...chain.networkEnv(),
      },
      stop: () => chain.stop(),
    };
  },
});

/** The receipt of `hash` says it mined (status 1) and moved exactly `value` USDC from → payTo. */
async function assertTransfer(hash, from, value) {
  const receipt = await chain.receipt(hash);
  assert.ok(receipt, `${hash} is a transaction anvil knows`);
  assert.equal(receipt.status, 1, `${hash} succeeded`);
  const moved = await chain.transfersIn(hash);
  assert.deepEqual(
    moved.map((t) => [getAddress(t.from), getAddress(t.to), t.value]),
    [[getAddress(from), getAddress(payTo), BigInt(value)]],
    `${hash} moved the payment to payTo`,
  );
}

/** An x402 v2 payment for the first requirement of a 402, signed in Node by `wallet`. */
async function paymentFor(challenge, wallet) {
  const required = JSON.parse(Buffer.from(challenge.headers.get('payment-required'), 'base64').toString('utf8'));
  const accepted = required.accepts.find((a) => a.network === `eip155:${CHAIN_ID}`);
  assert.ok(accepted, `a requirement on anvil: ${JSON.stringify(required.accepts)}`);
  const now = Math.floor(Date.now() / 1000);
  const authorization = {
    from: wallet.address,
    to: accepted.payTo,
    value: accepted.amount,
    validAfter: String(now - 600),
    validBefore: String(now + accepted.maxTimeoutSeconds),
    nonce: hexlify(randomBytes(32)),
  };
  const signature = await wallet.signTypedData(
    { name: accepted.extra.name, version: accepted.extra.version, chainId: CHAIN_ID, verifyingContract: accepted.asset },
    {
      TransferWithAuthorization: [
        { name: 'from', type: 'address' },
        { name: 'to', type: 'address' },
        { name: 'value', type: 'uint256' },
        { name: 'validAfter', type: 'uint256' },
        { name: 'validBefore', type: 'uint256' },
        { name: 'nonce', type: 'bytes32' },
      ],
    },
    authorization,
  );
  const payment = { x402Version: 2, resource: required.resource, accepted, payload: { signature, authorization } };
  return { header: Buffer.from(JSON.stringify(payment)).toString('base64'), amount: BigInt(accepted.amount) };
}

it('a wallet tops up with x402 from the console and sees the on-chain transaction in its ledger', async (env) => {
  const wallet = Wallet.createRandom();
  await chain.mint(wallet.address, 5_000_000n);
  const page = await env.page({ viewport: { width: 1200, height: 900 }, permissions: ['clipboard-read', 'clipboard-write'] });
  await injectWallet(page, wallet, { chainId: CHAIN_ID });
  await page.goto(`${env.url}/console`);
  await page.click('#siwe');
  await page.waitForSelector('#wallet:not([hidden])');
  await page.waitForFunction(() => document.getElementById('balance').textContent === '0');

  // The top-up: the page asks for the 402, the wallet signs, the gateway settles on anvil.
  await tab(page, 'ledger');
  await page.waitForSelector('#topup-form:not([hidden])');
  await page.fill('#topup-amount', '1.5');
  await page.click('#topup-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Topped up: 1,500,000 credits'));
  assert.deepEqual(page.walletCalls, ['eth_requestAccounts', 'eth_chainId', 'personal_sign', 'eth_requestAccounts', 'eth_chainId', 'eth_signTypedData_v4']);
  const row = '#ledger-table tbody tr:has(td:nth-child(2):text-is("topup"))';
  await page.waitForSelector(`${row} [data-tx]`);
  const hash = await page.getAttribute(`${row} [data-tx]`, 'data-tx');
  assert.match(hash, /^0x[0-9a-f]{64}$/);
  assert.equal(await page.textContent(`${row} td:nth-child(3)`), '1,500,000');
  await assertTransfer(hash, wallet.address, 1_500_000n);
  assert.equal(await chain.balanceOf(wallet.address), 3_500_000n, 'the wallet paid 1.5 USDC');

  // The hash is copyable from the row.
  await page.click(`${row} button`);
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), hash);
  await noSeriousAxe(page, 'ledger with a top-up');
  await screenshot(page, 'console-x402-topup');
  await fitsPhone(page, 'ledger with a top-up');

  // A paid chat call (x402, no key): its change comes back as a refund with its own transaction.
  const body = JSON.stringify({ model: 'gemini-2.5-flash', max_tokens: 16, messages: [{ role: 'user', content: 'hello' }] });
  const post = (headers = {}) =>
    fetch(`${env.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  const challenge = await post();
  assert.equal(challenge.status, 402);
  const { header, amount } = await paymentFor(challenge, wallet);
  const paid = await post({ 'payment-signature': header });
  assert.equal(paid.status, 200, await paid.clone().text());
  const receipt = JSON.parse(Buffer.from(paid.headers.get('payment-response'), 'base64').toString('utf8'));
  await assertTransfer(receipt.transaction, wallet.address, amount);
  await page.selectOption('#ledger-kind', 'refund');
  await until('the paid call\'s refund in the ledger', async () => {
    await page.click('#ledger-form button[type=submit]');
    await page.waitForTimeout(200);
    return page.$(`#ledger-table [data-tx="${receipt.transaction}"]`);
  });
  assert.match(await page.textContent('#ledger-table tbody tr'), /x402 change: paid/);
  await screenshot(page, 'console-x402-refund');
  // The call itself, in the usage table, names the same transaction.
  await tab(page, 'usage');
  await page.waitForSelector(`#usage-table tr:has-text("/v1/chat/completions") [data-tx="${receipt.transaction}"]`);
  await noSeriousAxe(page, 'usage with a paid call');
  await fitsPhone(page, 'usage with a paid call');
  // The only failed answer the page saw is the top-up's 402 challenge.
  assert.deepEqual(page.problems.filter((p) => !p.startsWith(`response: 402 ${env.url}/v1/topup`)), []);
});
