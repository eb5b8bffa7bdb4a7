// Two people chat in two browser windows through a real chat-server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  artifacts, connected, join, messagesWithText, openPage, say, serverAndBrowser, startServer, twoUsersChat,
} from './harness.mjs';
import * as grpcWeb from './grpcweb.mjs';

const chat = serverAndBrowser();

test('two users see each other\'s messages and their own, exactly once, with a time', async () => {
  await twoUsersChat(chat.browser, chat.server.url, { prefix: 'chat' });
});

test('a quick burst reaches everyone in the order it was typed, one Send at a time', async () => {
  // Each Send is a request of its own: two in flight can reach the server
  // in either order. The page's first Send is held here while the rest are
  // typed; they must wait for it rather than overtake it.
  const ada = await openPage(chat.browser, chat.server.url);
  await join(ada, 'Burst');
  const bob = await openPage(chat.browser, chat.server.url);
  await join(bob, 'Reader');
  // Sends the page makes while the first is held: none, if it waits.
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  let first = true;
  let holding = false;
  let sentWhileHeld = 0;
  await ada.route('**/ChatService/Send', async (route) => {
    if (first) {
      first = false;
      holding = true;
      await held;
    } else if (holding) {
      sentWhileHeld += 1;
    }
    await route.continue();
  });
  const burst = ['burst one', 'burst two', 'burst three', 'burst four', 'burst five', 'burst six'];
  for (const text of burst) await say(ada, text);
  await messagesWithText(ada, burst.at(-1)).waitFor();
  holding = false;
  release();
  for (const text of burst) {
    await messagesWithText(ada, text).and(ada.locator('[data-state="delivered"]')).waitFor();
    await messagesWithText(bob, text).waitFor();
  }
  for (const page of [ada, bob]) {
    const texts = (await page.getByTestId('message-text').allInnerTexts()).filter((t) => t.startsWith('burst '));
    assert.deepEqual(texts, burst);
  }
  assert.equal(sentWhileHeld, 0, 'no Send while the one before it is unanswered');
  for (const page of [ada, bob]) {
    assert.deepEqual(page.errors, []);
    await page.context().close();
  }
});

