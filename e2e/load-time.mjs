// Time to a usable message box on a slow phone network, measured the way
// Lighthouse's DevTools throttling emulates "Slow 4G": every request waits
// 562.5 ms, downloads at 1,474.56 kbit/s and uploads at 675 kbit/s, and the
// CPU runs 4 times slower (CDP Network.emulateNetworkConditions and
// Emulation.setCPUThrottlingRate), on a phone viewport.
//
// A returning user (name and session saved) opens a room with 50 messages:
// "usable" is the first frame in which the message box is enabled and
// focused, the stream is connected and the last message is in view, counted
// from navigation start. A first visit is a fresh browser context (empty
// cache, the saved name copied in); a repeat visit reloads that same
// context. For each it reports what went over the wire before the box was
// usable (bytes as served, by file) and how many round trips in a row it
// took (requests that start only after the previous wave has answered).
// A new user (nothing saved, fresh context) is timed to the name prompt,
// there and focused.
//
//   node e2e/load-time.mjs [--runs 3] [--url http://127.0.0.1:PORT/]
//
// Without --url it starts target/release/chat-server (serving dist/) on a
// free loopback port and seeds the room itself. It measures and prints; it
// asserts nothing (load-time.test.mjs sets the bounds, loosely, for CI).
import { writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { artifacts, join, launchBrowser, messagesWithText, startServer, watchForUsable } from './harness.mjs';
import * as grpcWeb from './grpcweb.mjs';

export const SLOW_4G = {
  latencyMs: 562.5,
  downloadKbps: 1474.56,
  uploadKbps: 675,
  cpuSlowdown: 4,
};
const PHONE = { width: 390, height: 844 };
const HISTORY = 50;

/** Sends the slow profile's commands through `send(method, params)`. */
async function emulate(send, profile, { cpu = true } = {}) {
  await send('Network.enable', {});
  await send('Network.emulateNetworkConditions', {
    offline: false,
    latency: profile.latencyMs,
    // kbit/s to bytes/s, as Lighthouse converts them.
    downloadThroughput: (profile.downloadKbps * 1024) / 8,
    uploadThroughput: (profile.uploadKbps * 1024) / 8,
  });
  if (cpu) await send('Emulation.setCPUThrottlingRate', { rate: profile.cpuSlowdown });
}

/** Applies the slow profile to `page` (CDP applies it per target). */
async function throttle(page, profile = SLOW_4G) {
  const cdp = await page.context().newCDPSession(page);
  await emulate((method, params) => cdp.send(method, params), profile);
  return cdp;
}

/**
 * Applies the slow profile to `page`'s service worker too, once it has one:
 * CDP throttles each target apart, and the worker's own requests (and its
 * CPU) would otherwise go at full speed. Playwright opens CDP sessions on
 * pages only, so the worker is reached through the browser's session.
 * Chromium slows the CPU of pages only ("not supported for workers"): the
 * worker's own work (a few cache lookups) runs at full speed.
 */
async function throttleServiceWorker(browser, page, profile = SLOW_4G) {
  const scope = await page.evaluate(async () => (await navigator.serviceWorker.ready).scope);
  const cdp = await browser.newBrowserCDPSession();
  const { targetInfos } = await cdp.send('Target.getTargets');
  const worker = targetInfos.find((t) => t.type === 'service_worker' && t.url.startsWith(scope));
  if (!worker) throw new Error(`no service worker target for ${scope}`);
  const { sessionId } = await cdp.send('Target.attachToTarget', { targetId: worker.targetId, flatten: false });
  const pending = new Map();
  cdp.on('Target.receivedMessageFromTarget', (event) => {
    if (event.sessionId !== sessionId) return;
    const reply = JSON.parse(event.message);
    pending.get(reply.id)?.(reply);
    pending.delete(reply.id);
  });
  let lastId = 0;
  const send = async (method, params) => {
    const id = ++lastId;
    const answered = new Promise((resolve) => pending.set(id, resolve));
    await cdp.send('Target.sendMessageToTarget', { sessionId, message: JSON.stringify({ id, method, params }) });
    const reply = await answered;
    if (reply.error) throw new Error(`${method} in the service worker: ${reply.error.message}`);
  };
  await emulate(send, profile, { cpu: false });
  return cdp;
}

/** Every request of a page load, with what it cost on the wire. */
function recordRequests(cdp) {
  const byId = new Map();
  const sent = ({ requestId, request, timestamp }) => {
    byId.set(requestId, { url: request.url, method: request.method, start: timestamp });
  };
  const received = ({ requestId, response, timestamp }) => {
    const entry = byId.get(requestId);
    if (!entry) return;
    entry.status = response.status;
    entry.fromCache = response.fromDiskCache || response.fromServiceWorker || response.fromPrefetchCache;
    entry.encoding = response.headers['content-encoding'] ?? response.headers['Content-Encoding'] ?? '';
    entry.cacheControl = response.headers['cache-control'] ?? response.headers['Cache-Control'] ?? '';
    entry.firstByte = timestamp;
  };
  const finished = ({ requestId, encodedDataLength, timestamp }) => {
    const entry = byId.get(requestId);
    if (!entry) return;
    entry.bytes = encodedDataLength;
    entry.end = timestamp;
  };
  cdp.on('Network.requestWillBeSent', sent);
  cdp.on('Network.responseReceived', received);
  cdp.on('Network.loadingFinished', finished);
  return {
    byId,
    stop() {
      cdp.off('Network.requestWillBeSent', sent);
      cdp.off('Network.responseReceived', received);
      cdp.off('Network.loadingFinished', finished);
    },
  };
}

/** Loads `url` in `page` (throttled) and measures the time to usable. */
async function measureLoad(page, cdp, url, reload) {
  const recording = recordRequests(cdp);
  if (reload) await page.reload(); else await page.goto(url);
  await page.waitForFunction(() => window.__usableAt !== undefined, null, { timeout: 120_000 });
  recording.stop();
  const requests = recording.byId;
  const { usableMs, navStart } = await page.evaluate(() => ({
    usableMs: window.__usableAt,
    navStart: performance.timeOrigin,
  }));
  // CDP timestamps are seconds on a monotonic clock; the navigation
  // request is the first one, so times are taken from its start.
  const all = [...requests.values()].filter((r) => r.start !== undefined).sort((a, b) => a.start - b.start);
  const origin = all[0]?.start ?? 0;
  const usableAt = origin + usableMs / 1000;
  const before = all
    .filter((r) => r.start <= usableAt)
    .map((r) => ({
      file: shortName(r.url),
      method: r.method,
      status: r.status ?? 'pending',
      bytes: r.bytes ?? 0,
      encoding: r.encoding ?? '',
      cacheControl: r.cacheControl ?? '',
      fromCache: Boolean(r.fromCache),
      startMs: Math.round((r.start - origin) * 1000),
      endMs: r.end ? Math.round((r.end - origin) * 1000) : null,
    }));
  return {
    usableMs: Math.round(usableMs),
    bytes: before.reduce((sum, r) => sum + r.bytes, 0),
    roundTrips: roundTrips(before, usableMs),
    requests: before,
    navStart,
  };
}

/**
 * Round trips in a row: a request that starts after everything started
 * before it has answered opens a new wave (an open stream, Subscribe,
 * counts as answered when the page became usable).
 */
function roundTrips(requests, usableMs) {
  let waves = 0;
  let waveAnswered = -1;
  // What the browser answered itself (its cache) is no trip at all.
  const overTheNetwork = requests.filter((r) => !r.fromCache && !(r.bytes === 0 && r.endMs !== null && r.endMs - r.startMs < 10));
  for (const r of overTheNetwork) {
    if (r.startMs >= waveAnswered) {
      waves += 1;
      waveAnswered = Infinity;
    }
    waveAnswered = Math.min(waveAnswered, r.endMs ?? usableMs);
  }
  return waves;
}

function shortName(url) {
  const { pathname } = new URL(url);
  const name = pathname.split('/').filter(Boolean).at(-1) ?? '/';
  return name.replace(/-[0-9a-f]{8,16}(?=[._])/, '-…');
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** Seeds `HISTORY` messages into general on `url`; returns the last text. */
export async function seed(url) {
  const texts = Array.from({ length: HISTORY }, (_, i) => `seeded message ${i + 1} of ${HISTORY}`);
  for (const [i, message] of texts.entries()) {
    const reply = await grpcWeb.send(url, { username: i % 2 ? 'Grace' : 'Linus', message });
    if (reply.grpcStatus !== 0) throw new Error(`seeding failed: ${JSON.stringify(reply)}`);
  }
  return texts.at(-1);
}

/**
 * `runs` first visits (each a fresh context with the saved name copied in)
 * and, in each, one repeat visit (reload). `repeat.before()` and
 * `repeat.after(load)`, if given, run around each repeat visit.
 */
export async function measure(browser, url, lastText, { runs = 3, profile = SLOW_4G, repeat = {} } = {}) {
  // The name is claimed once, unthrottled; its saved state is what a
  // returning user's browser holds.
  const setup = await browser.newContext({ viewport: PHONE });
  const first = await setup.newPage();
  await first.goto(url);
  await join(first, 'Returning');
  await messagesWithText(first, lastText).waitFor();
  const saved = await setup.storageState();

  const visits = { first: [], repeat: [] };
  for (let run = 0; run < runs; run++) {
    const context = await browser.newContext({ viewport: PHONE, storageState: saved });
    await context.addInitScript(watchForUsable, { lastText, focused: true });
    const page = await context.newPage();
    const cdp = await throttle(page, profile);
    visits.first.push(await measureLoad(page, cdp, url, false));
    // A user comes back later than a test does: the worker the first
    // visit registered has taken over by then.
    const worker = await throttleServiceWorker(browser, page, profile);
    await repeat.before?.();
    visits.repeat.push(await measureLoad(page, cdp, url, true));
    await repeat.after?.(visits.repeat.at(-1));
    await worker.detach();
    await context.close();
  }
  // A new user: the name prompt there and focused, from navigation start.
  const asked = [];
  for (let run = 0; run < runs; run++) {
    const context = await browser.newContext({ viewport: PHONE });
    await context.addInitScript(() => {
      const check = () => {
        const input = document.querySelector('[data-testid="name-input"]');
        if (input && document.activeElement === input) window.__askedAt = performance.now();
        else requestAnimationFrame(check);
      };
      requestAnimationFrame(check);
    });
    const page = await context.newPage();
    await throttle(page, profile);
    await page.goto(url);
    await page.waitForFunction(() => window.__askedAt !== undefined, null, { timeout: 120_000 });
    asked.push(Math.round(await page.evaluate(() => window.__askedAt)));
    await context.close();
  }
  await setup.close();
  const summary = (loads) => ({
    medianMs: median(loads.map((l) => l.usableMs)),
    runsMs: loads.map((l) => l.usableMs),
    medianBytes: median(loads.map((l) => l.bytes)),
    roundTrips: loads.map((l) => l.roundTrips),
    requests: loads[0].requests,
  });
  return {
    profile,
    viewport: PHONE,
    history: HISTORY,
    first: summary(visits.first),
    repeat: summary(visits.repeat),
    newUser: { askedMedianMs: median(asked), runsMs: asked },
  };
}

function print(result) {
  console.log(`new user: the name prompt focused after ${result.newUser.askedMedianMs} ms (median; runs ${result.newUser.runsMs.join(', ')} ms)`);
  for (const visit of ['first', 'repeat']) {
    const v = result[visit];
    console.log(`${visit} visit: usable after ${v.medianMs} ms (median; runs ${v.runsMs.join(', ')} ms), `
      + `${v.medianBytes} bytes over the wire, round trips in a row: ${v.roundTrips.join(', ')}`);
    for (const r of v.requests) {
      const cache = r.fromCache ? ' (from cache)' : '';
      console.log(`  ${String(r.startMs).padStart(6)}-${String(r.endMs ?? '…').padStart(6)} ms  `
        + `${String(r.status).padEnd(4)} ${String(r.bytes).padStart(8)} B ${r.encoding.padEnd(4)} ${r.method.padEnd(4)} ${r.file}${cache}`
        + (r.cacheControl ? `  [${r.cacheControl}]` : ''));
    }
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' }, url: { type: 'string' } } });
  const server = values.url ? null : await startServer(undefined, { args: ['--rate-limit', '0'] });
  const url = values.url ?? server.url;
  const browser = await launchBrowser();
  try {
    const lastText = values.url ? `seeded message ${HISTORY} of ${HISTORY}` : await seed(url);
    const result = await measure(browser, url, lastText, { runs: Number(values.runs) });
    result.measuredAt = new Date().toISOString();
    print(result);
    mkdirSync(artifacts, { recursive: true });
    writeFileSync(path.join(artifacts, 'load-time.json'), `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    await browser.close();
    await server?.stop();
  }
}
