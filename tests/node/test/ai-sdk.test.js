// The Vercel AI SDK (`ai` + `@ai-sdk/openai-compatible`) against the real gateway: generateText with two tools over several steps, streamText with a tool, generateObject.
//
// `createOpenAICompatible({ baseURL, apiKey, name })`, unmodified; a recording `fetch` passed to
// the provider lets the tests see what the SDK put on the wire. The simulator calls every
// declared tool the last user turn names (schema-valid arguments) and answers a turn of tool
// results with `The tool NAME returned {"result": ...}.`, so a tool run is: step 1 calls both
// tools in parallel, the SDK executes them, step 2 is the final text.

import assert from 'node:assert/strict';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { x402Client } from '@x402/core/client';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import { wrapFetchWithPayment } from '@x402/fetch';
import { generateObject, generateText, stepCountIs, streamText, tool } from 'ai';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { z } from 'zod';

import { useGateway } from '../harness.js';

const MODEL = 'gemini-2.5-flash';
/** Gemini 3: the thought signature must survive the SDK's round trip (or the gateway's fallback). */
const MODEL_3 = 'gemini-3.5-flash';
/** The wallet this file bills (distinct from every other test file's). */
const WALLET = `0x${'c3'.repeat(20)}`;
const CREDITS = 20_000_000;
const PROMPT = 'Call get_weather and get_population for Paris, then summarise.';

const { it } = useGateway();

/** Per stack: a funded key; `provider(options)` builds a provider recording its request bodies. */
const accounts = new WeakMap();
async function provider(stack, options = {}) {
  if (!accounts.has(stack)) accounts.set(stack, await stack.provision(WALLET, CREDITS, 'node-ai-sdk'));
  const sent = [];
  const vectorway = createOpenAICompatible({
    name: 'vectorway',
    baseURL: `${stack.url}/v1`,
    apiKey: accounts.get(stack).apiKey,
    includeUsage: true,
    fetch: async (url, init) => {
      sent.push({ url: String(url), body: typeof init?.body === 'string' ? JSON.parse(init.body) : null });
      return fetch(url, init);
    },
    ...options,
  });
  return { vectorway, sent };
}

/** Two tools that record how the SDK executed them. */
function cityTools() {
  const calls = [];
  const tools = {
    get_weather: tool({
      description: 'Current weather in a city',
      inputSchema: z.object({ city: z.string(), unit: z.enum(['celsius', 'fahrenheit']) }),
      execute: async (input) => {
        calls.push(['get_weather', input]);
        return `sunny, 21 degrees ${input.unit}`;
      },
    }),
    get_population: tool({
      description: 'Population of a city in a given year',
      inputSchema: z.object({ city: z.string(), year: z.number().int() }),
      execute: async (input) => {
        calls.push(['get_population', input]);
        return 2_100_000 + input.year;
      },
    }),
  };
  return { tools, calls };
}

function assertBothExecuted(calls) {
  assert.deepEqual(calls.map(([name]) => name).sort(), ['get_population', 'get_weather'], JSON.stringify(calls));
  for (const [name, input] of calls) {
    assert.ok(typeof input.city === 'string' && input.city.length > 0, JSON.stringify(input));
    if (name === 'get_weather') assert.ok(['celsius', 'fahrenheit'].includes(input.unit), JSON.stringify(input));
    else assert.ok(Number.isInteger(input.year), JSON.stringify(input));
  }
}

function assertAnswerQuotesResults(text) {
  assert.match(text, /get_weather/);
  assert.match(text, /sunny, 21 degrees (celsius|fahrenheit)/);
  assert.match(text, /get_population/);
  assert.match(text, /\b21\d{5}\b/);
}

