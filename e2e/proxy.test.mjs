// The chat behind nginx, configured from the shipped deploy/nginx/ files
// (see nginx.mjs): TLS + HTTP/2 at the root of a site and under /chat/ of an
// existing site, with proxy_read_timeout cut to 3 s and 1 s heartbeats.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import http from 'node:http';
import path from 'node:path';
import {
  artifacts, connected, join, launchBrowser, messagesWithText, openPage, say, startServer, twoUsersChat,
} from './harness.mjs';
import { startNginx } from './nginx.mjs';
import { subscribe } from './grpcweb.mjs';

const tls = { ignoreHTTPSErrors: true };
let server;
let nginx;
let browser;

/** Starts (or restarts, on the same port) the chat-server behind nginx. */
async function startChat({ trustProxy = true, heartbeat = 1 } = {}) {
  const port = server?.port;
  await server?.stop();
  server = await startServer(port, {
    args: ['--heartbeat', String(heartbeat), '--log-format', 'json', ...(trustProxy ? ['--trust-proxy'] : [])],
    env: { RUST_LOG: 'info', ...(trustProxy ? {} : { CHAT_TRUST_PROXY: 'false' }) },
    captureLogs: true,
  });
  return server;
}

/** One request with node's https (or http), resolving to { status, headers, body }. */
function request(url, { localAddress, headers = {}, method = 'GET', body } = {}) {
  const target = new URL(url);
  const transport = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = transport.request(target, {
      method, localAddress, headers, rejectUnauthorized: false, agent: false,
    }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => { body += chunk; });
      response.once('end', () => resolve({ status: response.statusCode, headers: response.headers, body }));
      response.once('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`timed out: ${url}`)));
    req.once('error', reject);
    req.end(body);
  });
}

/** A gRPC-Web `Send` whose frame announces (and carries) `bytes` bytes. */
function oversizedSend(bytes) {
  const body = Buffer.alloc(bytes, 0x78);
  body[0] = 0;
  body.writeUInt32BE(bytes - 5, 1);
  return {
    method: 'POST',
    headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1', 'content-length': String(bytes) },
    body,
  };
}

/**
 * Records every data-state the page's connection status takes from now on
 * (the element's attribute changing, or the element being replaced).
 */
async function watchConnectionState(page) {
  await page.evaluate(() => {
    const states = [];
    window.connectionStates = states;
    const record = () => {
      const state = document.querySelector('[data-testid="connection-status"]')
        ?.getAttribute('data-state') ?? 'missing';
      if (state !== states.at(-1)) states.push(state);
    };
    record();
    new MutationObserver(record).observe(document.body, {
      subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'],
    });
  });
  return () => page.evaluate(() => window.connectionStates);
}

async function withTimeout(promise, ms, what) {
  let timer;
  const guard = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms); });
  try { return await Promise.race([promise, guard]); } finally { clearTimeout(timer); }
}

before(async () => {
  await startChat();
  nginx = await startNginx({ upstreamPort: server.port, readTimeout: '3s' });
  browser = await launchBrowser(['--ignore-certificate-errors']);
});

after(async () => {
  await browser?.close();
  await nginx?.stop();
  await server?.stop();
});

test('health checks and redirects answer through nginx', async () => {
  const root = await request(new URL('healthz', nginx.siteUrl));
  assert.equal(root.status, 200);
  assert.equal(root.body, 'ok\n');

  const sub = await request(new URL('healthz', nginx.subUrl));
  assert.equal(sub.status, 200);
  assert.equal(sub.body, 'ok\n');

  const bare = await request(`${nginx.subOrigin}/chat`);
  assert.equal(bare.status, 301);
  assert.equal(new URL(bare.headers.location, `${nginx.subOrigin}/chat`).href, nginx.subUrl);

  // The rest of the existing site is untouched by the chat's locations.
  const other = await request(`${nginx.subOrigin}/`);
  assert.equal(other.status, 200);
  assert.equal(other.body, 'existing site\n');

  // The plain-HTTP server block of chat-site.conf sends everyone to https.
  const plain = await request(new URL('healthz?probe=1', nginx.redirectUrl));
  assert.equal(plain.status, 301);
  assert.equal(plain.headers.location, 'https://127.0.0.1/healthz?probe=1');
});

