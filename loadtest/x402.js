// loadtest/x402.js — k6 scenario: x402 pay-per-call. No API key: every chat call carries a
// base64 `X-PAYMENT` v1 header (an EIP-3009 TransferWithAuthorization for Base Sepolia USDC)
// pre-signed by loadtest/presign.py into the file X402_PAYMENTS, one header per line, each used
// exactly once (each nonce is single-use). Setup checks that an unpaid call is answered 402 with
// x402 requirements, and fails the run with a clear message when it is not (x402 not live).
// Env: BASE_URL, X402_PAYMENTS (file), VUS (10), DURATION (30s), P95_MS (500), P99_MS (1000).
import http from 'k6/http';
import { check, fail } from 'k6';
import { SharedArray } from 'k6/data';
import exec from 'k6/execution';
import { BASE, DURATION, ms } from './lib/common.js';

const BODY = open('./lib/x402-body.json');
const payments = new SharedArray('payments', () => {
  if (!__ENV.X402_PAYMENTS) return [];
  return open(__ENV.X402_PAYMENTS).split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
});

export const options = {
  scenarios: {
    x402: {
      executor: 'shared-iterations',
      vus: parseInt(__ENV.VUS || '10', 10),
      iterations: Math.max(payments.length, 1),
      maxDuration: DURATION,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    'http_req_duration{kind:x402}': [`p(95)<${ms('P95_MS', 500)}`, `p(99)<${ms('P99_MS', 1000)}`],
  },
};

export function setup() {
  if (!BASE) fail('BASE_URL is not set: run this scenario through loadtest/run.sh x402');
  if (payments.length === 0) fail('X402_PAYMENTS is empty or unset: run loadtest/presign.py first (run.sh does)');
  const res = http.post(`${BASE}/v1/chat/completions`, BODY, {
    headers: { 'content-type': 'application/json' },
    tags: { kind: 'setup' },
    responseCallback: http.expectedStatuses(402),
  });
  let ok = false;
  try {
    ok = res.status === 402 && res.json('x402Version') === 1 && res.json('accepts.0.maxAmountRequired') !== undefined;
  } catch (_) {
    ok = false;
  }
  if (!ok) {
    fail(
      `an unpaid POST /v1/chat/completions answered ${res.status}, not a 402 with x402 requirements ` +
        `(${String(res.body).slice(0, 200)}): the x402 path is not live in this vectorway binary ` +
        '(DESIGN.md §4); build one that has it or run another scenario.',
    );
  }
}

export default function () {
  const i = exec.scenario.iterationInTest;
  if (i >= payments.length) return;
  const res = http.post(`${BASE}/v1/chat/completions`, BODY, {
    headers: { 'content-type': 'application/json', 'x-payment': payments[i] },
    tags: { kind: 'x402' },
  });
  check(res, {
    'x402: status 200': (r) => r.status === 200,
    'x402: X-PAYMENT-RESPONSE receipt': (r) => !!r.headers['X-Payment-Response'],
    'x402: usd_cost in usage': (r) => {
      try {
        return r.json('usage.usd_cost') !== undefined;
      } catch (_) {
        return false;
      }
    },
  });
}