for (const model of [MODEL, MODEL_3]) {
  it(`generateText runs two tools over several steps to a final text (${model})`, async (stack) => {
    const { vectorway, sent } = await provider(stack);
    const { tools, calls } = cityTools();
    const result = await generateText({
      model: vectorway(model),
      instructions: "Answer with the tools' results.",
      prompt: PROMPT,
      tools,
      stopWhen: stepCountIs(5),
      maxOutputTokens: 256,
    });

    assertBothExecuted(calls);
    assert.equal(result.steps.length, 2, JSON.stringify(result.steps.map((s) => s.finishReason)));
    const [first, last] = result.steps;
    assert.equal(first.finishReason, 'tool-calls');
    assert.equal(first.toolCalls.length, 2);
    assert.equal(first.toolResults.length, 2);
    assert.equal(last.finishReason, 'stop');
    assertAnswerQuotesResults(result.text);
    assert.ok(result.totalUsage.inputTokens > 0 && result.totalUsage.outputTokens > 0, JSON.stringify(result.totalUsage));

    // On the wire: both tools declared as functions; step 2 sends the assistant tool calls
    // and one `tool` message per call, matched by the ids the gateway issued.
    assert.equal(sent.length, 2);
    assert.deepEqual(sent[0].body.tools.map((t) => t.function.name).sort(), ['get_population', 'get_weather']);
    const messages = sent[1].body.messages;
    const assistant = messages.find((m) => m.role === 'assistant');
    const toolMessages = messages.filter((m) => m.role === 'tool');
    assert.equal(toolMessages.length, 2);
    assert.deepEqual(
      toolMessages.map((m) => m.tool_call_id).sort(),
      assistant.tool_calls.map((c) => c.id).sort(),
    );
    if (model === MODEL_3) {
      // The provider kept the signature the gateway put in the first call
      // (extra_content.google.thought_signature) and sent it back; the simulator refuses a
      // corrupted one, so the run finishing proves it reached Gemini intact.
      const sig = assistant.tool_calls[0].extra_content?.google?.thought_signature;
      assert.ok(typeof sig === 'string' && sig.length > 0, JSON.stringify(assistant));
      assert.notEqual(sig, 'skip_thought_signature_validator');
    }
  });
}

it('streamText with a tool streams the call, its result and the final text', async (stack) => {
  const { vectorway, sent } = await provider(stack);
  const { tools, calls } = cityTools();
  const result = streamText({
    model: vectorway(MODEL),
    prompt: 'Call get_weather for Rome.',
    tools: { get_weather: tools.get_weather },
    stopWhen: stepCountIs(3),
    maxOutputTokens: 256,
  });
  const types = [];
  let text = '';
  for await (const part of result.fullStream) {
    types.push(part.type);
    if (part.type === 'error') throw part.error;
    if (part.type === 'tool-call') assert.equal(part.toolName, 'get_weather');
    if (part.type === 'text-delta') text += part.text;
  }
  assert.equal(calls.length, 1);
  assert.equal(calls[0][0], 'get_weather');
  assert.ok(types.includes('tool-input-start') && types.includes('tool-input-delta'), types.join(','));
  assert.ok(types.indexOf('tool-call') < types.indexOf('tool-result'), types.join(','));
  assert.ok(types.lastIndexOf('tool-result') < types.indexOf('text-delta'), types.join(','));
  assert.match(text, /The tool get_weather returned/);
  assert.equal(text, await result.text);
  const usage = await result.totalUsage;
  assert.ok(usage.inputTokens > 0 && usage.outputTokens > 0, JSON.stringify(usage));
  // Every step streamed and asked for the usage chunk.
  assert.equal(sent.length, 2);
  for (const { body } of sent) {
    assert.equal(body.stream, true);
    assert.deepEqual(body.stream_options, { include_usage: true });
  }
});

