// loadtest/fleet.js — k6 scenario: a mixed agent fleet. Each iteration is, at random,
// a non-streaming chat (70 %), a streamed chat (15 %), a memory search (10 %) or a usage /
// balance read (5 %), with per-kind latency thresholds.
// Env: BASE_URL, API_KEY, VUS (20), DURATION (30s), FLEET_MEMORY=require|skip (require: fail
// loudly when /v1/memory is absent; skip: give its share to non-streaming chat).
import http from 'k6/http';
import { check } from 'k6';
import { Trend } from 'k6/metrics';
import exec from 'k6/execution';
import {
  BASE, VUS, DURATION, ms, chatOnce, streamOnce, memorySearch, keyHeaders, requireMemoryEndpoint,
  requireTarget,
} from './lib/common.js';

const ttfb = new Trend('stream_ttfb', true);
const withMemory = (__ENV.FLEET_MEMORY || 'require') !== 'skip';

export const options = {
  scenarios: {
    fleet: { executor: 'constant-vus', vus: VUS, duration: DURATION },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    'http_req_duration{kind:chat}': [`p(95)<${ms('P95_MS', 500)}`, `p(99)<${ms('P99_MS', 1000)}`],
    'http_req_duration{kind:stream}': [`p(95)<${ms('P95_MS', 500)}`, `p(99)<${ms('P99_MS', 1000)}`],
    stream_ttfb: [`p(95)<${ms('TTFB_P95_MS', 250)}`, `p(99)<${ms('TTFB_P99_MS', 500)}`],
    'http_req_duration{kind:usage}': [`p(95)<${ms('READ_P95_MS', 100)}`, `p(99)<${ms('READ_P99_MS', 250)}`],
  },
};
if (withMemory) {
  options.thresholds['http_req_duration{kind:memory}'] = [
    `p(95)<${ms('MEM_P95_MS', 50)}`, `p(99)<${ms('MEM_P99_MS', 100)}`,
  ];
}

export function setup() {
  requireTarget();
  if (withMemory) requireMemoryEndpoint();
}

function usageRead(i) {
  const path = i % 2 === 0 ? '/v1/usage?limit=10' : '/v1/credits/me';
  const res = http.get(`${BASE}${path}`, { headers: keyHeaders(), tags: { kind: 'usage' } });
  check(res, { 'usage: status 200': (r) => r.status === 200 });
}

export default function () {
  const i = exec.scenario.iterationInTest;
  const roll = Math.random();
  if (roll < 0.70) chatOnce(i);
  else if (roll < 0.85) streamOnce(i, ttfb);
  else if (roll < 0.95) {
    if (withMemory) memorySearch(i);
    else chatOnce(i);
  } else usageRead(i);
}
