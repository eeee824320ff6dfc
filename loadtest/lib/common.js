// loadtest/lib/common.js — shared pieces of the k6 scenarios: target URL and API key from the
// environment (run.sh sets them), request bodies, and the checks every scenario uses.
import http from 'k6/http';
import { check, fail } from 'k6';

export const BASE = (__ENV.BASE_URL || '').replace(/\/$/, '');
export const API_KEY = __ENV.API_KEY || '';
export const MODEL = __ENV.MODEL || 'gemini-2.5-flash';
export const VUS = parseInt(__ENV.VUS || '20', 10);
export const DURATION = __ENV.DURATION || '30s';

// Latency thresholds in ms, overridable per run (defaults fit the simulator's default knobs:
// 40 ms to the first token, 400 tokens/s, 48-token replies ≈ 160 ms per answer).
export function ms(name, dflt) {
  return parseInt(__ENV[name] || String(dflt), 10);
}

export function requireTarget() {
  if (!BASE) fail('BASE_URL is not set: run this scenario through loadtest/run.sh');
  if (!API_KEY) fail('API_KEY is not set: run this scenario through loadtest/run.sh');
}

const PROMPTS = [
  'Summarize the last simulation run in one sentence.',
  'Which wallet paid for the most tokens today?',
  'Plan the next three steps for the indexing agent.',
  'What did the user say about latency budgets?',
  'Draft a short status update for the fleet dashboard.',
];

export function prompt(i) {
  return PROMPTS[i % PROMPTS.length];
}

// CHAT_MEMORY=off sends memory_read/memory_write false (the API defaults both to true).
const CHAT_MEMORY = (__ENV.CHAT_MEMORY || 'on') !== 'off';

export function chatBody(i, stream, extra) {
  const body = {
    model: MODEL,
    messages: [
      { role: 'system', content: 'You are a terse agent.' },
      { role: 'user', content: prompt(i) },
    ],
    max_tokens: 256,
  };
  if (!CHAT_MEMORY) {
    body.memory_read = false;
    body.memory_write = false;
  }
  if (stream) {
    body.stream = true;
    body.stream_options = { include_usage: true };
  }
  return JSON.stringify(Object.assign(body, extra || {}));
}

export function keyHeaders() {
  return { 'content-type': 'application/json', 'x-api-key': API_KEY };
}

// One non-streaming chat completion, checked for shape.
export function chatOnce(i, tags) {
  const res = http.post(`${BASE}/v1/chat/completions`, chatBody(i, false), {
    headers: keyHeaders(),
    tags: Object.assign({ kind: 'chat' }, tags || {}),
  });
  check(res, {
    'chat: status 200': (r) => r.status === 200,
    'chat: has choices[0].message': (r) => {
      try {
        return r.json('choices.0.message.content') !== undefined;
      } catch (_) {
        return false;
      }
    },
  });
  return res;
}

// One streamed chat completion: k6 has no SSE client, so the whole body is read and must end
// with `data: [DONE]`; res.timings.waiting (time to first byte) stands in for time to first token.
export function streamOnce(i, ttfb, tags) {
  const res = http.post(`${BASE}/v1/chat/completions`, chatBody(i, true), {
    headers: keyHeaders(),
    tags: Object.assign({ kind: 'stream' }, tags || {}),
  });
  const body = typeof res.body === 'string' ? res.body.trimEnd() : '';
  check(res, {
    'stream: status 200': (r) => r.status === 200,
    'stream: text/event-stream': (r) => (r.headers['Content-Type'] || '').startsWith('text/event-stream'),
    'stream: ends with data: [DONE]': () => body.endsWith('data: [DONE]'),
    'stream: has a content delta': () => body.includes('"delta"'),
  });
  if (res.status === 200 && ttfb) ttfb.add(res.timings.waiting);
  return res;
}

// Memory search must exist: fail the whole run with a clear message when the binary has none.
export function requireMemoryEndpoint() {
  const res = http.get(`${BASE}/v1/memory?q=${encodeURIComponent('probe')}&k=5`, {
    headers: keyHeaders(),
    tags: { kind: 'setup' },
  });
  if (res.status === 404 || res.status === 405) {
    fail(
      `GET /v1/memory answered ${res.status} (${String(res.body).slice(0, 200)}): this vectorway ` +
        'binary has no memory search endpoint yet. Build a binary with wallet memory ' +
        '(DESIGN.md §5) or run another scenario.',
    );
  }
  if (res.status !== 200) {
    fail(`GET /v1/memory answered ${res.status}: ${String(res.body).slice(0, 300)}`);
  }
}

export function memorySearch(i, tags) {
  const res = http.get(`${BASE}/v1/memory?q=${encodeURIComponent(prompt(i))}&k=5`, {
    headers: keyHeaders(),
    tags: Object.assign({ kind: 'memory' }, tags || {}),
  });
  check(res, {
    'memory: status 200': (r) => r.status === 200,
    'memory: JSON answer': (r) => {
      try {
        r.json();
        return true;
      } catch (_) {
        return false;
      }
    },
  });
  return res;
}
