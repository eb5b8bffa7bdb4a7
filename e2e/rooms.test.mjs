// Two people in two rooms through a real chat-server: creating a room, a
// deep link, unread counts that rise and clear, the tab title, back and
// forward, and messages that never cross rooms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import {
  artifacts, connected, join, messagesWithText, openPage, say, serverAndBrowser, startServer,
} from './harness.mjs';

const chat = serverAndBrowser();

/** Subscribe streams the server has open, from its /metrics. */
function subscribeStreams(server) {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: '127.0.0.1', port: server.port, path: '/metrics', agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => { body += chunk; });
      response.once('end', () => {
        const line = body.split('\n').find((l) => l.startsWith('chat_streams_open{kind="subscribe"} '));
        resolve(line ? Number(line.split(' ')[1]) : 0);
      });
      response.once('error', reject);
    });
    request.setTimeout(5_000, () => request.destroy(new Error('timed out: /metrics')));
    request.once('error', reject);
  });
}

/** Waits until the server counts `count` open Subscribe streams; returns the last counts seen. */
async function streamsSettleAt(server, count, timeoutMs = 10_000) {
  const seen = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await subscribeStreams(server);
    if (seen.at(-1) !== open) seen.push(open);
    if (open === count) return seen;
    if (Date.now() > deadline) assert.fail(`${count} Subscribe stream(s) expected, the server counts ${seen.join(' -> ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const title = (page) => page.locator('[data-testid="room-title"]').innerText();

async function unread(page, room) {
  const badge = page.locator(`[data-testid="room"][data-room="${room}"] [data-testid="unread"]`);
  return (await badge.count()) === 0 ? 0 : Number(await badge.innerText());
}

async function waitForUnread(page, room, count) {
  await page.waitForFunction(([r, n]) => {
    const badge = document.querySelector(`[data-testid="room"][data-room="${r}"] [data-testid="unread"]`);
    return (badge ? Number(badge.textContent) : 0) === n;
  }, [room, count], { timeout: 15_000 });
}

test('two people in two rooms: unread counts, a deep link, back and forward, no leaks', async () => {
  const ada = await openPage(chat.browser, chat.server.url);
  await join(ada, 'Ada');
  assert.equal(await title(ada), '#general');
  assert.equal(await ada.title(), '#general - chat');

  // Ada opens a room; she is taken there, with its topic.
  await ada.getByTestId('new-room').click();
  await ada.getByTestId('room-name-input').fill('Design');
  await ada.getByTestId('room-topic-input').fill('pixels and type');
  await ada.getByTestId('room-create').click();
  await ada.waitForFunction(() => location.hash === '#/room/design');
  await connected(ada);
  assert.equal(await title(ada), '#design');
  assert.equal(await ada.getByTestId('room-topic').innerText(), 'pixels and type');
  // The server's refusal, shown plainly.
  await ada.getByTestId('new-room').click();
  await ada.getByTestId('room-name-input').fill('design');
  await ada.getByTestId('room-create').click();
  await ada.getByTestId('room-error').filter({ hasText: 'exists already' }).waitFor();
  await ada.keyboard.press('Escape');

  // A link opens the room it names.
  const bob = await openPage(chat.browser, `${chat.server.url}#/room/design`);
  await join(bob, 'Bob');
  assert.equal(await title(bob), '#design');
  await say(bob, 'hello design');
  await messagesWithText(ada, 'hello design').waitFor();

  // Bob goes to general; Ada talks in design: Bob's count rises.
  await bob.locator('[data-testid="room"][data-room="general"]').click();
  await bob.waitForFunction(() => location.hash === '#/room/general');
  await connected(bob);
  for (const text of ['one', 'two', 'three']) await say(ada, `design ${text}`);
  await waitForUnread(bob, 'design', 3);
  await bob.waitForFunction(() => document.title === '(3) #general - chat');
  await bob.screenshot({ path: path.join(artifacts, 'rooms-unread.png') });
  // General's own messages stay in general.
  await say(bob, 'only in general');
  await messagesWithText(bob, 'only in general').waitFor();
  assert.equal(await messagesWithText(bob, 'design one').count(), 0, 'design stays in design');

  // Opening design clears its count and shows what was missed, once.
  await bob.locator('[data-testid="room"][data-room="design"]').click();
  await connected(bob);

  for (const text of ['design one', 'design two', 'design three', 'hello design']) {
    await messagesWithText(bob, text).waitFor();
    assert.equal(await messagesWithText(bob, text).count(), 1, `${text} once`);
  }
  assert.equal(await unread(bob, 'design'), 0);
  await bob.waitForFunction(() => document.title === '#design - chat');
  assert.equal(await messagesWithText(bob, 'only in general').count(), 0, 'general stays in general');
  assert.equal(await messagesWithText(ada, 'only in general').count(), 0);

  // Back and forward move between the rooms.
  await bob.goBack();
  await bob.waitForFunction(() => location.hash === '#/room/general');
  await bob.locator('[data-testid="room-title"]', { hasText: '#general' }).waitFor();
  await messagesWithText(bob, 'only in general').waitFor();
  await bob.goForward();
  await bob.locator('[data-testid="room-title"]', { hasText: '#design' }).waitFor();
  await messagesWithText(bob, 'design three').waitFor();
  await bob.screenshot({ path: path.join(artifacts, 'rooms-design.png') });

  for (const page of [ada, bob]) assert.deepEqual(page.errors, []);
  await ada.context().close();
  await bob.context().close();
});

