// Accessibility (WCAG 2.2 AA) through a real chat-server: axe-core checks
// every screen in the light and the dark theme, wide and on a phone, and
// finds no serious or critical violation; reduced motion turns motion off;
// and the time from navigation to a usable message box with its history is
// measured (never asserted) for a returning user.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  artifacts, connected, join, messagesWithText, openPage, say, serverAndBrowser, startServer, watchForUsable,
} from './harness.mjs';
import * as grpcWeb from './grpcweb.mjs';
import { assertAccessible, PHONE, SIZES, THEMES, WIDE } from './axe.mjs';

const chat = serverAndBrowser();

/**
 * A dialog is open (`testid`, a div[role=dialog][aria-modal=true] named by
 * its heading), and the page behind it is inert: the composer, the header
 * and the room list can be neither focused nor read.
 */
async function assertModal(page, testid) {
  const found = await page.evaluate((id) => {
    const dialog = document.querySelector(`[data-testid="${id}"]`);
    const title = dialog && document.getElementById(dialog.getAttribute('aria-labelledby'));
    return {
      tag: dialog?.tagName.toLowerCase(),
      role: dialog?.getAttribute('role'),
      modal: dialog?.getAttribute('aria-modal'),
      titled: title !== null && dialog.contains(title) && title.textContent.trim().length > 0,
      inDialog: dialog?.contains(document.activeElement),
      inert: ['[data-testid="composer-input"]', '.topbar', '[data-testid="room-list"]']
        .map((selector) => document.querySelector(selector)?.closest('[inert]') !== null),
      dialogInert: dialog?.closest('[inert]') !== null,
    };
  }, testid);
  assert.deepEqual(found, {
    tag: 'div', role: 'dialog', modal: 'true', titled: true, inDialog: true, inert: [true, true, true], dialogInert: false,
  }, `${testid}: a modal dialog with the page behind it inert`);
}

/** No dialog is open: nothing on the page is inert. */
async function assertNothingInert(page) {
  assert.equal(await page.locator('[inert]').count(), 0, 'nothing inert without a dialog');
}

/** The field `testid` points (aria-describedby) at the error `errorTestid`. */
async function assertDescribedBy(page, testid, errorTestid) {
  const described = await page.getByTestId(testid).getAttribute('aria-describedby');
  assert.ok(described, `${testid} has aria-describedby`);
  assert.equal(await page.locator(`[id="${described}"]`).getAttribute('data-testid'), errorTestid);
}

// Names are held by the server for a while after their page closes: each
// test uses its own.
let unique = 0;
const nameFor = (base) => `${base}${++unique}`;

/**
 * Two people (the page's own and another) have a short conversation, on a
 * server of its own so that the room holds just that (for the screenshots).
 */
async function conversation(browser, viewport) {
  const server = await startServer();
  const { url } = server;
  const me = await openPage(browser, url, viewport);
  const other = await openPage(browser, url);
  const [mine, theirs] = [nameFor('Ada'), nameFor('Bob')];
  await join(me, mine);
  await join(other, theirs);
  await say(other, `Hi ${mine}! Did the new layout land? 👋`);
  await messagesWithText(me, `Hi ${mine}! Did the new layout land? 👋`).waitFor();
  await say(me, 'It did: rooms on the left, people on the right.');
  await say(me, 'Have a look on your phone too.');
  await say(other, 'Looks great. The dark theme too 🌙');
  await messagesWithText(me, 'Looks great. The dark theme too 🌙').waitFor();
  await me.locator('[data-testid="message"][data-own="true"][data-state="delivered"]')
    .filter({ hasText: 'Have a look on your phone too.' }).waitFor();
  return { me, other, server };
}

async function close(...pages) {
  for (const page of pages) {
    assert.deepEqual(page.errors, []);
    await page.context().close();
  }
}

