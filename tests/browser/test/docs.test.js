// /docs in Debian's chromium: the rendered reference keeps every heading of /docs.md, fits a 360 px phone, scrolls code inside <pre>, copies code, holds its CSP, has a dark theme and passes axe-core.

import assert from 'node:assert/strict';

import { axeViolations, horizontalOverflow, screenshot, useBrowser } from '../harness.js';

const { it } = useBrowser();

const PHONE = { viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
const DESKTOP = { viewport: { width: 1280, height: 900 } };

/** The headings of a markdown text, outside fenced code: `{level, text}` as a reader sees them. */
function markdownHeadings(md) {
  const out = [];
  let fenced = false;
  for (const line of md.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const m = !fenced && /^(#{1,6}) (.+)$/.exec(line);
    if (m) out.push({ level: m[1].length, text: m[2].replaceAll('`', '').replace(/\s+/g, ' ').trim() });
  }
  return out;
}

/** The number of fenced code blocks in a markdown text. */
const fencedBlocks = (md) => md.split('\n').filter((l) => l.startsWith('```')).length / 2;

async function openDocs(env, options) {
  const page = await env.page(options);
  const res = await page.goto(`${env.url}/docs`, { waitUntil: 'load' });
  assert.equal(res.status(), 200);
  return { page, res };
}

it('every heading of /docs.md is a heading of /docs, in order, with an id and a contents entry', async (env) => {
  const md = await (await fetch(`${env.url}/docs.md`)).text();
  const expected = markdownHeadings(md);
  assert.ok(expected.length > 40, `${expected.length} headings in /docs.md`);

  const { page } = await openDocs(env, DESKTOP);
  const rendered = await page.$$eval('main :is(h1, h2, h3, h4, h5, h6)', (hs) =>
    hs.map((h) => ({
      level: Number(h.tagName.slice(1)),
      text: h.textContent.replace(/\s+/g, ' ').trim(),
      id: h.id,
    })),
  );
  assert.deepEqual(
    rendered.map(({ level, text }) => ({ level, text })),
    expected,
  );
  const ids = rendered.map((h) => h.id);
  assert.ok(ids.every((id) => /^[a-z0-9-]+$/.test(id)), 'every heading has an id');
  assert.equal(new Set(ids).size, ids.length, 'ids are unique');

  // The table of contents links every ## and ### heading, and a link lands on its heading.
  const toc = await page.$$eval('nav.toc a', (as) => as.map((a) => a.getAttribute('href')));
  const sections = rendered.filter((h) => h.level === 2 || h.level === 3).map((h) => `#${h.id}`);
  assert.deepEqual(toc, sections);
  assert.equal(await page.$eval('nav.toc details', (d) => d.open), true, 'contents open on a wide screen');
  const target = sections[Math.floor(sections.length / 2)];
  await page.click(`nav.toc a[href="${target}"]`);
  assert.equal(new URL(page.url()).hash, target);
  const top = await page.$eval(target, (h) => h.getBoundingClientRect().top);
  assert.ok(top >= 0 && top < 40, `the heading is scrolled to the top (top ${top})`);
  assert.ok((await page.evaluate(() => window.scrollY)) > 1000);
  assert.deepEqual(page.problems, []);
});

it('at 360 px nothing is wider than the viewport and every code block is a <pre> that scrolls on its own', async (env) => {
  const md = await (await fetch(`${env.url}/docs.md`)).text();
  const { page } = await openDocs(env, PHONE);
  await screenshot(page, 'docs-360-light');

  const overflow = await horizontalOverflow(page);
  assert.equal(overflow.viewport, 360);
  assert.deepEqual(overflow.wide, [], 'elements wider than the viewport');
  assert.ok(overflow.scrollWidth <= overflow.viewport, `page scrollWidth ${overflow.scrollWidth}`);
  assert.equal(await page.$eval('nav.toc details', (d) => d.open), false, 'contents folded on a phone');

  const blocks = await page.$$eval('main .code', (divs) =>
    divs.map((d) => {
      const pre = d.firstElementChild;
      return {
        tag: pre.tagName,
        code: pre.firstElementChild?.tagName,
        overflowX: getComputedStyle(pre).overflowX,
        whiteSpace: getComputedStyle(pre).whiteSpace,
        scrolls: pre.scrollWidth > pre.clientWidth,
        fits: pre.getBoundingClientRect().right <= document.documentElement.clientWidth,
        tabIndex: pre.tabIndex,
      };
    }),
  );
  assert.equal(blocks.length, fencedBlocks(md), 'one block per fenced block of /docs.md');
  assert.equal(await page.$$eval('main code', (cs) => cs.filter((c) => c.closest('pre')).length), blocks.length);
  for (const b of blocks) {
    assert.deepEqual(
      { tag: b.tag, code: b.code, overflowX: b.overflowX, whiteSpace: b.whiteSpace, fits: b.fits, tabIndex: b.tabIndex },
      { tag: 'PRE', code: 'CODE', overflowX: 'auto', whiteSpace: 'pre', fits: true, tabIndex: 0 },
    );
  }
  assert.ok(blocks.filter((b) => b.scrolls).length > 10, 'long curl lines overflow their <pre>');

  // Scrolling a long block moves the block, not the page.
  const moved = await page.evaluate(() => {
    const pre = [...document.querySelectorAll('main pre')].find((p) => p.scrollWidth > p.clientWidth);
    pre.scrollIntoView();
    pre.scrollLeft = 200;
    return { pre: pre.scrollLeft, page: window.scrollX, width: document.documentElement.scrollWidth };
  });
  assert.ok(moved.pre > 0, 'the <pre> scrolled');
  assert.equal(moved.page, 0, 'the page did not scroll sideways');
  assert.ok(moved.width <= 360);
  assert.deepEqual(page.problems, []);
});

it('the copy button puts the code block on the clipboard', async (env) => {
  const { page } = await openDocs(env, { ...DESKTOP, permissions: ['clipboard-read', 'clipboard-write'] });
  const count = await page.$$eval('main .code', (ds) => ds.length);
  assert.equal(await page.$$eval('main .code > button.copy', (bs) => bs.length), count, 'one button per block');

  // A curl block (several lines) and the first block of the page.
  const index = await page.$$eval('main .code pre', (ps) => ps.findIndex((p) => p.textContent.startsWith('curl -X POST')));
  assert.ok(index >= 0);
  for (const i of [index, 0]) {
    const expected = await page.$$eval('main .code pre', (ps, n) => ps[n].textContent, i);
    await page.evaluate(() => navigator.clipboard.writeText('before'));
    const button = page.locator('main .code > button.copy').nth(i);
    await button.click();
    await page.waitForFunction((n) => document.querySelectorAll('main .code > button.copy')[n].textContent === 'Copied', i);
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), expected);
    assert.equal(await page.textContent('#copy-status'), 'Code copied to the clipboard');
  }
  assert.deepEqual(page.problems, []);
});

