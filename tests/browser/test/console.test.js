// The web console in Debian's chromium against the real binary: SIWE sign-in with an injected
// wallet, balance after a grant, keys (secret shown once), chat calls in the chart and the usage
// table, a memory deleted, the operator's live panel, wallet isolation, 360 px, axe-core.

import assert from 'node:assert/strict';
import { Wallet } from 'ethers';

import { fitsPhone, noSeriousAxe, tab, until } from '../console.js';
import { injectWallet, screenshot, useBrowser } from '../harness.js';

const { it } = useBrowser();

/** State the tests of this file share: wallet A signs in first. */
const shared = {};

async function admin(env, method, path, body) {
  const res = await fetch(`${env.url}${path}`, {
    method,
    headers: { 'x-admin-secret': env.adminSecret, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

async function chat(env, key, content, extra = {}) {
  const res = await fetch(`${env.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'x-api-key': key, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gemini-2.5-flash', max_tokens: 16, messages: [{ role: 'user', content }], ...extra }),
  });
  return { status: res.status, body: await res.json() };
}

it('a wallet signs in with SIWE, manages keys, sees its calls charted and deletes a memory', async (env) => {
  const wallet = Wallet.createRandom();
  shared.a = wallet.address;
  const page = await env.page({ viewport: { width: 1200, height: 900 }, permissions: ['clipboard-read', 'clipboard-write'] });
  page.on('dialog', (d) => d.accept());
  await injectWallet(page, wallet);
  await page.goto(`${env.url}/console`);
  await page.waitForSelector('#signin:not([hidden])');
  await noSeriousAxe(page, 'sign-in');
  await screenshot(page, 'console-signin');
  await fitsPhone(page, 'sign-in');

  // An operator grant, then the wallet's own sign-in shows it.
  assert.equal((await admin(env, 'POST', '/admin/grant', { wallet: wallet.address, credits: 5_000_000 })).status, 200);
  await page.click('#siwe');
  await page.waitForSelector('#wallet:not([hidden])');
  await page.waitForFunction(() => document.getElementById('balance').textContent === '5,000,000');
  assert.deepEqual(page.walletCalls, ['eth_requestAccounts', 'eth_chainId', 'personal_sign']);
  assert.match(await page.textContent('#who'), new RegExp(wallet.address));
  // The session is in this tab's memory and sessionStorage; no cookie was set.
  assert.deepEqual(await page.context().cookies(), []);

  // A key: the secret is shown once, copyable, and gone when dismissed.
  await tab(page, 'keys');
  await page.fill('#key-name', 'browser-agent');
  await page.click('#key-create button[type=submit]');
  await page.waitForSelector('#new-key:not([hidden])');
  const secret = (await page.textContent('#new-key-value')).trim();
  assert.match(secret, /^vw_[A-Za-z0-9]+_/);
  await page.click('#copy-key');
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  await screenshot(page, 'console-key-created');
  await page.click('#hide-key');
  assert.equal(await page.isHidden('#new-key'), true);
  assert.ok(!(await page.content()).includes(secret), 'the secret is not on the page any more');
  await page.waitForSelector('#keys-table tr:has-text("browser-agent")');
  const keyId = secret.split('_')[1];
  shared.aKeyId = keyId;
  await noSeriousAxe(page, 'keys');
  await fitsPhone(page, 'keys');

  // Calls with that key appear in the chart, the per-key split and the usage table.
  for (const text of ['hello one', 'hello two']) assert.equal((await chat(env, secret, text)).status, 200);
  const remember = await chat(env, secret, 'Remember: the launch code word is pelican.', {
    memory_write: true,
    memory_namespace: 'notes',
  });
  assert.equal(remember.status, 200);
  await tab(page, 'overview');
  await until('three calls in the chart', async () => {
    await page.click('#chart-form button[type=submit]');
    await page.waitForTimeout(200);
    return (await page.getAttribute('#chart', 'data-calls')) === '3';
  });
  assert.ok(await page.$('#chart canvas'), 'uPlot drew a canvas');
  await page.waitForSelector('#split-table tr:has-text("gemini-2.5-flash") >> td:nth-child(2):text-is("3")');
  await page.selectOption('#split', 'key');
  await page.click('#chart-form button[type=submit]');
  await page.waitForSelector(`#split-table tr:has-text("browser-agent (${keyId})") >> td:nth-child(2):text-is("3")`);
  await page.waitForFunction(() => document.getElementById('balance').textContent !== '5,000,000');
  await noSeriousAxe(page, 'overview');
  await screenshot(page, 'console-overview');
  await fitsPhone(page, 'overview');

  await tab(page, 'usage');
  await page.selectOption('#usage-filter', '/v1/chat/completions');
  await page.click('#usage-form button[type=submit]');
  await page.waitForFunction(
    (id) => [...document.querySelectorAll('#usage-table tbody tr')].filter((r) => r.textContent.includes(id)).length === 3,
    keyId,
  );
  await noSeriousAxe(page, 'usage');
  await screenshot(page, 'console-usage');
  await fitsPhone(page, 'usage');

  await tab(page, 'ledger');
  await page.waitForSelector('#ledger-table tr:has-text("grant")');
  await noSeriousAxe(page, 'ledger');
  await screenshot(page, 'console-ledger');
  await fitsPhone(page, 'ledger');

  // The memory the third call wrote, with the wallet's session (no key pasted): its namespace is
  // listed with one record, opening it lists the memory, a search finds it, Delete removes it.
  const search = async () => {
    const res = await fetch(`${env.url}/v1/memory?q=pelican&namespace=notes`, { headers: { 'x-api-key': secret } });
    return (await res.json()).matches ?? [];
  };
  const [memory] = await until('the memory write', async () => {
    const m = await search();
    return m.length ? m : null;
  });
  await tab(page, 'memory');
  await page.waitForSelector('#ns-table tr[data-namespace="notes"] >> td:nth-child(2):text-is("1")');
  await page.click('#ns-table tr[data-namespace="notes"] button');
  await page.waitForSelector(`#memory-table [data-memory="${memory.id}"]`);
  assert.equal(await page.inputValue('#memory-ns'), 'notes');
  assert.match(await page.textContent('#memory-caption'), /notes, newest first/);
  await page.fill('#memory-q', 'pelican');
  await page.click('#memory-form button[type=submit]');
  await page.waitForSelector('#memory-caption:has-text("best first")');
  await page.waitForSelector(`#memory-table [data-memory="${memory.id}"]`);
  await noSeriousAxe(page, 'memory');
  await screenshot(page, 'console-memory');
  await fitsPhone(page, 'memory');
  await page.click(`[data-memory="${memory.id}"] button`);
  await page.waitForSelector(`[data-memory="${memory.id}"]`, { state: 'detached' });
  await page.waitForSelector('#ns-table tr[data-namespace="notes"]', { state: 'detached' });
  assert.ok(!(await search()).some((m) => m.id === memory.id), 'the memory is gone');

  // Revoke: the key stops working at once.
  await tab(page, 'keys');
  await page.click(`#keys-table tr:has-text("browser-agent") button`);
  await page.waitForSelector('#keys-table tr:has-text("browser-agent")', { state: 'detached' });
  assert.equal((await chat(env, secret, 'after revoke')).status, 401);
  assert.deepEqual(page.problems, []);
});

it('the operator sees live counters, top wallets, health and a redacted config, and grants credits', async (env) => {
  const page = await env.page({ viewport: { width: 1200, height: 900 } });
  await page.goto(`${env.url}/console`);
  await page.fill('#admin-input', env.adminSecret);
  await page.click('#admin-form button[type=submit]');
  await page.waitForSelector('#ops:not([hidden])');
  await page.waitForSelector('#live[data-updated]');
  const first = await page.getAttribute('#live', 'data-updated');
  const total = async () => Number((await page.textContent('#req-total')).replace(/,/g, ''));
  const before = await total();
  for (let i = 0; i < 6; i += 1) await fetch(`${env.url}/v1/models`);
  // The panel polls on its own: the counters move without a reload.
  await until('the live panel to update', async () => (await page.getAttribute('#live', 'data-updated')) !== first && (await total()) >= before + 6);
  assert.match(await page.textContent('#rps'), /^\d+\.\d\d$/);
  assert.match(await page.textContent('#p50'), /ms$/);
  assert.match(await page.textContent('#streams'), /^\d+$/);
  if (shared.a) await page.waitForSelector(`#top-table tr:has-text("${shared.a}")`);
  await page.waitForSelector('#health dd');
  const config = await page.textContent('#config');
  assert.match(config, /\[redacted\]/);
  assert.ok(!config.includes(env.adminSecret), 'the admin secret is not shown');

  const target = Wallet.createRandom().address;
  await page.fill('#grant-wallet', target);
  await page.fill('#grant-credits', '1234');
  await page.click('#grant-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Granted 1,234'));
  assert.equal((await admin(env, 'GET', `/admin/balance?wallet=${target}`)).body.credits, 1234);
  await noSeriousAxe(page, 'operator');
  await screenshot(page, 'console-operator');
  await fitsPhone(page, 'operator');
  assert.deepEqual(page.problems, []);
});

it('another wallet sees none of the first wallet\'s data', async (env) => {
  assert.ok(shared.a, 'runs after the first test');
  const other = Wallet.createRandom();
  // In the dark theme, which axe checks too.
  const page = await env.page({ viewport: { width: 1200, height: 900 }, colorScheme: 'dark' });
  await injectWallet(page, other);
  await page.goto(`${env.url}/console`);
  await page.click('#siwe');
  await page.waitForSelector('#wallet:not([hidden])');
  await page.waitForFunction(() => document.getElementById('balance').textContent === '0');
  await page.waitForSelector('#split-table td:has-text("No metered calls")');
  assert.equal(await page.getAttribute('#chart', 'data-calls'), '0');
  await tab(page, 'usage');
  await page.waitForSelector('#usage-table tbody tr');
  await tab(page, 'keys');
  await page.waitForSelector('#keys-table td:has-text("No active keys")');
  await tab(page, 'memory');
  await page.waitForSelector('#ns-table td:has-text("No memories yet")');
  const html = await page.content();
  assert.ok(!html.includes(shared.a) && !html.includes(shared.aKeyId), 'nothing of wallet A is shown');
  // Asking for A's summary with B's session is refused.
  const status = await page.evaluate(async (a) => {
    const s = JSON.parse(sessionStorage.getItem('vw-console-session'));
    const res = await fetch(`/v1/usage/summary?wallet=${a}`, { headers: { authorization: `Bearer ${s.token}` } });
    return res.status;
  }, shared.a);
  assert.equal(status, 403);
  await tab(page, 'overview');
  await noSeriousAxe(page, 'overview (dark)');
  await screenshot(page, 'console-other-wallet-dark');
  assert.deepEqual(page.problems.filter((p) => !p.includes('/v1/usage/summary?wallet=')), []);
});
