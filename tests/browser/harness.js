// Browser test harness: the real vectorway binary (gateway + Gemini simulator) and Debian's
// chromium, headless, driven by playwright-core.
//
// `useBrowser()` registers before/after hooks in the calling test file that:
//
// 1. start the simulator and the gateway exactly as the Node client suite does (tests/node/
//    harness.js `Stack`: ephemeral 127.0.0.1 ports, a fresh temporary data directory, the
//    binary from $VECTORWAY_BIN, else target/release, else target/debug), with a random admin
//    secret (`env.adminSecret`) passed as VECTORWAY_SERVER__ADMIN_SECRET;
// 2. launch chromium from $CHROMIUM_PATH, else /usr/bin/chromium (never a downloaded browser
//    build), headless and with `--no-sandbox` (the tests run as root);
// 3. close the browser and stop both processes at the end, also when start-up failed.
//
// Helpers for the tests: `env.page(options)` opens a page in a fresh context (viewport,
// colorScheme, permissions) and records its console errors, page errors and CSP violations;
// `injectWallet(page, wallet)` installs an EIP-1193 `window.ethereum` backed by an ethers Wallet
// in Node; `axeViolations(page)` runs axe-core in the page and returns the serious and critical
// violations; `screenshot(page, name)` writes a full-page PNG to the run's artifact directory
// ($VECTORWAY_ARTIFACTS, default <repo>/target/browser-artifacts; never committed).

import { randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, join } from 'node:path';
import { after, before, test } from 'node:test';

import { getBytes, isHexString, toBeHex } from 'ethers';
import { chromium } from 'playwright-core';

import { REPO_ROOT, Stack } from '../node/harness.js';

export { REPO_ROOT };

const require = createRequire(import.meta.url);

/** Where screenshots go; created on first use. */
export const ARTIFACTS = (() => {
  const dir = process.env.VECTORWAY_ARTIFACTS;
  if (!dir) return join(REPO_ROOT, 'target', 'browser-artifacts');
  return isAbsolute(dir) ? dir : join(REPO_ROOT, dir);
})();

/** The chromium executable: $CHROMIUM_PATH or Debian's /usr/bin/chromium. */
export function chromiumPath() {
  const path = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(
      `chromium not found at ${path}: install Debian's package (apt-get install -y chromium) ` +
        'or point CHROMIUM_PATH at a chromium binary',
    );
  }
  return path;
}

/** Launches headless chromium. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
}

/** The running gateway, the browser, and the per-test helpers. */
export class BrowserEnv {
  /** `env`: extra environment for the gateway (a chain's network, another facilitator). */
  constructor(env = {}) {
    this.adminSecret = randomBytes(24).toString('hex');
    this.stack = new Stack({ env: { VECTORWAY_SERVER__ADMIN_SECRET: this.adminSecret, ...env } });
    this.browser = null;
    this.contexts = [];
  }

  async start() {
    await this.stack.start();
    try {
      this.browser = await launchBrowser();
    } catch (err) {
      this.stack.failed = true;
      await this.stack.stop();
      throw err;
    }
    return this;
  }

  /** The gateway's base URL (`http://127.0.0.1:<port>`). */
  get url() {
    return this.stack.url;
  }

  /**
   * Opens a page in a new browser context. `options` are Playwright context options (viewport,
   * colorScheme, permissions, ...). The page's `problems` array collects console errors (CSP
   * violations among them), uncaught page errors, failed requests and 4xx/5xx answers (but the
   * browser's own /favicon.ico), so a test can assert that there were none.
   */
  async page(options = {}) {
    const context = await this.browser.newContext(options);
    this.contexts.push(context);
    const page = await context.newPage();
    page.problems = [];
    page.on('console', (msg) => {
      // A failed load is reported with its URL by the `response` handler below.
      if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) {
        page.problems.push(`console: ${msg.text()}`);
      }
    });
    page.on('response', (res) => {
      // The favicon the browser asks for on its own is not the page's.
      if (res.status() >= 400 && new URL(res.url()).pathname !== '/favicon.ico') {
        page.problems.push(`response: ${res.status()} ${res.url()}`);
      }
    });
    page.on('pageerror', (err) => page.problems.push(`pageerror: ${err.message}`));
    page.on('requestfailed', (req) =>
      page.problems.push(`requestfailed: ${req.url()} ${req.failure()?.errorText ?? ''}`),
    );
    return page;
  }

  async stop() {
    for (const context of this.contexts) await context.close().catch(() => {});
    await this.browser?.close().catch(() => {});
    await this.stack.stop();
  }
}

/**
 * Registers the fixture for the calling test file and returns `{ env, it }`: `env()` is the
 * running BrowserEnv (inside tests); `it(name, fn)` declares a test that gets it and, when it
 * fails, reports the gateway's recent output and keeps its logs. `prepare`, when given, runs
 * first and returns `{ env, stop }`: more gateway environment (a chain started for the file)
 * and what to stop after the gateway.
 */