it('the CSP is sent and enforced: no inline script or style on the page, an injected one is blocked', async (env) => {
  const { page, res } = await openDocs(env, DESKTOP);
  const csp = res.headers()['content-security-policy'];
  assert.ok(csp, 'Content-Security-Policy header');
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /style-src 'self'/);
  assert.doesNotMatch(csp, /unsafe/);
  assert.equal(res.headers()['x-content-type-options'], 'nosniff');

  const inline = await page.evaluate(() => ({
    scripts: [...document.scripts].map((s) => ({ src: s.getAttribute('src'), text: s.textContent })),
    styles: document.querySelectorAll('style').length,
    styleAttrs: document.querySelectorAll('[style]').length,
    handlers: [...document.querySelectorAll('*')].filter((el) => [...el.attributes].some((a) => a.name.startsWith('on'))).length,
    sheets: [...document.styleSheets].map((s) => new URL(s.href).pathname),
  }));
  assert.equal(inline.scripts.length, 1);
  assert.match(inline.scripts[0].src, /^\/assets\/docs\.js\?v=[0-9a-f]+$/);
  assert.equal(inline.scripts[0].text, '');
  assert.deepEqual(
    { styles: inline.styles, styleAttrs: inline.styleAttrs, handlers: inline.handlers, sheets: inline.sheets },
    { styles: 0, styleAttrs: 0, handlers: 0, sheets: ['/assets/docs.css'] },
  );
  assert.deepEqual(page.problems, [], 'the page itself violates nothing');

  // The browser enforces the header: an inline script added to the page does not run.
  const blocked = await page.evaluate(async () => {
    const violations = [];
    document.addEventListener('securitypolicyviolation', (e) => violations.push(e.violatedDirective));
    const s = document.createElement('script');
    s.textContent = 'window.__inlineRan = true;';
    document.body.appendChild(s);
    await new Promise((done) => setTimeout(done, 100));
    return { ran: window.__inlineRan === true, violations };
  });
  assert.equal(blocked.ran, false);
  assert.ok(blocked.violations.some((d) => d.startsWith('script-src')), JSON.stringify(blocked.violations));
});

/** The luminance (0..1) of a computed `rgb(...)` colour. */
function luminance(rgb) {
  const [r, g, b] = rgb.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number);
  return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
}

it('the dark theme applies under prefers-color-scheme: dark; both themes pass axe-core at 360 px and desktop', async (env) => {
  const seen = {};
  for (const colorScheme of ['light', 'dark']) {
    for (const [size, options] of [['360', PHONE], ['desktop', DESKTOP]]) {
      const { page } = await openDocs(env, { ...options, colorScheme });
      const colours = await page.evaluate(() => ({
        body: getComputedStyle(document.body).backgroundColor,
        text: getComputedStyle(document.body).color,
        pre: getComputedStyle(document.querySelector('main pre')).backgroundColor,
      }));
      seen[`${colorScheme}-${size}`] = colours;
      if (colorScheme === 'dark') {
        assert.ok(luminance(colours.body) < 0.2, `dark background: ${colours.body}`);
        assert.ok(luminance(colours.text) > 0.7, `light text: ${colours.text}`);
        assert.ok(luminance(colours.pre) < 0.25, `dark code blocks: ${colours.pre}`);
      } else {
        assert.ok(luminance(colours.body) > 0.9, `light background: ${colours.body}`);
        assert.ok(luminance(colours.text) < 0.3, `dark text: ${colours.text}`);
      }
      if (!(colorScheme === 'light' && size === '360')) await screenshot(page, `docs-${size}-${colorScheme}`);
      const violations = await axeViolations(page);
      assert.deepEqual(violations, [], `axe-core, ${colorScheme} at ${size}`);
      assert.deepEqual(page.problems, []);
    }
  }
  assert.notEqual(seen['light-desktop'].body, seen['dark-desktop'].body);
});
