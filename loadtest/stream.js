// loadtest/stream.js — k6 scenario: streaming chat completions (`stream: true`). k6 has no SSE
// client, so each response body is read whole and must end with `data: [DONE]`; the time to
// first byte (res.timings.waiting) is recorded as `stream_ttfb` as the time to first token.
// Env: BASE_URL, API_KEY, VUS (20), DURATION (30s), TTFB_P95_MS (250), TTFB_P99_MS (500),
// P95_MS (500), P99_MS (1000) for the whole stream.
import { Trend } from 'k6/metrics';
import exec from 'k6/execution';
import { streamOnce, requireTarget, VUS, DURATION, ms } from './lib/common.js';

const ttfb = new Trend('stream_ttfb', true);

export const options = {
  scenarios: {
    stream: { executor: 'constant-vus', vus: VUS, duration: DURATION },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    stream_ttfb: [`p(95)<${ms('TTFB_P95_MS', 250)}`, `p(99)<${ms('TTFB_P99_MS', 500)}`],
    'http_req_duration{kind:stream}': [`p(95)<${ms('P95_MS', 500)}`, `p(99)<${ms('P99_MS', 1000)}`],
  },
};

export function setup() {
  requireTarget();
}

export default function () {
  streamOnce(exec.scenario.iterationInTest, ttfb);
}