export function useBrowser({ prepare } = {}) {
  let current = null;
  let prepared = null;
  before(async () => {
    prepared = prepare ? await prepare() : null;
    current = await new BrowserEnv(prepared?.env).start();
  });
  after(async () => {
    await current?.stop();
    await prepared?.stop?.();
  });
  const it = (name, fn) =>
    test(name, async (t) => {
      try {
        await fn(current, t);
      } catch (err) {
        if (current) {
          current.stack.failed = true;
          t.diagnostic(current.stack.report());
        }
        throw err;
      }
    });
  return { env: () => current, it };
}

/** Writes a full-page PNG named `<name>.png` to ARTIFACTS; returns its path. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name.replace(/[^A-Za-z0-9._-]/g, '_')}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

let axeSource = null;

/**
 * Runs axe-core (from npm) in the page and returns its serious and critical violations as
 * `{id, impact, help, nodes: [selector...]}`. The script is evaluated through the DevTools
 * protocol, so the page's CSP (no inline scripts) does not block it and needs no loosening.
 */
export async function axeViolations(page, options = {}) {
  axeSource ??= readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
  await page.evaluate(axeSource);
  const result = await page.evaluate(
    (opts) => globalThis.axe.run(document, opts),
    { resultTypes: ['violations'], ...options },
  );
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => n.target.join(' ')),
    }));
}

/**
 * Installs `window.ethereum` (EIP-1193) in every document the page loads, backed by `wallet`
 * (an ethers Wallet) in Node: `eth_requestAccounts` and `eth_accounts` answer its address,
 * `eth_chainId` the hex chain id (Base, 8453, unless given), `personal_sign` signs with EIP-191
 * (a 0x-hex message is signed as bytes, as wallets do), `eth_signTypedData_v4` signs EIP-712
 * typed data given as its JSON string (an x402 authorization). Other methods reject with
 * EIP-1193 error 4200. `page.walletCalls` lists every method the page called, in order.
 */
export async function injectWallet(page, wallet, { chainId = 8453 } = {}) {
  const address = wallet.address;
  page.walletCalls = [];
  await page.exposeFunction('__vectorwayWalletRequest', async (method, params) => {
    page.walletCalls.push(method);
    switch (method) {
      case 'eth_requestAccounts':
      case 'eth_accounts':
        return { result: [address] };
      case 'eth_chainId':
        return { result: toBeHex(chainId) };
      case 'net_version':
        return { result: String(chainId) };
      case 'personal_sign': {
        const [message, signer] = params ?? [];
        if (typeof signer !== 'string' || signer.toLowerCase() !== address.toLowerCase()) {
          return { error: { code: 4100, message: `personal_sign for ${signer}, not ${address}` } };
        }
        const payload = isHexString(message) ? getBytes(message) : String(message);
        return { result: await wallet.signMessage(payload) };
      }
      case 'eth_signTypedData_v4': {
        const [signer, json] = params ?? [];
        if (typeof signer !== 'string' || signer.toLowerCase() !== address.toLowerCase()) {
          return { error: { code: 4100, message: `eth_signTypedData_v4 for ${signer}, not ${address}` } };
        }
        const { domain, types, message } = JSON.parse(json);
        const { EIP712Domain: _, ...rest } = types;
        return { result: await wallet.signTypedData(domain, rest, message) };
      }
      default:
        return { error: { code: 4200, message: `unsupported method ${method}` } };
    }
  });
  await page.addInitScript(() => {
    const listeners = new Map();
    const provider = {
      isVectorwayTestWallet: true,
      async request({ method, params } = {}) {
        const answer = await globalThis.__vectorwayWalletRequest(method, params ?? []);
        if (answer.error) {
          const err = new Error(answer.error.message);
          err.code = answer.error.code;
          throw err;
        }
        return answer.result;
      },
      on(event, fn) {
        if (!listeners.has(event)) listeners.set(event, new Set());
        listeners.get(event).add(fn);
        return provider;
      },
      removeListener(event, fn) {
        listeners.get(event)?.delete(fn);
        return provider;
      },
    };
    Object.defineProperty(globalThis, 'ethereum', { value: provider, configurable: true });
  });
}

/** Horizontal overflow at the current viewport: the document's and every wider element's. */
export function horizontalOverflow(page) {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const wide = [];
    for (const el of document.querySelectorAll('body *')) {
      // Elements inside a scroll container (a <pre>, a table wrapper) may be wider than the
      // viewport: their container scrolls, the page does not.
      let clipped = false;
      for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
        const style = getComputedStyle(p);
        if (style.overflowX !== 'visible') {
          clipped = true;
          break;
        }
      }
      if (clipped) continue;
      const rect = el.getBoundingClientRect();
      if (rect.width > 0 && (rect.right > width + 0.5 || rect.left < -0.5)) {
        wide.push(`${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''} (${Math.round(rect.left)}..${Math.round(rect.right)})`);
      }
    }
    return {
      viewport: width,
      scrollWidth: document.documentElement.scrollWidth,
      wide,
    };
  });
}
