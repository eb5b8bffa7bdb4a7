// Two people chat in two browser windows through a real chat-server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  artifacts, join, launchBrowser, messagesWithText, openPage, say, startServer, twoUsersChat,
} from './harness.mjs';

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

test('the app reconnects after the server restarts', async () => {
  const page = await openPage(browser, server.url);
  await join(page, 'Steady');
  const { port } = server;
  await server.stop();
  await page.locator('[data-testid="connection-status"][data-state="reconnecting"]').waitFor();
  // A send while the server is away fails visibly, with a reason.
  await say(page, 'lost in transit');
  const error = page.getByTestId('send-error');
  await error.first().waitFor();
  assert.ok((await error.first().innerText()).trim().length > 0);
  await page.screenshot({ path: path.join(artifacts, 'chat-reconnecting.png') });

  server = await startServer(port);
  await page.locator('[data-testid="connection-status"][data-state="connected"]')
    .waitFor({ timeout: 30_000 });
  await say(page, 'back again');
  const message = messagesWithText(page, 'back again');
  await message.first().waitFor();
  await page.waitForTimeout(300);
  assert.equal(await message.count(), 1);
  await page.context().close();
});
