// Test harness: a real chat-server (release build, serving the real dist/)
// on a free loopback port, and Debian's Chromium driven by playwright-core.
import { spawn } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import assert from 'node:assert/strict';
import { before, after } from 'node:test';
import { chromium } from 'playwright-core';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const artifacts = path.join(root, 'e2e', 'artifacts');
mkdirSync(artifacts, { recursive: true });

export async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

async function waitForPort(port, child, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`chat-server exited with ${child.exitCode}`);
    const open = await new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`chat-server did not listen on ${port}`);
}

// The fresh databases' folders, removed when the test file's process ends
// (a test may start a second server on a first one's database, so not when
// a server stops).
const databases = [];
process.once('exit', () => {
  for (const dir of databases) rmSync(dir, { recursive: true, force: true });
});

/**
 * Starts target/release/chat-server on `port` (default: a free one) with a
 * fresh database, or with `db` (a path, e.g. a previous server's `db`) to
 * restart on the same history.
 *
 * Options: `args` (extra command-line arguments), `env` (extra environment),
 * and `captureLogs` (collect stderr lines into `server.logs` instead of
 * passing them through; JSON lines are also parsed into `server.entries`).
 */
export async function startServer(port, { args = [], env = {}, captureLogs = false, db } = {}) {
  port ??= await freePort();
  if (db === undefined) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'chat-e2e-'));
    databases.push(dir);
    db = path.join(dir, 'chat.db');
  }
  const child = spawn(path.join(root, 'target', 'release', 'chat-server'), args, {
    env: {
      ...process.env,
      CHAT_ADDR: `127.0.0.1:${port}`,
      // E2E_WEB_DIR tests another build of the app (default: the repo's dist/).
      CHAT_WEB_DIR: process.env.E2E_WEB_DIR ?? path.join(root, 'dist'),
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
      CHAT_DB: db,
      ...env,
    },
    stdio: ['ignore', 'ignore', captureLogs ? 'pipe' : 'inherit'],
  });
  const logs = [];
  const entries = [];
  if (captureLogs) {
    createInterface({ input: child.stderr, crlfDelay: Infinity }).on('line', (line) => {
      logs.push(line);
      try { entries.push(JSON.parse(line)); } catch { /* a text line */ }
    });
  }
  // Resolves with { code, signal } when the process has exited (and, when
  // capturing, its stderr has been read to the end).
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
    .then(async (status) => {
      if (captureLogs && !child.stderr.readableEnded) {
        await new Promise((resolve) => child.stderr.once('close', resolve));
      }
      return status;
    });
  await waitForPort(port, child);
  return {
    port,
    db,
    url: `http://127.0.0.1:${port}/`,
    pid: child.pid,
    logs,
    entries,
    exited,
    /** Sends `signal` and returns at once (see `exited`). */
    kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * For a test file: a chat-server (default options) and Chromium, started
 * before its tests and stopped after them. Returns an object whose `server`
 * and `browser` are set once started.
 */
export function serverAndBrowser() {
  const shared = {};
  before(async () => {
    shared.server = await startServer();
    shared.browser = await launchBrowser();
  });
  after(async () => {
    await shared.browser?.close();
    await shared.server?.stop();
  });
  return shared;
}

/** Launches Chromium; `extraArgs` are added to its command line. */
export async function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...extraArgs,
    ],
  });
}

/**
 * A page in its own context (its own localStorage), failing on page errors.
 * `contextOptions` go to browser.newContext (e.g. `{ ignoreHTTPSErrors: true }`).
 */
export async function openPage(browser, url, viewport = { width: 1000, height: 720 }, contextOptions = {}) {
  const context = await browser.newContext({ viewport, ...contextOptions });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  // The app's panic hook says what went wrong before the wasm aborts.
  page.on('console', (message) => {
    if (message.type() === 'error' && message.text().startsWith('panicked at')) {
      errors.push(new Error(message.text()));
    }
  });
  page.errors = errors;
  await page.goto(url);
  return page;
}

export async function join(page, name) {
  await page.bringToFront();
  await page.getByTestId('name-input').fill(name);
  await page.getByTestId('name-submit').click();
  await connected(page);
}

/** Joins `page` as the moderator `name`, answering the key question. */
export async function joinAsModerator(page, name, key) {
  await page.bringToFront();
  await page.getByTestId('name-input').fill(name);
  await page.getByTestId('name-submit').click();
  await page.getByTestId('key-input').fill(key);
  await page.getByTestId('key-input').press('Enter');
  await connected(page);
  await page.getByTestId('moderator-badge').waitFor();
}

export async function connected(page, options) {
  await page.locator('[data-testid="connection-status"][data-state="connected"]').waitFor(options);
}