for (const [size, viewport] of Object.entries(SIZES)) {
  test(`name prompt (first visit), ${size}`, async () => {
    const page = await openPage(chat.browser, chat.server.url, viewport);
    await page.getByTestId('name-input').waitFor();
    await assertModal(page, 'name-dialog');
    await assertDescribedBy(page, 'name-input', 'name-error');
    await assertAccessible(page, `name prompt, ${size}`);
    await close(page);
  });

  test(`name prompt with a name-taken error, ${size}`, async () => {
    const holder = await openPage(chat.browser, chat.server.url);
    const held = nameFor('Taken');
    await join(holder, held);
    const page = await openPage(chat.browser, chat.server.url, viewport);
    await page.getByTestId('name-input').fill(held.toLowerCase());
    await page.getByTestId('name-submit').click();
    await page.getByTestId('name-error').filter({ hasText: 'is taken' }).waitFor();
    await page.getByTestId('name-suggestion').waitFor();
    await assertModal(page, 'name-dialog');
    assert.equal(await page.getByTestId('name-input').getAttribute('aria-invalid'), 'true');
    await assertDescribedBy(page, 'name-input', 'name-error');
    await assertAccessible(page, `name taken, ${size}`);
    await close(page, holder);
  });

  test(`chat with messages from two people, ${size}`, async () => {
    const { me, other, server } = await conversation(chat.browser, viewport);
    for (const theme of THEMES) {
      await me.emulateMedia({ colorScheme: theme });
      await me.screenshot({ path: path.join(artifacts, `a11y-${theme}-${size}.png`) });
    }
    try {
      await assertNothingInert(me);
      await assertAccessible(me, `chat, ${size}`);
    } finally {
      await close(me, other);
      await server.stop();
    }
  });

  test(`message actions: toolbar, replying, picker, editing, asking whether to delete, reactions, a tombstone, ${size}`, async () => {
    const { me, other, server } = await conversation(chat.browser, viewport);
    try {
      const theirs = messagesWithText(me, 'Looks great. The dark theme too 🌙');
      const mine = messagesWithText(me, 'It did: rooms on the left, people on the right.');
      await theirs.hover();
      await theirs.getByTestId('action-reply').waitFor({ state: 'visible' });
      await assertAccessible(me, `message toolbar, ${size}`);
      await theirs.getByTestId('action-reply').click();
      await me.getByTestId('reply-banner').waitFor();
      await assertAccessible(me, `replying, ${size}`);
      await me.getByTestId('composer-input').press('Escape');
      await theirs.hover();
      await theirs.getByTestId('action-react').click();
      await me.getByTestId('reaction-picker').waitFor();
      await assertAccessible(me, `reaction picker, ${size}`);
      await me.getByRole('button', { name: 'React with 🎉' }).click();
      await theirs.getByTestId('reaction').waitFor();
      await me.getByTestId('composer-input').focus();
      await me.keyboard.press('ArrowUp');
      await me.getByTestId('edit-input').waitFor();
      await assertAccessible(me, `editing, ${size}`);
      await me.getByTestId('edit-input').press('Escape');
      await mine.hover();
      await mine.getByTestId('action-delete').click();
      await me.getByTestId('confirm-delete').waitFor();
      for (const theme of THEMES) {
        await me.emulateMedia({ colorScheme: theme });
        await me.screenshot({ path: path.join(artifacts, `a11y-confirm-delete-${theme}-${size}.png`) });
      }
      await assertAccessible(me, `asking whether to delete, ${size}`);
      await me.getByTestId('confirm-delete-yes').click();
      await me.getByTestId('message-deleted').waitFor();
      for (const theme of THEMES) {
        await me.emulateMedia({ colorScheme: theme });
        await me.screenshot({ path: path.join(artifacts, `a11y-actions-${theme}-${size}.png`) });
      }
      await assertAccessible(me, `reactions and a tombstone, ${size}`);
    } finally {
      await close(me, other);
      await server.stop();
    }
  });

  test(`create-room dialog with the server's refusal, ${size}`, async () => {
    const page = await openPage(chat.browser, chat.server.url, viewport);
    await join(page, nameFor('Maker'));
    if (size === 'phone') {
      await page.getByRole('button', { name: 'Rooms' }).click();
      await page.getByTestId('room-list').waitFor({ state: 'visible' });
    }
    await page.getByTestId('new-room').click();
    // "general" is always there: the server refuses it.
    await page.getByTestId('room-name-input').fill('general');
    await page.getByTestId('room-topic-input').fill('everything else');
    await page.getByTestId('room-create').click();
    await page.getByTestId('room-error').filter({ hasText: 'exists already' }).waitFor();
    await assertModal(page, 'create-room-dialog');
    assert.equal(await page.getByTestId('room-name-input').getAttribute('aria-invalid'), 'true');
    await assertDescribedBy(page, 'room-name-input', 'room-error');
    await page.screenshot({ path: path.join(artifacts, `a11y-create-room-${size}.png`) });
    await assertAccessible(page, `create-room dialog with an error, ${size}`);
    await close(page);
  });
}

