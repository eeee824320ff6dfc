// Helpers the console's browser tests share: waiting for a condition with a deadline, axe-core
// with no serious violations, the 360 px check, and switching the wallet view's tabs.

import assert from 'node:assert/strict';

import { axeViolations, horizontalOverflow } from './harness.js';

export async function until(what, f, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function noSeriousAxe(page, view) {
  const v = await axeViolations(page);
  assert.deepEqual(v, [], `axe on ${view}: ${JSON.stringify(v, null, 1)}`);
}

/** At 360 px the page itself never scrolls sideways (tables scroll inside their wrapper). */
export async function fitsPhone(page, view) {
  await page.setViewportSize({ width: 360, height: 780 });
  await page.waitForTimeout(150);
  const o = await horizontalOverflow(page);
  assert.ok(o.scrollWidth <= o.viewport, `${view}: page scrolls sideways at 360 px: ${JSON.stringify(o)}`);
  assert.deepEqual(o.wide, [], `${view}: elements wider than 360 px`);
  await page.setViewportSize({ width: 1200, height: 900 });
}

export async function tab(page, name) {
  await page.click(`[data-tab="${name}"]`);
  await page.waitForSelector(`#tab-${name}:not([hidden])`);
}
