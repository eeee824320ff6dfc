// loadtest/memory.js — k6 scenario: wallet memory search, `GET /v1/memory?q=…&k=5` with
// `x-api-key`. Setup seeds a few memories through chat (`memory_write: true`) and fails the whole
// run with a clear message when the binary has no /v1/memory endpoint (404/405).
// Env: BASE_URL, API_KEY, VUS (20), DURATION (30s), P95_MS (50), P99_MS (100), SEED (20).
import http from 'k6/http';
import exec from 'k6/execution';
import {
  BASE, VUS, DURATION, ms, chatBody, keyHeaders, memorySearch, requireMemoryEndpoint, requireTarget,
} from './lib/common.js';

export const options = {
  scenarios: {
    memory: { executor: 'constant-vus', vus: VUS, duration: DURATION },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    'http_req_duration{kind:memory}': [`p(95)<${ms('P95_MS', 50)}`, `p(99)<${ms('P99_MS', 100)}`],
  },
};

export function setup() {
  requireTarget();
  requireMemoryEndpoint();
  const seed = parseInt(__ENV.SEED || '20', 10);
  for (let i = 0; i < seed; i++) {
    http.post(`${BASE}/v1/chat/completions`,
      chatBody(i, false, { memory_write: true, memory_write_mode: 'raw' }),
      { headers: keyHeaders(), tags: { kind: 'setup' } });
  }
}

export default function () {
  memorySearch(exec.scenario.iterationInTest);
}