test('an oversized message gets RESOURCE_EXHAUSTED through nginx, never a 413 or 502', async () => {
  // Up to the shipped 64 KiB, nginx passes it on and the server refuses it
  // (past its 17 KiB); over it, nginx refuses it itself. Repeated: a reset
  // connection (a 502) used to come one time in two.
  const byServer = /bytes encoded/;
  const byNginx = /proxy accepts at most 64 KiB/;
  for (const [bytes, refusedBy] of [
    [32 * 1024, byServer], [64 * 1024 - 64, byServer], [64 * 1024 + 64, byNginx], [1024 * 1024, byNginx],
  ]) {
    for (const base of [nginx.siteUrl, nginx.subUrl]) {
      for (let i = 0; i < 5; i++) {
        const answer = await request(new URL('ChatService/Send', base), oversizedSend(bytes));
        assert.equal(answer.status, 200, `${bytes} bytes to ${base} (${refusedBy}): HTTP ${answer.status}`);
        assert.equal(answer.headers['grpc-status'], '8', `${bytes} bytes to ${base}: ${JSON.stringify(answer.headers)}`);
        assert.match(decodeURIComponent(answer.headers['grpc-message'] ?? ''), refusedBy, `${bytes} bytes`);
      }
    }
  }
  // And the server still serves.
  const health = await request(new URL('healthz', nginx.siteUrl));
  assert.equal(health.status, 200);
});

test('two users chat through nginx at the root of a site', async () => {
  await twoUsersChat(browser, nginx.siteUrl, { prefix: 'proxy-root', contextOptions: tls });
});

test('under /chat/, the app loads and calls the API only below /chat/', async () => {
  // Everything outside /chat/ on this origin belongs to the existing site, so
  // an absolute asset or API path would reach it instead of the chat.
  const context = await browser.newContext(tls);
  const page = await context.newPage();
  const paths = [];
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (url.origin === nginx.subOrigin) paths.push(url.pathname);
  });
  await page.goto(nginx.subUrl);
  let joined = null;
  try {
    await page.getByTestId('name-input').fill('Prefix', { timeout: 10_000 });
    await page.getByTestId('name-submit').click();
    await connected(page, { timeout: 10_000 });
    joined = true;
  } catch (error) {
    joined = error.message.split('\n')[0];
  }
  const outside = [...new Set(paths.filter((p) => !p.startsWith('/chat/')))];
  assert.deepEqual(outside, [], `requests outside /chat/ (absolute paths in the app or its API base): ${outside.join(', ')}`);
  assert.equal(joined, true, 'joined the chat under /chat/');
  assert.ok(paths.some((p) => p.startsWith('/chat/ChatService/')), `API called under /chat/: ${paths.join(', ')}`);
  // HTTP/2 towards the browser, so open tabs do not run out of connections.
  const protocols = await page.evaluate(() => [
    ...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource'),
  ].map((entry) => entry.nextHopProtocol));
  assert.ok(protocols.length > 0 && protocols.every((p) => p === 'h2'), `protocols: ${protocols.join(', ')}`);
  await context.close();
});

test('two users chat through nginx under /chat/ of an existing site', async () => {
  await twoUsersChat(browser, nginx.subUrl, { prefix: 'proxy-subpath', contextOptions: tls, names: ['Ann', 'Ben'] });
});

test('a quiet chat stays connected through nginx past proxy_read_timeout', async (t) => {
  // Heartbeats every 2 s against nginx's 3 s read timeout; the app gives up
  // on a stream after 2.5 heartbeats (5 s) of silence, so a heartbeat late
  // by up to 3 s on a loaded machine is not mistaken for a dead stream.
  const heartbeat = 2;
  await startChat({ heartbeat });
  const quiet = await openPage(browser, nginx.siteUrl, undefined, tls);
  await join(quiet, 'Quiet');
  const states = await watchConnectionState(quiet);
  // Alongside, a raw gRPC-Web stream through the sub-path site, to see the
  // heartbeats themselves make it through nginx.
  const raw = subscribe(nginx.subUrl, 'QuietRaw');
  await withTimeout(raw.ready, 10_000, 'Ready through /chat/');
  const beats = [];
  raw.on('event', (event) => { if (event.type === 'heartbeat') beats.push(event); });
  let rawEnd = null;
  raw.once('end', (info) => { rawEnd = info; });

  // Over twice the 3 s proxy_read_timeout of silence: only heartbeats pass.
  const quietMs = 7_000;
  await quiet.waitForTimeout(quietMs);
  const seen = await states();
  t.diagnostic(`connection states during the quiet period: ${seen.join(' -> ')}; `
    + `raw stream heartbeats: ${beats.length}`);
  assert.ok(!seen.includes('reconnecting'), `never reconnecting, saw ${seen.join(' -> ')}`);
  assert.equal(seen.at(-1), 'connected');
  assert.equal(rawEnd, null, 'the raw stream is still open');
  // About quietMs / heartbeat of them; at least two shows they keep coming.
  assert.ok(beats.length >= 2, `heartbeats arrived through nginx (${beats.length} in ${quietMs / 1000} s)`);
  raw.close();

  const chatty = await openPage(browser, nginx.siteUrl, undefined, tls);
  await join(chatty, 'Chatty');
  await say(chatty, 'still there after the quiet?');
  await messagesWithText(quiet, 'still there after the quiet?').first().waitFor({ timeout: 5_000 });
  assert.ok(!(await states()).includes('reconnecting'));
  await quiet.screenshot({ path: path.join(artifacts, 'proxy-idle.png') });
  for (const page of [quiet, chatty]) {
    assert.deepEqual(page.errors, []);
    await page.context().close();
  }
});

