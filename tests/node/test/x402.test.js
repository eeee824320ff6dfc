// x402 v2 pay-per-call with `@x402/fetch` + `@x402/evm` (viem account): chats paid in USDC on base-sepolia with no API key.
//
// Mirrors tests/py/test_x402.py for the TypeScript SDK. The SDK's fetch wrapper sees the
// gateway's 402 (`PAYMENT-REQUIRED`), signs an EIP-3009 authorization with `ExactEvmScheme`, and
// retries with `PAYMENT-SIGNATURE`; the settlement receipt comes back in `PAYMENT-RESPONSE`.
// The gateway settles against the simulator's facilitator (see harness.js), so the tests read the
// payer's USDC balance there. Every test uses a fresh random viem account; unseen addresses start
// with 1,000 USDC at the simulated facilitator.

import assert from 'node:assert/strict';
import { x402Client } from '@x402/core/client';
import { decodePaymentRequiredHeader } from '@x402/core/http';
import { ExactEvmScheme, registerExactEvmScheme } from '@x402/evm/exact/client';
import { decodePaymentResponseHeader, wrapFetchWithPayment, wrapFetchWithPaymentFromConfig } from '@x402/fetch';
import OpenAI from 'openai';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';

import { useGateway } from '../harness.js';

const CHAT = '/v1/chat/completions';
const NETWORK = 'eip155:84532'; // base-sepolia
const USDC = '0x036CbD53842c5426634e7929541eC2318f3dCF7e';
const PAY_TO = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';
const MIN_QUOTE = 1000n;
const TX_HASH_RE = /^0x[0-9a-f]{64}$/;

const { it } = useGateway();

const newAccount = () => privateKeyToAccount(generatePrivateKey());

/** A chat body whose worst case (2000 tokens) is well above the floor: calls get change. */
const chatBody = (extra = {}) =>
  JSON.stringify({ messages: [{ role: 'user', content: 'pay per call' }], max_tokens: 2000, ...extra });

const post = (fetchFn, url, body) =>
  fetchFn(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });

/** The gateway's price for `body`, read from an unpaid request's `PAYMENT-REQUIRED` header. */
async function quoteOf(stack, body) {
  const res = await post(fetch, `${stack.url}${CHAT}`, body);
  const text = await res.text();
  assert.equal(res.status, 402, `expected a 402 for an unpaid chat, got ${res.status}: ${text}`);
  const header = res.headers.get('payment-required');
  assert.ok(header, `no PAYMENT-REQUIRED header: ${[...res.headers.keys()]}`);
  const required = decodePaymentRequiredHeader(header);
  assert.equal(required.x402Version, 2);
  assert.equal(required.accepts.length, 1, JSON.stringify(required.accepts));
  const [offer] = required.accepts;
  assert.deepEqual(
    [offer.scheme, offer.network, offer.asset, offer.payTo],
    ['exact', NETWORK, USDC, PAY_TO],
  );
  const quote = BigInt(offer.amount);
  assert.ok(quote >= MIN_QUOTE, `quote ${quote}`);
  return quote;
}

/** A fetch that records the headers of every request it sends (to see what the SDK paid with). */
function recordingFetch() {
  const sent = [];
  const fn = async (input, init) => {
    const request = new Request(input, init);
    sent.push(Object.fromEntries(request.headers));
    return fetch(request);
  };
  return { fn, sent };
}

function assertReceipt(res, account, quote) {
  const header = res.headers.get('payment-response');
  assert.ok(header, `no PAYMENT-RESPONSE header: ${[...res.headers.keys()]}`);
  assert.equal(res.headers.get('x-payment-response'), null, 'a v1 receipt header on a v2 payment');
  const receipt = decodePaymentResponseHeader(header);
  assert.equal(receipt.success, true, JSON.stringify(receipt));
  assert.equal(receipt.network, NETWORK);
  assert.equal(receipt.payer?.toLowerCase(), account.address.toLowerCase());
  assert.equal(receipt.amount, String(quote));
  assert.match(receipt.transaction, TX_HASH_RE);
  return receipt;
}

