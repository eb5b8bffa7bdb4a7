// Scrolling back in Chromium, against a real chat-server with a room of
// 2,000 messages: the page opens with the recent ones, and each time the
// reader reaches the top the page before is read (History) and put above
// without moving what the reader sees, until "This is the start of
// #general". The list stays bounded (older pages push the newest out), and
// "Jump to latest" brings back the live end, where new messages arrive.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { artifacts, join, launchBrowser, messagesWithText, openPage, startServer } from './harness.mjs';
import { agentFor, send } from './grpcweb.mjs';
import { assertAccessible } from './axe.mjs';

const MESSAGES = 2_000;
let server;
let browser;

before(async () => {
  server = await startServer(undefined, { env: { CHAT_RATE_LIMIT: '0' } });
  const agent = agentFor(server.url);
  for (let n = 1; n <= MESSAGES; n++) {
    const reply = await send(server.url, { username: 'Archivist', message: `entry ${n}` }, { agent });
    assert.equal(reply.grpcStatus, 0, JSON.stringify(reply));
  }
  agent.destroy();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('scrolling back reads the room to its start, keeping the reader\'s place, and comes back to the live end', async () => {
  const page = await openPage(browser, server.url);
  await join(page, 'Reader');
  await messagesWithText(page, `entry ${MESSAGES}`).waitFor();
  const rows = () => page.getByTestId('message').count();

  let loads = 0;
  while (!(await page.getByTestId('history-start').count())) {
    // The reader scrolls near the top: the first text they see there is
    // noted at once, before the page before is read and put above.
    const seen = await page.evaluate(() => {
      const list = document.querySelector('[data-testid="message-list"]');
      list.scrollTop = 120;
      const top = list.getBoundingClientRect().top;
      const texts = [...list.querySelectorAll('[data-testid="message-text"]')];
      const row = texts.find((t) => t.getBoundingClientRect().bottom > top + 1);
      return {
        first: texts[0].innerText,
        text: row.innerText,
        y: row.getBoundingClientRect().top - top,
      };
    });
    await page.waitForFunction(
      (first) => document.querySelector('[data-testid="message-text"]').innerText !== first
        || document.querySelector('[data-testid="history-start"]'),
      seen.first,
    );
    loads++;
    // Let the place be restored on the frame after the rows went in.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    const y = await page.evaluate((text) => {
      const list = document.querySelector('[data-testid="message-list"]');
      const row = [...list.querySelectorAll('[data-testid="message-text"]')].find((t) => t.innerText === text);
      return row.getBoundingClientRect().top - list.getBoundingClientRect().top;
    }, seen.text);
    assert.ok(Math.abs(y - seen.y) < 4, `"${seen.text}" stayed put: ${seen.y} then ${y}`);
    assert.ok(loads < 40, 'the start came in 20 pages of 100');
  }
  await messagesWithText(page, 'entry 1').waitFor();
  assert.ok((await rows()) <= 1_000, `bounded: ${await rows()} rows`);
  assert.equal(await messagesWithText(page, `entry ${MESSAGES}`).count(), 0, 'the newest pages made way');
  await page.getByTestId('history-start').scrollIntoViewIfNeeded();
  await assertAccessible(page, 'the start of a room read back');
  await page.screenshot({ path: path.join(artifacts, 'past-start.png') });

  // Back to the live end, where what is sent now arrives.
  await page.getByTestId('jump-latest').click();
  await messagesWithText(page, `entry ${MESSAGES}`).waitFor();
  await send(server.url, { username: 'Archivist', message: 'entry after the jump' });
  await messagesWithText(page, 'entry after the jump').waitFor();
  assert.equal(await messagesWithText(page, 'entry 1').count(), 0);
  assert.deepEqual(page.errors, []);
});

test('a link to a message opens the room around it, scrolled to it and highlighted; Copy link makes one', async () => {
  // Entries 1..2000 have ids 1..2000 (nothing else was stored before them).
  const page = await openPage(browser, `${server.url}#/room/general/500`, undefined, {
    permissions: ['clipboard-read', 'clipboard-write'],
  });
  await join(page, 'Linker');
  const target = page.locator('#msg-500');
  await target.waitFor();
  await page.waitForFunction(() => {
    const row = document.getElementById('msg-500');
    const list = document.querySelector('[data-testid="message-list"]').getBoundingClientRect();
    const box = row?.getBoundingClientRect();
    return row?.classList.contains('flash') && box.top >= list.top && box.bottom <= list.bottom;
  });
  assert.equal(await messagesWithText(page, 'entry 500').count(), 1);
  assert.equal(await messagesWithText(page, `entry ${MESSAGES}`).count(), 0, 'the list is in the past');
  await page.getByTestId('jump-latest').waitFor();
  await assertAccessible(page, 'a room opened at a linked message');
  await page.screenshot({ path: path.join(artifacts, 'past-link.png') });

  // Copy link on another message: the clipboard has its address.
  const other = messagesWithText(page, 'entry 510');
  await other.hover();
  await other.getByTestId('action-copy-link').click();
  await page.getByTestId('action-notice').filter({ hasText: 'Link to the message copied.' }).waitFor();
  const link = await page.evaluate(() => navigator.clipboard.readText());
  assert.equal(link, `${server.url}#/room/general/510`);

  // Following it highlights that one instead; one that is not stored says so.
  await page.evaluate(() => { window.location.hash = '/room/general/510'; });
  await page.waitForFunction(() => document.getElementById('msg-510')?.classList.contains('flash')
    && !document.getElementById('msg-500')?.classList.contains('flash'));
  await page.evaluate(() => { window.location.hash = '/room/general/99999'; });
  await page.getByText('The message that link points at is no longer available.').waitFor();
  assert.deepEqual(page.errors, []);
});
