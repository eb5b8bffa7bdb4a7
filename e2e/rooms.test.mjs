// Two people in two rooms through a real chat-server: creating a room, a
// deep link, unread counts that rise and clear, the tab title, back and
// forward, and messages that never cross rooms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  artifacts, connected, join, messagesWithText, openPage, say, serverAndBrowser,
} from './harness.mjs';

const chat = serverAndBrowser();

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
