// loadtest/chat.js — k6 scenario: non-streaming OpenAI chat completions with an API key
// against prepaid credits (auth, hold, Gemini call, commit, usage event on every request).
// Env: BASE_URL, API_KEY (set by run.sh), VUS (20), DURATION (30s), P95_MS (500), P99_MS (1000).
import { chatOnce, requireTarget, VUS, DURATION, ms } from './lib/common.js';
import exec from 'k6/execution';

export const options = {
  scenarios: {
    chat: { executor: 'constant-vus', vus: VUS, duration: DURATION },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    'http_req_duration{kind:chat}': [`p(95)<${ms('P95_MS', 500)}`, `p(99)<${ms('P99_MS', 1000)}`],
  },
};

export function setup() {
  requireTarget();
}

export default function () {
  chatOnce(exec.scenario.iterationInTest);
}
