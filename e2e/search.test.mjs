// Searching in Chromium, against a real chat-server with messages from
// several people in two rooms, one of them (in #kitchen) followed by 250
// more, so it is not among the ones a page has loaded: Ctrl+K and / focus
// the header's box; results come as the user types, with the words that
// matched marked, case and diacritics ignored (sasa finds Saša); from:
// and "a phrase" narrow them; the status line counts them or says why the
// server refused; the arrow keys and Enter open one in its room, scrolled
// to and outlined (the address is its link); Escape closes, then clears;
// More results reads the next page; a late answer to an older query never
// replaces a newer one's.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { artifacts, join, launchBrowser, openPage, startServer } from './harness.mjs';
import { agentFor, send, unary } from './grpcweb.mjs';
import { assertAccessible, PHONE } from './axe.mjs';

const CHATTER = 250;
let server;
let browser;
// The ids the seeded messages got, by a short name.
const ids = {};

before(async () => {
  server = await startServer(undefined, { env: { CHAT_RATE_LIMIT: '0' } });
  const agent = agentFor(server.url);
  const created = await unary(server.url, 'CreateRoom', 'CreateRoomRequest', { name: 'kitchen', topic: 'food' }, 'Room', { agent });
  assert.equal(created.grpcStatus, 0, JSON.stringify(created));
  const seed = async (key, room, username, message) => {
    const reply = await send(server.url, { room, username, message }, { agent });
    assert.equal(reply.grpcStatus, 0, JSON.stringify(reply));
    if (key) ids[key] = reply.id;
  };
  await seed('hello', 'general', 'Ada', 'Saša says hello from Zagreb');
  await seed('dinner', 'general', 'Bob', 'Dinner tonight: Saša made ćevapi again');
  await seed('words', 'general', 'Cy', 'ćevapi were made by Saša, not by me');
  await seed('html', 'general', 'Dee', '<b>Saša</b> is not bold');
  await seed(null, 'general', 'Ada', 'Is anyone around?');
  await seed('weekend', 'kitchen', 'Bob', 'At the weekend Saša made ćevapi for twelve');
  for (let n = 1; n <= CHATTER; n++) await seed(null, 'kitchen', 'Cy', `kitchen chatter ${n}`);
  agent.destroy();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const box = (page) => page.getByTestId('search-input');
const status = (page) => page.getByTestId('search-status');
const hits = (page) => page.getByTestId('search-hit');

/** Waits until the status line says `words` (and so the results are in). */
async function says(page, words) {
  await page.waitForFunction(
    (w) => document.querySelector('[data-testid="search-status"]')?.textContent === w,
    words,
  ).catch(async () => assert.fail(`the status should say "${words}"; it says "${await status(page).textContent()}"`));
}

/** Replaces the query (one input event, as a paste) and waits for `words`. */
async function search(page, query, words) {
  await box(page).fill(query);
  await says(page, words);
}

const isFocused = (page, testid) =>
  page.evaluate((t) => document.activeElement?.dataset.testid === t, testid);

/** Waits until message `id`'s row is outlined and wholly in the list's view. */
async function shown(page, id) {
  await page.waitForFunction((id) => {
    const row = document.getElementById(`msg-${id}`);
    const list = document.querySelector('[data-testid="message-list"]')?.getBoundingClientRect();
    const box = row?.getBoundingClientRect();
    return row?.classList.contains('flash') && box.top >= list.top && box.bottom <= list.bottom;
  }, id);
}

test('searching every room: marks, from: and phrases, the count, opening a result in context, Escape, refusals', async () => {
  const page = await openPage(browser, server.url);
  await join(page, 'Reader');
  await page.getByTestId('message-text').filter({ hasText: 'Is anyone around?' }).waitFor();
  assert.ok(await isFocused(page, 'composer-input'), 'the composer has focus after joining');

  // Ctrl+K from the composer focuses the box; the results come as the
  // user types, once they pause.
  await page.keyboard.press('Control+k');
  assert.ok(await isFocused(page, 'search-input'), 'Ctrl+K focuses the search box');
  assert.equal(await box(page).getAttribute('aria-expanded'), 'false');
  await box(page).pressSequentially('sasa', { delay: 40 });
  await says(page, '5 results');
  assert.equal(await box(page).getAttribute('aria-expanded'), 'true');
  assert.equal(await hits(page).count(), 5);
  // Newest first, from both rooms, each with "Saša" marked as written.
  assert.deepEqual(
    await hits(page).evaluateAll((all) => all.map((hit) => hit.dataset.room)),
    ['kitchen', 'general', 'general', 'general', 'general'],
  );
  for (const hit of await hits(page).all()) {
    assert.deepEqual(await hit.locator('mark').allTextContents(), ['Saša']);
  }
  const first = hits(page).first();
  assert.match(await first.innerText(), /#kitchen\s+Bob\s+Today \d{2}:\d{2}\s+At the weekend Saša made ćevapi for twelve/);
  // HTML in a message is text here too.
  const html = hits(page).filter({ hasText: 'is not bold' });
  assert.equal(await html.getByTestId('search-hit-text').textContent(), '<b>Saša</b> is not bold');
  assert.equal(await page.getByTestId('search-results').locator('b').count(), 0);

  // The arrow keys move through the results (focus stays in the box).
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('ArrowDown');
  const active = await box(page).getAttribute('aria-activedescendant');
  assert.equal(await page.locator(`#${active}`).getAttribute('aria-selected'), 'true');
  assert.equal(await page.locator(`#${active}`).getAttribute('data-id'), String(ids.html), 'the second result');
  assert.equal(await page.locator('[role="option"][aria-selected="true"]').count(), 1);
  assert.ok(await isFocused(page, 'search-input'));
  await assertAccessible(page, 'search results');
  await page.screenshot({ path: path.join(artifacts, 'search.png') });

  // from: and a phrase narrow the results.
  await search(page, 'from:Bob sasa', '2 results');
  assert.deepEqual(await hits(page).getByTestId('search-hit-author').allTextContents(), ['Bob', 'Bob']);
  await search(page, 'made ćevapi', '3 results');
  await search(page, '"made ćevapi"', '2 results');
  assert.deepEqual(
    await hits(page).evaluateAll((all) => all.map((hit) => Number(hit.dataset.id))),
    [ids.weekend, ids.dinner],
  );
  assert.deepEqual(await hits(page).first().locator('mark').allTextContents(), ['made', 'ćevapi']);
  await search(page, 'nothing like this', 'No messages match');
  assert.ok(await page.getByTestId('search-results').isHidden());

  // A query the server cannot run: its own words.
  await search(page, '"open', 'a quote is not closed: end the phrase with "');
  assert.equal(await hits(page).count(), 0);

  // Escape closes the results (the query stays), a second one clears it.
  await search(page, 'sasa', '5 results');
  await page.keyboard.press('Escape');
  assert.equal(await box(page).getAttribute('aria-expanded'), 'false');
  assert.ok(await page.getByTestId('search-panel').isHidden());
  assert.equal(await box(page).inputValue(), 'sasa');
  assert.ok(await isFocused(page, 'search-input'), 'focus stays in the box');
  // Down opens them again.
  await page.keyboard.press('ArrowDown');
  assert.equal(await box(page).getAttribute('aria-expanded'), 'true');
  await page.keyboard.press('Escape');
  await page.keyboard.press('Escape');
  assert.equal(await box(page).inputValue(), '');
  assert.ok(await isFocused(page, 'search-input'));

  // A result in the open room, loaded already: scrolled to and outlined.
  await search(page, 'from:Ada hello', '1 result');
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Enter');
  await page.waitForFunction((id) => location.hash === `#/room/general/${id}`, ids.hello);
  await shown(page, ids.hello);
  assert.equal(await box(page).getAttribute('aria-expanded'), 'false');
  assert.ok(await page.getByTestId('search-panel').isHidden());

  // One in another room, not among its loaded messages (250 came after
  // it): / (outside a text field) focuses the box, Enter opens it there.
  await page.getByTestId('message-list').focus();
  await page.keyboard.press('/');
  assert.ok(await isFocused(page, 'search-input'), '/ focuses the search box');
  await page.keyboard.type('weekend');
  await says(page, '1 result');
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Enter');
  await page.waitForFunction((id) => location.hash === `#/room/kitchen/${id}`, ids.weekend);
  await page.locator('[data-testid="room-title"]', { hasText: '#kitchen' }).waitFor();
  await shown(page, ids.weekend);
  assert.equal(
    await page.locator(`#msg-${ids.weekend} [data-testid="message-text"]`).textContent(),
    'At the weekend Saša made ćevapi for twelve',
  );
  assert.equal(await page.getByTestId('message-text').filter({ hasText: `kitchen chatter ${CHATTER}` }).count(), 0,
    'the list is the page around it, not the newest');
  assert.deepEqual(page.errors, []);
});

test('More results reads the next page and puts it below; the arrow keys go on into it', async () => {
  const page = await openPage(browser, server.url);
  await join(page, 'Pager');
  await page.keyboard.press('Control+k');
  await search(page, 'chatter', '20 results, more below');
  assert.equal(await hits(page).count(), 20);
  assert.equal(await hits(page).first().getByTestId('search-hit-text').textContent(), `kitchen chatter ${CHATTER}`);
  await page.getByTestId('search-more').click();
  await says(page, '40 results, more below');
  assert.equal(await hits(page).count(), 40);
  assert.equal(await hits(page).nth(20).getByTestId('search-hit-text').textContent(), `kitchen chatter ${CHATTER - 20}`);
  // The first new one is where the arrow keys are, in view; the box kept focus.
  assert.ok(await isFocused(page, 'search-input'));
  assert.equal(await box(page).getAttribute('aria-activedescendant'), 'search-hit-20');
  await page.waitForFunction(() => {
    const panel = document.querySelector('[data-testid="search-panel"]').getBoundingClientRect();
    const hit = document.getElementById('search-hit-20').getBoundingClientRect();
    return hit.top >= panel.top && hit.bottom <= panel.bottom;
  });
  await assertAccessible(page, 'search results with more below');
  assert.deepEqual(page.errors, []);
});

test('on a phone the box is a magnifier that widens over the header while in use', async () => {
  const page = await openPage(browser, server.url, PHONE);
  await join(page, 'Thumbs');
  const width = async () => (await box(page).boundingBox()).width;
  assert.ok(await width() < 60, `collapsed: ${await width()} px`);
  await box(page).click();
  await box(page).fill('sasa');
  await says(page, '5 results');
  assert.ok(await width() > 300, `widened: ${await width()} px`);
  const panel = await page.getByTestId('search-panel').boundingBox();
  assert.ok(panel.x >= 0 && panel.x + panel.width <= PHONE.width, 'the results fit the screen');
  await assertAccessible(page, 'search results on a phone');
  await page.screenshot({ path: path.join(artifacts, 'search-phone.png') });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: path.join(artifacts, 'search-phone-dark.png') });
  // A tap on a result opens it.
  await hits(page).filter({ hasText: 'Zagreb' }).click();
  await page.waitForFunction((id) => location.hash === `#/room/general/${id}`, ids.hello);
  await shown(page, ids.hello);
  assert.ok(await width() < 60, 'collapsed again');
  assert.deepEqual(page.errors, []);
});

test('a late answer to an older query never replaces a newer one\'s results', async () => {
  const page = await openPage(browser, server.url);
  await join(page, 'Typist');
  // The first Search is held until released; the others go at once.
  let first;
  let release;
  const released = new Promise((resolve) => { release = resolve; });
  let sent;
  const firstSent = new Promise((resolve) => { sent = resolve; });
  const settled = new Promise((resolve) => {
    const done = (request) => { if (request === first) resolve(); };
    page.on('requestfailed', done);
    page.on('requestfinished', done);
  });
  await page.route('**/ChatService/Search', async (route) => {
    if (!first) {
      first = route.request();
      sent();
      await released;
    }
    // The page may have given up on it meanwhile.
    await route.continue().catch(() => {});
  });
  await page.keyboard.press('Control+k');
  await box(page).fill('weekend');
  await firstSent;
  await search(page, 'zagreb', '1 result');
  release();
  await settled;
  // Whatever became of the old answer, the results are still the new query's.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  assert.equal(await status(page).textContent(), '1 result');
  assert.deepEqual(await hits(page).getByTestId('search-hit-text').allTextContents(), ['Saša says hello from Zagreb']);
  assert.deepEqual(page.errors, []);
});
