// The small things of a chat used all day, through a real chat-server and
// two people: links and code in messages (never HTML), a person's run of
// messages under one name and avatar, day separators, the "new messages"
// line and jump-to-latest when scrolled up, screen-reader announcements of
// arrivals only, the connection banner, and desktop notifications for
// mentions while the tab is hidden.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  artifacts, connected, join, messagesWithText, openPage, say, serverAndBrowser, startServer,
} from './harness.mjs';

const chat = serverAndBrowser();

/** Ada and Bob in a room of their own (so earlier tests' messages stay out). */
async function pair(room, viewport) {
  const ada = await openPage(chat.browser, `${chat.server.url}/#/room/general`, viewport);
  await join(ada, `ada-${room}`);
  await ada.getByTestId('new-room').click();
  await ada.getByTestId('room-name-input').fill(room);
  await ada.getByTestId('room-create').click();
  await ada.waitForFunction((r) => location.hash === `#/room/${r}`, room);
  await connected(ada);
  const bob = await openPage(chat.browser, `${chat.server.url}/#/room/${room}`, viewport);
  await join(bob, `bob-${room}`);
  return { ada, bob };
}

async function delivered(page, text) {
  await messagesWithText(page, text).and(page.locator('[data-state="delivered"]')).waitFor();
}

test('links are links (http and https only, safe rel), code is code, HTML stays text', async () => {
  const { ada, bob } = await pair('links');
  const text = 'see https://example.org/a_(b)?x=1. or javascript:alert(1) or <a href="http://evil">x</a>';
  await say(ada, text);
  await say(ada, 'run `cargo test --all` then:\n```sh\necho "<b>not bold</b>"\n```\ndone');
  await say(ada, 'that is all');
  await delivered(ada, 'that is all');
  await messagesWithText(bob, 'that is all').waitFor();
  const shown = bob.getByTestId('message-text').first();
  await shown.waitFor();
  assert.equal(await shown.innerText(), text, 'the text reads as written');
  const links = bob.getByTestId('message-text').locator('a');
  await links.first().waitFor();
  const found = await links.evaluateAll((as) => as.map((a) => [a.href, a.rel, a.target, a.textContent]));
  assert.deepEqual(found, [
    ['https://example.org/a_(b)?x=1', 'noopener noreferrer', '_blank', 'https://example.org/a_(b)?x=1'],
    ['http://evil/', 'noopener noreferrer', '_blank', 'http://evil'],
  ]);
  assert.equal(await bob.getByTestId('message-list').locator('b').count(), 0, 'no HTML from messages');
  const code = bob.getByTestId('message-text').nth(1);
  await code.waitFor();
  assert.equal(await code.locator(':scope > code').innerText(), 'cargo test --all');
  assert.equal(await code.locator('pre > code').innerText(), 'echo "<b>not bold</b>"');
  await bob.screenshot({ path: path.join(artifacts, 'comfort-links-code.png') });
  for (const page of [ada, bob]) {
    assert.deepEqual(page.errors, []);
    await page.context().close();
  }
});

test('a run of messages from one person shares one name, time and avatar; own bubbles carry no name', async () => {
  const { ada, bob } = await pair('groups');
  for (const text of ['one', 'two', 'three']) await say(bob, text);
  await say(ada, 'mine');
  await say(ada, 'mine too');
  await delivered(ada, 'mine too');
  await messagesWithText(ada, 'three').waitFor();

  const rows = ada.getByTestId('message');
  const look = await rows.evaluateAll((rows) => rows.map((row) => {
    // Drawn: every box up to the row has a size and is not hidden (the
    // screen-reader-only boxes are 1 px and clipped).
    const shown = (el) => {
      for (let e = el; e && e !== row; e = e.parentElement) {
        const box = e.getBoundingClientRect();
        if (box.width <= 1 || box.height <= 1 || getComputedStyle(e).visibility === 'hidden') return false;
      }
      return Boolean(el);
    };
    const author = row.querySelector('[data-testid="message-author"]');
    return {
      text: row.querySelector('[data-testid="message-text"]').textContent,
      author: shown(author) ? author.textContent : null,
      avatar: shown(row.querySelector('.avatar')),
      time: shown(row.querySelector('[data-testid="message-time"]')),
    };
  }));
  const bobName = 'bob-groups';
  assert.deepEqual(look, [
    { text: 'one', author: bobName, avatar: true, time: true },
    { text: 'two', author: null, avatar: false, time: false },
    { text: 'three', author: null, avatar: false, time: false },
    { text: 'mine', author: null, avatar: false, time: true },
    { text: 'mine too', author: null, avatar: false, time: false },
  ]);
  // A screen reader still hears who wrote a continuation.
  assert.equal(await messagesWithText(ada, 'two').getByTestId('message-author').textContent(), bobName);
  // One day, one separator, above the first message.
  const days = ada.getByTestId('day-separator');
  assert.equal(await days.count(), 1);
  assert.equal(await days.innerText(), 'Today');
  await ada.screenshot({ path: path.join(artifacts, 'comfort-groups.png') });

  // Two days later the same messages are under that day's date.
  const later = await openPage(chat.browser, `${chat.server.url}/#/room/groups`);
  await later.clock.setFixedTime(Date.now() + 2 * 86_400_000);
  await later.reload();
  await join(later, 'carol-groups');
  await messagesWithText(later, 'three').waitFor();
  const label = await later.getByTestId('day-separator').innerText();
  assert.ok(!['Today', 'Yesterday'].includes(label) && /\d/.test(label), `a dated separator: ${label}`);
  for (const page of [ada, bob, later]) {
    assert.deepEqual(page.errors, []);
    await page.context().close();
  }
});

