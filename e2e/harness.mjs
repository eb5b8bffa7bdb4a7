// Test harness: a real chat-server (release build, serving the real dist/)
// on a free loopback port, and Debian's Chromium driven by playwright-core.
import { spawn } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
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

/** Starts target/release/chat-server on `port` (a free one by default). */
export async function startServer(port) {
  port ??= await freePort();
  const child = spawn(path.join(root, 'target', 'release', 'chat-server'), [], {
    env: {
      ...process.env,
      CHAT_ADDR: `127.0.0.1:${port}`,
      CHAT_WEB_DIR: path.join(root, 'dist'),
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await waitForPort(port, child);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return {
    port,
    url: `http://127.0.0.1:${port}/`,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/** A page in its own context (its own localStorage), failing on page errors. */
export async function openPage(browser, url, viewport = { width: 1000, height: 720 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
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

export async function connected(page) {
  await page.locator('[data-testid="connection-status"][data-state="connected"]').waitFor();
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
