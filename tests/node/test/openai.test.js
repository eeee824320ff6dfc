// The official `openai` npm SDK against the real gateway: chat (unary and streamed with usage), models.list, embeddings (default base64 vs float).
//
// Mirrors tests/py/test_openai_sdk.py. Every request goes through the SDK exactly as a user's
// code would send it; a recording `fetch` passed to the client lets the tests see what the SDK
// actually put on the wire (e.g. that `embeddings.create` asks for base64 by default).

import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { useGateway } from '../harness.js';

const MODEL = 'gemini-2.5-flash';
const EMBEDDING_MODEL = 'gemini-embedding-001';
const EXPECTED_MODELS = [
  'gemini-2.5-flash',
  'gemini-2.5-pro',
  'gemini-2.5-flash-lite',
  'gemini-3.1-flash-lite',
  'gemini-3.5-flash',
];
const MESSAGES = [
  { role: 'system', content: 'You are a terse assistant.' },
  { role: 'user', content: 'Say hello in one short sentence.' },
];
const MAX_TOKENS = 64;
const FINISH_REASONS = ['stop', 'length'];
/** The wallet the SDK's API key bills against (distinct from every other test file's). */
const WALLET = `0x${'6'.repeat(40)}`;
const CREDITS = 50_000_000;

const { it } = useGateway();

/** Per stack: a funded API key and an SDK client recording the JSON bodies it sends. */
const clients = new WeakMap();
async function sdk(stack) {
  if (!clients.has(stack)) {
    const account = await stack.provision(WALLET, CREDITS, 'node-openai');
    const sent = [];
    const client = new OpenAI({
      baseURL: `${stack.url}/v1`,
      apiKey: account.apiKey,
      maxRetries: 0,
      timeout: 30_000,
      fetch: async (url, init) => {
        sent.push({ url: String(url), body: typeof init?.body === 'string' ? JSON.parse(init.body) : null });
        return fetch(url, init);
      },
    });
    clients.set(stack, { client, sent });
  }
  return clients.get(stack);
}

function assertUsage(usage) {
  assert.ok(usage, 'no usage');
  assert.ok(usage.prompt_tokens > 0, JSON.stringify(usage));
  assert.ok(usage.completion_tokens > 0, JSON.stringify(usage));
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
}

it('chat.completions.create (unary) parses, with usage and a request id', async (stack) => {
  const { client } = await sdk(stack);
  const { data: completion, response, request_id } = await client.chat.completions
    .create({ model: MODEL, messages: MESSAGES, max_tokens: MAX_TOKENS })
    .withResponse();

  assert.equal(completion.object, 'chat.completion');
  assert.ok(completion.id);
  assert.equal(completion.choices.length, 1);
  const [choice] = completion.choices;
  assert.equal(choice.message.role, 'assistant');
  assert.equal(typeof choice.message.content, 'string');
  assert.ok(choice.message.content.length > 0, 'empty message content');
  assert.ok(FINISH_REASONS.includes(choice.finish_reason), choice.finish_reason);
  assertUsage(completion.usage);
  // The Vectorway extras ride along in the parsed object.
  assert.ok(Number.isInteger(completion.usage.credit_cost) && completion.usage.credit_cost > 0);
  assert.equal(completion.usage.model, MODEL);

  assert.ok(response.headers.get('x-request-id'), 'no x-request-id header');
  assert.equal(request_id, response.headers.get('x-request-id'));
});