test('a returning user\'s first stream watches the other rooms, before the room list is read again', async () => {
  const ada = await openPage(chat.browser, `${chat.server.url}#/room/general`);
  await join(ada, 'Returner');
  await ada.getByTestId('new-room').click();
  await ada.getByTestId('room-name-input').fill('watched');
  await ada.getByTestId('room-create').click();
  await ada.waitForFunction(() => location.hash === '#/room/watched');
  await connected(ada);
  await ada.locator('[data-testid="room"][data-room="general"]').click();
  await ada.waitForFunction(() => location.hash === '#/room/general');
  await connected(ada);

  // A reload opens the stream at once, beside Join and ListRooms (so its
  // list of rooms to watch is the one remembered). Once the list has been
  // read at load and again after Ready, only the stream can raise a count.
  let listings = 0;
  const listedTwice = new Promise((resolve) => {
    ada.on('response', (response) => {
      if (response.url().endsWith('/ListRooms') && ++listings === 2) resolve();
    });
  });
  await ada.reload();
  await connected(ada);
  await Promise.race([
    listedTwice,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`ListRooms answered ${listings} time(s), 2 expected`)), 15_000)),
  ]);
  const bob = await openPage(chat.browser, `${chat.server.url}#/room/watched`);
  await join(bob, 'Talker');
  await say(bob, 'anyone watching?');
  await waitForUnread(ada, 'watched', 1);

  for (const page of [ada, bob]) assert.deepEqual(page.errors, []);
  await ada.context().close();
  await bob.context().close();
});

test('on a phone, the rooms are a drawer behind the # button', async () => {
  const phone = await openPage(chat.browser, chat.server.url, { width: 360, height: 740 });
  await join(phone, 'Pocket');
  const list = phone.getByTestId('room-list');
  assert.equal(await list.isVisible(), false, 'closed at first');
  await phone.getByRole('button', { name: 'Rooms' }).click();
  await list.waitFor({ state: 'visible' });
  await phone.locator('[data-testid="room"][data-room="general"]').waitFor();
  await phone.screenshot({ path: path.join(artifacts, 'rooms-phone.png') });
  await phone.locator('[data-testid="room"][data-room="general"]').click();
  await list.waitFor({ state: 'hidden' });
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  assert.equal(overflow, false, 'no horizontal scrolling');
  assert.deepEqual(phone.errors, []);
  await phone.context().close();
});

test('a reply that arrives after leaving the room is harmless', async () => {
  // The race behind a rare crash: a message is sent, and the room is left
  // before the server's reply comes back. The reply is held back here.
  const ada = await openPage(chat.browser, `${chat.server.url}#/room/general`);
  await join(ada, 'Leaver');
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  let holding = true;
  await ada.route('**/ChatService/Send', async (route) => {
    if (holding) await held;
    await route.continue();
  });
  await say(ada, 'sent on the way out');
  await ada.getByTestId('new-room').click();
  await ada.getByTestId('room-name-input').fill('elsewhere');
  await ada.getByTestId('room-create').click();
  await ada.waitForFunction(() => location.hash === '#/room/elsewhere');
  await connected(ada);
  holding = false;
  release();
  // Back in general, the message is there, once, delivered.
  await ada.locator('[data-testid="room"][data-room="general"]').click();
  await connected(ada);
  await messagesWithText(ada, 'sent on the way out').and(ada.locator('[data-state="delivered"]')).waitFor();
  assert.equal(await messagesWithText(ada, 'sent on the way out').count(), 1);
  await say(ada, 'still alive');
  await messagesWithText(ada, 'still alive').and(ada.locator('[data-state="delivered"]')).waitFor();
  assert.deepEqual(ada.errors, []);
  await ada.context().close();
});

test('room switches and reconnects leave no Subscribe stream open behind them', async () => {
  // Dropping a stream must abort its fetch: a request left open would hold
  // a stream on the server (and, over HTTP/1.1, one of the browser's six
  // connections to it) until the page closes.
  const server = await startServer(undefined, { args: ['--heartbeat', '1'] });
  const page = await openPage(chat.browser, server.url);
  try {
    await join(page, 'Switcher');
    await streamsSettleAt(server, 1);
    for (const room of ['north', 'south']) {
      await page.getByTestId('new-room').click();
      await page.getByTestId('room-name-input').fill(room);
      await page.getByTestId('room-create').click();
      await page.waitForFunction((r) => location.hash === `#/room/${r}`, room);
      await connected(page);
    }
    await streamsSettleAt(server, 1);
    for (const room of ['general', 'north', 'south', 'general', 'north', 'south', 'general']) {
      await page.locator(`[data-testid="room"][data-room="${room}"]`).click();
      await page.waitForFunction((r) => location.hash === `#/room/${r}`, room);
      await connected(page);
      await streamsSettleAt(server, 1);
    }

    // A stream that goes quiet is given up on and replaced (after 2.5 s
    // without a heartbeat): the old one must go too, not only the new one
    // come up.
    server.kill('SIGSTOP');
    await page.locator('[data-testid="connection-status"][data-state="reconnecting"]')
      .waitFor({ timeout: 15_000 });
    server.kill('SIGCONT');
    await connected(page, { timeout: 30_000 });
    await streamsSettleAt(server, 1);
    await say(page, 'one stream, one echo');
    await messagesWithText(page, 'one stream, one echo').and(page.locator('[data-state="delivered"]')).waitFor();
    assert.deepEqual(page.errors, []);
  } finally {
    server.kill('SIGCONT');
    await page.context().close();
    await server.stop();
  }
});