test('scrolled up: a new-messages line and a jump button with the count; arrivals are announced, history is not', async () => {
  const { ada, bob } = await pair('scroll', { width: 800, height: 500 });
  // 15 fill the list past its height and, with the 2 below, stay inside
  // the server's default burst (20), so the rate limit never joins in.
  for (let i = 1; i <= 15; i++) await say(bob, `filler ${i}`);
  await delivered(bob, 'filler 15');
  await messagesWithText(ada, 'filler 15').waitFor();
  assert.match(await ada.getByTestId('announcer').textContent(), /^bob-scroll: filler \d+$/);

  // Ada scrolls up to read; two more arrive.
  await ada.getByTestId('message-list').evaluate((list) => { list.scrollTop = 0; });
  const jump = ada.getByTestId('jump-latest');
  await jump.waitFor();
  await say(bob, 'news 1');
  await say(bob, 'news 2');
  await ada.waitForFunction(() => document.querySelector('[data-testid="jump-latest"]')?.textContent.includes('2 new messages'));
  const marker = ada.getByTestId('unread-marker');
  await marker.waitFor({ state: 'attached' });
  const afterMarker = await marker.evaluate((m) => m.nextElementSibling.querySelector('[data-testid="message-text"]').textContent);
  assert.equal(afterMarker, 'news 1', 'the line is above the first unseen message');
  assert.equal(await ada.getByTestId('announcer').textContent(), 'bob-scroll: news 2');
  await ada.screenshot({ path: path.join(artifacts, 'comfort-scrolled-up.png') });

  await jump.click();
  await jump.waitFor({ state: 'detached' });
  assert.ok(await messagesWithText(ada, 'news 2').isVisible());

  // A reload replays history: nothing is announced.
  await ada.reload();
  await connected(ada);
  await messagesWithText(ada, 'news 2').waitFor();
  await ada.waitForTimeout(500);
  assert.equal(await ada.getByTestId('announcer').textContent(), '');
  for (const page of [ada, bob]) {
    assert.deepEqual(page.errors, []);
    await page.context().close();
  }
});

test('a mention while the tab is hidden makes a desktop notification, once asked for with a click', async () => {
  const { bob } = await pair('mentions');
  const context = await chat.browser.newContext({ viewport: { width: 1000, height: 720 } });
  await context.grantPermissions(['notifications']);
  // Record notifications, and make the tab look hidden.
  await context.addInitScript(() => {
    window.__notes = [];
    window.Notification = class extends window.Notification {
      constructor(title, options) {
        super(title, options);
        window.__notes.push({ title, body: options?.body });
      }
    };
    Object.defineProperty(Document.prototype, 'hidden', { get: () => window.__hidden ?? false });
  });
  const ada = await context.newPage();
  ada.errors = [];
  ada.on('pageerror', (error) => ada.errors.push(error));
  await ada.goto(`${chat.server.url}/#/room/mentions`);
  await join(ada, 'ada');
  const bell = ada.getByTestId('notify-toggle');
  assert.equal(await bell.getAttribute('aria-pressed'), 'false', 'off until asked for');
  await bell.click();
  await ada.waitForFunction(() => document.querySelector('[data-testid="notify-toggle"]').getAttribute('aria-pressed') === 'true');

  await ada.evaluate(() => { window.__hidden = true; });
  await say(bob, 'nothing for anyone');
  await say(bob, 'hey @Ada, look at this');
  await say(bob, 'adam went to canada');
  await messagesWithText(ada, 'adam went to canada').waitFor();
  // Seen while visible: no notification.
  await ada.evaluate(() => { window.__hidden = false; });
  await say(bob, 'ada are you there');
  await messagesWithText(ada, 'ada are you there').waitFor();
  const notes = await ada.evaluate(() => window.__notes);
  assert.deepEqual(notes, [{ title: 'bob-mentions in #mentions', body: 'hey @Ada, look at this' }]);
  assert.deepEqual(ada.errors, []);
  await context.close();
  await bob.context().close();
});

test('the connection is a quiet dot while live, and a banner while reconnecting', async () => {
  const server = await startServer();
  const page = await openPage(chat.browser, server.url);
  try {
    await join(page, 'Quiet');
    assert.equal(await page.getByTestId('connection-banner').count(), 0);
    await server.stop();
    const banner = page.getByTestId('connection-banner');
    await banner.waitFor({ timeout: 15_000 });
    assert.match(await banner.innerText(), /Reconnecting/);
    await page.screenshot({ path: path.join(artifacts, 'comfort-reconnecting.png') });
    await page.context().setOffline(true);
    await page.waitForFunction(() => document.querySelector('[data-testid="connection-banner"]')?.textContent.includes('offline'), null, { timeout: 20_000 });
    await page.context().setOffline(false);
  } finally {
    await page.context().close();
    await server.stop();
  }
});