test('the layout works at phone width', async () => {
  const phone = await openPage(chat.browser, chat.server.url, { width: 360, height: 740 });
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
  const page = await openPage(chat.browser, chat.server.url);
  await join(page, 'Steady');
  await say(page, 'before the restart');
  await page.locator('[data-testid="message"][data-state="delivered"]')
    .filter({ hasText: 'before the restart' }).waitFor();
  const { port, db } = chat.server;
  await chat.server.stop();
  await page.locator('[data-testid="connection-status"][data-state="reconnecting"]').waitFor();
  // A send while the server is away fails visibly, with a reason.
  await say(page, 'lost in transit');
  const error = page.getByTestId('send-error');
  await error.first().waitFor();
  assert.ok((await error.first().innerText()).trim().length > 0);
  await page.screenshot({ path: path.join(artifacts, 'chat-reconnecting.png') });

  // Back on the same database, keeping only 2 messages of recent history;
  // someone says 5 things at once, before the page has had a chance to
  // resubscribe. Only resuming after the last id it saw gets all 5 back
  // (a fresh subscription would show the recent 2).
  chat.server = await startServer(port, { db, args: ['--history', '2'] });
  const away = ['away 1', 'away 2', 'away 3', 'away 4', 'away 5'];
  for (const message of away) {
    const reply = await grpcWeb.send(chat.server.url, { username: 'Quick', message });
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

test('when heartbeats stop on an open stream, the app notices and reconnects', async () => {
  // A server frozen mid-stream (SIGSTOP): the connection stays open but
  // says nothing, as behind a proxy that lost its upstream. The app gives
  // up after 2.5 heartbeats of silence, not only when the stream errors.
  const frozen = await startServer(undefined, { args: ['--heartbeat', '1'] });
  const page = await openPage(chat.browser, frozen.url);
  try {
    await join(page, 'Watchful');
    await connected(page);
    frozen.kill('SIGSTOP');
    await page.locator('[data-testid="connection-status"][data-state="reconnecting"]')
      .waitFor({ timeout: 15_000 });
    frozen.kill('SIGCONT');
    await connected(page, { timeout: 30_000 });
    await say(page, 'awake again');
    await page.locator('[data-testid="message"][data-state="delivered"]')
      .filter({ hasText: 'awake again' }).waitFor();
  } finally {
    frozen.kill('SIGCONT');
    await page.context().close();
    await frozen.stop();
  }
});

test('a name with text-direction controls, or with nothing visible, is refused with a reason', async () => {
  const page = await openPage(chat.browser, chat.server.url);
  const input = page.getByTestId('name-input');
  const reason = page.locator('.name-card [role="alert"]');
  // RLO makes "ada" + "gnp.exe" show as "adaexe.png".
  await input.fill('ada\u202Egnp.exe');
  await page.getByTestId('name-submit').click();
  await reason.filter({ hasText: 'text-direction control characters' }).waitFor();
  // Zero-width space and Hangul filler: a blank-looking name.
  await input.fill('\u200B\u3164');
  await page.getByTestId('name-submit').click();
  await reason.filter({ hasText: 'at least one visible character' }).waitFor();
  assert.equal(await input.getAttribute('aria-invalid'), 'true');
  // An emoji joined with ZWJ is a fine name.
  await join(page, '👩\u200D💻 Ada');

  // The server holds the same rule (INVALID_ARGUMENT), for clients that skip the page's check.
  for (const [username, words] of [['ada\u202Egnp.exe', 'text-direction'], ['\u200B\u3164', 'no visible characters']]) {
    const reply = await grpcWeb.send(chat.server.url, { username, message: 'hi' });
    assert.equal(reply.grpcStatus, 3, JSON.stringify(reply));
    assert.match(reply.grpcMessage, new RegExp(words));
  }
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('sending too fast shows a calm notice with the wait, and the message can be sent again', async () => {
  // A server that lets a name post one message, then one every 2 s.
  const limited = await startServer(undefined, { args: ['--rate-limit', '0.5', '--rate-burst', '1'] });
  try {
    const page = await openPage(chat.browser, limited.url);
    await join(page, 'Hasty');
    await say(page, 'first');
    await say(page, 'one too many');
    const row = messagesWithText(page, 'one too many');
    await page.locator('[data-testid="message"][data-failure="too-fast"]').waitFor();
    assert.equal(await row.getAttribute('data-state'), 'failed');
    const notice = await row.getByTestId('send-error').innerText();
    const wait = notice.match(
      /^You're sending too fast — wait (\d+(?:\.\d+)?) s and try again \(limit: a burst of 1, then 0\.5 per second\)\.$/,
    );
    assert.ok(wait, notice);
    // Announced politely (a status, not an alert), and nothing is lost.
    assert.equal(await row.getByRole('status').count(), 1);
    assert.equal(await row.getByRole('alert').count(), 0);
    assert.equal(await row.getByTestId('retry-button').count(), 1);
    await page.screenshot({ path: path.join(artifacts, 'chat-too-fast.png') });

    // Once the wait is over, Retry sends the same message, once.
    await page.waitForTimeout(Number(wait[1]) * 1000 + 300);
    await row.getByTestId('retry-button').click();
    await page.locator('[data-testid="message"][data-state="delivered"]')
      .filter({ hasText: 'one too many' }).waitFor();
    await page.waitForTimeout(300);
    assert.equal(await messagesWithText(page, 'one too many').count(), 1);
    assert.equal(await row.getAttribute('data-failure'), null);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  } finally {
    await limited.stop();
  }
});

test('a proxy\'s own HTTP error reads as a gRPC status: a 502 can be retried, a 404 cannot', async () => {
  // What nginx answers while the server is away, or under a wrong path
  // prefix: HTML, with no gRPC status. The page maps it as gRPC's HTTP
  // mapping says (UNAVAILABLE, UNIMPLEMENTED) and shows the HTTP status.
  const page = await openPage(chat.browser, chat.server.url);
  await join(page, 'Proxied');
  let status = 502;
  await page.route('**/ChatService/Send', (route) => route.fulfill({
    status, contentType: 'text/html', body: '<html><body><h1>proxy error</h1></body></html>',
  }));
  await say(page, 'through a bad gateway');
  const gateway = messagesWithText(page, 'through a bad gateway');
  await gateway.getByTestId('send-error').filter({ hasText: 'HTTP 502' }).waitFor();
  assert.equal(await gateway.getByTestId('retry-button').count(), 1);

  status = 404;
  await say(page, 'under a wrong prefix');
  const prefix = messagesWithText(page, 'under a wrong prefix');
  await prefix.getByTestId('send-error').filter({ hasText: 'HTTP 404' }).waitFor();
  assert.equal(await prefix.getByTestId('retry-button').count(), 0, 'retrying the same request cannot help');

  // With the proxy answering again, Retry sends it.
  await page.unroute('**/ChatService/Send');
  await gateway.getByTestId('retry-button').click();
  await gateway.and(page.locator('[data-state="delivered"]')).waitFor();
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