export async function say(page, text) {
  await page.bringToFront();
  const input = page.getByTestId('composer-input');
  await input.fill(text);
  await input.press('Enter');
}

/** The messages in a page whose text is exactly `text`. */
export function messagesWithText(page, text) {
  return page.getByTestId('message').filter({
    has: page.getByTestId('message-text').getByText(text, { exact: true }),
  });
}

/**
 * The two-users flow: Ada and Bob join at `url`, each says something, and
 * both see both messages exactly once, with author, time and ownership; HTML
 * stays text; the name survives a reload. Screenshots go to
 * artifacts/<prefix>-ada.png and <prefix>-bob.png. `names` are theirs (a
 * server holds a name for a while after its page closes).
 */
export async function twoUsersChat(browser, url, { prefix = 'chat', contextOptions = {}, names = ['Ada', 'Bob'] } = {}) {
  const [adaName, bobName] = names;
  const ada = await openPage(browser, url, undefined, contextOptions);
  const bob = await openPage(browser, url, undefined, contextOptions);
  await join(ada, adaName);
  await join(bob, bobName);

  // Unique per run: the server keeps history, and may serve several runs.
  const fromAda = `Hello Bob <b>this is not bold</b> (${prefix})`;
  const fromBob = `Hi Ada! 👋 (${prefix})`;
  await say(ada, fromAda);
  await say(bob, fromBob);

  for (const page of [ada, bob]) {
    for (const text of [fromAda, fromBob]) await messagesWithText(page, text).first().waitFor();
  }
  // Messages arrive in id order: once a later one is shown, any duplicate
  // of the earlier ones (say, the echo of an optimistic copy) would be too.
  const sentinel = `That is all (${prefix})`;
  await say(bob, sentinel);
  for (const page of [ada, bob]) await messagesWithText(page, sentinel).first().waitFor();

  for (const page of [ada, bob]) {
    for (const [text, author] of [[fromAda, adaName], [fromBob, bobName]]) {
      const message = messagesWithText(page, text);
      assert.equal(await message.count(), 1, `${text} shown once`);
      const own = (page === ada) === (author === adaName);
      // Own bubbles do not repeat the user's own name.
      if (own) assert.equal(await message.getByTestId('message-author').count(), 0);
      else assert.equal(await message.getByTestId('message-author').innerText(), author);
      const time = message.getByTestId('message-time');
      assert.match(await time.innerText(), /^\d{2}:\d{2}$/);
      assert.ok((await time.getAttribute('title'))?.length > 5, 'full date on hover');
      assert.equal(await message.getAttribute('data-own'), String(own));
    }
    // HTML in a message is shown as text, never interpreted.
    assert.equal(await page.getByTestId('message-list').locator('b').count(), 0);
  }

  await ada.screenshot({ path: path.join(artifacts, `${prefix}-ada.png`) });
  await bob.screenshot({ path: path.join(artifacts, `${prefix}-bob.png`) });

  // The name is remembered across a reload, and the conversation comes back
  // from the server's history: each message once, Ada's still shown as hers.
  await ada.reload();
  await connected(ada);
  assert.equal(await ada.getByTestId('name-input').count(), 0, 'no name prompt after reload');
  for (const [text, own] of [[fromAda, 'true'], [fromBob, 'false']]) {
    const message = messagesWithText(ada, text);
    await message.first().waitFor();
    assert.equal(await message.count(), 1, `${text} shown once after the reload`);
    assert.equal(await message.getAttribute('data-own'), own);
  }
  await ada.screenshot({ path: path.join(artifacts, `${prefix}-ada-reloaded.png`) });

  for (const page of [ada, bob]) assert.deepEqual(page.errors, []);
  await ada.context().close();
  await bob.context().close();
}

/**
 * An init script (`context.addInitScript(watchForUsable, { lastText, focused })`)
 * that checks every frame from the start of each page load for the moment
 * the app is usable: the message box there and enabled (and focused, with
 * `focused`), the stream connected, and the message `lastText` in view. It
 * sets `window.__usableAt` (ms from navigation start) then.
 */
export function watchForUsable({ lastText, focused }) {
  const check = () => {
    const box = document.querySelector('[data-testid="composer-input"]');
    const ready = box && !box.disabled && !box.readOnly && (!focused || document.activeElement === box)
      && document.querySelector('[data-testid="connection-status"][data-state="connected"]');
    const message = ready && [...document.querySelectorAll('[data-testid="message-text"]')]
      .find((element) => element.textContent === lastText);
    if (message) {
      const list = document.querySelector('[data-testid="message-list"]').getBoundingClientRect();
      const rect = message.getBoundingClientRect();
      if (rect.height > 0 && rect.bottom > list.top && rect.top < list.bottom) {
        window.__usableAt = performance.now();
        return;
      }
    }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
}
