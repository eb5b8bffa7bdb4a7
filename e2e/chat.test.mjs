// Two people chat in two browser windows through a real chat-server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  artifacts, connected, join, launchBrowser, messagesWithText, openPage, say, startServer,
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
  const ada = await openPage(browser, server.url);
  const bob = await openPage(browser, server.url);
  await join(ada, 'Ada');
  await join(bob, 'Bob');

  const fromAda = 'Hello Bob <b>this is not bold</b>';
  const fromBob = 'Hi Ada! 👋';
  await say(ada, fromAda);
  await say(bob, fromBob);

  for (const page of [ada, bob]) {
    for (const [text, author] of [[fromAda, 'Ada'], [fromBob, 'Bob']]) {
      const message = messagesWithText(page, text);
      await message.first().waitFor();
      // Let any late duplicate (e.g. the echo of an optimistic message) land.
      await page.waitForTimeout(300);
      assert.equal(await message.count(), 1, `${text} shown once`);
      assert.equal(await message.getByTestId('message-author').innerText(), author);
      const time = message.getByTestId('message-time');
      assert.match(await time.innerText(), /^\d{2}:\d{2}$/);
      assert.ok((await time.getAttribute('title'))?.length > 5, 'full date on hover');
      const own = (page === ada) === (author === 'Ada');
      assert.equal(await message.getAttribute('data-own'), String(own));
    }
    // HTML in a message is shown as text, never interpreted.
    assert.equal(await page.getByTestId('message-list').locator('b').count(), 0);
  }

  await ada.screenshot({ path: path.join(artifacts, 'chat-ada.png') });
  await bob.screenshot({ path: path.join(artifacts, 'chat-bob.png') });

  // The name is remembered across a reload.
  await ada.reload();
  await connected(ada);
  assert.equal(await ada.getByTestId('name-input').count(), 0, 'no name prompt after reload');

  for (const page of [ada, bob]) assert.deepEqual(page.errors, []);
  await ada.context().close();
  await bob.context().close();
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