it('chat.completions.create streaming with include_usage: content, then one usage chunk', async (stack) => {
  const { client } = await sdk(stack);
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: MESSAGES,
    max_tokens: MAX_TOKENS,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);

  assert.ok(chunks.length >= 2, `only ${chunks.length} chunk(s)`);
  const text = chunks.flatMap((c) => c.choices.map((choice) => choice.delta?.content ?? '')).join('');
  assert.ok(text.length > 0, 'the streamed deltas are empty');
  assert.deepEqual(new Set(chunks.map((c) => c.object)), new Set(['chat.completion.chunk']));
  const ids = new Set(chunks.map((c) => c.id));
  assert.equal(ids.size, 1, `chunk ids differ: ${[...ids]}`);

  const finishReasons = chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason).filter(Boolean));
  assert.ok(finishReasons.length > 0, 'no chunk carried a finish_reason');
  assert.ok(finishReasons.every((r) => FINISH_REASONS.includes(r)), String(finishReasons));

  // Exactly one usage chunk, the last one, with no choices.
  const withUsage = chunks.flatMap((c, i) => (c.usage ? [i] : []));
  assert.deepEqual(withUsage, [chunks.length - 1], `usage chunks at ${withUsage} of ${chunks.length}`);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assertUsage(last.usage);
});

it('models.list advertises every Gemini model', async (stack) => {
  const { client } = await sdk(stack);
  const ids = [];
  for await (const model of client.models.list()) {
    assert.equal(model.object, 'model');
    ids.push(model.id);
  }
  const missing = EXPECTED_MODELS.filter((id) => !ids.includes(id));
  assert.deepEqual(missing, [], `missing models; listed: ${ids}`);
});

it('embeddings.create: the default (base64, decoded by the SDK) equals encoding_format float', async (stack) => {
  const { client, sent } = await sdk(stack);
  const input = ['the fleet budget is 300 credits', 'the orbital run finished'];

  const before = sent.length;
  const byDefault = await client.embeddings.create({ model: EMBEDDING_MODEL, input });
  // No encoding_format given: the SDK asked the gateway for base64 and decoded it itself.
  assert.equal(sent[before].body.encoding_format, 'base64', JSON.stringify(sent[before].body));
  const floats = await client.embeddings.create({ model: EMBEDDING_MODEL, input, encoding_format: 'float' });
  assert.equal(sent[before + 1].body.encoding_format, 'float');

  assert.equal(byDefault.object, 'list');
  assert.equal(byDefault.data.length, 2);
  assert.equal(floats.data.length, 2);
  for (let i = 0; i < 2; i += 1) {
    const a = byDefault.data[i].embedding;
    const b = floats.data[i].embedding;
    assert.equal(byDefault.data[i].index, i);
    assert.ok(Array.isArray(a), `default embedding ${i} is not an array of numbers: ${typeof a}`);
    assert.equal(a.length, 768);
    assert.equal(b.length, 768);
    assert.ok(a.every((x) => typeof x === 'number' && Number.isFinite(x)));
    // Little-endian float32 from base64 is bit-for-bit the value the float encoding prints.
    const differing = a.flatMap((x, j) => (x === b[j] ? [] : [j]));
    assert.deepEqual(differing, [], `base64 and float vectors differ at ${differing.slice(0, 5)}`);
    const norm = a.reduce((sum, x) => sum + x * x, 0);
    assert.ok(Math.abs(norm - 1) < 1e-3, `not unit length: ${norm}`);
  }
  assert.ok(byDefault.usage.prompt_tokens > 0, JSON.stringify(byDefault.usage));

  const single = await client.embeddings.create({ model: EMBEDDING_MODEL, input: 'one text', dimensions: 256 });
  assert.equal(single.data[0].embedding.length, 256);
});

it('an invalid API key maps onto AuthenticationError', async (stack) => {
  const bogus = new OpenAI({ baseURL: `${stack.url}/v1`, apiKey: `vw_aaaaaaaaaaaa_${'a'.repeat(43)}`, maxRetries: 0 });
  await assert.rejects(
    bogus.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: MAX_TOKENS }),
    (err) => {
      assert.ok(err instanceof OpenAI.AuthenticationError, `${err.constructor.name}: ${err.message}`);
      assert.equal(err.status, 401);
      assert.equal(err.code, 'invalid_api_key');
      return true;
    },
  );
});