it('wrapFetchWithPaymentFromConfig pays for a chat: 200, PAYMENT-RESPONSE, USDC debited', async (stack) => {
  const account = newAccount();
  const body = chatBody();
  const quote = await quoteOf(stack, body);
  const before = await stack.usdcBalance(account.address);
  const stats = await stack.facilitatorStats();

  const { fn, sent } = recordingFetch();
  const payingFetch = wrapFetchWithPaymentFromConfig(fn, {
    schemes: [{ network: 'eip155:*', client: new ExactEvmScheme(account) }],
  });
  const res = await post(payingFetch, `${stack.url}${CHAT}`, body);
  const text = await res.text();
  assert.equal(res.status, 200, `paid chat: ${res.status} ${text}`);

  // The SDK tried unpaid, then paid with a v2 PAYMENT-SIGNATURE and no API key.
  assert.equal(sent.length, 2, JSON.stringify(sent));
  assert.equal(sent[0]['payment-signature'], undefined);
  assert.ok(sent[1]['payment-signature'], `second request not paid: ${Object.keys(sent[1])}`);
  for (const headers of sent) {
    assert.equal(headers.authorization, undefined);
    assert.equal(headers['x-api-key'], undefined);
  }

  assertReceipt(res, account, quote);
  assert.equal(res.headers.get('x-payment-method'), 'x402');
  assert.equal(res.headers.get('x-payer-address'), account.address);
  const completion = JSON.parse(text);
  assert.equal(completion.object, 'chat.completion');
  assert.ok(completion.choices[0].message.content, 'no content');
  assert.equal(completion.usage.credit_cost, null);
  assert.equal(typeof completion.usage.usd_cost, 'string');

  // The whole quote moved at the facilitator, settled exactly once.
  const after = await stack.usdcBalance(account.address);
  assert.equal(before - after, quote, `balance ${before} -> ${after}, quote ${quote}`);
  const statsAfter = await stack.facilitatorStats();
  assert.equal(statsAfter.settled - stats.settled, 1);
});

it('the openai SDK streams a chat through wrapFetchWithPayment(x402Client)', async (stack) => {
  const account = newAccount();
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  const payingFetch = wrapFetchWithPayment(fetch, client);

  // The SDK insists on an API key and sends it as a bearer token; an x402 caller has none, and the
  // gateway refuses a request that carries both kinds of payment, so this fetch drops it.
  const openai = new OpenAI({
    baseURL: `${stack.url}/v1`,
    apiKey: 'x402',
    maxRetries: 0,
    timeout: 30_000,
    fetch: (url, init) => {
      const headers = new Headers(init?.headers);
      headers.delete('authorization');
      return payingFetch(url, { ...init, headers });
    },
  });
  const params = {
    model: 'gemini-2.5-flash',
    messages: [{ role: 'user', content: 'pay per call' }],
    max_tokens: 2000,
    stream: true,
    stream_options: { include_usage: true },
  };
  const quote = await quoteOf(stack, JSON.stringify(params));
  const before = await stack.usdcBalance(account.address);

  const { data: stream, response } = await openai.chat.completions.create(params).withResponse();
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /^text\/event-stream/);
  assert.equal(response.headers.get('x-payment-method'), 'x402');
  assert.equal(response.headers.get('x-payer-address'), account.address);
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);

  const text = chunks.flatMap((c) => c.choices.map((ch) => ch.delta?.content ?? '')).join('');
  assert.ok(text.length > 0, 'no content streamed');
  const usage = chunks.at(-1).usage;
  assert.ok(usage && usage.completion_tokens > 0, JSON.stringify(chunks.at(-1)));
  assert.equal(usage.credit_cost, null);
  assert.equal(typeof usage.usd_cost, 'string');
  assert.equal(before - (await stack.usdcBalance(account.address)), quote);
});

it('a payer without USDC gets a 402 and no answer; nothing settles', async (stack) => {
  const account = newAccount();
  await stack.setUsdcBalance(account.address, 0);
  const stats = await stack.facilitatorStats();

  const payingFetch = wrapFetchWithPaymentFromConfig(fetch, {
    schemes: [{ network: 'eip155:*', client: new ExactEvmScheme(account) }],
  });
  const res = await post(payingFetch, `${stack.url}${CHAT}`, chatBody());
  const body = await res.json();
  assert.equal(res.status, 402, JSON.stringify(body));
  assert.equal(body.choices, undefined, 'an answer without payment');
  assert.equal(body.error, 'insufficient_funds', JSON.stringify(body));
  assert.ok(res.headers.get('payment-required'), 'a fresh 402 challenge');
  // A failed settlement is a 402 whose PAYMENT-RESPONSE says so (x402 v2 HTTP transport).
  const receipt = decodePaymentResponseHeader(res.headers.get('payment-response'));
  assert.equal(receipt.success, false, JSON.stringify(receipt));
  assert.equal(receipt.errorReason, 'insufficient_funds', JSON.stringify(receipt));
  assert.equal(receipt.transaction, '');
  assert.equal(receipt.network, NETWORK);

  const after = await stack.facilitatorStats();
  assert.equal(after.settled, stats.settled, 'nothing settled');
  // The facilitator's /verify refused it before the model ran: nothing was sent to /settle.
  assert.equal(after.verify - stats.verify, 1);
  assert.equal(after.settle, stats.settle);
  assert.equal(await stack.usdcBalance(account.address), 0n);
});
