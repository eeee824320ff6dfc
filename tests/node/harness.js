// Test harness: runs the real `vectorway simulate` + `vectorway serve` binaries on ephemeral 127.0.0.1 ports for the Node client tests.
//
// Mirrors tests/py/conftest.py. `useGateway()` registers before/after hooks in the calling test
// file that:
//
// 1. start the Gemini simulator, `vectorway simulate --listen 127.0.0.1:0`, and read its URL from
//    the `listening on http://...` line it prints on stderr;
// 2. start the gateway, `vectorway serve`, configured purely through the environment (ephemeral
//    127.0.0.1 port, a fresh temporary data directory, upstream = the simulator, x402 facilitator
//    = the simulator's `/facilitator`, so tests and gateway share one USDC ledger), and wait until
//    it has written `<data_dir>/server.json` and `GET /health` answers 200;
// 3. stop both at the end (SIGTERM, up to 10 s, then SIGKILL), also when a test or the start-up
//    failed; an `exit` handler SIGKILLs whatever is still running if the test process dies.
//
// Wallets and API keys are provisioned with the admin CLI (`vectorway admin grant` /
// `vectorway admin create-key`), which finds the running server through the data directory.
//
// The binary comes from $VECTORWAY_BIN (relative paths are taken from the repository root), else
// target/release/vectorway, else target/debug/vectorway. Children get a scrubbed environment:
// every inherited VECTORWAY_* variable and GEMINI_API_KEY are removed (the gateway maps every
// VECTORWAY_* variable onto its strict configuration). VECTORWAY_TEST_LOG (e.g. `debug`) is
// passed to the children as VECTORWAY_LOG. Output goes to <tmp>/vectorway-node-*/{simulator,
// gateway}.log; the directory is removed after a clean run and kept (its path printed) when a
// test failed.