test('phone: the room drawer and the online-people drawer, opened', async () => {
  const { me, other, server } = await conversation(chat.browser, PHONE);
  try {
    await me.getByRole('button', { name: 'Rooms' }).click();
    await me.getByTestId('room-list').waitFor({ state: 'visible' });
    await me.locator('[data-testid="room"][data-room="general"]').waitFor();
    await me.screenshot({ path: path.join(artifacts, 'a11y-rooms-drawer-phone.png') });
    await assertAccessible(me, 'room drawer, phone');
    await me.getByRole('button', { name: 'Rooms' }).click();
    await me.getByTestId('room-list').waitFor({ state: 'hidden' });

    await me.getByTestId('online-count').click();
    await me.getByTestId('online-list').waitFor({ state: 'visible' });
    await me.getByTestId('online-person').nth(1).waitFor();
    await me.screenshot({ path: path.join(artifacts, 'a11y-people-drawer-phone.png') });
    await assertAccessible(me, 'people drawer, phone');
  } finally {
    await close(me, other);
    await server.stop();
  }
});

test('names, avatars and own bubbles: AA contrast for every hue 0-359, in both themes', async () => {
  const page = await openPage(chat.browser, chat.server.url, WIDE);
  await join(page, nameFor('Hue'));
  const report = {};
  for (const theme of THEMES) {
    await page.emulateMedia({ colorScheme: theme });
    // The colours as Chromium paints them (oklch clipped to sRGB), read back
    // from a canvas, then WCAG 2 contrast.
    report[theme] = await page.evaluate(() => {
      const canvas = Object.assign(document.createElement('canvas'), { width: 1, height: 1 });
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      const paint = (...layers) => {
        ctx.clearRect(0, 0, 1, 1);
        for (const color of layers) { ctx.fillStyle = color; ctx.fillRect(0, 0, 1, 1); }
        return [...ctx.getImageData(0, 0, 1, 1).data].slice(0, 3);
      };
      const luminance = (rgb) => {
        const [r, g, b] = rgb.map((c) => { const v = c / 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
      };
      const contrast = (a, b) => {
        const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
        return (hi + 0.05) / (lo + 0.05);
      };
      const list = document.querySelector('[data-testid="message-list"] ul, [data-testid="message-list"]');
      const row = (own, hue) => {
        const li = document.createElement('li');
        li.className = own ? 'msg own' : 'msg';
        li.style.setProperty('--hue', String(hue));
        li.innerHTML = '<span class="avatar">A</span><div class="bubble"><div class="meta">'
          + '<span class="author">Name</span><time>12:00</time><span class="tick">✓</span></div>'
          + '<p class="text">text</p></div>';
        list.append(li);
        return li;
      };
      const color = (element, property = 'color') => getComputedStyle(element)[property];
      let names = { ratio: Infinity }; let avatars = { ratio: Infinity };
      for (let hue = 0; hue < 360; hue++) {
        const li = row(false, hue);
        const bubble = paint(color(li.querySelector('.bubble'), 'backgroundColor'));
        const name = paint(color(li.querySelector('.bubble'), 'backgroundColor'), color(li.querySelector('.author')));
        const ratio = contrast(name, bubble);
        if (ratio < names.ratio) names = { ratio, hue };
        const avatar = li.querySelector('.avatar');
        const avatarBg = paint(color(avatar, 'backgroundColor'));
        const initial = paint(color(avatar, 'backgroundColor'), color(avatar));
        const avatarRatio = contrast(initial, avatarBg);
        if (avatarRatio < avatars.ratio) avatars = { ratio: avatarRatio, hue };
        li.remove();
      }
      const li = row(true, 0);
      const ownBg = color(li.querySelector('.bubble'), 'backgroundColor');
      const own = Object.fromEntries(['.text', '.author', 'time', '.tick'].map((selector) => [
        selector, contrast(paint(ownBg, color(li.querySelector(selector))), paint(ownBg)),
      ]));
      li.remove();
      return { names, avatars, own };
    });
  }
  await page.emulateMedia({ colorScheme: null });
  console.log(`# contrast (worst over hues 0-359; own bubble parts):\n${JSON.stringify(report, null, 2)}`);
  for (const theme of THEMES) {
    const { names, avatars, own } = report[theme];
    assert.ok(names.ratio >= 4.5, `${theme}: a name in hue ${names.hue} is ${names.ratio.toFixed(2)}:1 on its bubble`);
    assert.ok(avatars.ratio >= 4.5, `${theme}: an avatar in hue ${avatars.hue} is ${avatars.ratio.toFixed(2)}:1`);
    for (const [part, ratio] of Object.entries(own)) {
      assert.ok(ratio >= 4.5, `${theme}: the own bubble's ${part} is ${ratio.toFixed(2)}:1`);
    }
  }
  await close(page);
});

test('with reduced motion, nothing animates or transitions', async () => {
  const page = await openPage(chat.browser, chat.server.url, PHONE, { reducedMotion: 'reduce' });
  assert.equal(await page.evaluate(() => matchMedia('(prefers-reduced-motion: reduce)').matches), true);
  await join(page, nameFor('Still'));
  await say(page, 'no motion please');
  await messagesWithText(page, 'no motion please').waitFor();
  await page.getByTestId('online-count').click();
  await page.getByTestId('online-list').waitFor({ state: 'visible' });
  // The dot pulses while connecting: look at it in that state too.
  await page.evaluate(() => {
    const clone = document.querySelector('[data-testid="connection-status"]').cloneNode(true);
    clone.dataset.state = 'connecting';
    clone.removeAttribute('data-testid');
    clone.removeAttribute('role');
    document.querySelector('.topbar').append(clone);
  });
  // Every element (and its ::before/::after): no transition or animation
  // lasting longer than a blink, and no smooth scrolling.
  const moving = await page.evaluate(() => {
    const seconds = (list) => Math.max(...list.split(',').map((t) => {
      const value = parseFloat(t);
      return t.trim().endsWith('ms') ? value / 1000 : value;
    }));
    const found = [];
    for (const element of document.querySelectorAll('*')) {
      for (const pseudo of [null, '::before', '::after']) {
        const style = getComputedStyle(element, pseudo);
        const what = `${element.tagName.toLowerCase()}${element.className && typeof element.className === 'string' ? `.${element.className.trim().split(/\s+/).join('.')}` : ''}${pseudo ?? ''}`;
        const transition = seconds(style.transitionDuration) + Math.max(0, seconds(style.transitionDelay));
        if (transition > 0.011) found.push(`${what}: transition ${style.transitionDuration}`);
        if (style.animationName !== 'none' && seconds(style.animationDuration) > 0.011) {
          found.push(`${what}: animation ${style.animationName} ${style.animationDuration}`);
        }
        if (pseudo === null && style.scrollBehavior === 'smooth') found.push(`${what}: smooth scrolling`);
      }
    }
    return found;
  });
  assert.deepEqual(moving, [], `still moving with reduced motion:\n${moving.join('\n')}`);
  await close(page);
});

test('time to a usable message box with history, returning user (measured, not asserted)', async () => {
  // A server of its own, without the rate limit, so 50 messages go in at once.
  const server = await startServer(undefined, { args: ['--rate-limit', '0'] });
  const page = await openPage(chat.browser, server.url, WIDE);
  try {
    const seeded = Array.from({ length: 50 }, (_, i) => `seeded message ${i + 1} of 50`);
    for (const [i, message] of seeded.entries()) {
      const reply = await grpcWeb.send(server.url, { username: i % 2 ? 'Grace' : 'Linus', message });
      assert.equal(reply.grpcStatus, 0, JSON.stringify(reply));
    }
    const last = seeded.at(-1);
    // The first visit: the name prompt; from then on the name is remembered.
    await join(page, 'Returning');
    await messagesWithText(page, last).waitFor();

    // From the very start of each page load, check every frame for the
    // moment the app is usable: the message box there and enabled, the
    // stream connected, and the last message of the history in view.
    await page.context().addInitScript(watchForUsable, { lastText: last, focused: false });

    const runs = [];
    for (let run = 0; run < 5; run++) {
      await page.goto(server.url);
      await page.waitForFunction(() => window.__usableAt !== undefined, null, { timeout: 30_000 });
      const timing = await page.evaluate(() => {
        const [nav] = performance.getEntriesByType('navigation');
        return {
          usableMs: window.__usableAt,
          responseEndMs: nav.responseEnd,
          domContentLoadedMs: nav.domContentLoadedEventEnd,
          loadMs: nav.loadEventEnd,
        };
      });
      assert.equal(await page.getByTestId('name-input').count(), 0, 'a returning user is not asked for a name');
      runs.push(timing);
    }
    const usable = runs.map((r) => r.usableMs);
    for (const ms of usable) assert.ok(ms > 0, `measured a positive time, got ${ms}`);
    const sorted = [...usable].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    const round = (ms) => Math.round(ms * 10) / 10;
    const result = {
      what: 'ms from navigation start to: composer enabled, stream connected and the last of 50 seeded messages in view (returning user, release build, loopback server)',
      medianMs: round(median),
      runsMs: usable.map(round),
      runs: runs.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round(v)]))),
      viewport: WIDE,
      measuredAt: new Date().toISOString(),
    };
    writeFileSync(path.join(artifacts, 'time-to-usable.json'), `${JSON.stringify(result, null, 2)}\n`);
    console.log(`# time to usable: median ${result.medianMs} ms; runs ${result.runsMs.join(', ')} ms`);
    assert.deepEqual(page.errors, []);
  } finally {
    await page.context().close();
    await server.stop();
  }
});
