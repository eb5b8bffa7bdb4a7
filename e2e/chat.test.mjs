// Two people chat in two browser windows through a real chat-server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  artifacts, connected, join, launchBrowser, messagesWithText, openPage, say, startServer, twoUsersChat,
} from './harness.mjs';
import * as grpcWeb from './grpcweb.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('two users see each other\'s messages and their own, exactly once, with a time', async () => {
  await twoUsersChat(browser, server.url, { prefix: 'chat' });
});

test('the layout works at phone width', async () => {
  const phone = await openPage(browser, server.url, { width: 360, height: 740 });
  await join(phone, 'Pocket');
  await say(phone, 'A longer message to see how wrapping behaves on a narrow screen, '
    + 'with a verylongwordthatshouldwrapratherthanoverflowthescreenhorizontally.');
  await phone.getByTestId('message-text').filter({ hasText: 'narrow screen' }).waitFor();
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  assert.equal(overflow, false, 'no horizontal scrolling');
  await phone.screenshot({ path: path.join(artifacts, 'chat-phone.png') });
  await phone.context().close();
});

test('after a server restart the app reconnects and shows what was said meanwhile, once', async () => {
  const page = await openPage(browser, server.url);
  await join(page, 'Steady');
  await say(page, 'before the restart');
  await page.locator('[data-testid="message"][data-state="delivered"]')
    .filter({ hasText: 'before the restart' }).waitFor();
  const { port, db } = server;
  await server.stop();
  await page.locator('[data-testid="connection-status"][data-state="reconnecting"]').waitFor();
  // A send while the server is away fails visibly, with a reason.
  await say(page, 'lost in transit');
  const error = page.getByTestId('send-error');
  await error.first().waitFor();
  assert.ok((await error.first().innerText()).trim().length > 0);
  await page.screenshot({ path: path.join(artifacts, 'chat-reconnecting.png') });

  // Back on the same database; someone talks at once, before the page has
  // had a chance to resubscribe.
  server = await startServer(port, { db });
  const away = ['away 1', 'away 2', 'away 3', 'away 4', 'away 5'];
  for (const message of away) {
    const reply = await grpcWeb.send(server.url, { username: 'Quick', message });
    assert.equal(reply.grpcStatus, 0, JSON.stringify(reply));
  }
  await connected(page, { timeout: 30_000 });
  await say(page, 'back again');
  await page.locator('[data-testid="message"][data-state="delivered"]')
    .filter({ hasText: 'back again' }).waitFor();
  const texts = (await page.getByTestId('message-text').allInnerTexts())
    .filter((text) => text !== 'lost in transit');
  const from = texts.indexOf('before the restart');
  assert.deepEqual(texts.slice(from), ['before the restart', ...away, 'back again'],
    'no hole and no double across the restart');
  await page.screenshot({ path: path.join(artifacts, 'chat-after-restart.png') });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