it('generateObject without structured outputs sends json_object and parses the JSON answer', async (stack) => {
  // The provider's default (supportsStructuredOutputs: false) sends `response_format:
  // {type: "json_object"}` and keeps the schema to itself (warning that it was not sent); the
  // prompt describes the shape, as JSON mode needs. The simulator's JSON mode answers
  // `{"answer": "..."}`, which is the shape asked for here.
  const { vectorway, sent } = await provider(stack);
  const result = await generateObject({
    model: vectorway(MODEL),
    schema: z.object({ answer: z.string() }),
    prompt: 'Reply with a JSON object with one string field, "answer".',
    maxOutputTokens: 256,
  });
  assert.equal(sent.length, 1);
  assert.deepEqual(sent[0].body.response_format, { type: 'json_object' });
  assert.equal(typeof result.object.answer, 'string');
  assert.ok(result.object.answer.length > 0);
  assert.equal(result.finishReason, 'stop');
  assert.ok(result.usage.inputTokens > 0, JSON.stringify(result.usage));
});

it('generateObject with structured outputs sends json_schema and gets a valid object', async (stack) => {
  // supportsStructuredOutputs: true makes the provider send `response_format: {type:
  // "json_schema", json_schema: {name, schema, strict: true}}`.
  const { vectorway, sent } = await provider(stack, { supportsStructuredOutputs: true });
  const schema = z.object({
    city: z.string(),
    population: z.number().int(),
    sunny: z.boolean(),
    districts: z.array(z.string()),
  });
  const result = await generateObject({
    model: vectorway(MODEL),
    schema,
    schemaName: 'city_facts',
    prompt: 'Give me facts about Paris.',
    maxOutputTokens: 256,
  });
  assert.equal(sent[0].body.response_format.type, 'json_schema');
  assert.equal(sent[0].body.response_format.json_schema.name, 'city_facts');
  assert.equal(sent[0].body.response_format.json_schema.strict, true);
  // generateObject already validated it against the zod schema; check the values anyway.
  const facts = schema.parse(result.object);
  assert.ok(facts.city.length > 0 && facts.districts.length > 0, JSON.stringify(facts));
});

it('streamText paid per step with x402 (no API key) keeps going past the receipt after [DONE]', async (stack) => {
  // The provider's SSE parser reads to the end of the body, past `[DONE]`, so the gateway's
  // `event: x402-receipt` that follows it must parse as a (no-op) chunk, or the step ends in an
  // error part. No apiKey: the provider then sends no Authorization header, and the paying fetch
  // answers each 402 with a signed USDC authorization.
  const account = privateKeyToAccount(generatePrivateKey()); // starts with $1000 at the facilitator
  const payer = new x402Client();
  registerExactEvmScheme(payer, { signer: account });
  const bodies = [];
  const vectorway = createOpenAICompatible({
    name: 'vectorway',
    baseURL: `${stack.url}/v1`,
    includeUsage: true,
    fetch: wrapFetchWithPayment(async (url, init) => {
      const res = await fetch(url, init);
      if (res.status === 200) {
        const [mine, theirs] = res.body.tee();
        bodies.push(new Response(mine).text());
        return new Response(theirs, { status: res.status, headers: res.headers });
      }
      return res;
    }, payer),
  });
  const before = await stack.usdcBalance(account.address);
  const stats = await stack.facilitatorStats();
  const { tools, calls } = cityTools();
  const result = streamText({
    model: vectorway(MODEL),
    prompt: 'Call get_weather for Rome.',
    tools: { get_weather: tools.get_weather },
    stopWhen: stepCountIs(3),
    maxOutputTokens: 256,
  });
  const errors = [];
  for await (const part of result.fullStream) if (part.type === 'error') errors.push(part.error);
  assert.deepEqual(errors, []);
  assert.equal(calls.length, 1);
  const steps = await result.steps;
  assert.deepEqual(steps.map((s) => s.finishReason), ['tool-calls', 'stop']);
  assert.match(await result.text, /The tool get_weather returned/);
  // Both steps were paid and settled, and each stream ended with its receipt after [DONE].
  const texts = await Promise.all(bodies);
  assert.equal(texts.length, 2);
  for (const text of texts) assert.match(text, /data: \[DONE\]\n\nevent: x402-receipt\ndata: \{/);
  const after = await stack.facilitatorStats();
  assert.equal(after.settled - stats.settled, 2);
  assert.ok((await stack.usdcBalance(account.address)) < before);
});