test('SIGTERM: the page shows reconnecting, then comes back when the server does', async (t) => {
  const page = await openPage(browser, nginx.siteUrl, undefined, tls);
  await join(page, 'Survivor');
  const states = await watchConnectionState(page);

  const started = performance.now();
  server.kill('SIGTERM');
  const status = await withTimeout(server.exited, 15_000, 'chat-server exiting after SIGTERM');
  const tookMs = performance.now() - started;
  t.diagnostic(`chat-server exited ${JSON.stringify(status)} ${tookMs.toFixed(0)} ms after SIGTERM`);
  assert.deepEqual(status, { code: 0, signal: null }, 'a clean exit');

  await page.locator('[data-testid="connection-status"][data-state="reconnecting"]').waitFor();
  await page.screenshot({ path: path.join(artifacts, 'proxy-reconnecting.png') });

  const restartedAt = performance.now();
  await startChat();
  await connected(page, { timeout: 30_000 });
  t.diagnostic(`page connected again ${(performance.now() - restartedAt).toFixed(0)} ms after the restart`);
  const seen = await states();
  t.diagnostic(`connection states: ${seen.join(' -> ')}`);
  assert.ok(seen.includes('reconnecting'));
  assert.equal(seen.at(-1), 'connected');

  await say(page, 'back through nginx');
  const message = messagesWithText(page, 'back through nginx');
  await message.first().waitFor();
  await page.waitForTimeout(300);
  assert.equal(await message.count(), 1);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

/**
 * Requests /healthz at the root site from 127.0.0.2 (claiming, in a forged
 * X-Forwarded-For, to be 203.0.113.9) and returns the client the server's
 * access log names for it.
 */
async function loggedClientThroughNginx() {
  const mark = server.entries.length;
  const response = await request(new URL('healthz', nginx.siteUrl), {
    localAddress: '127.0.0.2',
    headers: { 'x-forwarded-for': '203.0.113.9' },
  });
  assert.equal(response.status, 200);
  const deadline = Date.now() + 5_000;
  for (;;) {
    const line = server.entries.slice(mark).find((entry) => entry.message === 'request'
      && (entry.path ?? entry.fields?.path) === '/healthz');
    if (line) return line.client ?? line.fields?.client;
    if (Date.now() > deadline) {
      throw new Error(`no access log line for /healthz; logs:\n${server.logs.slice(-20).join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('--trust-proxy logs the address nginx saw; without it, nginx\'s own', async () => {
  await startChat({ trustProxy: true });
  assert.equal(await loggedClientThroughNginx(), '127.0.0.2');
  await startChat({ trustProxy: false });
  assert.equal(await loggedClientThroughNginx(), '127.0.0.1');
});

test('control: without heartbeats nginx does cut an idle stream after proxy_read_timeout', async (t) => {
  // What the quiet-chat test guards against: with heartbeats every 30 s, a
  // Subscribe stream through nginx (3 s read timeout) dies after about 3 s.
  await startChat({ heartbeat: 30 });
  const stream = subscribe(nginx.siteUrl, 'Idle');
  await withTimeout(stream.ready, 10_000, 'Ready through nginx');
  const readyAt = performance.now();
  const end = await withTimeout(stream.ended, 25_000, 'nginx cutting the idle stream');
  const afterMs = performance.now() - readyAt;
  t.diagnostic(`idle stream ended ${afterMs.toFixed(0)} ms after Ready: ${JSON.stringify(end)}`);
  // Not before nginx's 3 s read timeout, and before the first 30 s heartbeat
  // could have saved it: nginx's doing, however slow the machine.
  assert.ok(afterMs > 2_500 && afterMs < 30_000, `cut after ~3 s, took ${afterMs.toFixed(0)} ms`);
  assert.notEqual(end.grpcStatus, 0, 'not a normal end of stream');
  await startChat();
});
