// The whole app by keyboard alone (never the mouse), through a real
// chat-server: joining, sending, creating and switching rooms, the dialogs
// (focus into them, Tab kept inside, Escape, focus back to what opened
// them) and the phone drawers, checking where focus is at every step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { messagesWithText, openPage, serverAndBrowser } from './harness.mjs';

const chat = serverAndBrowser();

const WIDE = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

// Names are held by the server for a while after their page closes.
let unique = 0;
const nameFor = (base) => `${base}${++unique}`;

/** document.activeElement, described for an assertion message. */
function focused(page) {
  return page.evaluate(() => {
    const e = document.activeElement;
    if (!e || e === document.body) return 'body';
    const id = e.id ? `#${e.id}` : '';
    const testid = e.dataset.testid ? `[data-testid=${e.dataset.testid}]` : '';
    const room = e.dataset.room ? `[data-room=${e.dataset.room}]` : '';
    const label = e.getAttribute('aria-label') ? ` "${e.getAttribute('aria-label')}"` : '';
    return `${e.tagName.toLowerCase()}${id}${testid}${room}${label}`;
  });
}

const focusMatches = (page, selector) => page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector);

/** Waits until the focused element matches `selector`. */
async function waitForFocus(page, selector, what = selector) {
  try {
    await page.waitForFunction((s) => document.activeElement?.matches(s), selector, { timeout: 5_000 });
  } catch {
    assert.fail(`${what} should have focus; ${await focused(page)} has it`);
  }
}

/**
 * Presses Tab (Shift+Tab with `back`) until the focused element matches
 * `selector`; fails after `max` presses, listing where focus went.
 */
async function tabTo(page, selector, { back = false, max = 30 } = {}) {
  const path = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(back ? 'Shift+Tab' : 'Tab');
    if (await focusMatches(page, selector)) return;
    path.push(await focused(page));
  }
  assert.fail(`${back ? 'Shift+Tab' : 'Tab'} never reached ${selector}; went ${path.join(' → ')}`);
}

const COMPOSER = '[data-testid="composer-input"]';

/** The first visit, by keyboard: the name field has focus; Enter joins. */
async function joinByKeyboard(page, name) {
  await waitForFocus(page, '[data-testid="name-input"]', 'the name field, on the first visit');
  // Tab stays in the dialog: the page behind it is inert.
  for (let i = 0; i < 6; i++) {
    await page.keyboard.press(i % 2 ? 'Shift+Tab' : 'Tab');
    assert.ok(await page.evaluate(() => document.activeElement?.closest('[role="dialog"]') !== null),
      `Tab left the name dialog: ${await focused(page)}`);
  }
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  assert.ok(await page.evaluate(() => document.activeElement?.closest('[role="dialog"]') !== null),
    `Tab left the name dialog: ${await focused(page)}`);
  // Back to the field (the only field: whatever Tab did, Shift+Tab returns).
  await tabTo(page, '[data-testid="name-input"]', { max: 4 });
  await page.keyboard.type(name);
  // With a name, the button is enabled too: Tab still goes round.
  for (let i = 0; i < 5; i++) {
    await page.keyboard.press('Tab');
    assert.ok(await page.evaluate(() => document.activeElement?.closest('[role="dialog"]') !== null),
      `Tab left the name dialog: ${await focused(page)}`);
  }
  await tabTo(page, '[data-testid="name-input"]', { max: 4 });
  await page.keyboard.press('Enter');
  await page.locator('[role="dialog"]').waitFor({ state: 'detached' });
  await waitForFocus(page, COMPOSER, 'the composer, after joining');
  assert.equal(await page.locator('.app[inert]').count(), 0, 'nothing is inert once the dialog is gone');
}

/** Types `text` into the focused composer and sends it with Enter. */
async function sayByKeyboard(page, text) {
  assert.ok(await focusMatches(page, COMPOSER), `the composer should have focus: ${await focused(page)}`);
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
  await messagesWithText(page, text).waitFor();
}

