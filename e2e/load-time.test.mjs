// Time to a usable message box on Slow 4G, first and repeat visit (see
// load-time.mjs for the profile and what "usable" means), with the bounds
// loosened to twice the goals (2.5 s and 1.0 s) for a busy CI machine; the
// real figures, and the command, are in docs/benchmarks.md. And the service
// worker (web/sw.js): a repeat visit fetches no file again, only
// revalidates index.html, and a new build reaches a returning user whole,
// one visit after it is deployed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connected, join, launchBrowser, openPage, root, startServer } from './harness.mjs';
import { measure, seed } from './load-time.mjs';

const GOAL_FIRST_MS = 2_500;
const GOAL_REPEAT_MS = 1_000;
const LOOSENESS = 2;

/** GET lines of the server's access log from `mark` on. */
const gets = (server, mark) => server.entries.slice(mark)
  .filter((e) => e.message === 'request' && (e.method ?? e.fields?.method) === 'GET')
  .map((e) => ({ path: e.path ?? e.fields?.path, status: e.status ?? e.fields?.status }));

/** Polls `condition` every 20 ms until it returns a truthy value. */
async function until(condition, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('on Slow 4G a returning user can type within twice the goals; a repeat visit only revalidates index.html', async () => {
  const server = await startServer(undefined, {
    args: ['--rate-limit', '0', '--log-format', 'json'],
    env: { RUST_LOG: 'info' },
    captureLogs: true,
  });
  const browser = await launchBrowser();
  try {
    const lastText = await seed(server.url);
    let mark = 0;
    const repeatGets = [];
    const result = await measure(browser, server.url, lastText, {
      runs: 3,
      repeat: {
        before: () => { mark = server.entries.length; },
        after: async (load) => {
          // The page asked the worker, not the network, for every file.
          const fetched = load.requests.filter((r) => r.method === 'GET' && !(r.fromCache && r.bytes === 0));
          assert.deepEqual(fetched, [], 'a repeat visit takes every file from the cache');
          // The worker revalidates index.html behind the page (an ETag, so a
          // 304), and fetches nothing else.
          const seen = await until(() => {
            const lines = gets(server, mark);
            return lines.some((l) => l.path === '/') && lines;
          }, 'the service worker to revalidate index.html');
          repeatGets.push(seen);
        },
      },
    });
    for (const seen of repeatGets) assert.deepEqual(seen, [{ path: '/', status: 304 }]);
    console.log(`first visit ${result.first.runsMs.join(', ')} ms; repeat visit ${result.repeat.runsMs.join(', ')} ms`);
    assert.ok(result.first.medianMs <= GOAL_FIRST_MS * LOOSENESS,
      `first visit usable after ${result.first.medianMs} ms (median of ${result.first.runsMs.join(', ')})`);
    assert.ok(result.repeat.medianMs <= GOAL_REPEAT_MS * LOOSENESS,
      `repeat visit usable after ${result.repeat.medianMs} ms (median of ${result.repeat.runsMs.join(', ')})`);
  } finally {
    await browser.close();
    await server.stop();
  }
});

/**
 * A copy of dist/ marked as build `label`, with the stylesheet under
 * another hashed name when `renameCss` (its content, and so its integrity
 * hash, unchanged).
 */
function build(label, renameCss) {
  const dir = mkdtempSync(path.join(os.tmpdir(), `chat-build-${label}-`));
  cpSync(path.join(root, 'dist'), dir, { recursive: true });
  const css = readdirSync(dir).find((f) => /^style-[0-9a-f]{8,16}\.css$/.test(f));
  let html = readFileSync(path.join(dir, 'index.html'), 'utf8')
    .replace('<head>', `<head><meta name="build" content="${label}">`);
  let cssName = css;
  if (renameCss) {
    // 15 digits: trunk drops a hash's leading zero, which the server and
    // the service worker must still take for a content-named file.
    cssName = `style-${'123456789abcdef'}.css`;
    renameSync(path.join(dir, css), path.join(dir, cssName));
    html = html.replaceAll(css, cssName);
  }
  writeFileSync(path.join(dir, 'index.html'), html);
  return { dir, css: cssName };
}

test('a new build reaches a returning user whole on the visit after it is deployed, and the old files leave the cache', async () => {
  const a = build('a', false);
  const b = build('b', true);
  const browser = await launchBrowser();
  let server = await startServer(undefined, { env: { CHAT_WEB_DIR: a.dir } });
  const { port } = server;
  try {
    const page = await openPage(browser, server.url);
    await join(page, 'Deployed');
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
    const buildOf = () => page.evaluate(() => document.querySelector('meta[name="build"]')?.content);
    const cached = () => page.evaluate(async () => {
      const cache = await caches.open('chat-shell-v1');
      const index = await cache.match('./');
      return {
        build: index && /<meta name="build" content="(\w+)">/.exec(await index.text())?.[1],
        files: (await cache.keys()).map((r) => new URL(r.url).pathname.slice(1)).filter(Boolean).sort(),
      };
    });
    assert.equal(await buildOf(), 'a');
    await page.waitForFunction(async () => (await (await caches.open('chat-shell-v1')).keys()).length >= 4);
    assert.equal((await cached()).build, 'a');

    // Build b is deployed. The next visit still starts build a, at once,
    // and fetches b behind it.
    await server.stop();
    server = await startServer(port, { env: { CHAT_WEB_DIR: b.dir } });
    await page.reload();
    assert.equal(await buildOf(), 'a');
    await connected(page);
    await page.waitForFunction(async () => {
      const index = await (await caches.open('chat-shell-v1')).match('./');
      return index !== undefined && (await index.text()).includes('content="b"');
    });
    // The visit after that is build b, from the cache, with all its files.
    await page.reload();
    assert.equal(await buildOf(), 'b');
    await connected(page);
    const now = await cached();
    assert.ok(now.files.includes(b.css), `b's stylesheet cached: ${now.files}`);
    assert.ok(!now.files.includes(a.css), `a's stylesheet gone from the cache: ${now.files}`);
    // b's stylesheet, served by the worker, passed its integrity check.
    assert.ok(await page.evaluate((css) => [...document.styleSheets]
      .some((sheet) => sheet.href?.endsWith(css) && sheet.cssRules.length > 0), b.css));
    assert.deepEqual(page.errors, []);
  } finally {
    await browser.close();
    await server.stop();
    rmSync(a.dir, { recursive: true, force: true });
    rmSync(b.dir, { recursive: true, force: true });
  }
});