import { execFile, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, rmSync, accessSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/** The repository root (this file lives in <root>/tests/node/). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Matches the start-up line of both `serve` and `simulate`. */
const LISTENING_RE = /listening on (https?:\/\/[^\s"'<>,;\x1b]+)/;
/** ANSI colour/style escapes. */
const ANSI_ESCAPE_RE = /\x1b\[[0-9;?]*[A-Za-z]/g;

const STARTUP_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const ADMIN_TIMEOUT_MS = 30_000;
/** Lines of output kept in memory per process (for failure reports). */
const TAIL_LINES = 2000;

/** The upstream key handed to the gateway; the simulator does not check it. */
const UPSTREAM_API_KEY = 'test-key';

/** Every child still running, so the exit handler can kill it. */
const LIVE = new Set();
process.on('exit', () => {
  for (const child of LIVE) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => process.exit(128 + (signal === 'SIGINT' ? 2 : 15)));
}

/** Locates the vectorway executable (see the header for the search order). */
export function resolveBinary() {
  const explicit = process.env.VECTORWAY_BIN;
  const candidates = explicit
    ? [isAbsolute(explicit) ? explicit : join(REPO_ROOT, explicit)]
    : [join(REPO_ROOT, 'target/release/vectorway'), join(REPO_ROOT, 'target/debug/vectorway')];
  for (const path of candidates) {
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // try the next one
    }
  }
  throw new Error(
    `vectorway binary not found (tried: ${candidates.join(', ')}); build it with ` +
      '`cargo build --release` or point VECTORWAY_BIN at it',
  );
}

/** The environment for a vectorway child: ours minus VECTORWAY_* and GEMINI_API_KEY. */
function childEnv(extra = {}) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('VECTORWAY_') && key !== 'GEMINI_API_KEY') env[key] = value;
  }
  env.NO_COLOR = '1';
  if (process.env.VECTORWAY_TEST_LOG) env.VECTORWAY_LOG = process.env.VECTORWAY_TEST_LOG;
  return { ...env, ...extra };
}

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** Resolves with `promise`'s value, or with `'timeout'` after `ms` (the timer never outlives it). */
async function within(promise, ms) {
  let timer;
  const timeout = new Promise((done) => {
    timer = setTimeout(() => done('timeout'), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A child process whose output is drained line by line into a log file and a bounded tail. */
class ManagedProcess {
  constructor(name, argv, env, logPath) {
    this.name = name;
    this.argv = argv;
    this.logPath = logPath;
    this.url = null;
    this.lines = [];
    this.log = createWriteStream(logPath, { flags: 'a' });
    this.log.write(`$ ${argv.join(' ')}\n`);
    this.child = spawn(argv[0], argv.slice(1), {
      cwd: REPO_ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    LIVE.add(this.child);
    this.exited = new Promise((done) => {
      this.child.once('exit', (code, signal) => {
        LIVE.delete(this.child);
        this.status = signal ?? code;
        done();
      });
    });
    this.spawnError = null;
    this.child.once('error', (err) => {
      this.spawnError = err;
    });
    this.drained = Promise.all(
      [
        [this.child.stdout, 'stdout'],
        [this.child.stderr, 'stderr'],
      ].map(([stream, tag]) => this.drain(stream, tag)),
    );
  }

  get pid() {
    return this.child.pid;
  }

  get running() {
    return this.child.exitCode === null && this.child.signalCode === null && !this.spawnError;
  }

  async drain(stream, tag) {
    for await (const raw of createInterface({ input: stream, crlfDelay: Infinity })) {
      const line = raw.replace(ANSI_ESCAPE_RE, '');
      this.lines.push(`[${tag}] ${line}`);
      if (this.lines.length > TAIL_LINES) this.lines.shift();
      this.log.write(`[${tag}] ${line}\n`);
      if (this.url === null) {
        const match = LISTENING_RE.exec(line);
        if (match) this.url = match[1].replace(/[/.]+$/, '');
      }
    }
  }

  tail(n = 60) {
    return this.lines.slice(-n).join('\n');
  }

  describeFailure(what) {
    const state = this.running ? 'still running' : `exited with status ${this.status ?? '?'}`;
    const spawnError = this.spawnError ? ` (spawn error: ${this.spawnError.message})` : '';
    return (
      `${this.name}: ${what} (${state})${spawnError}; command: ${this.argv.join(' ')}\n` +
      `full log: ${this.logPath}\n--- last output ---\n${this.tail()}`
    );
  }

  /** Resolves with the `listening on` URL; rejects if the process dies or stays silent. */
  async waitForUrl(timeoutMs = STARTUP_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    while (this.url === null) {
      if (!this.running) {
        await within(this.drained, 200);
        if (this.url !== null) break;
        throw new Error(this.describeFailure('exited during start-up'));
      }
      if (Date.now() > deadline) {
        throw new Error(this.describeFailure(`no 'listening on' line within ${timeoutMs / 1000}s`));
      }
      await sleep(20);
    }
    return this.url;
  }

  /** SIGTERM, wait up to STOP_TIMEOUT_MS, then SIGKILL. Safe to call more than once. */
  async stop() {
    if (this.running) {
      this.child.kill('SIGTERM');
      if ((await within(this.exited, STOP_TIMEOUT_MS)) === 'timeout') {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    await within(this.drained, 2000);
    if (!this.log.closed && !this.log.destroyed) {
      await new Promise((done) => this.log.end(`--- exited with status ${this.status}\n`, done));
    }
  }
}

/** The JSON object in `text`: the whole output, else the last line that is one. */
function parseJsonObject(text) {
  const candidates = [text.trim(), ...text.split('\n').reverse().map((l) => l.trim())];
  for (const candidate of candidates) {
    if (!candidate.startsWith('{')) continue;
    try {
      const value = JSON.parse(candidate);
      if (value && typeof value === 'object' && !Array.isArray(value)) return value;
    } catch {
      // not JSON: try the next candidate
    }
  }
  return null;
}

/** A running simulator + gateway pair, with helpers to administer both. */
export class Stack {
  /** `options.env`: extra environment for the gateway (e.g. `VECTORWAY_SERVER__ADMIN_SECRET`). */
  constructor(options = {}) {
    this.extraEnv = options.env ?? {};
    this.binary = resolveBinary();
    this.dir = mkdtempSync(join(tmpdir(), 'vectorway-node-'));
    this.dataDir = join(this.dir, 'data');
    this.processes = [];
    this.failed = false;
    this.url = null;
    this.simUrl = null;
    this.env = null;
  }

  /** Starts both processes; on any failure stops what was started and rethrows. */
  async start() {
    try {
      const simulator = this.spawn('simulator', ['simulate', '--listen', '127.0.0.1:0'], childEnv());
      this.simUrl = await simulator.waitForUrl();
      this.env = childEnv({
        VECTORWAY_SERVER__LISTEN: '127.0.0.1:0',
        VECTORWAY_STORE__DATA_DIR: this.dataDir,
        VECTORWAY_UPSTREAM__BASE_URL: this.simUrl,
        VECTORWAY_X402__FACILITATOR_URL: `${this.simUrl}/facilitator`,
        // Every test calls from 127.0.0.1; the per-IP limit on callerless requests (sign-in,
        // x402, MCP) is tested in tests/it/exhaustion.rs, not tripped here.
        VECTORWAY_LIMITS__IP_PER_MIN: '100000000',
        VECTORWAY_LIMITS__IP_BURST: '100000000',
        GEMINI_API_KEY: UPSTREAM_API_KEY,
        ...this.extraEnv,
      });
      this.gateway = this.spawn('gateway', ['serve'], this.env);
      this.url = await this.waitForGateway(this.gateway);
      return this;
    } catch (err) {
      this.failed = true;
      await this.stop();
      throw err;
    }
  }

  spawn(name, args, env) {
    const proc = new ManagedProcess(name, [this.binary, ...args], env, join(this.dir, `${name}.log`));
    this.processes.push(proc);
    return proc;
  }

  /** Waits for the URL, `server.json` and a 200 from `/health`; returns the base URL. */
  async waitForGateway(proc) {
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    const url = await proc.waitForUrl(STARTUP_TIMEOUT_MS);
    const serverJson = join(this.dataDir, 'server.json');
    let problem = 'not polled yet';
    for (;;) {
      if (!proc.running) throw new Error(proc.describeFailure('exited during start-up'));
      if (!existsSync(serverJson)) {
        problem = `${serverJson} does not exist yet`;
      } else {
        try {
          const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
          const text = await res.text();
          if (res.status === 200) return url;
          problem = `GET /health returned ${res.status}: ${text}`;
        } catch (err) {
          problem = `GET /health failed: ${err.message}`;
        }
      }
      if (Date.now() > deadline) {
        throw new Error(proc.describeFailure(`not ready within ${STARTUP_TIMEOUT_MS / 1000}s: ${problem}`));
      }
      await sleep(50);
    }
  }

  /** Runs `vectorway admin <sub> --data-dir <dir> <args...>`; resolves with its JSON output. */
  async admin(sub, ...args) {
    const argv = ['admin', sub, '--data-dir', this.dataDir, ...args];
    const shown = `\`vectorway ${argv.join(' ')}\``;
    let out;
    try {
      out = await promisify(execFile)(this.binary, argv, {
        cwd: REPO_ROOT,
        env: this.env,
        timeout: ADMIN_TIMEOUT_MS,
      });
    } catch (err) {
      throw new Error(`${shown} failed: ${err.message}\nstdout:\n${err.stdout}\nstderr:\n${err.stderr}`);
    }
    const parsed = parseJsonObject(out.stdout);
    if (parsed === null) {
      throw new Error(`${shown} printed no JSON object\nstdout:\n${out.stdout}\nstderr:\n${out.stderr}`);
    }
    return parsed;
  }

  /** Optionally funds `wallet` with `credits`, then creates an API key named `name`. */
  async provision(wallet, credits, name) {
    if (credits !== null) await this.admin('grant', '--wallet', wallet, '--credits', String(credits));
    const key = await this.admin('create-key', '--wallet', wallet, '--name', name);
    if (typeof key.api_key !== 'string' || typeof key.key_id !== 'string') {
      throw new Error(`admin create-key output lacks api_key/key_id: ${JSON.stringify(key)}`);
    }
    return { wallet, apiKey: key.api_key, keyId: key.key_id };
  }

  /** GET on the simulator; resolves with the JSON body (asserting 200). */
  async simGet(path) {
    const res = await fetch(`${this.simUrl}${path}`);
    const text = await res.text();
    if (res.status !== 200) throw new Error(`simulator GET ${path}: ${res.status} ${text}`);
    return JSON.parse(text);
  }

  /** The address's atomic-USDC balance at the simulated facilitator. */
  async usdcBalance(address) {
    const body = await this.simGet(`/facilitator/_balance?address=${encodeURIComponent(address)}`);
    return BigInt(body.balance);
  }

  /** Sets the address's atomic-USDC balance at the simulated facilitator. */
  async setUsdcBalance(address, amount) {
    const res = await fetch(`${this.simUrl}/facilitator/_balance`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ address, amount }),
    });
    if (res.status !== 200) throw new Error(`POST /facilitator/_balance: ${res.status} ${await res.text()}`);
  }

  /** The facilitator's `{verify, settle, settled, refused, supported}` call counters. */
  facilitatorStats() {
    return this.simGet('/facilitator/_stats');
  }

  /** The recent output of both processes, for a failure report. */
  report() {
    return this.processes
      .map((p) => `--- ${p.name} (last 60 lines; full log: ${p.logPath}) ---\n${p.tail()}`)
      .join('\n');
  }

  /** Stops every process; removes the temp directory unless something failed. */
  async stop() {
    await Promise.all(this.processes.map((p) => p.stop()));
    if (this.failed || process.env.VECTORWAY_TEST_KEEP) {
      process.stderr.write(`vectorway test logs kept in ${this.dir}\n`);
    } else {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

/**
 * Registers the gateway fixture for the calling test file and returns `{ stack, it }`:
 * `stack()` is the running Stack (inside tests), `it(name, fn)` declares a test that gets the
 * stack and, when it fails, reports the children's recent output and keeps their logs.
 */
export function useGateway() {
  let current = null;
  before(async () => {
    current = await new Stack().start();
  });
  after(async () => {
    await current?.stop();
  });
  const it = (name, fn) =>
    test(name, async (t) => {
      try {
        await fn(current, t);
      } catch (err) {
        if (current) {
          current.failed = true;
          t.diagnostic(current.report());
        }
        throw err;
      }
    });
  return { stack: () => current, it };
}