test('wide: join, send, create a room, switch rooms, rename, the online list: all by keyboard', async () => {
  const page = await openPage(chat.browser, chat.server.url, WIDE);
  const name = nameFor('Keys');
  await joinByKeyboard(page, name);
  await sayByKeyboard(page, 'typed, never clicked');

  // The room list, back from the composer: the create button, its dialog.
  await tabTo(page, '[data-testid="new-room"]', { back: true });
  await page.keyboard.press('Enter');
  await waitForFocus(page, '[data-testid="room-name-input"]', 'the room name field, in the new dialog');
  assert.ok(await page.evaluate(() => document.querySelector('[data-testid="composer-input"]').closest('[inert]') !== null),
    'the page behind the dialog is inert');
  // Escape closes it, and focus goes back to the button.
  await page.keyboard.press('Escape');
  await page.locator('[role="dialog"]').waitFor({ state: 'detached' });
  await waitForFocus(page, '[data-testid="new-room"]', 'the create-room button, after Escape');

  // Again, this time creating the room: it opens, the composer has focus.
  await page.keyboard.press('Enter');
  await waitForFocus(page, '[data-testid="room-name-input"]');
  const room = `keys-${Date.now() % 100000}`;
  await page.keyboard.type(room);
  await page.keyboard.press('Tab');
  await page.keyboard.type('by keyboard');
  await page.keyboard.press('Shift+Tab');
  await page.keyboard.press('Enter');
  await page.waitForFunction((r) => location.hash === `#/room/${r}`, room);
  await page.locator('[role="dialog"]').waitFor({ state: 'detached' });
  await waitForFocus(page, COMPOSER, 'the composer, in the new room');
  assert.equal(await page.getByTestId('room-title').innerText(), `#${room}`);
  await sayByKeyboard(page, 'first in the new room');

  // Back to general by its link.
  await tabTo(page, '[data-testid="room"][data-room="general"]', { back: true });
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => location.hash === '#/room/general');
  await waitForFocus(page, COMPOSER, 'the composer, after switching to general');
  await messagesWithText(page, 'typed, never clicked').waitFor();

  // The name dialog from the header: Escape closes it, focus goes back.
  await tabTo(page, '[data-testid="change-name"]', { back: true });
  await page.keyboard.press('Enter');
  await waitForFocus(page, '[data-testid="name-input"]', 'the name field, in the rename dialog');
  await page.keyboard.press('Escape');
  await page.locator('[role="dialog"]').waitFor({ state: 'detached' });
  await waitForFocus(page, '[data-testid="change-name"]', 'the change-name button, after Escape');

  // The online list is a side panel here: reachable by Tab, past the composer.
  await tabTo(page, COMPOSER);
  await tabTo(page, '#online-list');
  assert.match(await page.getByTestId('online-list').innerText(), new RegExp(name));

  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('create-room dialog by keyboard: a refusal is tied to the field', async () => {
  const page = await openPage(chat.browser, chat.server.url, WIDE);
  await joinByKeyboard(page, nameFor('Refused'));
  await tabTo(page, '[data-testid="new-room"]', { back: true });
  await page.keyboard.press('Enter');
  await waitForFocus(page, '[data-testid="room-name-input"]');
  await page.keyboard.type('general');
  await page.keyboard.press('Enter');
  await page.getByTestId('room-error').filter({ hasText: 'exists already' }).waitFor();
  const input = page.getByTestId('room-name-input');
  assert.equal(await input.getAttribute('aria-invalid'), 'true');
  const described = await input.getAttribute('aria-describedby');
  assert.equal(await page.locator(`#${described}`).getAttribute('data-testid'), 'room-error');
  // Tab goes round the dialog's fields, never out of it.
  for (let i = 0; i < 8; i++) {
    await page.keyboard.press(i < 5 ? 'Tab' : 'Shift+Tab');
    assert.ok(await page.evaluate(() => document.activeElement?.closest('[role="dialog"]') !== null),
      `Tab left the create-room dialog: ${await focused(page)}`);
  }
  await page.keyboard.press('Escape');
  await waitForFocus(page, '[data-testid="new-room"]', 'the create-room button, after Escape');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('phone: the room drawer and the online drawer by keyboard', async () => {
  const page = await openPage(chat.browser, chat.server.url, PHONE);
  await joinByKeyboard(page, nameFor('Thumb'));
  await sayByKeyboard(page, 'from a phone, by keyboard');

  // The online list: its header button opens it, focus goes in, Escape
  // closes it and focus goes back to the button.
  const count = '[data-testid="online-count"]';
  await tabTo(page, count, { back: true });
  assert.equal(await page.locator(count).getAttribute('aria-expanded'), 'false');
  assert.equal(await page.locator(count).getAttribute('aria-controls'), 'online-list');
  await page.keyboard.press('Enter');
  await page.getByTestId('online-list').waitFor({ state: 'visible' });
  await waitForFocus(page, '#online-list *, #online-list', 'the online drawer, once opened');
  assert.equal(await page.locator(count).getAttribute('aria-expanded'), 'true');
  await page.keyboard.press('Escape');
  await page.getByTestId('online-list').waitFor({ state: 'hidden' });
  await waitForFocus(page, count, 'the online button, after Escape');
  assert.equal(await page.locator(count).getAttribute('aria-expanded'), 'false');

  // The same with its close button (Enter on it).
  await page.keyboard.press('Enter');
  await waitForFocus(page, '#online-list .close-people', 'the drawer\'s close button');
  await page.keyboard.press('Enter');
  await page.getByTestId('online-list').waitFor({ state: 'hidden' });
  await waitForFocus(page, count, 'the online button, after closing');

  // The room drawer: in and out with Escape, then to a room by its link.
  const toggle = '.rooms-toggle';
  await tabTo(page, toggle, { back: true });
  assert.equal(await page.locator(toggle).getAttribute('aria-controls'), 'room-list');
  await page.keyboard.press('Enter');
  await page.getByTestId('room-list').waitFor({ state: 'visible' });
  await waitForFocus(page, '#room-list a[aria-current="page"]', 'the open room, in the drawer');
  await page.keyboard.press('Escape');
  await page.getByTestId('room-list').waitFor({ state: 'hidden' });
  await waitForFocus(page, toggle, 'the rooms button, after Escape');

  // Create a room from the drawer, then come back to general through it.
  await page.keyboard.press('Enter');
  await waitForFocus(page, '#room-list a[aria-current="page"]');
  await tabTo(page, '[data-testid="new-room"]', { back: true, max: 5 });
  await page.keyboard.press('Enter');
  await waitForFocus(page, '[data-testid="room-name-input"]');
  const room = `thumb-${Date.now() % 100000}`;
  await page.keyboard.type(room);
  await page.keyboard.press('Enter');
  await page.waitForFunction((r) => location.hash === `#/room/${r}`, room);
  await waitForFocus(page, COMPOSER, 'the composer, in the new room');
  await page.getByTestId('room-list').waitFor({ state: 'hidden' });

  await tabTo(page, toggle, { back: true });
  await page.keyboard.press('Enter');
  await waitForFocus(page, `#room-list a[data-room="${room}"]`, 'the open room, in the drawer');
  await tabTo(page, '[data-testid="room"][data-room="general"]', { back: true, max: 10 });
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => location.hash === '#/room/general');
  await page.getByTestId('room-list').waitFor({ state: 'hidden' });
  await waitForFocus(page, COMPOSER, 'the composer, after switching to general');
  await messagesWithText(page, 'from a phone, by keyboard').waitFor();

  assert.deepEqual(page.errors, []);
  await page.context().close();
});
